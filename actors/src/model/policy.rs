//! What happens when a visitor writes again while the answer to their last
//! message is still being written (double texting): a tenant's default,
//! which a conversation may override. Every protocol follows the same one,
//! because the session applies it to every message whatever brought it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoubleTexting {
    /// Each message is answered in turn.
    #[default]
    Queue,
    /// The answer in progress stops and is kept as `interrupted`; the next
    /// answer answers everything the visitor wrote since.
    Interrupt,
    /// The message is refused (`busy`) and nothing is stored.
    Reject,
    /// Messages written within the window before the answer starts (or
    /// while it waits for its first token) are answered as one turn.
    Merge,
}

impl DoubleTexting {
    pub const NAMES: &str = "queue, interrupt, reject or merge";

    pub fn parse(text: &str) -> Option<DoubleTexting> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }
}

/// The tenant's `[tenants.x.double_texting]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DoubleTextingSettings {
    pub policy: DoubleTexting,
    /// How long `merge` waits for more messages before answering.
    pub merge_window_ms: u64,
}

/// The longest merge window: longer, and a visitor would wonder whether
/// anyone is there.
pub const MAX_MERGE_WINDOW_MS: u64 = 10_000;

impl DoubleTextingSettings {
    /// What is wrong with these settings, naming the field.
    pub fn invalid(&self) -> Option<String> {
        (self.merge_window_ms > MAX_MERGE_WINDOW_MS).then(|| {
            format!(
                "`double_texting.merge_window_ms` is {}; at most {MAX_MERGE_WINDOW_MS}",
                self.merge_window_ms
            )
        })
    }
}

impl Default for DoubleTextingSettings {
    fn default() -> Self {
        DoubleTextingSettings {
            policy: DoubleTexting::Queue,
            merge_window_ms: 1500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_have_their_names() {
        assert_eq!(DoubleTexting::parse("merge"), Some(DoubleTexting::Merge));
        assert_eq!(DoubleTexting::parse("queue"), Some(DoubleTexting::Queue));
        assert_eq!(DoubleTexting::parse("Merge"), None);
        assert_eq!(DoubleTexting::parse("later"), None);
    }

    #[test]
    fn a_merge_window_has_a_ceiling() {
        let mut settings = DoubleTextingSettings::default();
        assert_eq!(settings.invalid(), None);
        settings.merge_window_ms = MAX_MERGE_WINDOW_MS + 1;
        assert!(settings.invalid().unwrap().contains("merge_window_ms"));
    }
}

/// The tenant's `[tenants.x.retention]`: how long its conversations are
/// kept. Days may be fractional; unset keeps them for ever.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// A conversation idle this long (no message, no change) is archived:
    /// listed with `status_filter=archived`, still readable and open to
    /// messages (PATCH its status to `active` to list it with the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_after_days: Option<f64>,
    /// A conversation idle this long is deleted with its messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_after_days: Option<f64>,
}

impl RetentionSettings {
    /// What is wrong with these settings, naming the field.
    pub fn invalid(&self) -> Option<String> {
        for (field, days) in [
            ("archive_after_days", self.archive_after_days),
            ("delete_after_days", self.delete_after_days),
        ] {
            if let Some(days) = days
                && !(days.is_finite() && days > 0.0)
            {
                return Some(format!(
                    "`retention.{field}` is {days}; it must be more than 0"
                ));
            }
        }
        match (self.archive_after_days, self.delete_after_days) {
            (Some(archive), Some(delete)) if delete <= archive => Some(format!(
                "`retention.delete_after_days` ({delete}) must be more than `archive_after_days` ({archive})"
            )),
            _ => None,
        }
    }
}
