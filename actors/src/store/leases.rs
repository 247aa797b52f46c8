//! Leases, for several nodes on one SurrealDB server (`[cluster]`). Nothing
//! here runs in the single-process mode.
//!
//! A node's liveness record (`cluster_node`) has an `epoch` and an expiry
//! in database time; the node's keeper renews it. A conversation's lease
//! (`conversation_lease`) names its owner and the epoch it was taken under,
//! and holds while that node's record is live at that epoch: one renewal per
//! node, not one per conversation (the epoch-based leases of CockroachDB's
//! node liveness). A record that expired is renewed only with a new epoch,
//! which voids every lease taken under the old one.
//!
//! [`Fence`] makes a stale owner harmless: every write batch of a node in a
//! cluster starts by checking, inside its own transaction, that the node's
//! record is still live at the epoch the node's sessions were started
//! under, and throws otherwise, so nothing of the batch is stored.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::database::Database;
use super::fence::Fence;
use crate::error::{Error, Result};
use crate::model::{SessionId, TenantId};

/// What a fenced batch throws: found in the error text to tell a lost lease
/// from a failing store.
const FENCED: &str = "tertulia_fenced";

/// The outcome of a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// The node's epoch now.
    pub epoch: u64,
    /// Whether the lease held at the epoch asked for (else it had expired,
    /// or another process of the same name took it: a new epoch began).
    pub kept: bool,
}

/// Who holds a role (see [`Database::claim_role`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This node, under this epoch of its own lease: a new epoch means the
    /// role was lost in between and is taken again.
    Here { epoch: u64 },
    /// Another node, by name.
    There(String),
}

/// The outcome of a claim (of a conversation's lease or of a role).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Claim {
    /// Another node holds the lease, live: it owns the conversation.
    pub held_by: Option<String>,
    /// The lease is ours now; it was this node's before (or nobody's, or
    /// this node's under an older epoch).
    pub taken_from: Option<String>,
}

const RENEW: &str = "BEGIN TRANSACTION;
LET $n = (SELECT * FROM ONLY type::record('cluster_node', $node));
LET $kept = $n != NONE AND $n.epoch = $epoch AND $n.expires > time::now();
LET $next = IF $kept { $epoch } ELSE { ($n.epoch ?? 0) + 1 };
UPSERT type::record('cluster_node', $node) SET epoch = $next, address = $address,
  expires = time::now() + duration::from_millis($ms), renewed = time::now() RETURN NONE;
RETURN { epoch: $next, kept: $kept };
COMMIT TRANSACTION;";

/// Takes the lease `type::record($table, $key)` unless another node holds
/// it live (a conversation's, or a role's). A node whose own record is not
/// live at the epoch it claims under takes nothing (it throws: a lease
/// taken under a dead epoch would be free for any other node at once). A
/// lease this node holds at this epoch already is not written again: the
/// role is claimed every third of the lease.
const CLAIM: &str = "BEGIN TRANSACTION;
IF !(SELECT VALUE epoch = $epoch AND expires > time::now() FROM ONLY type::record('cluster_node', $node)) { THROW 'tertulia_fenced' };
LET $l = (SELECT * FROM ONLY type::record($table, $key));
LET $h = IF $l != NONE { (SELECT * FROM ONLY type::record('cluster_node', $l.node)) } ELSE { NONE };
LET $held = $l != NONE AND $l.node != $node AND $h != NONE AND $h.epoch = $l.epoch AND $h.expires > time::now();
LET $ours = $l != NONE AND $l.node = $node AND $l.epoch = $epoch;
IF !$held AND !$ours { UPSERT type::record($table, $key) SET node = $node, epoch = $epoch, since = time::now() RETURN NONE; };
RETURN { held_by: IF $held { $l.node } ELSE { NONE }, taken_from: IF $held { NONE } ELSE { $l.node } };
COMMIT TRANSACTION;";

const READ_LEASE: &str = "SELECT node, epoch FROM ONLY type::record($table, $key);";

const RELEASE: &str = "UPDATE type::record('cluster_node', $node) SET expires = time::now() \
    WHERE epoch = $epoch RETURN NONE;";

impl Database {
    /// Renews `node`'s lease for `lease` from now if it still holds at
    /// `epoch` (0: joining), else starts a new epoch. `address` is where the
    /// other nodes reach it.
    pub async fn renew_node(
        &self,
        node: &str,
        address: &str,
        epoch: u64,
        lease: Duration,
    ) -> Result<Renewal> {
        let vars = json!({
            "node": node,
            "address": address,
            "epoch": epoch,
            "ms": lease.as_millis() as u64,
        });
        let answer = self.last_value(RENEW, vars).await?;
        let epoch = answer["epoch"].as_u64();
        let kept = answer["kept"].as_bool();
        match (epoch, kept) {
            (Some(epoch), Some(kept)) => Ok(Renewal { epoch, kept }),
            _ => Err(Error::Storage(format!("a lease renewal answered {answer}"))),
        }
    }

    /// Takes the conversation's lease for `node` at `epoch`, unless another
    /// node holds it live.
    pub async fn claim_conversation(
        &self,
        tenant: &TenantId,
        session: SessionId,
        node: &str,
        epoch: u64,
    ) -> Result<Claim> {
        let key = json!([tenant, session.to_string()]);
        self.claim("conversation_lease", key, node, epoch).await
    }

    /// Takes the lease of `tenant`'s Durable Stream at `path` for `node` at
    /// `epoch`, unless another node holds it live.
    pub async fn claim_stream(
        &self,
        tenant: &TenantId,
        path: &str,
        node: &str,
        epoch: u64,
    ) -> Result<Claim> {
        self.claim("stream_lease", json!([tenant, path]), node, epoch)
            .await
    }

    /// Takes the role `role` (a job the cluster runs on one node at a time,
    /// e.g. `webhooks`) for `node` at `epoch`, unless another node holds it
    /// live. Holding it again is a no-op that answers the same.
    pub async fn claim_role(&self, role: &str, node: &str, epoch: u64) -> Result<Claim> {
        self.claim("cluster_role", json!(role), node, epoch).await
    }

    async fn claim(&self, table: &str, key: Value, node: &str, epoch: u64) -> Result<Claim> {
        let vars = json!({"table": table, "key": key, "node": node, "epoch": epoch});
        let answer = match self.last_value(CLAIM, vars).await {
            Err(Error::Storage(why)) if why.contains(FENCED) => {
                // The keeper finds the lease lost at its next renewal.
                return Err(Error::Fenced(format!(
                    "node {node} claimed under epoch {epoch}, which is not live"
                )));
            }
            answer => answer?,
        };
        let claim: Claim = serde_json::from_value(answer.clone())
            .map_err(|_| Error::Storage(format!("a lease claim answered {answer}")))?;
        if claim.held_by.is_none() {
            self.confirm_claim(table, &key, node, epoch).await?;
        }
        Ok(claim)
    }

    /// Reads a lease just taken back, outside the claim's transaction: a
    /// claim whose transaction did not commit must not be believed, or the
    /// node would run the conversation beside its real owner, both passing
    /// their fences. A guard: no run has shown a claim that answered taken
    /// and did not commit.
    async fn confirm_claim(&self, table: &str, key: &Value, node: &str, epoch: u64) -> Result<()> {
        let vars = json!({"table": table, "key": key});
        let lease = self.last_value(READ_LEASE, vars).await?;
        if lease["node"] == node && lease["epoch"] == epoch {
            return Ok(());
        }
        tracing::warn!(%table, %key, %lease, "a lease claim answered taken but did not hold");
        Err(Error::Storage(format!(
            "the {table} claim for node {node} did not hold: the lease reads {lease}"
        )))
    }

    /// Ends `node`'s lease now (a clean shutdown), so its conversations are
    /// taken over at once instead of after the lease time.
    pub async fn release_node(&self, node: &str, epoch: u64) -> Result<()> {
        self.run(RELEASE, json!({"node": node, "epoch": epoch}))
            .await
    }

    /// Runs `query` (a transaction) and returns its last statement's value.
    async fn last_value(&self, query: &str, vars: Value) -> Result<Value> {
        let mut response = self.db.query(query.to_owned()).bind(vars).await?;
        let last = response.num_statements().saturating_sub(1);
        let errors = response.take_errors();
        let cause = errors
            .values()
            .find(|error| !error.to_string().contains("failed transaction"))
            .or(errors.values().next());
        if let Some(error) = cause {
            return Err(Error::Storage(error.to_string()));
        }
        // `COMMIT` counts as a statement: the answer is the last value.
        for index in (0..=last).rev() {
            let value: surrealdb::types::Value = response.take(index)?;
            match value.into_json_value() {
                Value::Null => continue,
                Value::Array(rows) if rows.is_empty() => continue,
                value => return Ok(value),
            }
        }
        Ok(Value::Null)
    }

    /// Checks the cluster's `fence` at the start of every write batch.
    pub fn fenced_by(mut self, fence: Arc<Fence>) -> Database {
        self.fence = Some(fence);
        self
    }

    /// Opens a batch with the fence's check; refuses it at once while the
    /// lease is known lost.
    pub(super) fn fence_batch(&self, batch: &mut super::statements::Batch) -> Result<()> {
        if let Some(fence) = &self.fence {
            if fence.is_lost() {
                return Err(fence.error());
            }
            let (statement, vars) = fence_statement(fence);
            batch.guard(&statement, vars);
        }
        Ok(())
    }

    /// A batch the fence threw out: the store is fine, this node is not. No
    /// further batch goes ahead until the keeper has joined again.
    pub(super) fn fenced_outcome(&self, outcome: Result<()>) -> Result<()> {
        match (outcome, &self.fence) {
            (Err(Error::Storage(why)), Some(fence)) if why.contains(FENCED) => {
                fence.lose();
                self.record_write(&Ok(()));
                crate::metrics::fenced_batch();
                Err(fence.error())
            }
            (outcome, _) => outcome,
        }
    }
}

/// The statement that opens a fenced batch: it throws (failing the whole
/// transaction) unless `node` is live at `epoch`.
fn fence_statement(fence: &Fence) -> (String, Value) {
    let statement = format!(
        "IF !(SELECT VALUE epoch = $fence_epoch AND expires > time::now() \
         FROM ONLY type::record('cluster_node', $fence_node)) {{ THROW '{FENCED}' }};\n"
    );
    let vars = json!({"fence_node": fence.node(), "fence_epoch": fence.epoch()});
    (statement, vars)
}
