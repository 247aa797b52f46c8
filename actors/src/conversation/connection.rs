//! One WebSocket, as the runtime sees it. Supervised by its `Session`, which
//! spawns it on attach; the edge stops it when the socket ends. It reports
//! to the session through its own narrow type, [`ConnectionReport`].
//!
//! It owns the pushing half of the socket's bounded outbound queue (the
//! session holds a clone to fan out), answers `ping` itself, and forwards every
//! other command to its session tagged with its `ConnId`, so acks and errors
//! come back to this socket alone. It never touches the socket: the edge's
//! reader and writer tasks do.

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef};

use super::outbound::{CloseReason, OutboundSender, SendError};
use crate::model::ClientCommand;
use crate::model::protocol::ServerFrame;

/// Identifies one attached socket within the process.
pub type ConnId = u64;

/// What a connection tells its session.
#[derive(Debug)]
pub enum ConnectionReport {
    /// A command from the socket, for the session to act on.
    Command {
        conn: ConnId,
        command: ClientCommand,
    },
    /// The connection stopped: the socket is gone.
    Detached { conn: ConnId },
}

pub enum ConnectionMsg {
    /// A parsed command from the socket's reader.
    Client(ClientCommand),
}

/// Stays on this node (see `cluster::wire` for what crosses nodes).
impl ractor::Message for ConnectionMsg {}

pub struct ConnectionArgs {
    pub conn: ConnId,
    pub session: DerivedActorRef<ConnectionReport>,
    pub outbound: OutboundSender,
}

pub struct ConnectionState {
    conn: ConnId,
    session: DerivedActorRef<ConnectionReport>,
    outbound: OutboundSender,
}

pub struct Connection;

impl Actor for Connection {
    type Msg = ConnectionMsg;
    type State = ConnectionState;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ConnectionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ConnectionState {
            conn: args.conn,
            session: args.session,
            outbound: args.outbound,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ConnectionMsg::Client(command) = message;
        match command {
            ClientCommand::Ping => {
                if state.outbound.try_send(ServerFrame::Pong {}.encode()) == Err(SendError::Full) {
                    state.outbound.close(CloseReason::slow_consumer());
                    crate::metrics::slow_consumer_closed();
                    myself.stop(None);
                }
            }
            command => {
                let forwarded = state.session.send_message(ConnectionReport::Command {
                    conn: state.conn,
                    command,
                });
                if forwarded.is_err() {
                    // The session is gone (restart or deletion): so is this socket's attachment.
                    myself.stop(None);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = state
            .session
            .send_message(ConnectionReport::Detached { conn: state.conn });
        Ok(())
    }
}
