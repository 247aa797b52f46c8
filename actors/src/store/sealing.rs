//! Secrets at rest: webhook endpoints' signing secrets and static headers,
//! and a tenant's client-token secret, model key, webhook-agent and tool
//! secrets are sealed (AES-256-GCM, a random nonce each) with the key the
//! operator gives in the environment before they reach SurrealDB, and
//! opened when read back. A copy of the database (its files, a backup)
//! then gives none of them away without the key.
//!
//! A sealed value is `sealed:v1:<key id>:<base64 of nonce, ciphertext, tag>`;
//! the key id (the first 8 bytes of the key's SHA-256, in hex) tells which
//! key opens it, so after a rotation old values still open with the previous
//! key until start-up reseals them (`Database::reseal_secrets`). The
//! associated data is the field's place (`webhook_endpoint/acme/ep1/secret`),
//! so a sealed value copied into another field or tenant does not open.
//! A value without the prefix is plain text: what was stored before a key
//! was set, resealed at the next start with one.
//!
//! Used only by `database.rs` and `read.rs`; the rest of the runtime sees
//! secrets as plain text in memory, as it always has.

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::config::SealingKeys;
use crate::error::{Error, Result};
use crate::model::WebhookEndpoint;

const PREFIX: &str = "sealed:v1:";

/// The keys that seal and open stored secrets.
pub struct Sealer {
    /// Seals every new value; `None`: values are stored as plain text.
    current: Option<Key>,
    /// Open values sealed before a rotation; never seal.
    previous: Vec<Key>,
}

struct Key {
    id: String,
    key: RandomizedNonceKey,
}

impl Key {
    fn parse(text: &str, variable: &str) -> Result<Key> {
        let text = text.trim();
        let bytes = [STANDARD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .filter(|bytes| bytes.len() == 32)
            .ok_or_else(|| {
                Error::Startup(format!(
                    "{variable} must be 32 bytes in base64 (`openssl rand -base64 32` makes one)"
                ))
            })?;
        let id = hex(&Sha256::digest(&bytes)[..8]);
        let key = RandomizedNonceKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| Error::Startup(format!("{variable} is not a usable AES-256 key")))?;
        Ok(Key { id, key })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Sealer {
    /// The sealer for these keys; an error names the variable that is wrong.
    pub fn new(keys: &SealingKeys) -> Result<Sealer> {
        let current = keys
            .current
            .as_deref()
            .map(|text| Key::parse(text, SealingKeys::CURRENT))
            .transpose()?;
        let previous = keys
            .previous
            .iter()
            .map(|text| Key::parse(text, SealingKeys::PREVIOUS))
            .collect::<Result<Vec<_>>>()?;
        Ok(Sealer { current, previous })
    }

    /// A sealer with no key: every value is stored and read as plain text.
    pub fn plain() -> Sealer {
        Sealer {
            current: None,
            previous: Vec::new(),
        }
    }

    /// `plain` as it is stored in `place`: sealed with the current key, or
    /// as it is when there is none (and when it is empty: nothing to hide).
    pub fn seal(&self, plain: &str, place: &str) -> String {
        let Some(current) = &self.current else {
            return plain.to_owned();
        };
        if plain.is_empty() {
            return String::new();
        }
        let mut in_out = plain.as_bytes().to_vec();
        let nonce = current
            .key
            .seal_in_place_append_tag(Aad::from(place.as_bytes()), &mut in_out)
            .expect("AES-GCM seals any input shorter than 64 GB");
        let mut sealed = nonce.as_ref().to_vec();
        sealed.extend_from_slice(&in_out);
        format!("{PREFIX}{}:{}", current.id, URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The plain text of a value stored in `place`.
    pub fn open(&self, stored: &str, place: &str) -> Result<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let unreadable = |why: &str| Error::Startup(format!("the stored secret {place} {why}"));
        let (id, body) = rest
            .split_once(':')
            .ok_or_else(|| unreadable("is not a sealed value"))?;
        let key = self
            .current
            .iter()
            .chain(&self.previous)
            .find(|key| key.id == id)
            .ok_or_else(|| {
                unreadable(&format!(
                    "is sealed with key {id}, which neither {} nor {} holds",
                    SealingKeys::CURRENT,
                    SealingKeys::PREVIOUS
                ))
            })?;
        let mut bytes = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .filter(|bytes| bytes.len() >= NONCE_LEN)
            .ok_or_else(|| unreadable("is not a sealed value"))?;
        let text = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes)
            .map_err(|_| unreadable("is not a sealed value"))?;
        let mut text = text;
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(place.as_bytes()), &mut text)
            .map_err(|_| unreadable(&format!("does not open with key {id}: altered or moved")))?;
        String::from_utf8(plain.to_vec()).map_err(|_| unreadable("is not text"))
    }

    /// Whether `stored` is as `seal` would store it now (so needs no reseal).
    pub fn is_current(&self, stored: &str) -> bool {
        if stored.is_empty() {
            return true;
        }
        match (&self.current, stored.strip_prefix(PREFIX)) {
            (Some(current), Some(rest)) => rest.starts_with(&format!("{}:", current.id)),
            (None, None) => true,
            _ => false,
        }
    }
}

/// A record that holds secrets, each at a named place.
pub trait HoldsSecrets {
    /// Calls `each` with every secret field and its place.
    fn each_secret(&mut self, each: &mut dyn FnMut(&mut String, String));

    /// This record with every secret sealed, as it is written.
    fn sealed(&self, sealer: &Sealer) -> Self
    where
        Self: Clone,
    {
        let mut record = self.clone();
        record.each_secret(&mut |field, place| *field = sealer.seal(field, &place));
        record
    }

    /// Opens every secret of this record as it was read.
    fn open(&mut self, sealer: &Sealer) -> Result<()> {
        let mut outcome = Ok(());
        self.each_secret(&mut |field, place| {
            if outcome.is_ok() {
                match sealer.open(field, &place) {
                    Ok(plain) => *field = plain,
                    Err(error) => outcome = Err(error),
                }
            }
        });
        outcome
    }

    /// Whether every secret is stored as the sealer would store it now.
    fn is_current(&mut self, sealer: &Sealer) -> bool {
        let mut current = true;
        self.each_secret(&mut |field, _| current &= sealer.is_current(field));
        current
    }
}

impl HoldsSecrets for WebhookEndpoint {
    fn each_secret(&mut self, each: &mut dyn FnMut(&mut String, String)) {
        let place = format!("webhook_endpoint/{}/{}", self.tenant, self.endpoint_id);
        each(&mut self.secret, format!("{place}/secret"));
        if let Some(previous) = &mut self.previous_secret {
            each(previous, format!("{place}/previous_secret"));
        }
        if let Some(header) = &mut self.header_value {
            each(header, format!("{place}/header_value"));
        }
    }
}

impl HoldsSecrets for crate::model::TenantRecord {
    fn each_secret(&mut self, each: &mut dyn FnMut(&mut String, String)) {
        let place = format!("tenant/{}", self.tenant_id);
        let settings = &mut self.settings;
        each(
            &mut settings.client_token_secret,
            format!("{place}/client_token_secret"),
        );
        each(
            &mut settings.openai.api_key,
            format!("{place}/openai/api_key"),
        );
        each(
            &mut settings.webhook_agent.secret,
            format!("{place}/webhook_agent/secret"),
        );
        each(
            &mut settings.webhook_agent.header_value,
            format!("{place}/webhook_agent/header_value"),
        );
        for (index, tool) in settings.tools.iter_mut().enumerate() {
            each(&mut tool.secret, format!("{place}/tools/{index}/secret"));
            each(
                &mut tool.header_value,
                format!("{place}/tools/{index}/header_value"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn sealer(current: Option<&str>, previous: &[&str]) -> Sealer {
        Sealer::new(&SealingKeys {
            current: current.map(str::to_owned),
            previous: previous.iter().map(|key| key.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_to_itself_and_hides_its_text() {
        let sealer = sealer(Some(KEY_A), &[]);
        let sealed = sealer.seal("whsec_c2VjcmV0", "webhook_endpoint/t/e/secret");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("c2VjcmV0"));
        assert_ne!(
            sealed,
            sealer.seal("whsec_c2VjcmV0", "webhook_endpoint/t/e/secret")
        );
        assert_eq!(
            sealer.open(&sealed, "webhook_endpoint/t/e/secret").unwrap(),
            "whsec_c2VjcmV0"
        );
        assert!(sealer.is_current(&sealed));
    }

    #[test]
    fn a_sealed_secret_moved_to_another_place_does_not_open() {
        let sealer = sealer(Some(KEY_A), &[]);
        let sealed = sealer.seal("s3cret", "tenant/a/client_token_secret");
        let error = sealer
            .open(&sealed, "tenant/b/client_token_secret")
            .unwrap_err();
        assert!(error.to_string().contains("altered or moved"), "{error}");
    }

    #[test]
    fn after_a_rotation_the_previous_key_opens_and_reseal_is_due() {
        let old = sealer(Some(KEY_A), &[]).seal("s3cret", "p");
        let rotated = sealer(Some(KEY_B), &[KEY_A]);
        assert_eq!(rotated.open(&old, "p").unwrap(), "s3cret");
        assert!(!rotated.is_current(&old));
        let without = sealer(Some(KEY_B), &[]);
        let error = without.open(&old, "p").unwrap_err().to_string();
        assert!(error.contains("TERTULIA_SECRET_KEY_PREVIOUS"), "{error}");
    }

    #[test]
    fn plain_text_is_read_as_it_is_and_sealed_when_a_key_is_set() {
        let plain = Sealer::plain();
        assert_eq!(plain.seal("s3cret", "p"), "s3cret");
        assert!(plain.is_current("s3cret"));
        let keyed = sealer(Some(KEY_A), &[]);
        assert_eq!(keyed.open("s3cret", "p").unwrap(), "s3cret");
        assert!(!keyed.is_current("s3cret"));
        assert!(keyed.is_current(""));
    }

    #[test]
    fn a_bad_key_is_refused_with_the_variable_named() {
        let keys = SealingKeys {
            current: Some("c2hvcnQ=".into()),
            previous: Vec::new(),
        };
        let error = Sealer::new(&keys).err().unwrap().to_string();
        assert!(
            error.contains("TERTULIA_SECRET_KEY must be 32 bytes"),
            "{error}"
        );
    }

    #[test]
    fn a_tampered_value_does_not_open() {
        let sealer = sealer(Some(KEY_A), &[]);
        let mut sealed = sealer.seal("s3cret", "p").into_bytes();
        let last = sealed.len() - 1;
        sealed[last] = if sealed[last] == b'A' { b'B' } else { b'A' };
        assert!(
            sealer
                .open(std::str::from_utf8(&sealed).unwrap(), "p")
                .is_err()
        );
    }
}
