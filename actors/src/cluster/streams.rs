//! Generic Durable Streams across nodes. Each stream has one owner, by a
//! lease like a conversation's (`stream_lease`, `Cluster::stream_owner`):
//! the node whose stream actor is the stream's only writer. Another node
//! sends each call for it to the owner as a `StreamCall` (`Wire::Stream`);
//! the owner's gateway hands it to the runtime's own path
//! (`Hooks::local_streams`), which refuses a stream it does not own.
//!
//! Catch-up reads need only the owner's tail (a `Head` call): the units
//! they read are in the store, written before the owner answered. Live
//! readers on another node watch a tail this node keeps by asking the owner
//! every [`TAIL_POLL`] while anyone watches.

use std::time::Duration;

use ractor::rpc::CallResult;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use super::gateway;
use super::shared::Cluster;
use super::wire::{StreamCall, StreamRequest, Wire, decode_reply};
use crate::error::{Error, Result};
use crate::model::TenantId;
use crate::model::stream::StreamRecord;
use crate::streams::Tail;
use crate::streams::state::tail_of;

/// How long a stream's owner may take to answer.
const STREAM_TIMEOUT: Duration = Duration::from_secs(35);
/// How often a node asks a stream's owner for its tail while a live reader
/// here waits on it: the most a live read through another node lags.
pub const TAIL_POLL: Duration = Duration::from_millis(100);

impl Cluster {
    /// The stream's owner elsewhere as its last claim here said, if any.
    pub fn known_stream_owner(&self, tenant: &TenantId, path: &str) -> Option<String> {
        let key = (tenant.clone(), path.to_owned());
        self.stream_owners.get(&key).map(|owner| owner.clone())
    }

    /// Sends `call` to `owner`, the stream's owner, and decodes its answer.
    /// An owner that does not answer, or no longer owns the stream, is
    /// forgotten: the next call claims again.
    pub async fn call_stream<T: serde::de::DeserializeOwned>(
        &self,
        owner: &str,
        tenant: &TenantId,
        path: &str,
        call: StreamCall,
    ) -> Result<T> {
        let unreachable = || Error::OwnerUnreachable(owner.to_owned());
        let Some(gateway) = gateway::reach(owner).await else {
            let key = (tenant.clone(), path.to_owned());
            self.stream_owners
                .remove_if(&key, |_, known| known == owner);
            return Err(unreachable());
        };
        let request = StreamRequest {
            tenant: tenant.clone(),
            path: path.to_owned(),
            call,
        };
        let answer = gateway
            .call(
                |reply| Wire::Stream { request, reply },
                Some(STREAM_TIMEOUT),
            )
            .await;
        let answer = match answer {
            Ok(CallResult::Success(bytes)) => {
                decode_reply(&bytes).map_err(|error| error.into_stream_error(tenant, path))
            }
            _ => Err(unreachable()),
        };
        if let Err(Error::OwnerUnreachable(_)) = &answer {
            let key = (tenant.clone(), path.to_owned());
            self.stream_owners
                .remove_if(&key, |_, known| known == owner);
        }
        let value = answer?;
        serde_json::from_value(value).map_err(|error| {
            Error::Storage(format!("the stream owner's answer did not parse: {error}"))
        })
    }

    /// A live tail of a stream `owner` owns, kept by asking it every
    /// [`TAIL_POLL`] while anyone here watches; `None` if there is no such
    /// stream. It ends (the sender drops) when the owner stops answering:
    /// readers then end their wait and ask again, by then of the new owner.
    pub async fn remote_tail(
        self: &std::sync::Arc<Self>,
        owner: &str,
        tenant: &TenantId,
        path: &str,
    ) -> Result<Option<watch::Receiver<Tail>>> {
        let key = (tenant.clone(), path.to_owned());
        if let Some(sender) = self.tails.get(&key)
            && !sender.is_closed()
        {
            return Ok(Some(sender.subscribe()));
        }
        let record = self.head_at(owner, tenant, path).await?;
        if record.is_none() {
            return Ok(None);
        }
        let (sender, receiver) = watch::channel(tail_of(record.as_ref()));
        self.tails.insert(key.clone(), sender.clone());
        let (cluster, owner) = (std::sync::Arc::downgrade(self), owner.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TAIL_POLL).await;
                let Some(cluster) = cluster.upgrade() else {
                    return;
                };
                if sender.receiver_count() == 0 {
                    break cluster.forget_tail(&key, &sender);
                }
                match cluster.head_at(&owner, &key.0, &key.1).await {
                    Ok(record) => {
                        let tail = tail_of(record.as_ref());
                        sender.send_if_modified(|now| std::mem::replace(now, tail) != tail);
                    }
                    Err(_) => break cluster.forget_tail(&key, &sender),
                }
            }
        });
        Ok(Some(receiver))
    }

    async fn head_at(
        &self,
        owner: &str,
        tenant: &TenantId,
        path: &str,
    ) -> Result<Option<StreamRecord>> {
        let head = StreamCall::Head { touch: false };
        self.call_stream(owner, tenant, path, head).await
    }

    fn forget_tail(&self, key: &(TenantId, String), sender: &watch::Sender<Tail>) {
        self.tails
            .remove_if(key, |_, kept| kept.same_channel(sender));
    }
}

/// A local answer as it crosses.
pub fn to_value<T: Serialize>(answer: Result<T>) -> Result<Value> {
    answer.and_then(|answer| {
        serde_json::to_value(answer)
            .map_err(|error| Error::Storage(format!("a stream answer did not serialise: {error}")))
    })
}
