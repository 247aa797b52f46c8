//! When a visitor asks for a person in so many words. The session runs this
//! on each stored visitor message; the widget's button, the REST call and the
//! model's `request_human` tool are the other ways a handoff is requested.

/// Whether a visitor's message clearly asks for a person rather than the AI.
/// Deliberately narrow (whole phrases, English and Spanish): a false alarm
/// pages a human, so anything vaguer is left to the model's `request_human` tool.
pub fn asks_for_a_person(text: &str) -> bool {
    const PHRASES: [&str; 16] = [
        "talk to a human",
        "speak to a human",
        "talk to a person",
        "speak to a person",
        "talk to a real person",
        "speak to a real person",
        "talk to someone",
        "speak to someone",
        "human agent",
        "real person",
        "hablar con una persona",
        "hablar con un humano",
        "hablar con alguien",
        "hablar con un agente",
        "agente humano",
        "persona real",
    ];
    let text = text.to_lowercase();
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect();
    let normalised = format!(" {} ", words.join(" "));
    PHRASES
        .iter()
        .any(|phrase| normalised.contains(&format!(" {phrase} ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clear_requests_for_a_person_count() {
        for yes in [
            "Can I talk to a human, please?",
            "I want to SPEAK TO A PERSON!",
            "Quiero hablar con una persona",
            "¿Puedo hablar con un agente?",
            "is there a real person there",
        ] {
            assert!(asks_for_a_person(yes), "{yes}");
        }
        for no in [
            "human resources is on floor 2",
            "personality test",
            "the person who installed my sink",
            "hablar",
            "",
        ] {
            assert!(!asks_for_a_person(no), "{no}");
        }
    }
}
