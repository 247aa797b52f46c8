//! The edge's side of a conversation owned by another node. Both actors are
//! spawned by `Cluster` and unsupervised: each stands for something that
//! lives elsewhere and stops when it goes (`Cluster::node_lost`).
//!
//! `RemoteSession` speaks `SessionMsg`, so the runtime reaches a remote
//! conversation exactly as a local one; each request becomes a `Wire` call
//! to the owner's gateway, in a task of its own. `Relay` is a socket's
//! `Connection` as the edge sees it: it forwards the socket's commands to
//! the owner, and the frames come back into the queue the edge's writer reads.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::shared::{Cluster, Owner, proxy_name};
use super::wire::{Cast, Op, Request, Wire, decode_reply};
use crate::conversation::connection::ConnectionMsg;
use crate::conversation::outbound::outbound_queue;
use crate::conversation::session::{Attached, Joining, SessionMsg};
use crate::error::{Error, Result};
use crate::model::{Participant, SessionId, StoredMessage, TenantId};

/// How long the owner may take to answer (its session's own bound, and a margin).
const CALL_TIMEOUT: Duration = Duration::from_secs(35);

pub(super) async fn spawn_session(
    cluster: &Arc<Cluster>,
    owner: String,
    gateway: ActorRef<Wire>,
    tenant: TenantId,
    session: SessionId,
) -> Result<ActorRef<SessionMsg>> {
    let name = proxy_name(&owner);
    let remote = Remote {
        cluster: Arc::downgrade(cluster),
        owner,
        gateway,
        tenant,
        session,
    };
    let (proxy, _) = Actor::spawn(Some(name), RemoteSession, remote)
        .await
        .map_err(|_| Error::Unavailable("remote session"))?;
    Ok(proxy)
}

/// Where a conversation owned elsewhere is reached.
#[derive(Clone)]
pub(super) struct Remote {
    cluster: std::sync::Weak<Cluster>,
    owner: String,
    gateway: ActorRef<Wire>,
    tenant: TenantId,
    session: SessionId,
}

impl Remote {
    /// Calls the owner; its answer as JSON, or the error it gave (rebuilt),
    /// or `OwnerUnreachable`.
    async fn call(&self, op: Op) -> Result<Value> {
        let request = Request {
            tenant: self.tenant.clone(),
            session: self.session,
            op,
        };
        let call = self
            .gateway
            .call(|reply| Wire::Call { request, reply }, Some(CALL_TIMEOUT));
        let answer = tokio::select! {
            answer = call => answer,
            // A paused owner keeps its connection open and never answers:
            // once its lease is gone, give up on it.
            () = self.owner_gone() => return Err(Error::OwnerUnreachable(self.owner.clone())),
        };
        match answer {
            Ok(CallResult::Success(bytes)) => {
                decode_reply(&bytes).map_err(|error| error.into_error(&self.tenant, self.session))
            }
            _ => Err(Error::OwnerUnreachable(self.owner.clone())),
        }
    }

    /// Returns once the conversation's lease is no longer the owner's (it
    /// may be this node's now: the claim is the check).
    async fn owner_gone(&self) {
        loop {
            let Some(cluster) = self.cluster.upgrade() else {
                return;
            };
            let every = cluster.config.lease() / 3;
            drop(cluster);
            tokio::time::sleep(every).await;
            let Some(cluster) = self.cluster.upgrade() else {
                return;
            };
            match cluster.owner(&self.tenant, self.session).await {
                Ok(Owner::There(owner)) if owner == self.owner => {}
                Ok(_) => return,
                Err(_) => {} // the store is away: the owner may be fine
            }
        }
    }

    async fn typed<T: DeserializeOwned>(&self, op: Op) -> Result<T> {
        let value = self.call(op).await?;
        serde_json::from_value(value)
            .map_err(|error| Error::Storage(format!("the owner's answer did not parse: {error}")))
    }
}

pub(super) struct RemoteSession;

impl Actor for RemoteSession {
    type Msg = SessionMsg;
    type State = Remote;
    type Arguments = Remote;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        remote: Remote,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(remote)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        remote: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let remote = remote.clone();
        match message {
            SessionMsg::Terminate { reply, .. } => {
                // Only the stand-in stops; the owner's session is its own.
                let _ = reply.send(());
                myself.stop(None);
            }
            message => {
                tokio::spawn(async move {
                    if !forward(&remote, message).await {
                        // The owner is gone or moved: the next request asks again.
                        myself.stop(Some("its owner did not answer".into()));
                    }
                });
            }
        }
        Ok(())
    }
}

/// Forwards one message to the owner and answers it; false if the owner
/// could not be reached.
async fn forward(remote: &Remote, message: SessionMsg) -> bool {
    match message {
        SessionMsg::Attach {
            after_seq,
            joining,
            participant,
            reply,
        } => settle(reply, attach(remote, after_seq, joining, participant).await),
        SessionMsg::Post { message, reply } => {
            settle(reply, remote.typed(Op::Post { message }).await)
        }
        SessionMsg::Ask { message, reply } => settle(reply, ask(remote, message).await),
        SessionMsg::RecordConsent { consent, reply } => {
            settle(reply, remote.typed(Op::RecordConsent { consent }).await)
        }
        SessionMsg::UpdateMeta { change, reply } => {
            settle(reply, remote.typed(Op::UpdateMeta { change }).await)
        }
        SessionMsg::RequestHandoff { handoff, reply } => {
            settle(reply, remote.typed(Op::RequestHandoff { handoff }).await)
        }
        SessionMsg::TakeOver { attendant, reply } => {
            settle(reply, remote.typed(Op::TakeOver { attendant }).await)
        }
        SessionMsg::HandBack { by, reply } => {
            settle(reply, remote.typed(Op::HandBack { by }).await)
        }
        SessionMsg::UpdateContext {
            patch,
            if_match,
            reply,
        } => settle(
            reply,
            remote.typed(Op::UpdateContext { patch, if_match }).await,
        ),
        SessionMsg::AnswerAgain {
            client_msg_id,
            reply,
        } => settle(reply, remote.typed(Op::AnswerAgain { client_msg_id }).await),
        SessionMsg::Summary { reply } => match remote.typed(Op::Summary).await {
            Ok(summary) => {
                let _ = reply.send(summary);
                true
            }
            // An unanswered summary reads as a session that stopped.
            Err(error) => !matches!(error, Error::OwnerUnreachable(_)),
        },
        // The rest are a session's own business (its children's reports,
        // its timers, its settings); they never reach a stand-in.
        _ => true,
    }
}

/// Answers the caller; false if the owner was unreachable.
fn settle<T>(reply: RpcReplyPort<Result<T>>, outcome: Result<T>) -> bool {
    let reached = !matches!(outcome, Err(Error::OwnerUnreachable(_)));
    let _ = reply.send(outcome);
    reached
}

async fn ask(
    remote: &Remote,
    message: crate::model::NewMessage,
) -> Result<(
    crate::model::Ack,
    crate::conversation::session::AnswerReceiver,
)> {
    #[derive(serde::Deserialize)]
    struct Asked {
        ack: crate::model::Ack,
        answer: std::result::Result<StoredMessage, super::wire::WireError>,
    }
    let asked: Asked = remote.typed(Op::Ask { message }).await?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let answer = asked
        .answer
        .map_err(|error| error.into_error(&remote.tenant, remote.session));
    let _ = sender.send(answer);
    Ok((asked.ack, receiver))
}

/// Attaches a socket of this node to the owner's session: a local queue
/// and `Relay`, registered before the owner is asked, so no frame it sends
/// at once is missed.
async fn attach(
    remote: &Remote,
    after_seq: Option<u64>,
    joining: Joining,
    participant: Participant,
) -> Result<Attached> {
    let cluster = remote
        .cluster
        .upgrade()
        .ok_or(Error::Unavailable("cluster"))?;
    let relay = cluster.next_relay();
    let (queue, outbound) = outbound_queue(
        cluster.limits.outbound_queue_frames,
        cluster.limits.outbound_queue_bytes,
    );
    cluster.relays.insert(relay, (remote.owner.clone(), queue));
    let args = RelayArgs {
        cluster: Arc::downgrade(&cluster),
        gateway: remote.gateway.clone(),
        relay,
    };
    let (connection, _) = Actor::spawn(None, Relay, args)
        .await
        .map_err(|_| Error::Unavailable("relay"))?;
    let op = Op::Attach {
        after_seq,
        joining,
        participant,
        from: cluster.node().to_owned(),
        relay,
    };
    #[derive(serde::Deserialize)]
    struct Joined {
        last_seq: u64,
        context: Option<(serde_json::Map<String, Value>, u64)>,
    }
    match remote.typed::<Joined>(op).await {
        Ok(joined) => Ok(Attached {
            conn: relay,
            connection,
            outbound,
            last_seq: joined.last_seq,
            context: joined.context,
        }),
        Err(error) => {
            cluster.relays.remove(&relay);
            connection.stop(None);
            Err(error)
        }
    }
}

pub(super) struct RelayArgs {
    cluster: std::sync::Weak<Cluster>,
    gateway: ActorRef<Wire>,
    relay: u64,
}

pub(super) struct Relay;

impl Actor for Relay {
    type Msg = ConnectionMsg;
    type State = RelayArgs;
    type Arguments = RelayArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RelayArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ConnectionMsg::Client(command) = message;
        let Some(cluster) = state.cluster.upgrade() else {
            myself.stop(None);
            return Ok(());
        };
        let cast = Cast::Command {
            from: cluster.node().to_owned(),
            relay: state.relay,
            command,
        };
        if state.gateway.cast(Wire::Cast(cast)).is_err() {
            // The owner is gone: the socket's queue is dropped, it re-attaches.
            cluster.relays.remove(&state.relay);
            myself.stop(None);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(cluster) = state.cluster.upgrade() {
            cluster.relays.remove(&state.relay);
            let detach = Cast::Detach {
                from: cluster.node().to_owned(),
                relay: state.relay,
            };
            let _ = state.gateway.cast(Wire::Cast(detach));
        }
        Ok(())
    }
}
