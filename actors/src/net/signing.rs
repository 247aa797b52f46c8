//! Standard Webhooks signatures (https://www.standardwebhooks.com): what the
//! `webhook` agent sends with each request, and what the webhook outbox will
//! send with each event. Pure functions, no actor.
//!
//! `webhook-signature` is `v1,` + base64 of HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the secret's bytes
//! (the base64 after `whsec_`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Signs with one secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

/// The three headers of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
}

impl Signer {
    /// A signer for `whsec_<base64>`; `None` if the secret is not in that form.
    pub fn new(secret: &str) -> Option<Signer> {
        crate::model::signing_key(secret).map(|key| Signer { key })
    }

    /// The headers for `body`, sent as message `id` at `timestamp` (Unix seconds).
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> Signature {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        Signature {
            id: id.to_owned(),
            timestamp: timestamp.to_string(),
            signature: format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_specification() {
        // The example of the Standard Webhooks specification.
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signed = signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(
            signed.signature,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(Signer::new("not-a-secret").is_none());
        assert!(Signer::new("whsec_!!!").is_none());
    }
}
