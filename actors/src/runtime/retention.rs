//! Retention: the actor that keeps the disk from growing for ever. It sits
//! beside the supervision tree, not in it: the runtime starts it after the
//! tree and stops it first, and it holds the runtime only weakly. Each pass
//! removes delivered and dead deliveries (and the events no delivery needs)
//! past `webhooks.retention_days` / `dead_retention_days`, then archives
//! and deletes each tenant's idle conversations as its `retention` says.
//!
//! Conversations change through the same calls as an API client's (the
//! session applies the archive, the tenant deletes), so a live session is
//! never written behind its back. Every step is one small batch followed by
//! a pause: messages commit between batches.

use std::sync::Weak;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::handle::{Inner, Runtime};
use crate::config::RetentionConfig;
use crate::error::Error;
use crate::model::{DeliveryStatus, MetaChange, Scope, TenantId, stored_time};

/// The longest wait before the first pass after a start.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);
/// Batches of conversation changes per tenant and pass: each may start a
/// session actor, so a first pass over a large tenant is spread over passes.
const CONVERSATION_BATCHES_PER_PASS: usize = 10;

pub enum RetentionMsg {
    /// Run one pass now, then schedule the next.
    Pass,
}

/// Stays on this node (see `cluster::wire` for what crosses nodes).
impl ractor::Message for RetentionMsg {}

pub struct RetentionArgs {
    pub runtime: Weak<Inner>,
    pub config: RetentionConfig,
}

pub struct RetentionState {
    runtime: Weak<Inner>,
    interval: Duration,
    pause: Duration,
    batch: usize,
}

pub struct Retention;

impl Actor for Retention {
    type Msg = RetentionMsg;
    type State = RetentionState;
    type Arguments = RetentionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RetentionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (interval, pause) = args.config.timings()?;
        myself.send_after(interval.min(FIRST_PASS_AFTER), || RetentionMsg::Pass);
        Ok(RetentionState {
            runtime: args.runtime,
            interval,
            pause,
            batch: args.config.batch,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        RetentionMsg::Pass: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(inner) = state.runtime.upgrade() else {
            myself.stop(None);
            return Ok(());
        };
        let runtime = Runtime { inner };
        let pass = Pass { runtime, state };
        pass.deliveries().await;
        pass.conversations().await;
        myself.send_after(state.interval, || RetentionMsg::Pass);
        Ok(())
    }
}

/// One pass over everything retention looks after.
struct Pass<'a> {
    runtime: Runtime,
    state: &'a RetentionState,
}

impl Pass<'_> {
    /// Delivered and dead deliveries past their days, endpoint by endpoint.
    async fn deliveries(&self) {
        let storage = &self.runtime.inner.storage;
        let settings = &self.runtime.inner.config.webhooks;
        let endpoints = match storage.load_endpoints().await {
            Ok(endpoints) => endpoints,
            Err(error) => return tracing::warn!(%error, "retention: cannot list endpoints"),
        };
        for endpoint in endpoints {
            for (status, days) in [
                (DeliveryStatus::Delivered, settings.retention_days),
                (DeliveryStatus::Dead, settings.dead_retention_days),
            ] {
                let before = delivery_id_at(days_ago(days));
                loop {
                    let removed = storage
                        .prune_deliveries(
                            &endpoint.tenant,
                            &endpoint.endpoint_id,
                            status,
                            &before,
                            self.state.batch,
                        )
                        .await;
                    match removed {
                        Ok(removed) => {
                            crate::metrics::pruned("delivery", removed as u64);
                            if removed < self.state.batch {
                                break;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, endpoint = %endpoint.endpoint_id, "retention: a prune failed; next pass tries again");
                            break;
                        }
                    }
                    tokio::time::sleep(self.state.pause).await;
                }
            }
        }
    }

    /// Each tenant's idle conversations, archived and then deleted.
    async fn conversations(&self) {
        let tenants: Vec<_> = self
            .runtime
            .inner
            .tenants
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().retention.clone()))
            .collect();
        for (tenant, retention) in tenants {
            if let Some(days) = retention.archive_after_days {
                self.idle(&tenant, days, Fate::Archived).await;
            }
            if let Some(days) = retention.delete_after_days {
                self.idle(&tenant, days, Fate::Deleted).await;
            }
        }
    }

    /// Archives or deletes the tenant's conversations idle `days`, a batch
    /// at a time.
    async fn idle(&self, tenant: &TenantId, days: f64, fate: Fate) {
        let storage = &self.runtime.inner.storage;
        let scope = Scope::tenant(tenant.clone());
        let before = stored_time(days_ago(days));
        for _ in 0..CONVERSATION_BATCHES_PER_PASS {
            let idle = match storage
                .idle_conversations(tenant, fate.status_before(), &before, self.state.batch)
                .await
            {
                Ok(idle) => idle,
                Err(error) => {
                    return tracing::warn!(%error, %tenant, "retention: cannot list idle conversations");
                }
            };
            let mut done = 0;
            for conversation in &idle {
                let outcome = match fate {
                    Fate::Archived => self
                        .runtime
                        .update_conversation(&scope, conversation.id, archive(conversation.version))
                        .await
                        .map(drop),
                    Fate::Deleted => self.runtime.delete_session(&scope, conversation.id).await,
                };
                match outcome {
                    Ok(()) => done += 1,
                    // Changed since it was listed: it is not idle any more.
                    Err(Error::VersionConflict { .. } | Error::SessionNotFound { .. }) => {}
                    Err(error) => {
                        tracing::warn!(%error, %tenant, session = %conversation.id, ?fate, "retention: a conversation kept its state");
                    }
                }
            }
            crate::metrics::pruned(fate.label(), done);
            if idle.len() < self.state.batch || done == 0 {
                return;
            }
            tokio::time::sleep(self.state.pause).await;
        }
    }
}

/// What retention does to an idle conversation.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Archived,
    Deleted,
}

impl Fate {
    /// The status a conversation must have to be given this fate.
    fn status_before(self) -> Option<&'static str> {
        match self {
            Fate::Archived => Some("active"),
            Fate::Deleted => None,
        }
    }

    /// Its label in `tertulia_pruned_total`.
    fn label(self) -> &'static str {
        match self {
            Fate::Archived => "archived",
            Fate::Deleted => "conversation",
        }
    }
}

fn archive(version: u64) -> MetaChange {
    MetaChange {
        title: None,
        status: Some("archived".into()),
        double_texting: None,
        version,
    }
}

fn days_ago(days: f64) -> chrono::DateTime<chrono::Utc> {
    let age = chrono::Duration::milliseconds((days * 86_400_000.0) as i64);
    chrono::Utc::now() - age
}

/// The smallest delivery id that could be made at `at`: delivery ids are
/// `dlv_` and a UUID v7, whose first 48 bits are the milliseconds, so every
/// delivery made before `at` sorts below it.
fn delivery_id_at(at: chrono::DateTime<chrono::Utc>) -> String {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let floor = uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid();
    format!("dlv_{}", floor.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_made_before_the_cut_sorts_below_it() {
        let earlier = format!("dlv_{}", uuid::Uuid::now_v7().simple());
        std::thread::sleep(Duration::from_millis(3));
        let cut = delivery_id_at(chrono::Utc::now());
        std::thread::sleep(Duration::from_millis(3));
        let later = format!("dlv_{}", uuid::Uuid::now_v7().simple());
        assert!(earlier < cut, "{earlier} < {cut}");
        assert!(cut < later, "{cut} < {later}");
    }
}
