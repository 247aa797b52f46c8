//! The session's part that owns the visitor's consent and the contact
//! captured from their messages. A stated name, email or phone replaces what
//! was known (the `author` only fills a missing name); the first email or
//! phone makes the contact a lead. Decides; the session stores.

use crate::model::leads::Found;
use crate::model::{Consent, Contact, SessionId, TenantId, now_timestamp};

#[derive(Debug, Default)]
pub struct ContactCapture {
    /// The visitor's latest consent decision; leads are captured only while granted.
    pub consent: Option<Consent>,
    pub contact: Option<Contact>,
}

/// A contact that changed, to be stored.
#[derive(Debug, PartialEq)]
pub struct Changed {
    pub contact: Contact,
    /// This change made it a lead: `lead.captured` goes with it.
    pub became_lead: bool,
}

impl ContactCapture {
    pub fn granted(&self) -> bool {
        self.consent.as_ref().is_some_and(|consent| consent.granted)
    }

    /// Whether a name is still unknown (worth asking the model for one).
    pub fn lacks_name(&self) -> bool {
        self.contact
            .as_ref()
            .is_none_or(|contact| contact.name.is_none())
    }

    /// Merges what was found in a visitor message of conversation `id` on
    /// `channel`; the contact as changed, if it did.
    pub fn merge(
        &mut self,
        found: Found,
        (tenant, id): (&TenantId, SessionId),
        channel: &str,
    ) -> Option<Changed> {
        if found.is_empty() {
            return None;
        }
        let now = now_timestamp();
        let contact = self.contact.get_or_insert_with(|| Contact {
            tenant: tenant.clone(),
            conversation_id: id,
            origin: channel.to_owned(),
            name: None,
            email: None,
            phone: None,
            created_at: now.clone(),
            updated_at: now.clone(),
            lead_captured_at: None,
        });
        let before = contact.clone();
        if found.name.is_some() {
            contact.name = found.name;
        } else if contact.name.is_none() {
            contact.name = found.author_name;
        }
        contact.email = found.email.or(contact.email.take());
        contact.phone = found.phone.or(contact.phone.take());
        if *contact == before {
            return None;
        }
        contact.updated_at = now.clone();
        let became_lead = contact.lead_captured_at.is_none()
            && (contact.email.is_some() || contact.phone.is_some());
        if became_lead {
            contact.lead_captured_at = Some(now);
        }
        Some(Changed {
            contact: contact.clone(),
            became_lead,
        })
    }

    /// The contact's write failed: if it carried `lead.captured`, the next
    /// change records the lead again.
    pub fn not_stored(&mut self, had_event: bool) {
        if had_event && let Some(contact) = self.contact.as_mut() {
            contact.lead_captured_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(name: Option<&str>, author: Option<&str>, email: Option<&str>) -> Found {
        Found {
            name: name.map(str::to_owned),
            author_name: author.map(str::to_owned),
            email: email.map(str::to_owned),
            phone: None,
        }
    }

    #[test]
    fn the_author_fills_a_missing_name_and_a_stated_name_replaces_it() {
        let mut capture = ContactCapture::default();
        let at = (&TenantId("t".into()), SessionId::new());
        let first = capture.merge(found(None, Some("Ana"), None), at, "webchat");
        assert_eq!(first.unwrap().contact.name.as_deref(), Some("Ana"));
        assert!(
            capture
                .merge(found(None, Some("Luis"), None), at, "webchat")
                .is_none()
        );
        let stated = capture.merge(found(Some("Ana María"), None, None), at, "webchat");
        assert_eq!(stated.unwrap().contact.name.as_deref(), Some("Ana María"));
        assert!(!capture.lacks_name());
    }

    #[test]
    fn the_first_email_makes_a_lead_once_and_a_failed_store_makes_it_again() {
        let mut capture = ContactCapture::default();
        let at = (&TenantId("t".into()), SessionId::new());
        let lead = capture
            .merge(found(None, None, Some("ana@example.com")), at, "webchat")
            .unwrap();
        assert!(lead.became_lead);
        let again = capture
            .merge(found(None, None, Some("ana@work.example")), at, "webchat")
            .unwrap();
        assert!(!again.became_lead, "already a lead");
        capture.not_stored(true);
        let retried = capture
            .merge(found(Some("Ana"), None, None), at, "webchat")
            .unwrap();
        assert!(retried.became_lead, "the lost lead is recorded again");
    }
}
