//! The runtime's tenants and keys: settings lookups, tenants made and
//! changed through the admin API, and API, widget and staff keys (stored as
//! SHA-256 hashes; a presented key is hashed once and looked up in memory).
//! In a cluster each node keeps its own maps; a change made on one is
//! broadcast, and the others read the stored ones again.

use std::collections::HashMap;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::handle::Runtime;
use crate::error::{Error, Result};
use crate::model::{ApiKeyRecord, KeyKind, TenantId, TenantRecord, TenantSettings, now_timestamp};
use crate::store::Write;
use crate::tree::root::RootMsg;

/// The id of the development staff key, which is never stored.
const DEVELOPMENT_STAFF_KEY: &str = "key_development_staff";

impl Runtime {
    pub fn tenant_settings(&self, tenant: &TenantId) -> Option<Arc<TenantSettings>> {
        self.inner
            .tenants
            .get(tenant)
            .map(|entry| entry.value().clone())
    }

    /// The tenant whose API key this is: a key from the config file, compared
    /// in constant time, or a stored key, found by its hash.
    pub fn tenant_for_api_key(&self, key: &str) -> Option<TenantId> {
        match self.key_kind(key)? {
            (tenant, KeyKind::Api) => Some(tenant),
            (_, KeyKind::Widget | KeyKind::Staff) => None,
        }
    }

    /// The tenant and kind of a configured key (always an API key), compared
    /// in constant time, or of a stored key, found by its hash: one hash and
    /// one lookup per request.
    pub fn key_kind(&self, key: &str) -> Option<(TenantId, KeyKind)> {
        let mut configured = None;
        // Every configured key is compared, so timing does not tell which matched.
        for entry in self.inner.tenants.iter() {
            for candidate in &entry.value().api_keys {
                if bool::from(candidate.as_bytes().ct_eq(key.as_bytes())) {
                    configured = Some((entry.key().clone(), KeyKind::Api));
                }
            }
        }
        configured.or_else(|| {
            let stored = self.inner.keys.get(&sha256_hex(key))?;
            Some((stored.tenant.clone(), stored.kind))
        })
    }

    /// The tenant that lets a page from `origin` create conversations with
    /// no key (`keyless_sessions`), if exactly one does.
    pub fn keyless_tenant(&self, origin: &str) -> Option<TenantId> {
        let mut found = self.inner.tenants.iter().filter(|entry| {
            let settings = entry.value();
            settings.keyless_sessions && settings.allowed_origins.iter().any(|o| o == origin)
        });
        let tenant = found.next()?.key().clone();
        // Two tenants claiming one origin: nobody can tell which is meant.
        found.next().is_none().then_some(tenant)
    }

    /// The stored record of a key (staff keys carry their owner's name).
    pub fn key_record(&self, key: &str) -> Option<ApiKeyRecord> {
        self.inner
            .keys
            .get(&sha256_hex(key))
            .map(|entry| entry.value().clone())
    }

    /// Every tenant, by id.
    pub fn list_tenants(&self) -> Vec<(TenantId, Arc<TenantSettings>)> {
        let mut tenants: Vec<_> = self
            .inner
            .tenants
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().clone()))
            .collect();
        tenants.sort_by(|a, b| a.0.cmp(&b.0));
        tenants
    }

    /// Creates a tenant; it can be used at once, and is stored for restarts.
    /// Keys are made separately with [`Runtime::create_key`].
    pub async fn create_tenant(
        &self,
        id: &str,
        mut settings: TenantSettings,
    ) -> Result<TenantRecord> {
        if settings.client_token_secret.is_empty() {
            let secret: [u8; 32] = rand::random();
            settings.client_token_secret = hex(&secret);
        }
        let valid_id = !id.is_empty()
            && id.len() <= 64
            && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_id {
            return Err(Error::InvalidInput(
                "`id` must be 1 to 64 characters: a-z, 0-9, `-` or `_`, starting with a letter or digit".into(),
            ));
        }
        self.validate_settings(&settings)?;
        let _admin = self.inner.admin.lock().await;
        let tenant = TenantId(id.to_owned());
        if self.inner.tenants.contains_key(&tenant) {
            return Err(Error::Conflict(format!("tenant `{id}` exists already")));
        }
        let record = TenantRecord {
            tenant_id: tenant.clone(),
            settings,
            created_at: now_timestamp(),
        };
        self.store_tenant(&record).await?;
        Ok(record)
    }

    /// Replaces a stored tenant's settings (the admin API merges a patch into
    /// the current ones first). They apply at once: new sockets get the new
    /// greeting, new answers the new agent, new requests the new limits.
    pub async fn update_tenant(
        &self,
        tenant: &TenantId,
        settings: TenantSettings,
    ) -> Result<TenantRecord> {
        let _admin = self.inner.admin.lock().await;
        self.known_tenant(tenant)?;
        let created_at = self
            .inner
            .stored_tenants
            .get(tenant)
            .map(|entry| entry.value().clone())
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "tenant `{tenant}` is set in the config file: change it there"
                ))
            })?;
        self.validate_settings(&settings)?;
        let record = TenantRecord {
            tenant_id: tenant.clone(),
            settings,
            created_at,
        };
        self.store_tenant(&record).await?;
        let _ = self.inner.root.cast(RootMsg::Reconfigure(tenant.clone()));
        Ok(record)
    }

    /// Stores a tenant made or changed through the admin API, then publishes
    /// it in the directory (only once it is durable).
    pub(super) async fn store_tenant(&self, record: &TenantRecord) -> Result<()> {
        self.inner
            .storage
            .write_and_wait(Write::PutTenant(Box::new(record.clone())))
            .await?;
        let tenant = record.tenant_id.clone();
        self.inner
            .tenants
            .insert(tenant.clone(), Arc::new(record.settings.clone()));
        self.inner
            .stored_tenants
            .insert(tenant, record.created_at.clone());
        self.tell_peers_access_changed();
        Ok(())
    }

    /// In a cluster, the other nodes read tenants and keys again.
    fn tell_peers_access_changed(&self) {
        if let Some(cluster) = self.inner.cluster.get() {
            cluster.access_changed();
        }
    }

    /// Reads stored tenants and keys again (another node of the cluster
    /// changed them): a changed tenant's live actor gets its new settings,
    /// a new key works and a revoked one is refused from now on. Tenants of
    /// the config file are left as they are: the file wins, as at start.
    pub(super) async fn reload_access(&self) {
        // Held across the read too: a key made here between a read and its
        // use would otherwise be dropped again by a copy read before it.
        let _admin = self.inner.admin.lock().await;
        let (tenants, keys) = match self.inner.storage.load_access().await {
            Ok(access) => access,
            Err(error) => {
                tracing::warn!(%error, "tenants and keys could not be read again");
                return;
            }
        };
        for record in tenants {
            let id = record.tenant_id.clone();
            if self.inner.config.tenants.contains_key(&id.0) {
                continue;
            }
            let known = self
                .inner
                .tenants
                .get(&id)
                .map(|entry| entry.value().clone());
            if known.as_deref() == Some(&record.settings) {
                continue;
            }
            self.inner
                .tenants
                .insert(id.clone(), Arc::new(record.settings));
            self.inner
                .stored_tenants
                .insert(id.clone(), record.created_at);
            if known.is_some() {
                let _ = self.inner.root.cast(RootMsg::Reconfigure(id));
            }
        }
        let fresh: HashMap<String, ApiKeyRecord> = keys
            .into_iter()
            .map(|key| (key.hash.clone(), key))
            .collect();
        // The development staff key is never stored: it stays.
        self.inner
            .keys
            .retain(|hash, key| fresh.contains_key(hash) || key.key_id == DEVELOPMENT_STAFF_KEY);
        for (hash, key) in fresh {
            self.inner.keys.insert(hash, key);
        }
    }

    /// Checks settings from the admin API; the error names the field.
    pub(super) fn validate_settings(&self, settings: &TenantSettings) -> Result<()> {
        if settings.client_token_secret.len() < 32 {
            return Err(Error::InvalidInput(
                "`client_token_secret` must be at least 32 bytes (or left out to get a random one)"
                    .into(),
            ));
        }
        if !self.inner.agents.contains(&settings.agent) {
            return Err(Error::InvalidInput(format!(
                "`agent`: no agent named `{}`; choose one of: {}",
                settings.agent,
                self.inner.agents.join(", ")
            )));
        }
        if settings.name.trim().is_empty() || settings.name.len() > 200 {
            return Err(Error::InvalidInput("`name` must be 1 to 200 bytes".into()));
        }
        if let Some(problem) = settings.agent_problem() {
            return Err(Error::InvalidInput(problem));
        }
        self.check_agent_urls(settings)?;
        if let Some(field) = settings.rate_limits.invalid_field() {
            return Err(Error::InvalidInput(format!("`{field}` must be at least 1")));
        }
        for (index, origin) in settings.allowed_origins.iter().enumerate() {
            if !crate::model::is_web_origin(origin) {
                return Err(Error::InvalidInput(format!(
                    "`allowed_origins[{index}]`: `{origin}` is not an origin like https://shop.example"
                )));
            }
        }
        if let Some(problem) = settings.greeting.invalid() {
            return Err(Error::InvalidInput(problem));
        }
        if !settings.api_keys.is_empty() {
            return Err(Error::InvalidInput(
                "`api_keys`: keys are made with POST /admin/tenants/{id}/keys and shown once"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Makes a key for `tenant`. Returns its record and the key itself, which
    /// is never stored and cannot be shown again.
    pub async fn create_key(
        &self,
        tenant: &TenantId,
        kind: KeyKind,
        name: Option<String>,
    ) -> Result<(ApiKeyRecord, String)> {
        self.known_tenant(tenant)?;
        if kind == KeyKind::Staff && name.is_none() {
            return Err(Error::InvalidInput(
                "a staff key needs the `name` shown to visitors".into(),
            ));
        }
        let secret: [u8; 32] = rand::random();
        let key = format!("{}{}", kind.prefix(), hex(&secret));
        let record = ApiKeyRecord {
            key_id: format!("key_{}", uuid::Uuid::now_v7().simple()),
            tenant: tenant.clone(),
            kind,
            name,
            prefix: key[..11].to_owned(),
            hash: sha256_hex(&key),
            created_at: now_timestamp(),
            revoked_at: None,
        };
        let _admin = self.inner.admin.lock().await;
        self.inner
            .storage
            .write_and_wait(Write::PutKey(record.clone()))
            .await?;
        self.inner.keys.insert(record.hash.clone(), record.clone());
        self.tell_peers_access_changed();
        Ok((record, key))
    }

    /// Lets `key` in as a staff key of `tenant` named `name`, for this run
    /// only (nothing is stored). For the development tenant, so the console
    /// works on a first `cargo run`; never called once tenants are configured.
    pub fn allow_development_staff_key(&self, tenant: &TenantId, key: &str, name: &str) {
        let record = ApiKeyRecord {
            key_id: DEVELOPMENT_STAFF_KEY.into(),
            tenant: tenant.clone(),
            kind: KeyKind::Staff,
            name: Some(name.to_owned()),
            prefix: key.chars().take(11).collect(),
            hash: sha256_hex(key),
            created_at: now_timestamp(),
            revoked_at: None,
        };
        self.inner.keys.insert(record.hash.clone(), record);
    }

    /// The tenant's stored keys that are not revoked (never their secrets).
    pub fn list_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>> {
        self.known_tenant(tenant)?;
        let mut keys: Vec<ApiKeyRecord> = self
            .inner
            .keys
            .iter()
            .filter(|entry| &entry.value().tenant == tenant)
            .map(|entry| entry.value().clone())
            .collect();
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        Ok(keys)
    }

    /// Revokes a key: refused from the moment this returns.
    pub async fn revoke_key(&self, key_id: &str) -> Result<ApiKeyRecord> {
        let _admin = self.inner.admin.lock().await;
        let hash = self
            .inner
            .keys
            .iter()
            .find(|entry| entry.value().key_id == key_id)
            .map(|entry| entry.key().clone())
            .ok_or_else(|| Error::KeyNotFound(key_id.to_owned()))?;
        let revoked_at = now_timestamp();
        // Refuse it at once; put it back only if the revocation cannot be stored.
        let (_, mut record) = self
            .inner
            .keys
            .remove(&hash)
            .expect("found above, under the admin lock");
        let write = Write::RevokeKey {
            key_id: key_id.to_owned(),
            revoked_at: revoked_at.clone(),
        };
        if let Err(error) = self.inner.storage.write_and_wait(write).await {
            self.inner.keys.insert(hash, record);
            return Err(error);
        }
        record.revoked_at = Some(revoked_at);
        self.tell_peers_access_changed();
        Ok(record)
    }

    pub fn known_tenant(&self, tenant: &TenantId) -> Result<()> {
        if self.inner.tenants.contains_key(tenant) {
            Ok(())
        } else {
            Err(Error::TenantNotFound(tenant.clone()))
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// How keys are stored and looked up: SHA-256, lowercase hex. A key is 32
/// random bytes, so a fast hash is enough (no password-style stretching).
fn sha256_hex(key: &str) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(key.as_bytes()))
}
