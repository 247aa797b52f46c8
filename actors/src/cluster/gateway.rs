//! Gateway: one per node, in the process group `tertulia.gateway.<node>`
//! that every peer sees. Started by `Cluster::start`; stopped with the node.
//!
//! As the owner's side, it serves requests for this node's sessions (each
//! in a task of its own, so a slow session never holds the others up) and
//! pumps the frames of sockets attached from other nodes back to them. As
//! the edge's side, it hands frames from owners to the queues of the
//! sockets relayed here.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use serde_json::{Value, json};

use super::shared::{Cluster, LocalSessions};
use super::wire::{
    Cast, Op, Reply, Request, StreamRequest, Wire, WireError, WireFrame, encode_reply,
};
use crate::conversation::connection::ConnectionMsg;
use crate::conversation::outbound::{CloseReason, OutboundReceiver, Outgoing, SendError};
use crate::conversation::session::{Attached, SessionMsg};
use crate::error::{Error, Result};
use crate::model::protocol::Frame;

/// How long the owner's session may take to answer a request.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries to find a peer's gateway, 100 ms apart: long enough for a peer being
/// dialled, short enough not to hold a take-over past the lease by much.
const REACH_TRIES: usize = 5;
/// The most frames one `Frames` message carries.
const FRAMES_PER_CAST: usize = 64;

const GROUP_PREFIX: &str = "tertulia.gateway.";

fn group(node: &str) -> String {
    format!("{GROUP_PREFIX}{node}")
}

/// The gateways of every peer this node is connected to.
pub(super) fn peers(me: &str) -> Vec<ActorRef<Wire>> {
    ractor::pg::which_groups()
        .into_iter()
        .filter(|name| {
            name.strip_prefix(GROUP_PREFIX)
                .is_some_and(|node| node != me)
        })
        .filter_map(|name| ractor::pg::get_members(&name).into_iter().next())
        .map(ActorRef::from)
        .collect()
}

/// The gateway of `node`, if this node is connected to it.
pub(super) fn of(node: &str) -> Option<ActorRef<Wire>> {
    ractor::pg::get_members(&group(node))
        .into_iter()
        .next()
        .map(ActorRef::from)
}

/// The gateway of `node`, waiting a moment for it: a node that started a
/// moment ago is still connecting to its peers.
pub(super) async fn reach(node: &str) -> Option<ActorRef<Wire>> {
    for _ in 0..REACH_TRIES {
        if let Some(gateway) = of(node) {
            return Some(gateway);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Starts this node's gateway; its cell.
pub(super) async fn start(cluster: &Arc<Cluster>, local: LocalSessions) -> Result<ActorCell> {
    let args = GatewayArgs {
        cluster: Arc::downgrade(cluster),
        local,
    };
    let (gateway, _) = Actor::spawn(None, Gateway, args)
        .await
        .map_err(|error| Error::Startup(format!("the cluster gateway did not start: {error}")))?;
    ractor::pg::join(group(cluster.node()), vec![gateway.get_cell()]);
    Ok(gateway.get_cell())
}

pub(super) struct GatewayArgs {
    cluster: std::sync::Weak<Cluster>,
    local: LocalSessions,
}

pub(super) struct Gateway;

impl Actor for Gateway {
    type Msg = Wire;
    type State = GatewayArgs;
    type Arguments = GatewayArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: GatewayArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(cluster) = state.cluster.upgrade() else {
            return Ok(());
        };
        match message {
            Wire::Call { request, reply } => {
                let local = state.local.clone();
                tokio::spawn(serve(cluster, local, request, reply));
            }
            Wire::Stream { request, reply } => {
                tokio::spawn(serve_stream(cluster, request, reply));
            }
            Wire::Cast(cast) => deliver(&cluster, &myself, cast),
        }
        Ok(())
    }
}

/// A one-way message: a relayed socket's command or end (owner side), its
/// frames or close (edge side), a nudge for the webhook actor or a frame
/// for the consoles.
fn deliver(cluster: &Cluster, myself: &ActorRef<Wire>, cast: Cast) {
    match cast {
        Cast::Command {
            from,
            relay,
            command,
        } => {
            if let Some(connection) = cluster.attached.get(&(from, relay)) {
                let _ = connection.cast(ConnectionMsg::Client(command));
            }
        }
        Cast::Detach { from, relay } => {
            if let Some((_, connection)) = cluster.attached.remove(&(from, relay)) {
                connection.stop(None);
            }
        }
        Cast::Frames { relay, frames } => {
            let Some(queue) = cluster.relays.get(&relay).map(|entry| entry.1.clone()) else {
                return;
            };
            for frame in frames {
                if queue.try_send(Frame::relayed(frame.text, frame.seq)) == Err(SendError::Full) {
                    queue.close(CloseReason::slow_consumer());
                    crate::metrics::slow_consumer_closed();
                    cluster.relays.remove(&relay);
                    return;
                }
            }
        }
        Cast::Close { relay, reason } => {
            if let Some((_, (_, queue))) = cluster.relays.remove(&relay)
                && let Some((code, reason)) = reason
            {
                queue.finish(CloseReason { code, reason });
            }
            // Without a reason the queue is dropped: the socket re-attaches.
        }
        Cast::Nudge { nudge } => (cluster.hooks.on_nudge)(nudge),
        Cast::AccessChanged => (cluster.hooks.on_access_changed)(),
        Cast::Heartbeat { from } => cluster.heard_from(from),
        Cast::Feed { tenant, text } => {
            if !cluster.hooks.feeds.deliver(&tenant, text.into_bytes()) {
                // Nobody listens here any more: the peers stop sending.
                ractor::pg::leave(super::feeds::group(&tenant), vec![myself.get_cell()]);
            }
        }
    }
}

/// Runs a peer's call for a stream this node owns, and answers it.
async fn serve_stream(
    cluster: std::sync::Arc<Cluster>,
    request: StreamRequest,
    reply: ractor::RpcReplyPort<Vec<u8>>,
) {
    let StreamRequest { tenant, path, call } = request;
    crate::metrics::stream_call_served();
    let answer: Reply = (cluster.hooks.local_streams)(tenant, path, call)
        .await
        .map_err(|error| WireError::from(&error));
    let _ = reply.send(encode_reply(&answer));
}

/// Serves one request for a session of this node, and answers it.
async fn serve(
    cluster: Arc<Cluster>,
    local: LocalSessions,
    request: Request,
    reply: RpcReplyPort<Vec<u8>>,
) {
    let Request {
        tenant,
        session,
        op,
    } = request;
    let answer = match local(tenant, session).await {
        Ok(actor) => run(&cluster, actor, op).await,
        Err(error) => Err(WireError::from(&error)),
    };
    let _ = reply.send(encode_reply(&answer));
}

async fn run(cluster: &Arc<Cluster>, actor: ActorRef<SessionMsg>, op: Op) -> Reply {
    match op {
        Op::Attach {
            after_seq,
            joining,
            participant,
            from,
            relay,
        } => {
            let attached = ask(&actor, |reply| SessionMsg::Attach {
                after_seq,
                joining,
                participant,
                reply,
            })
            .await?;
            Ok(relay_out(cluster, attached, from, relay))
        }
        Op::Post { message } => {
            answer(ask(&actor, |reply| SessionMsg::Post { message, reply }).await)
        }
        Op::Ask { message } => {
            let (ack, receiver) = ask(&actor, |reply| SessionMsg::Ask { message, reply }).await?;
            // The answer goes back whole, with its ack: the edge hands the
            // ack on at once and the answer as it would have arrived.
            let stored = match receiver.await {
                Ok(Ok(message)) => Ok(message),
                Ok(Err(error)) => Err(WireError::from(&error)),
                Err(_) => Err(WireError::from(&Error::Unavailable("session"))),
            };
            Ok(json!({ "ack": ack, "answer": stored }))
        }
        Op::RecordConsent { consent } => {
            answer(ask(&actor, |reply| SessionMsg::RecordConsent { consent, reply }).await)
        }
        Op::UpdateMeta { change } => {
            answer(ask(&actor, |reply| SessionMsg::UpdateMeta { change, reply }).await)
        }
        Op::RequestHandoff { handoff } => answer(
            ask(&actor, |reply| SessionMsg::RequestHandoff {
                handoff,
                reply,
            })
            .await,
        ),
        Op::TakeOver { attendant } => {
            answer(ask(&actor, |reply| SessionMsg::TakeOver { attendant, reply }).await)
        }
        Op::HandBack { by } => {
            answer(ask(&actor, |reply| SessionMsg::HandBack { by, reply }).await)
        }
        Op::Summary => {
            let summary = actor.call(|reply| SessionMsg::Summary { reply }, Some(SESSION_TIMEOUT));
            match summary.await {
                Ok(CallResult::Success(summary)) => answer(Ok(summary)),
                _ => Err(WireError::from(&Error::Unavailable("session"))),
            }
        }
        Op::UpdateContext { patch, if_match } => answer(
            ask(&actor, |reply| SessionMsg::UpdateContext {
                patch,
                if_match,
                reply,
            })
            .await,
        ),
        Op::AnswerAgain { client_msg_id } => answer(
            ask(&actor, |reply| SessionMsg::AnswerAgain {
                client_msg_id,
                reply,
            })
            .await,
        ),
    }
}

/// Asks the session; its error, or its silence, as a wire error.
async fn ask<T: Send + 'static>(
    actor: &ActorRef<SessionMsg>,
    build: impl FnOnce(RpcReplyPort<Result<T>>) -> SessionMsg,
) -> std::result::Result<T, WireError> {
    match actor.call(build, Some(SESSION_TIMEOUT)).await {
        Ok(CallResult::Success(Ok(value))) => Ok(value),
        Ok(CallResult::Success(Err(error))) => Err(WireError::from(&error)),
        _ => Err(WireError::from(&Error::Unavailable("session"))),
    }
}

fn answer<T: Serialize>(result: std::result::Result<T, WireError>) -> Reply {
    result.map(|value| serde_json::to_value(value).expect("answers serialise"))
}

/// Keeps a socket attached from node `from` and pumps its frames there;
/// answers what the edge needs to hand its socket.
fn relay_out(cluster: &Arc<Cluster>, attached: Attached, from: String, relay: u64) -> Value {
    let Attached {
        conn,
        connection,
        outbound,
        last_seq,
        context,
    } = attached;
    cluster
        .attached
        .insert((from.clone(), relay), connection.clone());
    tokio::spawn(pump(Arc::downgrade(cluster), outbound, from, relay));
    json!({ "conn": conn, "last_seq": last_seq, "context": context })
}

/// Sends a relayed socket's frames to its node, batched, until the socket
/// closes or that node is gone; then lets its connection go.
async fn pump(
    cluster: std::sync::Weak<Cluster>,
    mut outbound: OutboundReceiver,
    edge: String,
    relay: u64,
) {
    // Looked up once: a node that reconnects has a new gateway, and a cast
    // to the old one fails, which ends this pump like any lost node.
    let gateway = of(&edge);
    while let Some(gateway) = &gateway {
        let cast = match outbound.next().await {
            Outgoing::Frame(frame) => {
                let mut frames = vec![wire_frame(&frame)];
                while frames.len() < FRAMES_PER_CAST
                    && let Some(frame) = outbound.try_next_frame()
                {
                    frames.push(wire_frame(&frame));
                }
                Cast::Frames { relay, frames }
            }
            Outgoing::Close(reason) => Cast::Close {
                relay,
                reason: Some((reason.code, reason.reason)),
            },
            Outgoing::Detached => Cast::Close {
                relay,
                reason: None,
            },
        };
        let last = !matches!(cast, Cast::Frames { .. });
        if gateway.cast(Wire::Cast(cast)).is_err() || last {
            break;
        }
    }
    if let Some(cluster) = cluster.upgrade()
        && let Some((_, connection)) = cluster.attached.remove(&(edge, relay))
    {
        connection.stop(None);
    }
}

fn wire_frame(frame: &Frame) -> WireFrame {
    WireFrame {
        text: frame.as_str().to_owned(),
        seq: frame.seq,
    }
}
