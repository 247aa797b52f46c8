//! Starting and stopping the runtime: checking a configuration before
//! anything is opened, opening the database, building the agent registry
//! and the tenant directory, and starting the supervision tree.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::Actor;
use ractor::rpc::CallResult;
use tokio::sync::Mutex;

use super::handle::{CALL_TIMEOUT, Inner, OPEN_LOCKS, Runtime, stop_as_owner_lost};
use super::retention::{Retention, RetentionArgs};
use crate::agent::builtin::{EchoAgent, ExternalAgent};
use crate::agent::{AgentProvider, AgentRegistry};
use crate::cluster::{
    Cluster, DropSessions, Hooks, LocalSessions, LocalStreams, OnAccessChanged, OnNudge,
};
use crate::config::RuntimeConfig;
use crate::conversation::feed::Feeds;
use crate::conversation::session::SessionMsg;
use crate::error::{Error, Result};
use crate::model::{TenantId, TenantRecord};
use crate::net::egress::EgressPolicy;
use crate::store::{Database, Sealer, is_server};
use crate::tree::root::{Root, RootArgs, RootMsg, TenantDirectory};
use crate::tree::tenant::SessionRegistry;
use crate::webhooks::{NudgerSlot, WebhooksMsg};

impl Runtime {
    /// Opens the database, applies migrations and starts the tree. `agents`
    /// adds providers to the built-in `echo` (a later one of the same name wins).
    pub async fn start(config: RuntimeConfig, agents: AgentRegistry) -> Result<Runtime> {
        let policy = check_config(&config)?;
        let (mut db, durability) = open_database(&config.storage).await?;
        let fence = match config.cluster.enabled() {
            true => Some(Cluster::join(&config.cluster, &db).await?),
            false => None,
        };
        if let Some(fence) = &fence {
            db = db.fenced_by(fence.clone());
        }
        let cluster_db = db.clone();
        let ticket_secret = db.ticket_secret().await?;
        let (stored_tenants, stored_keys) = db.load_access().await?;
        let registry = agent_registry(&config, &policy, agents);
        let mut agent_names: Vec<String> = registry.keys().cloned().collect();
        agent_names.sort();
        let (tenants, stored_at) = tenant_directory(&config, stored_tenants, &agent_names)?;
        super::webhooks::check_configured(&config, &tenants, &policy)?;
        let keys = stored_keys
            .into_iter()
            .map(|key| (key.hash.clone(), key))
            .collect();
        let sessions: SessionRegistry = Arc::new(DashMap::new());
        let feeds = Feeds::default();
        let nudger: NudgerSlot = Arc::default();
        let args = RootArgs {
            feeds: feeds.clone(),
            db,
            config: config.clone(),
            tenants: tenants.clone(),
            agents: registry,
            registry: sessions.clone(),
            policy: policy.clone(),
            nudger: nudger.clone(),
        };
        let (root, root_task) = Actor::spawn(None, Root, args).await.map_err(|error| {
            Error::Startup(format!("the supervision tree did not start: {error}"))
        })?;
        let storage = ask_root(&root, RootMsg::Storage).await?;
        let webhooks = ask_root(&root, RootMsg::Webhooks).await?;
        let analyst = ask_root(&root, RootMsg::Analyst).await?;
        let runtime = Runtime {
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
                stream_names: format!("stream\u{0}{}\u{0}", uuid::Uuid::now_v7().simple()),
                config,
                durability,
                webhooks,
                analyst,
                policy,
                feeds,
                retention: std::sync::OnceLock::new(),
                cluster: std::sync::OnceLock::new(),
            }),
        };
        if let Some(fence) = fence {
            runtime.start_cluster(fence, cluster_db, nudger).await?;
        }
        let retention = RetentionArgs {
            runtime: Arc::downgrade(&runtime.inner),
            config: runtime.inner.config.retention.clone(),
        };
        let (actor, _) = Actor::spawn(None, Retention, retention)
            .await
            .map_err(|error| Error::Startup(format!("retention did not start: {error}")))?;
        let _ = runtime.inner.retention.set(actor.get_cell());
        Ok(runtime)
    }

    /// Starts this node's part in the cluster, handing it the two ways it
    /// reaches the tree: a session of this node, and stopping them all.
    async fn start_cluster(
        &self,
        fence: Arc<crate::store::Fence>,
        db: Database,
        nudger: NudgerSlot,
    ) -> Result<()> {
        let weak = Arc::downgrade(&self.inner);
        let local: LocalSessions = Arc::new(move |tenant, session| {
            let inner = weak.upgrade();
            Box::pin(async move {
                let runtime = Runtime {
                    inner: inner.ok_or(Error::ShuttingDown)?,
                };
                runtime.local_session_actor(&tenant, session).await
            })
        });
        let weak = Arc::downgrade(&self.inner);
        let local_streams: LocalStreams = Arc::new(move |tenant, path, call| {
            let inner = weak.upgrade();
            Box::pin(async move {
                let runtime = Runtime {
                    inner: inner.ok_or(Error::ShuttingDown)?,
                };
                runtime.serve_stream_call(tenant, path, call).await
            })
        });
        let weak = Arc::downgrade(&self.inner);
        let drop_sessions: DropSessions = Arc::new(move || {
            let inner = weak.upgrade();
            Box::pin(async move {
                if let Some(inner) = inner {
                    let runtime = Runtime { inner };
                    runtime.drop_live_sessions().await;
                    // A stream's lease is void with the epoch too.
                    runtime.stop_streams().await;
                }
            })
        });
        let webhooks = self.inner.webhooks.clone();
        let on_nudge: OnNudge = Arc::new(move |nudge| {
            let _ = webhooks.actor().cast(WebhooksMsg::Nudged(nudge));
        });
        let config = &self.inner.config;
        let (cluster, limits) = (config.cluster.clone(), config.limits.clone());
        let weak = Arc::downgrade(&self.inner);
        let on_access_changed: OnAccessChanged = Arc::new(move || {
            if let Some(inner) = weak.upgrade() {
                tokio::spawn(async move { Runtime { inner }.reload_access().await });
            }
        });
        let hooks = Hooks {
            local,
            local_streams,
            drop_sessions,
            on_nudge,
            on_access_changed,
            feeds: self.inner.feeds.clone(),
        };
        let cluster = Cluster::start(cluster, limits, fence, db, hooks).await?;
        let weak = Arc::downgrade(&cluster);
        let _ = nudger.set(Arc::new(move |node, nudge| {
            if let Some(cluster) = weak.upgrade() {
                cluster.nudge(node, nudge);
            }
        }));
        let _ = self.inner.cluster.set(cluster);
        Ok(())
    }

    /// Stops every live session without writing anything more: their
    /// sockets are closed with `owner_lost` and reconnect.
    async fn drop_live_sessions(&self) {
        let live: Vec<ractor::ActorRef<SessionMsg>> = self
            .inner
            .registry
            .iter()
            .map(|entry| entry.value().clone())
            .collect();
        stop_as_owner_lost(&live).await;
    }

    /// Stops the tree: tenants hand over their last writes, persistence
    /// drains, webhooks flush what they can.
    pub async fn shutdown(&self) {
        if let Some(retention) = self.inner.retention.get() {
            retention.stop(None);
        }
        self.stop_streams().await;
        let _ = self
            .inner
            .root
            .call(RootMsg::Shutdown, Some(Duration::from_secs(60)))
            .await;
        if let Some(task) = self.inner.root_task.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        if let Some(cluster) = self.inner.cluster.get() {
            cluster.leave().await;
        }
    }
}

/// What keeps this configuration from starting (before anything is opened):
/// the egress allow-list, the webhook settings and endpoints, and every
/// configured tenant's agent and URLs. Returns the egress policy.
pub fn check_config(config: &RuntimeConfig) -> Result<EgressPolicy> {
    let policy = EgressPolicy::new(&config.egress.allow).map_err(Error::Startup)?;
    if let Some(problem) = config.webhooks.problem() {
        return Err(Error::Startup(problem));
    }
    config.retention.timings().map_err(Error::Startup)?;
    if let Some(problem) = config.storage.problem() {
        return Err(Error::Startup(problem));
    }
    if let Some(problem) = config.cluster.problem() {
        return Err(Error::Startup(problem));
    }
    let shared = config.storage.endpoint.as_deref().is_some_and(is_server);
    if config.cluster.enabled() && !shared {
        return Err(Error::Startup(
            "cluster needs a shared SurrealDB server: set storage.endpoint to ws://… or wss://…"
                .into(),
        ));
    }
    let tenants: TenantDirectory = Arc::new(DashMap::new());
    for (id, settings) in &config.tenants {
        if let Some(problem) = settings.agent_problem() {
            return Err(Error::Startup(format!("tenant `{id}`: {problem}")));
        }
        tenants.insert(TenantId(id.clone()), Arc::new(settings.clone()));
    }
    super::webhooks::check_configured(config, &tenants, &policy)?;
    Ok(policy)
}

/// Opens (and migrates) the configured store; the embedded one keeps its
/// filesystem's free-space reserve. Returns it and how durable it is.
async fn open_database(storage: &crate::config::StorageConfig) -> Result<(Database, String)> {
    let data_dir = std::path::Path::new(&storage.data_dir);
    let endpoint = match &storage.endpoint {
        Some(endpoint) => endpoint.clone(),
        None => crate::store::surrealkv_endpoint(data_dir)?,
    };
    let durability = describe_durability(&endpoint);
    let sealer = Sealer::new(&storage.sealing)?;
    tracing::info!(%endpoint, durability = %durability, "opening database");
    let credentials = storage.credentials.as_ref();
    let db = Database::open_signed_in(
        &endpoint,
        &storage.namespace,
        &storage.database,
        credentials,
    )
    .await?
    .sealing_with(sealer);
    let resealed = db.reseal_secrets().await?;
    if resealed > 0 {
        tracing::info!(
            records = resealed,
            "stored secrets resealed with the current key"
        );
    }
    if storage.sealing.current.is_none() && !endpoint.starts_with("mem:") {
        tracing::warn!(
            "{} is not set: webhook, tool and model secrets are stored in plain text",
            crate::config::SealingKeys::CURRENT
        );
    }
    let db = match &storage.endpoint {
        Some(_) => db,
        None => db.keeping_free(data_dir, storage.min_free_mb),
    };
    Ok((db, durability))
}

fn describe_durability(endpoint: &str) -> String {
    if endpoint.starts_with("mem:") {
        "in memory: nothing survives a restart".into()
    } else if endpoint.starts_with("surrealkv") && endpoint.contains("sync=every") {
        "surrealkv, fsync on every commit (group-committed batches)".into()
    } else if crate::store::is_server(endpoint) {
        format!("a SurrealDB server ({endpoint}): as durable as its storage")
    } else {
        format!("as configured by the endpoint ({endpoint})")
    }
}

/// The built-in providers (`echo`, `external`, `openai`, `webhook`), then `agents`.
fn agent_registry(
    config: &RuntimeConfig,
    policy: &EgressPolicy,
    agents: AgentRegistry,
) -> AgentRegistry {
    let mut registry: AgentRegistry = HashMap::new();
    let echo: Arc<dyn AgentProvider> = Arc::new(EchoAgent {
        word_delay: Duration::from_millis(config.agents.echo.word_delay_ms),
    });
    registry.insert("echo".into(), echo);
    registry.insert("external".into(), Arc::new(ExternalAgent));
    registry.insert(
        "openai".into(),
        crate::agent::openai::provider(policy.clone()),
    );
    registry.insert(
        "webhook".into(),
        crate::agent::webhook::provider(policy.clone()),
    );
    registry.extend(agents);
    registry
}

/// Every tenant, from the config file and the database (the file wins a
/// clash), each checked against the agents there are; and when each stored
/// tenant was made.
fn tenant_directory(
    config: &RuntimeConfig,
    stored_tenants: Vec<TenantRecord>,
    agent_names: &[String],
) -> Result<(TenantDirectory, DashMap<TenantId, String>)> {
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
        if !agent_names.contains(&settings.agent) {
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
    Ok((tenants, stored_at))
}

/// Asks the root supervisor for one of its handles.
async fn ask_root<T: Send + 'static>(
    root: &ractor::ActorRef<RootMsg>,
    ask: impl FnOnce(ractor::RpcReplyPort<T>) -> RootMsg,
) -> Result<T> {
    match root.call(ask, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(answer)) => Ok(answer),
        _ => Err(Error::Startup("the root supervisor did not answer".into())),
    }
}
