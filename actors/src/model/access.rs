//! Access: who is asking (`Scope`), the kinds of key and the stored key and
//! tenant records. Plain data; the edge checks credentials, the store keeps them.

use serde::{Deserialize, Serialize};

use super::conversation::SessionRecord;
use super::ids::TenantId;
use super::tenant::TenantSettings;

/// Who is asking: a tenant, and within it possibly one end user. A call with
/// a client sees only that client's conversations; without, the whole tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub tenant: TenantId,
    pub client: Option<String>,
}

impl Scope {
    /// The whole tenant (an API key alone).
    pub fn tenant(tenant: TenantId) -> Self {
        Scope {
            tenant,
            client: None,
        }
    }

    /// Whether this caller may see `record` (its tenant is checked by the query).
    pub fn may_see(&self, record: &SessionRecord) -> bool {
        self.client.is_none() || self.client == record.client_id
    }
}

/// A tenant created through the admin API (tenants in the config file have no record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub tenant_id: TenantId,
    pub settings: TenantSettings,
    pub created_at: String,
}

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// `X-API-Key`: back ends and back offices, the whole tenant.
    Api,
    /// Public, in a landing page's widget: may only open conversations (and
    /// use the webchat surface), from the tenant's allowed origins.
    Widget,
    /// One member of the tenant's support staff, for the agent console: reads
    /// conversations, takes them over and answers in their own name.
    Staff,
}

impl KeyKind {
    /// The readable start of every key of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Api => "tk_",
            KeyKind::Widget => "wk_",
            KeyKind::Staff => "sk_",
        }
    }
}

/// A stored key: its hash, never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub tenant: TenantId,
    pub kind: KeyKind,
    /// Whose key it is: required for staff keys (their name is shown to
    /// visitors when they answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The key's first characters, to recognise it in listings.
    pub prefix: String,
    /// SHA-256 of the whole key, lowercase hex.
    pub hash: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}
