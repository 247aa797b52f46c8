//! Lead capture: finds a visitor's name, email and phone in what they wrote.
//! Pure functions, no actor: the session calls them on each stored visitor
//! message of a consenting webchat conversation and keeps the result in the
//! conversation's `contact`.
//!
//! Emails and phones are parsed as strictly as a form would validate them
//! (`email_address`, and `phonenumber`, a port of Google's libphonenumber),
//! so "call me at 5" or "a@b" never become a lead. A name comes from the
//! visitor's `author` field unless it is a placeholder ("visitor", "user"),
//! or from a clear statement: "my name is …", "me llamo …", "mi nombre es …",
//! "je m'appelle …", "meu nome é …", "ich heiße …".

use std::str::FromStr;

/// What one message says about its writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// A name the visitor stated ("me llamo …").
    pub name: Option<String>,
    /// The `author` field, when it is a plausible name.
    pub author_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.author_name.is_none()
            && self.email.is_none()
            && self.phone.is_none()
    }
}

/// Longest name kept, in characters.
const MAX_NAME_CHARS: usize = 80;
/// Words a name may have.
const MAX_NAME_WORDS: usize = 4;

/// Phrases after which a visitor gives their name, lowercase.
const NAME_STATEMENTS: [&str; 7] = [
    "my name is ",
    "me llamo ",
    "mi nombre es ",
    "je m'appelle ",
    "meu nome é ",
    "ich heiße ",
    "ich heisse ",
];

/// `author` values that are not anyone's name.
const PLACEHOLDER_AUTHORS: [&str; 14] = [
    "user",
    "visitor",
    "guest",
    "anonymous",
    "anon",
    "customer",
    "client",
    "usuario",
    "visitante",
    "invitado",
    "anónimo",
    "anonimo",
    "cliente",
    "webchat",
];

/// Words that end a name in a statement ("me llamo Ana y …").
const NAME_STOP_WORDS: [&str; 12] = [
    "and", "but", "y", "e", "pero", "et", "mais", "und", "aber", "i", "from", "desde",
];

/// The name, email and phone in `content` (and `author`). `locale` (`es-MX`)
/// supplies the country for numbers written without `+`.
pub fn extract(content: &str, author: Option<&str>, locale: Option<&str>) -> Found {
    Found {
        name: stated_name(content),
        author_name: author.and_then(name_from_author),
        email: emails(content).last().cloned(),
        phone: phones(content, region_of(locale)).last().cloned(),
    }
}

/// What a model claims, kept only where it passes the same checks as typed
/// text: a plausible name, a valid email, a valid phone (E.164).
pub fn validated(claimed: Found, region: Option<phonenumber::country::Id>) -> Found {
    Found {
        name: claimed.name.as_deref().and_then(name_from_author),
        author_name: None,
        email: claimed
            .email
            .as_deref()
            .and_then(|email| emails(email).pop()),
        phone: claimed
            .phone
            .as_deref()
            .and_then(|phone| phones(phone, region).pop()),
    }
}

/// `author` as a name, unless it is a placeholder or does not look like one.
pub fn name_from_author(author: &str) -> Option<String> {
    let author = author.trim();
    if PLACEHOLDER_AUTHORS.contains(&author.to_lowercase().as_str()) {
        return None;
    }
    let words: Vec<&str> = author.split_whitespace().collect();
    let plausible = !words.is_empty()
        && words.len() <= MAX_NAME_WORDS
        && author.chars().count() <= MAX_NAME_CHARS
        && words.iter().all(|word| is_name_word(word));
    plausible.then(|| words.join(" "))
}

fn is_name_word(word: &str) -> bool {
    word.chars().any(char::is_alphabetic)
        && word
            .chars()
            .all(|c| c.is_alphabetic() || matches!(c, '\'' | '’' | '-' | '.'))
}

/// The name after a clear statement, capitalised ("me llamo ana lópez" → "Ana López").
fn stated_name(content: &str) -> Option<String> {
    let lower = content.to_lowercase();
    // Lowercasing may change byte lengths (rarely): only use positions when it did not.
    if lower.len() != content.len() {
        return None;
    }
    let (start, phrase) = NAME_STATEMENTS
        .iter()
        .filter_map(|phrase| lower.find(phrase).map(|at| (at, phrase)))
        .min_by_key(|(at, _)| *at)?;
    let rest = &content[start + phrase.len()..];
    let mut words = Vec::new();
    for raw in rest.split_whitespace() {
        let word = raw.trim_end_matches([',', '.', '!', '?', ';', ':']);
        let ended = word.len() != raw.len();
        if word.is_empty()
            || !is_name_word(word)
            || NAME_STOP_WORDS.contains(&word.to_lowercase().as_str())
        {
            break;
        }
        words.push(capitalise(word));
        if ended || words.len() == MAX_NAME_WORDS {
            break;
        }
    }
    let name = words.join(" ");
    (!name.is_empty() && name.chars().count() <= MAX_NAME_CHARS).then_some(name)
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Every valid email address in `text`, in order, domain lowercased.
pub fn emails(text: &str) -> Vec<String> {
    text.split(|c: char| {
        c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>' | '(' | ')' | '[' | ']' | '"')
    })
    .filter(|token| token.contains('@'))
    .filter_map(|token| {
        let token = token
            .trim_start_matches(['\'', ':'])
            .trim_end_matches(['.', '!', '?', ':', '\'']);
        let token = token.strip_prefix("mailto:").unwrap_or(token);
        let address = email_address::EmailAddress::from_str(token).ok()?;
        let domain = address.domain();
        // A deliverable address has a dotted domain with a real top-level part.
        let tld = domain.rsplit('.').next()?;
        let dotted =
            domain.contains('.') && tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic());
        dotted.then(|| format!("{}@{}", address.local_part(), domain.to_ascii_lowercase()))
    })
    .collect()
}

/// Every valid phone number in `text`, in order, as E.164. Numbers without
/// `+` need `region` (an ISO 3166 code such as `MX`).
pub fn phones(text: &str, region: Option<phonenumber::country::Id>) -> Vec<String> {
    candidates(text)
        .into_iter()
        .filter_map(|candidate| {
            if !candidate.starts_with('+') && region.is_none() {
                return None;
            }
            let number = phonenumber::parse(region, &candidate).ok()?;
            phonenumber::is_valid(&number)
                .then(|| number.format().mode(phonenumber::Mode::E164).to_string())
        })
        .collect()
}

/// Runs of digits and the separators people type in numbers, with 7 to 15 digits.
fn candidates(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        let trimmed = current.trim_end_matches(|c: char| !c.is_ascii_digit());
        let digits = trimmed.chars().filter(char::is_ascii_digit).count();
        if (7..=15).contains(&digits) {
            found.push(trimmed.to_owned());
        }
        current.clear();
    };
    for c in text.chars() {
        let starts = c.is_ascii_digit() || c == '+' || c == '(';
        let continues = c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')');
        if current.is_empty() {
            if starts {
                current.push(c);
            }
        } else if continues {
            current.push(c);
        } else {
            flush(&mut current);
            if starts {
                current.push(c);
            }
        }
    }
    flush(&mut current);
    found
}

/// The country of a locale with a region subtag (`es-MX` → MX); none for `es`.
pub fn region_of(locale: Option<&str>) -> Option<phonenumber::country::Id> {
    locale?
        .split(['-', '_'])
        .skip(1)
        .find(|part| part.len() == 2 && part.chars().all(|c| c.is_ascii_alphabetic()))
        .and_then(|region| region.to_ascii_uppercase().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_valid_emails_only() {
        assert_eq!(
            emails("write to Ana.Lopez@Example.COM, or <sales@shop.example.org>."),
            vec!["Ana.Lopez@example.com", "sales@shop.example.org"]
        );
        for text in [
            "a@b",
            "me@localhost",
            "two@@example.com",
            "x@example.c0m",
            "@example.com",
        ] {
            assert!(emails(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn finds_valid_phones_in_e164() {
        let mx = region_of(Some("es-MX"));
        assert_eq!(
            phones("mi cel es 55 1234 5678, gracias", mx),
            vec!["+525512345678"]
        );
        assert_eq!(
            phones("call +44 20 7946 0958 today", None),
            vec!["+442079460958"]
        );
        // Without a region, only international numbers are believed.
        assert!(phones("55 1234 5678", None).is_empty());
        // Too short, or not a number in that country.
        assert!(phones("order 12345 costs 99", mx).is_empty());
        assert!(phones("+1 000 000 0000", None).is_empty());
    }

    #[test]
    fn names_come_from_statements_or_real_authors() {
        assert_eq!(
            extract(
                "Hola, me llamo ana lópez y necesito un fontanero",
                None,
                None
            )
            .name,
            Some("Ana López".into())
        );
        let found = extract(
            "Hi! My name is John Smith. I need help",
            Some("visitor"),
            None,
        );
        assert_eq!(found.name, Some("John Smith".into()));
        assert_eq!(found.author_name, None);
        assert_eq!(
            extract("hello", Some("María José"), None).author_name,
            Some("María José".into())
        );
        for placeholder in ["user", "Visitor", "usuario", "", "x@y.com", "R2D2"] {
            assert_eq!(
                extract("hello", Some(placeholder), None).author_name,
                None,
                "{placeholder}"
            );
        }
    }

    #[test]
    fn regions_come_from_locale_subtags() {
        assert_eq!(
            region_of(Some("es-MX")).map(|id| format!("{id:?}")),
            Some("MX".into())
        );
        assert_eq!(region_of(Some("es")), None);
        assert_eq!(region_of(None), None);
    }
}
