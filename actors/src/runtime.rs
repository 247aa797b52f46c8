//! The runtime's public API: what the edge (`src/`) may call. It starts the
//! supervision tree and turns each request into actor messages; it never gives
//! out the database handle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RpcReplyPort};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, broadcast};
use tokio::task::JoinHandle;

use crate::agent::{AgentProvider, AgentRegistry, EchoAgent};
use crate::config::{RuntimeConfig, TenantSettings};
use crate::domain::{
    Ack, ApiKeyRecord, Attendant, Consent, Contact, EventRecord, KeyKind, MessageId, MetaChange,
    NewMessage, Participant, Scope, SessionId, SessionRecord, StoredMessage, TenantId,
    TenantRecord, now_timestamp,
};
use crate::egress::EgressPolicy;
use crate::error::{Error, Result};
use crate::feed::{Change, ConversationSummary, FeedFrame, Feeds};
use crate::persistence::{Database, MessageQuery, Storage, Write};
use crate::protocol::Frame;
use crate::root::{Root, RootArgs, RootMsg, TenantDirectory};
use crate::session::{AnswerReceiver, Attached, SessionMsg};
use crate::tenant::{SessionRegistry, TenantMsg};
use crate::webhooks::WebhooksHandle;

mod webhook_admin;
pub use webhook_admin::{EndpointInput, MAX_DELIVERIES};

/// How long a request waits for an actor's answer before reporting it unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to reach a session that stopped under our feet (passivation, restart).
const SESSION_ATTEMPTS: usize = 3;
/// The most conversations one listing returns.
pub const MAX_LIST: usize = 1000;
/// The channel name of the webchat surface, on its conversations and messages.
pub const WEBCHAT: &str = "webchat";
/// Locks that make "find the conversation of this webchat id, or open it" one
/// step per id: striped, so memory does not grow with visitors.
const OPEN_LOCKS: usize = 64;

/// A running supervision tree. Cheap to clone; every clone is the same runtime.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    root: ActorRef<RootMsg>,
    root_task: Mutex<Option<JoinHandle<()>>>,
    storage: Storage,
    registry: SessionRegistry,
    tenants: TenantDirectory,
    /// Stored keys that are not revoked, by the SHA-256 of the key.
    keys: DashMap<String, ApiKeyRecord>,
    /// Tenants made through the admin API, with when: only these can be changed there.
    stored_tenants: DashMap<TenantId, String>,
    /// Agent names tenants may choose.
    agents: Vec<String>,
    /// Serialises admin changes, so "is it taken?" and "take it" are one step.
    admin: Mutex<()>,
    open_locks: Vec<Mutex<()>>,
    ticket_secret: Vec<u8>,
    config: RuntimeConfig,
    durability: String,
    webhooks: WebhooksHandle,
    /// Where requests made for tenants may go (the SSRF guard).
    policy: EgressPolicy,
    /// Each tenant's live feed for the agent console.
    feeds: Feeds,
}

/// What keeps this configuration from starting (before anything is opened):
/// the egress allow-list, the webhook settings and endpoints, and every
/// configured tenant's agent and URLs. Returns the egress policy.
pub fn check_config(config: &RuntimeConfig) -> Result<EgressPolicy> {
    let policy = EgressPolicy::new(&config.egress.allow).map_err(Error::Startup)?;
    if let Some(problem) = config.webhooks.problem() {
        return Err(Error::Startup(problem));
    }
    let tenants: TenantDirectory = Arc::new(DashMap::new());
    for (id, settings) in &config.tenants {
        if let Some(problem) = settings.agent_problem() {
            return Err(Error::Startup(format!("tenant `{id}`: {problem}")));
        }
        tenants.insert(TenantId(id.clone()), Arc::new(settings.clone()));
    }
    webhook_admin::check_configured(config, &tenants, &policy)?;
    Ok(policy)
}

impl Runtime {
    /// Opens the database, applies migrations and starts the tree. `agents`
    /// adds providers to the built-in `echo` (a later one of the same name wins).
    pub async fn start(config: RuntimeConfig, agents: AgentRegistry) -> Result<Runtime> {
        let endpoint = match &config.storage.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => Database::surrealkv_endpoint(std::path::Path::new(&config.storage.data_dir))?,
        };
        let durability = describe_durability(&endpoint);
        let policy = check_config(&config)?;
        tracing::info!(%endpoint, durability = %durability, "opening database");
        let db = Database::open(
            &endpoint,
            &config.storage.namespace,
            &config.storage.database,
        )
        .await?;
        let ticket_secret = db.ticket_secret().await?;
        let (stored_tenants, stored_keys) = db.load_access().await?;

        let mut registry: AgentRegistry = HashMap::new();
        let echo: Arc<dyn AgentProvider> = Arc::new(EchoAgent {
            word_delay: Duration::from_millis(config.agents.echo.word_delay_ms),
        });
        registry.insert("echo".into(), echo);
        registry.insert("external".into(), Arc::new(crate::agent::ExternalAgent));
        registry.insert("openai".into(), crate::openai::provider(policy.clone()));
        registry.insert(
            "webhook".into(),
            crate::webhook_agent::provider(policy.clone()),
        );
        registry.extend(agents);

        let mut agent_names: Vec<String> = registry.keys().cloned().collect();
        agent_names.sort();
        let tenants: TenantDirectory = Arc::new(DashMap::new());
        let configured = config
            .tenants
            .iter()
            .map(|(id, settings)| (TenantId(id.clone()), settings.clone()));
        let stored_at: DashMap<TenantId, String> = stored_tenants
            .iter()
            .filter(|record| !config.tenants.contains_key(&record.tenant_id.0))
            .map(|record| (record.tenant_id.clone(), record.created_at.clone()))
            .collect();
        let stored = stored_tenants
            .into_iter()
            .map(|record| (record.tenant_id, record.settings));
        for (id, settings) in configured.chain(stored) {
            if let Some(problem) = settings.agent_problem() {
                return Err(Error::Startup(format!("tenant `{id}`: {problem}")));
            }
            if !registry.contains_key(&settings.agent) {
                return Err(Error::Startup(format!(
                    "tenant `{id}` uses agent `{}`, which is not one of: {}",
                    settings.agent,
                    agent_names.join(", ")
                )));
            }
            if tenants.contains_key(&id) {
                tracing::warn!(tenant = %id, "tenant is both in the config file and stored; the config file wins");
                continue;
            }
            tenants.insert(id, Arc::new(settings));
        }
        webhook_admin::check_configured(&config, &tenants, &policy)?;
        let keys = stored_keys
            .into_iter()
            .map(|key| (key.hash.clone(), key))
            .collect();
        let sessions: SessionRegistry = Arc::new(DashMap::new());
        let feeds = Feeds::default();
        let args = RootArgs {
            feeds: feeds.clone(),
            db,
            config: config.clone(),
            tenants: tenants.clone(),
            agents: registry,
            registry: sessions.clone(),
            policy: policy.clone(),
        };
        let (root, root_task) = Actor::spawn(None, Root, args).await.map_err(|error| {
            Error::Startup(format!("the supervision tree did not start: {error}"))
        })?;
        let storage = match root.call(RootMsg::Storage, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(storage)) => storage,
            _ => return Err(Error::Startup("the root supervisor did not answer".into())),
        };
        let webhooks = match root.call(RootMsg::Webhooks, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(webhooks)) => webhooks,
            _ => return Err(Error::Startup("the root supervisor did not answer".into())),
        };
        Ok(Runtime {
            inner: Arc::new(Inner {
                root,
                root_task: Mutex::new(Some(root_task)),
                storage,
                registry: sessions,
                tenants,
                keys,
                stored_tenants: stored_at,
                agents: agent_names,
                admin: Mutex::new(()),
                open_locks: (0..OPEN_LOCKS).map(|_| Mutex::new(())).collect(),
                ticket_secret,
                config,
                durability,
                webhooks,
                policy,
                feeds,
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// How writes reach the disk, as logged at start-up.
    pub fn durability(&self) -> &str {
        &self.inner.durability
    }

    /// The secret that signs WebSocket tickets; kept in the database across restarts.
    pub fn ticket_secret(&self) -> &[u8] {
        &self.inner.ticket_secret
    }

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
    async fn store_tenant(&self, record: &TenantRecord) -> Result<()> {
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
        Ok(())
    }

    /// Checks settings from the admin API; the error names the field.
    fn validate_settings(&self, settings: &TenantSettings) -> Result<()> {
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
            if !crate::config::is_web_origin(origin) {
                return Err(Error::InvalidInput(format!(
                    "`allowed_origins[{index}]`: `{origin}` is not an origin like https://shop.example"
                )));
            }
        }
        if settings.greeting.len() > 2000 {
            return Err(Error::InvalidInput(
                "`greeting` must be at most 2000 bytes".into(),
            ));
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
        Ok((record, key))
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
        Ok(record)
    }

    /// How many conversations are live (in memory) on this node.
    pub fn live_sessions(&self) -> usize {
        self.inner.registry.len()
    }

    /// True while the database answers and the root supervisor runs.
    pub async fn ready(&self) -> bool {
        matches!(
            self.inner
                .root
                .call(RootMsg::Storage, Some(Duration::from_secs(2)))
                .await,
            Ok(CallResult::Success(_))
        ) && self
            .inner
            .storage
            .list_sessions(&TenantId(String::new()), None, None, 1)
            .await
            .is_ok()
    }

    /// Creates a conversation, owned by the scope's client if there is one;
    /// it is durable when this returns.
    pub async fn create_session(
        &self,
        scope: &Scope,
        context: Map<String, Value>,
        title: Option<String>,
    ) -> Result<SessionRecord> {
        self.create(scope, context, title, None).await
    }

    /// The webchat conversation the client calls `external_id`; with `open`,
    /// one is opened for an id never seen. Two first messages racing with one
    /// id get the same conversation.
    pub async fn webchat_conversation(
        &self,
        tenant: &TenantId,
        external_id: &str,
        open: bool,
    ) -> Result<SessionRecord> {
        self.known_tenant(tenant)?;
        let find = || {
            self.inner
                .storage
                .find_external(tenant, WEBCHAT, external_id)
        };
        if let Some(record) = find().await? {
            return Ok(record);
        }
        let not_found = || Error::UnknownExternal {
            channel: WEBCHAT,
            id: external_id.to_owned(),
        };
        if !open {
            return Err(not_found());
        }
        let stripe = {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            BuildHasherDefault::<DefaultHasher>::default().hash_one((tenant, external_id)) as usize
                % OPEN_LOCKS
        };
        let _open = self.inner.open_locks[stripe].lock().await;
        if let Some(record) = find().await? {
            return Ok(record);
        }
        let channel = Some((WEBCHAT.to_owned(), external_id.to_owned()));
        self.create(&Scope::tenant(tenant.clone()), Map::new(), None, channel)
            .await
    }

    async fn create(
        &self,
        scope: &Scope,
        context: Map<String, Value>,
        title: Option<String>,
        channel: Option<(String, String)>,
    ) -> Result<SessionRecord> {
        self.known_tenant(&scope.tenant)?;
        let (channel, external_id) = channel.unzip();
        let now = now_timestamp();
        let record = SessionRecord {
            id: SessionId::new(),
            tenant: scope.tenant.clone(),
            status: "active".into(),
            context,
            created_at: now.clone(),
            updated_at: now,
            last_seq: 0,
            message_count: 0,
            client_id: scope.client.clone(),
            title,
            version: 1,
            channel,
            external_id,
            consent: None,
            handoff: None,
            human: None,
        };
        let event = crate::events::conversation_created(&record);
        self.inner
            .storage
            .write_and_wait(Write::WithEvents(
                Box::new(Write::CreateSession(Box::new(record.clone()))),
                vec![event],
            ))
            .await?;
        self.inner
            .feeds
            .publish(&record.tenant, || FeedFrame::Conversation {
                change: Change::Created,
                conversation: Box::new(ConversationSummary::from(&record)),
            });
        Ok(record)
    }

    /// The tenant's conversations as the agent console lists them, most
    /// recently updated first; a live one says who is connected and its last
    /// message.
    pub async fn console_conversations(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>> {
        let records = self
            .list_sessions(&Scope::tenant(tenant.clone()), None, limit)
            .await?;
        let mut summaries = Vec::with_capacity(records.len());
        for record in &records {
            let live = self
                .inner
                .registry
                .get(&(tenant.clone(), record.id))
                .map(|entry| entry.value().clone());
            let summary = match live {
                Some(actor) => match actor
                    .call(|reply| SessionMsg::Summary { reply }, Some(CALL_TIMEOUT))
                    .await
                {
                    Ok(CallResult::Success(summary)) => summary,
                    _ => ConversationSummary::from(record),
                },
                None => ConversationSummary::from(record),
            };
            summaries.push(summary);
        }
        Ok(summaries)
    }

    /// A receiver of the tenant's live feed (see `feed.rs`).
    pub fn console_feed(&self, tenant: &TenantId) -> Result<broadcast::Receiver<Frame>> {
        self.known_tenant(tenant)?;
        Ok(self.inner.feeds.subscribe(tenant))
    }

    /// A member of staff takes the conversation over (its agent becomes
    /// `human`); durable when this returns.
    pub async fn take_over(
        &self,
        tenant: &TenantId,
        session: SessionId,
        attendant: Attendant,
    ) -> Result<Attendant> {
        self.call_session(&Scope::tenant(tenant.clone()), session, |reply| {
            SessionMsg::TakeOver {
                attendant: attendant.clone(),
                reply,
            }
        })
        .await
    }

    /// Hands the conversation back to the AI; durable when this returns.
    pub async fn hand_back(&self, tenant: &TenantId, session: SessionId, by: &str) -> Result<()> {
        self.call_session(&Scope::tenant(tenant.clone()), session, |reply| {
            SessionMsg::HandBack {
                by: by.to_owned(),
                reply,
            }
        })
        .await
    }

    /// The conversations this scope may see, most recently updated first.
    /// The conversations this scope may see (with this status, if given),
    /// most recently updated first.
    pub async fn list_sessions(
        &self,
        scope: &Scope,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>> {
        self.known_tenant(&scope.tenant)?;
        self.inner
            .storage
            .list_sessions(
                &scope.tenant,
                scope.client.as_deref(),
                status,
                limit.clamp(1, MAX_LIST),
            )
            .await
    }

    /// One conversation, if it exists and this scope may see it. Another
    /// tenant's or another client's is reported exactly like a missing one.
    pub async fn session(&self, scope: &Scope, session: SessionId) -> Result<SessionRecord> {
        self.known_tenant(&scope.tenant)?;
        self.inner
            .storage
            .load_session(&scope.tenant, session)
            .await?
            .filter(|record| scope.may_see(record))
            .ok_or_else(|| Error::SessionNotFound {
                tenant: scope.tenant.clone(),
                session,
            })
    }

    /// The newest `limit` messages of a conversation, oldest first.
    pub async fn history(
        &self,
        scope: &Scope,
        session: SessionId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        self.session(scope, session).await?;
        self.inner
            .storage
            .load_messages(MessageQuery {
                tenant: scope.tenant.clone(),
                session,
                after_seq: 0,
                limit,
                newest: true,
            })
            .await
    }

    /// Merges `patch` into the conversation's context; returns the result once durable.
    pub async fn update_context(
        &self,
        scope: &Scope,
        session: SessionId,
        patch: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        self.call_session(scope, session, |reply| SessionMsg::UpdateContext {
            patch: patch.clone(),
            reply,
        })
        .await
    }

    /// Changes a conversation's title or status against the version the caller
    /// last saw; returns the conversation as it is now. A stale version is
    /// `VersionConflict` with the current one.
    pub async fn update_conversation(
        &self,
        scope: &Scope,
        session: SessionId,
        change: MetaChange,
    ) -> Result<SessionRecord> {
        self.call_session(scope, session, |reply| SessionMsg::UpdateMeta {
            change: change.clone(),
            reply,
        })
        .await?;
        self.session(scope, session).await
    }

    /// Posts a user message as a back end would; answered once it is durable.
    pub async fn post_message(
        &self,
        scope: &Scope,
        session: SessionId,
        message: NewMessage,
    ) -> Result<Ack> {
        self.call_session(scope, session, |reply| SessionMsg::Post {
            message: message.clone(),
            reply,
        })
        .await
    }

    /// Posts a user message and hands back, once it is durable, where its
    /// answer will arrive. The answer is generated and stored whether or not
    /// anyone still waits for it.
    pub async fn ask(
        &self,
        scope: &Scope,
        session: SessionId,
        message: NewMessage,
    ) -> Result<(Ack, AnswerReceiver)> {
        self.call_session(scope, session, |reply| SessionMsg::Ask {
            message: message.clone(),
            reply,
        })
        .await
    }

    /// Records a visitor's consent decision on their conversation; durable
    /// when this returns.
    pub async fn record_consent(
        &self,
        scope: &Scope,
        session: SessionId,
        consent: Consent,
    ) -> Result<()> {
        self.call_session(scope, session, |reply| SessionMsg::RecordConsent {
            consent: consent.clone(),
            reply,
        })
        .await
    }

    /// Opens a request for a person to take over the conversation: flags it
    /// and records `handoff.requested`. An open request is returned as it is
    /// (`false`: nothing new was recorded, nobody is notified twice).
    pub async fn request_handoff(
        &self,
        scope: &Scope,
        session: SessionId,
        requested_by: &str,
        reason: Option<String>,
    ) -> Result<(crate::domain::Handoff, bool)> {
        let handoff = crate::domain::Handoff {
            requested_at: now_timestamp(),
            requested_by: requested_by.to_owned(),
            reason,
        };
        self.call_session(scope, session, |reply| SessionMsg::RequestHandoff {
            handoff: handoff.clone(),
            reply,
        })
        .await
    }

    /// Adds the geolocation of a stored message's address, looked up after
    /// the message was stored. Only messages with an origin are changed.
    pub async fn set_message_geo(
        &self,
        tenant: &TenantId,
        message: MessageId,
        geo: Value,
    ) -> Result<()> {
        self.inner
            .storage
            .write_and_wait(Write::SetMessageGeo {
                tenant: tenant.clone(),
                message,
                geo,
            })
            .await
    }

    /// The contact captured in a conversation, if any.
    pub async fn contact(&self, scope: &Scope, session: SessionId) -> Result<Option<Contact>> {
        self.session(scope, session).await?;
        self.inner
            .storage
            .load_contact(&scope.tenant, session)
            .await
    }

    /// The tenant's newest recorded events (of one conversation, if given), newest first.
    pub async fn events(
        &self,
        tenant: &TenantId,
        conversation: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<EventRecord>> {
        self.known_tenant(tenant)?;
        self.inner
            .storage
            .list_events(tenant, conversation, limit.clamp(1, MAX_LIST))
            .await
    }

    /// Deletes a conversation and its log, closing its sockets with a reason.
    pub async fn delete_session(&self, scope: &Scope, session: SessionId) -> Result<()> {
        self.check_owner(scope, session).await?;
        let actor = self.tenant_actor(&scope.tenant).await?;
        reply_of(
            actor
                .call(
                    |reply| TenantMsg::Delete { session, reply },
                    Some(CALL_TIMEOUT),
                )
                .await,
            "tenant",
        )?;
        self.inner
            .feeds
            .publish(&scope.tenant, || FeedFrame::Deleted {
                session_id: session,
            });
        Ok(())
    }

    /// Attaches a socket to a conversation. With `after_seq`, what was stored
    /// after it is replayed first.
    pub async fn connect(
        &self,
        scope: &Scope,
        session: SessionId,
        after_seq: Option<u64>,
        participant: Participant,
    ) -> Result<Attached> {
        self.check_owner(scope, session).await?;
        self.attach(&scope.tenant, session, after_seq, true, participant)
            .await
    }

    /// Re-attaches a socket whose session restarted, replaying what was stored
    /// after `after_seq`; no second greeting.
    pub async fn reattach(
        &self,
        scope: &Scope,
        session: SessionId,
        after_seq: u64,
        participant: Participant,
    ) -> Result<Attached> {
        self.check_owner(scope, session).await?;
        self.attach(&scope.tenant, session, Some(after_seq), false, participant)
            .await
    }

    /// Asks the conversation's live session (started if need be), after
    /// checking that a client-scoped caller owns it; `build` makes the
    /// message anew for each attempt.
    async fn call_session<T: Send + 'static>(
        &self,
        scope: &Scope,
        session: SessionId,
        build: impl Fn(RpcReplyPort<Result<T>>) -> SessionMsg,
    ) -> Result<T> {
        self.check_owner(scope, session).await?;
        self.with_session(&scope.tenant, session, |actor| {
            let build = &build;
            async move { actor.call(build, Some(CALL_TIMEOUT)).await }
        })
        .await
    }

    /// For a client-scoped call, that the conversation is this client's. (A
    /// tenant-wide call needs no read here: the session actor's start checks
    /// that it exists in the tenant.)
    async fn check_owner(&self, scope: &Scope, session: SessionId) -> Result<()> {
        if scope.client.is_some() {
            self.session(scope, session).await?;
        }
        Ok(())
    }

    async fn attach(
        &self,
        tenant: &TenantId,
        session: SessionId,
        after_seq: Option<u64>,
        greet: bool,
        participant: Participant,
    ) -> Result<Attached> {
        self.with_session(tenant, session, |actor| {
            let participant = participant.clone();
            async move {
                actor
                    .call(
                        |reply| SessionMsg::Attach {
                            after_seq,
                            greet,
                            participant,
                            reply,
                        },
                        Some(CALL_TIMEOUT),
                    )
                    .await
            }
        })
        .await
    }

    /// Test hook: panics the live session's handler, to exercise supervision.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_session_panic(&self, tenant: &TenantId, session: SessionId) -> Result<()> {
        let actor = self.tenant_actor(tenant).await?;
        actor
            .cast(TenantMsg::InjectSessionPanic(session))
            .map_err(|_| Error::Unavailable("tenant"))
    }

    /// Stops the tree in order: sessions store answers in progress and close
    /// their sockets with a reason, persistence drains, the root stops.
    pub async fn shutdown(&self) {
        let _ = self
            .inner
            .root
            .call(RootMsg::Shutdown, Some(Duration::from_secs(60)))
            .await;
        if let Some(task) = self.inner.root_task.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    pub fn known_tenant(&self, tenant: &TenantId) -> Result<()> {
        if self.inner.tenants.contains_key(tenant) {
            Ok(())
        } else {
            Err(Error::TenantNotFound(tenant.clone()))
        }
    }

    async fn tenant_actor(&self, tenant: &TenantId) -> Result<ActorRef<TenantMsg>> {
        self.known_tenant(tenant)?;
        let id = tenant.clone();
        reply_of(
            self.inner
                .root
                .call(|reply| RootMsg::Tenant { id, reply }, Some(CALL_TIMEOUT))
                .await,
            "root",
        )
    }

    async fn session_actor(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<ActorRef<SessionMsg>> {
        if let Some(actor) = self.inner.registry.get(&(tenant.clone(), session)) {
            return Ok(actor.clone());
        }
        let actor = self.tenant_actor(tenant).await?;
        reply_of(
            actor
                .call(
                    |reply| TenantMsg::Session { session, reply },
                    Some(CALL_TIMEOUT),
                )
                .await,
            "tenant",
        )
    }

    /// Runs `request` against the live session, retrying when the session
    /// stopped between lookup and delivery (passivation or a crash).
    async fn with_session<T, F, Fut, E>(
        &self,
        tenant: &TenantId,
        session: SessionId,
        request: F,
    ) -> Result<T>
    where
        F: Fn(ActorRef<SessionMsg>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<CallResult<Result<T>>, E>>,
    {
        let mut last = Error::Unavailable("session");
        for attempt in 0..SESSION_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
            }
            let actor = self.session_actor(tenant, session).await?;
            match request(actor.clone()).await {
                Ok(CallResult::Success(result)) => return result,
                Ok(CallResult::Timeout) => return Err(Error::Unavailable("session")),
                Ok(CallResult::SenderError) | Err(_) => {
                    self.inner
                        .registry
                        .remove_if(&(tenant.clone(), session), |_, live| {
                            live.get_id() == actor.get_id()
                        });
                    last = Error::Unavailable("session");
                }
            }
        }
        Err(last)
    }
}

fn reply_of<T, E>(
    answer: std::result::Result<CallResult<Result<T>>, E>,
    who: &'static str,
) -> Result<T> {
    match answer {
        Ok(CallResult::Success(result)) => result,
        _ => Err(Error::Unavailable(who)),
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

fn describe_durability(endpoint: &str) -> String {
    if endpoint.starts_with("mem:") {
        "in memory: nothing survives a restart".into()
    } else if endpoint.starts_with("surrealkv") && endpoint.contains("sync=every") {
        "surrealkv, fsync on every commit (group-committed batches)".into()
    } else {
        format!("as configured by the endpoint ({endpoint})")
    }
}
