//! The [`Runtime`] handle and what every call shares: the state behind it,
//! finding (or starting) a tenant's or a conversation's actor, and calling a
//! live session with retries when it stopped under our feet.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Owner};
use crate::config::RuntimeConfig;
use crate::conversation::feed::Feeds;
use crate::conversation::outbound::CloseReason;
use crate::conversation::session::SessionMsg;
use crate::error::{Error, Result};
use crate::insights::AnalystHandle;
use crate::model::{ApiKeyRecord, Scope, SessionId, TenantId};
use crate::net::egress::EgressPolicy;
use crate::store::Storage;
use crate::tree::root::{RootMsg, TenantDirectory};
use crate::tree::tenant::{SessionRegistry, TenantMsg};
use crate::webhooks::WebhooksHandle;

/// How long a request waits for an actor's answer before reporting it unavailable.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to reach a session that stopped under our feet (passivation, restart).
const SESSION_ATTEMPTS: usize = 3;
/// The most conversations one listing returns.
pub const MAX_LIST: usize = 1000;
/// The channel name of the webchat surface, on its conversations and messages.
pub const WEBCHAT: &str = "webchat";
/// Locks that make "find the conversation of this webchat id, or open it" one
/// step per id: striped, so memory does not grow with visitors.
pub(super) const OPEN_LOCKS: usize = 64;

/// A running supervision tree. Cheap to clone; every clone is the same runtime.
#[derive(Clone)]
pub struct Runtime {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) root: ActorRef<RootMsg>,
    pub(super) root_task: Mutex<Option<JoinHandle<()>>>,
    pub(super) storage: Storage,
    pub(super) registry: SessionRegistry,
    pub(super) tenants: TenantDirectory,
    /// Stored keys that are not revoked, by the SHA-256 of the key.
    pub(super) keys: DashMap<String, ApiKeyRecord>,
    /// Tenants made through the admin API, with when: only these can be changed there.
    pub(super) stored_tenants: DashMap<TenantId, String>,
    /// Agent names tenants may choose.
    pub(super) agents: Vec<String>,
    /// Serialises admin changes, so "is it taken?" and "take it" are one step.
    pub(super) admin: Mutex<()>,
    pub(super) open_locks: Vec<Mutex<()>>,
    pub(super) ticket_secret: Vec<u8>,
    /// What this runtime's stream actors' names start with (unique to it).
    pub(super) stream_names: String,
    pub(super) config: RuntimeConfig,
    pub(super) durability: String,
    pub(super) webhooks: WebhooksHandle,
    /// The Analyst: insights.
    pub(super) analyst: AnalystHandle,
    /// Where requests made for tenants may go (the SSRF guard).
    pub(super) policy: EgressPolicy,
    /// Each tenant's live feed for the agent console.
    pub(super) feeds: Feeds,
    /// The retention actor, once started (stopped first at shutdown).
    pub(super) retention: std::sync::OnceLock<ractor::ActorCell>,
    /// This node's part in a cluster, once started (`[cluster]` only).
    pub(super) cluster: std::sync::OnceLock<Arc<Cluster>>,
}

impl Runtime {
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

    /// How many conversations are live (in memory) on this node.
    pub fn live_sessions(&self) -> usize {
        self.inner.registry.len()
    }

    /// Every tenant's stored data as one SurrealQL dump (SurrealDB's export),
    /// after the writes queued so far have committed.
    pub async fn export_database(&self) -> Result<String> {
        self.inner.storage.export().await
    }

    /// True while the database answers and the root supervisor runs.
    /// Why the store refuses writes now (a full disk), until a write or the
    /// persistence actor's probe commits again.
    pub fn write_failure(&self) -> Option<String> {
        self.inner.storage.write_failure()
    }

    pub async fn ready(&self) -> bool {
        matches!(
            self.inner
                .root
                .call(RootMsg::Storage, Some(Duration::from_secs(2)))
                .await,
            Ok(CallResult::Success(_))
        ) && matches!(
            // A plain read: a listing would first wait for owed counters.
            // Bounded: a server being reconnected to may hold the read.
            tokio::time::timeout(
                Duration::from_secs(2),
                self.inner
                    .storage
                    .load_session(&TenantId(String::new()), crate::model::SessionId::new()),
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// Asks the conversation's live session (started if need be), after
    /// checking that a client-scoped caller owns it; `build` makes the
    /// message anew for each attempt.
    pub(super) async fn call_session<T: Send + 'static>(
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
    pub(super) async fn check_owner(&self, scope: &Scope, session: SessionId) -> Result<()> {
        if scope.client.is_some() {
            self.session(scope, session).await?;
        }
        Ok(())
    }

    pub(super) async fn tenant_actor(&self, tenant: &TenantId) -> Result<ActorRef<TenantMsg>> {
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

    /// The conversation's session: live here, started here, or (in a
    /// cluster) a stand-in for the one its owner runs.
    pub(super) async fn session_actor(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<ActorRef<SessionMsg>> {
        if let Some(actor) = self.inner.registry.get(&(tenant.clone(), session)) {
            return Ok(actor.clone());
        }
        if let Some(cluster) = self.inner.cluster.get() {
            if let Some(proxy) = cluster.live_proxy(tenant, session) {
                return Ok(proxy);
            }
            return match cluster.owner(tenant, session).await? {
                Owner::There(owner) => cluster.proxy(owner, tenant, session).await,
                Owner::Here { epoch } => self.started_under(tenant, session, epoch).await,
            };
        }
        self.started_session(tenant, session).await
    }

    /// The conversation's session on this node, for another node's request:
    /// never a stand-in (a conversation owned by a third node is refused).
    pub(super) async fn local_session_actor(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<ActorRef<SessionMsg>> {
        if let Some(actor) = self.inner.registry.get(&(tenant.clone(), session)) {
            return Ok(actor.clone());
        }
        if let Some(cluster) = self.inner.cluster.get() {
            return match cluster.owner(tenant, session).await? {
                Owner::There(owner) => Err(Error::OwnerUnreachable(owner)),
                Owner::Here { epoch } => self.started_under(tenant, session, epoch).await,
            };
        }
        self.started_session(tenant, session).await
    }

    /// Starts a conversation this node claimed under `epoch`. Should the
    /// node's lease run out while it starts, the keeper may stop the old
    /// epoch's sessions before this one is registered; it would then run on
    /// under the new epoch, its writes passing the fence while its claim is
    /// void and another node takes the conversation. So it is checked once
    /// registered (a keeper that loses the lease after this check finds it
    /// in the registry) and stopped here if the claim no longer holds.
    async fn started_under(
        &self,
        tenant: &TenantId,
        session: SessionId,
        epoch: u64,
    ) -> Result<ActorRef<SessionMsg>> {
        let actor = self.started_session(tenant, session).await?;
        match self.claim_void(epoch, &format!("conversation {session}")) {
            Some(error) => {
                stop_as_owner_lost(std::slice::from_ref(&actor)).await;
                Err(error)
            }
            None => Ok(actor),
        }
    }

    /// The error for something claimed under `epoch` and started since, if
    /// this node's lease ran out or moved on meanwhile (`None`: it holds).
    pub(super) fn claim_void(&self, epoch: u64, what: &str) -> Option<Error> {
        let cluster = self.inner.cluster.get()?;
        if cluster.holds(epoch) {
            return None;
        }
        tracing::warn!(%what, epoch, "this node's lease ran out while it started");
        Some(Error::Fenced(format!(
            "the lease this node claimed {what} under (epoch {epoch}) ran out while it started"
        )))
    }

    /// The session live on this node, started by its tenant if need be.
    async fn started_session(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<ActorRef<SessionMsg>> {
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
    pub(super) async fn with_session<T, F, Fut, E>(
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
                // A stand-in whose owner went away stopped itself: ask
                // again who owns the conversation (perhaps this node now).
                Ok(CallResult::Success(Err(Error::OwnerUnreachable(owner)))) => {
                    last = Error::OwnerUnreachable(owner);
                }
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

pub(super) fn reply_of<T, E>(
    answer: std::result::Result<CallResult<Result<T>>, E>,
    who: &'static str,
) -> Result<T> {
    match answer {
        Ok(CallResult::Success(result)) => result,
        _ => Err(Error::Unavailable(who)),
    }
}

/// Stops these sessions as a node that lost its lease does: closing
/// their sockets with `owner_lost`, writing nothing more.
pub(super) async fn stop_as_owner_lost(live: &[ActorRef<SessionMsg>]) {
    let stops = live.iter().map(|session| {
        session.call(
            |reply| SessionMsg::Terminate {
                reason: CloseReason::owner_lost(),
                keep_partial: false,
                reply,
            },
            Some(CALL_TIMEOUT),
        )
    });
    let stopped = futures_util::future::join_all(stops).await;
    for (session, stop) in live.iter().zip(stopped) {
        // One that did not stop in time must not run on under the new
        // epoch: stopped outright, its answer in progress is dropped.
        if !matches!(stop, Ok(CallResult::Success(()))) {
            session.stop(Some("this node lost its lease".into()));
        }
    }
}
