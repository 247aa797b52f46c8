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
}
