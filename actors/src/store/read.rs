//! Reads: every query the runtime asks of the stored state, as methods of
//! [`Storage`]. A read runs in the caller's task on a clone of the database
//! handle (never through the persistence actor's mailbox, so a burst of
//! writes never delays it and it never delays them), bounded by a timeout.

use std::future::Future;
use std::time::Duration;

use serde_json::json;

use super::handle::Storage;
use crate::error::{Error, Result};
use crate::model::stream::{ProducerRecord, StreamRecord, StreamUnit};
use crate::model::{
    ApiKeyRecord, Contact, Delivery, DeliveryStatus, EventRecord, SessionId, SessionRecord,
    StoredMessage, TenantId, TenantRecord, WebhookEndpoint,
};

/// How long a read may take before the caller is told storage is unavailable.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Which messages of a log to read.
#[derive(Debug, Clone)]
pub struct MessageQuery {
    pub tenant: TenantId,
    pub session: SessionId,
    /// Only messages with `seq > after_seq`.
    pub after_seq: u64,
    /// At most this many: the oldest ones after `after_seq`, or the newest ones
    /// when `newest` is set (still returned oldest first).
    pub limit: usize,
    pub newest: bool,
}

pub(super) async fn bounded<T>(read: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or(Err(Error::Unavailable("persistence")))
}

impl Storage {
    /// Every stored tenant and every key that is not revoked (read again in
    /// a cluster when another node changed them).
    pub async fn load_access(&self) -> Result<(Vec<TenantRecord>, Vec<ApiKeyRecord>)> {
        self.db.load_access().await
    }

    /// One conversation of a tenant, if it exists, with the counters its
    /// acknowledged messages owe written first.
    pub async fn load_settled_session(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<Option<SessionRecord>> {
        self.flush().await;
        self.load_session(tenant, session).await
    }

    /// One conversation of a tenant, if it exists. Its counters may lag its
    /// log by the messages of the last moments (`store/counters.rs`).
    pub async fn load_session(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<Option<SessionRecord>> {
        let query =
            "SELECT * OMIT id FROM type::record('conversation', $sid) WHERE tenant = $tenant;";
        let vars = json!({"sid": session.to_string(), "tenant": tenant});
        bounded(self.db.select_first(query, vars)).await
    }

    /// A tenant's conversations (only this client's, if given), most recently
    /// updated first. Counters are written lazily, so the persistence actor
    /// first writes those owed: the listing reflects every acknowledged message.
    pub async fn list_sessions(
        &self,
        tenant: &TenantId,
        client: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>> {
        let mut filters = String::new();
        if client.is_some() {
            filters.push_str("AND client_id = $client ");
        }
        if status.is_some() {
            filters.push_str("AND status = $status ");
        }
        let query = format!(
            "SELECT * OMIT id FROM conversation WHERE tenant = $tenant {filters}\
             ORDER BY updated_at DESC LIMIT $limit;"
        );
        let vars = json!({"tenant": tenant, "client": client, "status": status, "limit": limit});
        self.flush().await;
        bounded(self.db.select(&query, vars)).await
    }

    /// Part of one log, in `seq` order.
    pub async fn load_messages(&self, query: MessageQuery) -> Result<Vec<StoredMessage>> {
        let order = if query.newest { "DESC" } else { "ASC" };
        let text = format!(
            "SELECT * OMIT id FROM message WHERE tenant = $tenant AND session_id = $sid \
             AND seq > $after ORDER BY seq {order} LIMIT $limit;"
        );
        let vars = json!({
            "tenant": query.tenant,
            "sid": query.session.to_string(),
            "after": query.after_seq,
            "limit": query.limit,
        });
        let mut rows: Vec<StoredMessage> = bounded(self.db.select(&text, vars)).await?;
        rows.sort_by_key(|message| message.seq);
        Ok(rows)
    }

    /// The stored message a client sent with this `client_msg_id`, if any.
    pub async fn find_client_message(
        &self,
        tenant: &TenantId,
        session: SessionId,
        client_msg_id: &str,
    ) -> Result<Option<StoredMessage>> {
        let query = "SELECT * OMIT id FROM message WHERE tenant = $tenant AND session_id = $sid \
                     AND client_msg_id = $cid LIMIT 1;";
        let vars = json!({"tenant": tenant, "sid": session.to_string(), "cid": client_msg_id});
        bounded(self.db.select_first(query, vars)).await
    }

    /// The conversation a channel knows by this id, if any.
    pub async fn find_external(
        &self,
        tenant: &TenantId,
        channel: &str,
        external_id: &str,
    ) -> Result<Option<SessionRecord>> {
        let query = "SELECT * OMIT id FROM conversation WHERE tenant = $tenant \
                     AND channel = $channel AND external_id = $external LIMIT 1;";
        let vars = json!({"tenant": tenant, "channel": channel, "external": external_id});
        bounded(self.db.select_first(query, vars)).await
    }

    /// A conversation's contact, if one was captured.
    pub async fn load_contact(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<Option<Contact>> {
        let query = "SELECT * OMIT id FROM type::record('contact', $sid) WHERE tenant = $tenant;";
        let vars = json!({"sid": session.to_string(), "tenant": tenant});
        bounded(self.db.select_first(query, vars)).await
    }

    /// A tenant's newest recorded events (of one conversation, if given), newest first.
    pub async fn list_events(
        &self,
        tenant: &TenantId,
        conversation: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<EventRecord>> {
        let filter = match conversation {
            Some(_) => "AND conversation_id = $sid ",
            None => "",
        };
        let query = format!(
            "SELECT * OMIT id FROM event WHERE tenant = $tenant {filter}\
             ORDER BY created_at DESC LIMIT $limit;"
        );
        let vars = json!({
            "tenant": tenant,
            "sid": conversation.map(|id| id.to_string()),
            "limit": limit,
        });
        bounded(self.db.select(&query, vars)).await
    }

    /// A tenant's stream at `path`, if it exists.
    pub async fn load_stream(&self, tenant: &TenantId, path: &str) -> Result<Option<StreamRecord>> {
        let query = "SELECT * OMIT id FROM type::record('stream', [$tenant, $path]);";
        let vars = json!({"tenant": tenant, "path": path});
        bounded(self.db.select_first(query, vars)).await
    }

    /// How many streams a tenant has (deleted ones that forks still read count).
    pub async fn count_streams(&self, tenant: &TenantId) -> Result<u64> {
        #[derive(serde::Deserialize)]
        struct Count {
            n: u64,
        }
        let query = "SELECT count() AS n FROM stream WHERE tenant = $tenant GROUP ALL;";
        let counted: Option<Count> =
            bounded(self.db.select_first(query, json!({"tenant": tenant}))).await?;
        Ok(counted.map_or(0, |count| count.n))
    }

    /// Up to `limit` units of a stream that end after `after`, in order.
    pub async fn stream_units(
        &self,
        stream_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StreamUnit>> {
        let query = "SELECT * OMIT id FROM stream_unit WHERE stream_id = $sid AND end > $after \
                     ORDER BY end LIMIT $limit;";
        let vars = json!({"sid": stream_id, "after": after, "limit": limit});
        bounded(self.db.select(query, vars)).await
    }

    /// What every producer of a stream last appended.
    pub async fn stream_producers(&self, stream_id: &str) -> Result<Vec<ProducerRecord>> {
        let query = "SELECT * OMIT id FROM stream_producer WHERE stream_id = $sid;";
        bounded(self.db.select(query, json!({"sid": stream_id}))).await
    }

    /// Every webhook endpoint, of every tenant.
    pub async fn load_endpoints(&self) -> Result<Vec<WebhookEndpoint>> {
        let query = "SELECT * OMIT id FROM webhook_endpoint ORDER BY tenant, endpoint_id;";
        let mut endpoints: Vec<WebhookEndpoint> = bounded(self.db.select(query, json!({}))).await?;
        for endpoint in &mut endpoints {
            self.db.open_secrets(endpoint)?;
        }
        Ok(endpoints)
    }

    /// The oldest events not yet fanned out to endpoints.
    pub async fn undispatched_events(&self, limit: usize) -> Result<Vec<EventRecord>> {
        let query = "SELECT * OMIT id, dispatched FROM event WHERE dispatched = false \
                     ORDER BY event_id LIMIT $limit;";
        bounded(self.db.select(query, json!({"limit": limit}))).await
    }

    /// An endpoint's pending deliveries (with ids after `after`), oldest
    /// first, each with its event.
    pub async fn pending_deliveries(
        &self,
        endpoint: &WebhookEndpoint,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(Delivery, EventRecord)>> {
        let filter = match after {
            Some(_) => "AND delivery_id > $after ",
            None => "",
        };
        let query = format!(
            "SELECT * OMIT id FROM delivery WHERE tenant = $tenant AND endpoint_id = $endpoint \
             AND status = 'pending' {filter}ORDER BY delivery_id LIMIT $limit;"
        );
        let vars = json!({
            "tenant": endpoint.tenant,
            "endpoint": endpoint.endpoint_id,
            "after": after,
            "limit": limit,
        });
        bounded(self.db.deliveries_with_events(&query, vars)).await
    }

    /// An endpoint's deliveries (in one status, if given), newest first.
    pub async fn list_deliveries(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let filter = match status {
            Some(_) => "AND status = $status ",
            None => "",
        };
        let query = format!(
            "SELECT * OMIT id FROM delivery WHERE tenant = $tenant \
             AND endpoint_id = $endpoint {filter}ORDER BY delivery_id DESC LIMIT $limit;"
        );
        let vars =
            json!({"tenant": tenant, "endpoint": endpoint_id, "status": status, "limit": limit});
        bounded(self.db.select(&query, vars)).await
    }

    /// These deliveries of an endpoint (`None`: every dead one), with their events.
    pub async fn load_deliveries(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        ids: Option<Vec<String>>,
    ) -> Result<Vec<(Delivery, EventRecord)>> {
        let filter = match ids {
            Some(_) => "delivery_id IN $ids",
            None => "status = 'dead'",
        };
        let query = format!(
            "SELECT * OMIT id FROM delivery WHERE tenant = $tenant AND endpoint_id = $endpoint \
             AND {filter} ORDER BY delivery_id;"
        );
        let vars = json!({"tenant": tenant, "endpoint": endpoint_id, "ids": ids});
        bounded(self.db.deliveries_with_events(&query, vars)).await
    }
}

impl Storage {
    /// The conversations of a tenant where this email or phone was captured
    /// as the contact (`field` is `email` or `phone`), or where a message's
    /// text contains it (case-insensitively): where a person's data may be.
    pub async fn conversations_mentioning(
        &self,
        tenant: &TenantId,
        field: &str,
        value: &str,
    ) -> Result<Vec<SessionId>> {
        // Emails are kept as written: compared in lower case.
        let (column, exact) = match field {
            "email" => ("string::lowercase(email ?? '')", value.to_lowercase()),
            _ => ("phone", value.to_owned()),
        };
        let query = format!(
            "SELECT VALUE conversation_id FROM contact WHERE tenant = $tenant AND {column} = $value;\n\
             SELECT VALUE session_id FROM (SELECT session_id FROM message WHERE tenant = $tenant \
             AND string::contains(string::lowercase(content), $lower) GROUP BY session_id);"
        );
        let vars = json!({"tenant": tenant, "value": exact, "lower": value.to_lowercase()});
        let found = bounded(self.db.select_each(&query, vars, 2)).await?;
        let mut ids: Vec<SessionId> = found
            .into_iter()
            .flatten()
            .filter_map(|id| serde_json::from_value(id).ok())
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

/// A conversation that may be due for analysis: quiet, with messages after
/// the last `seq` analysed.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct QuietConversation {
    pub session_id: SessionId,
    pub updated_at: String,
}

impl Storage {
    /// A conversation's insights, if it was analysed.
    pub async fn load_insight(
        &self,
        tenant: &TenantId,
        session: SessionId,
    ) -> Result<Option<crate::model::insight::Insight>> {
        let query = "SELECT * OMIT id FROM type::record('insight', $sid) WHERE tenant = $tenant;";
        let vars = json!({"sid": session.to_string(), "tenant": tenant});
        bounded(self.db.select_first(query, vars)).await
    }

    /// The tenant's conversations last changed in `[since, until)` (oldest
    /// first) with messages not yet analysed: what went quiet since the last
    /// look (over the `tenant, updated_at` index).
    pub async fn quiet_conversations(
        &self,
        tenant: &TenantId,
        since: &str,
        until: &str,
        limit: usize,
    ) -> Result<Vec<QuietConversation>> {
        let query = "SELECT session_id, updated_at FROM conversation \
                     WHERE tenant = $tenant AND updated_at >= $since AND updated_at < $until \
                     AND last_seq > (analyzed_seq ?? 0) ORDER BY updated_at LIMIT $limit;";
        let vars = json!({"tenant": tenant, "since": since, "until": until, "limit": limit});
        bounded(self.db.select(query, vars)).await
    }
}
