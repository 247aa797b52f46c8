//! Every figure the runtime reports, named in one place. The actors call
//! these functions at the moment a thing happens; the edge installs the
//! Prometheus recorder that keeps them and renders `GET /metrics`. Without a
//! recorder (metrics off) each call is a load and a branch.
//!
//! Labels are bounded by what an operator creates (tenants, webhook
//! endpoints, agents and models), never by what visitors create: no
//! conversation, client or message id is ever a label.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use metrics::{counter, gauge, histogram};

/// Names, with the unit in the name as Prometheus asks.
pub mod name {
    pub const SOCKETS_OPEN: &str = "tertulia_sockets_open";
    pub const SESSIONS_LIVE: &str = "tertulia_sessions_live";
    pub const MESSAGES_STORED: &str = "tertulia_messages_stored_total";
    pub const COMMIT_BATCH_SIZE: &str = "tertulia_commit_batch_size";
    pub const COMMIT_SECONDS: &str = "tertulia_commit_seconds";
    pub const FIRST_TOKEN_SECONDS: &str = "tertulia_first_token_seconds";
    pub const ANSWER_SECONDS: &str = "tertulia_answer_seconds";
    pub const TOKENS: &str = "tertulia_tokens_total";
    pub const WEBHOOK_DELIVERIES: &str = "tertulia_webhook_deliveries_total";
    pub const WEBHOOK_QUEUE_DEPTH: &str = "tertulia_webhook_queue_depth";
    pub const WEBHOOK_OLDEST_PENDING: &str = "tertulia_webhook_oldest_pending_seconds";
    pub const RATE_LIMITED: &str = "tertulia_rate_limited_total";
    pub const SLOW_CONSUMERS_CLOSED: &str = "tertulia_slow_consumers_closed_total";
    pub const ACTOR_RESTARTS: &str = "tertulia_actor_restarts_total";
    pub const PRUNED: &str = "tertulia_pruned_total";
    pub const FENCED_BATCHES: &str = "tertulia_fenced_batches_total";
    pub const CONVERSATIONS_TAKEN_OVER: &str = "tertulia_conversations_taken_over_total";
    pub const STREAM_CALLS_SERVED: &str = "tertulia_stream_calls_served_total";
}

/// Describes every figure, so a scrape carries `# HELP` and `# TYPE` for
/// each. Called once, after the recorder is installed.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(name::SOCKETS_OPEN, "Open client WebSockets, by tenant.");
    describe_gauge!(
        name::SESSIONS_LIVE,
        "Conversations with a live Session actor, by tenant."
    );
    describe_counter!(name::MESSAGES_STORED, "Messages committed, by role.");
    describe_histogram!(
        name::COMMIT_BATCH_SIZE,
        "Writes per group commit of the persistence actor."
    );
    describe_histogram!(
        name::COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Time one group commit took."
    );
    describe_histogram!(
        name::FIRST_TOKEN_SECONDS,
        metrics::Unit::Seconds,
        "From the question to the answer's first token, by agent and model."
    );
    describe_histogram!(
        name::ANSWER_SECONDS,
        metrics::Unit::Seconds,
        "From the question to the whole answer, by agent and model."
    );
    describe_counter!(
        name::TOKENS,
        "Tokens the provider reported, by model and kind (prompt, completion)."
    );
    describe_counter!(
        name::WEBHOOK_DELIVERIES,
        "Webhook delivery attempts, by endpoint and outcome."
    );
    describe_gauge!(
        name::WEBHOOK_QUEUE_DEPTH,
        "Deliveries waiting in an endpoint's worker, by endpoint."
    );
    describe_gauge!(
        name::WEBHOOK_OLDEST_PENDING,
        metrics::Unit::Seconds,
        "Age of the oldest delivery an endpoint's worker holds, by endpoint."
    );
    describe_counter!(
        name::RATE_LIMITED,
        "Requests and messages refused by a rate limit, by limit."
    );
    describe_counter!(
        name::SLOW_CONSUMERS_CLOSED,
        "Sockets closed because they did not read their queue."
    );
    describe_counter!(
        name::ACTOR_RESTARTS,
        "Restarts of a crashed actor, by actor kind."
    );
    describe_counter!(
        name::PRUNED,
        "Rows removed or conversations archived by retention, by kind."
    );
    describe_counter!(
        name::FENCED_BATCHES,
        "Write batches refused because this node had lost its lease (cluster)."
    );
    describe_counter!(
        name::CONVERSATIONS_TAKEN_OVER,
        "Conversations this node took over from a node whose lease ran out (cluster)."
    );
    describe_counter!(
        name::STREAM_CALLS_SERVED,
        "Durable Stream calls this node served for another node, as the stream's owner (cluster)."
    );
}

pub fn fenced_batch() {
    counter!(name::FENCED_BATCHES).increment(1);
}

pub fn conversation_taken_over() {
    counter!(name::CONVERSATIONS_TAKEN_OVER).increment(1);
}

pub fn stream_call_served() {
    counter!(name::STREAM_CALLS_SERVED).increment(1);
}

pub fn socket_opened(tenant: &str) {
    gauge!(name::SOCKETS_OPEN, "tenant" => tenant.to_owned()).increment(1.0);
}

pub fn socket_closed(tenant: &str) {
    gauge!(name::SOCKETS_OPEN, "tenant" => tenant.to_owned()).decrement(1.0);
}

pub fn sessions_live(tenant: &str, live: usize) {
    gauge!(name::SESSIONS_LIVE, "tenant" => tenant.to_owned()).set(live as f64);
}

/// A group commit of `writes` that took `took`, storing messages of these
/// roles: counted once per role and batch, not once per message.
pub fn committed(writes: usize, took: Duration, roles: impl Iterator<Item = crate::model::Role>) {
    use crate::model::Role;
    histogram!(name::COMMIT_BATCH_SIZE).record(writes as f64);
    histogram!(name::COMMIT_SECONDS).record(took.as_secs_f64());
    let mut stored = [0u64; 3];
    for role in roles {
        stored[role as usize] += 1;
    }
    for role in [Role::User, Role::Assistant, Role::System] {
        if stored[role as usize] > 0 {
            counter!(name::MESSAGES_STORED, "role" => role.as_str())
                .increment(stored[role as usize]);
        }
    }
}

/// A finished answer's timings and tokens, as its agent reported them.
pub fn answered(meta: &crate::model::AnswerMeta) {
    let agent = meta.agent.clone().unwrap_or_else(|| "unknown".into());
    let model = meta.model.clone().unwrap_or_else(|| "none".into());
    if let Some(ms) = meta.time_to_first_token_ms {
        histogram!(name::FIRST_TOKEN_SECONDS, "agent" => agent.clone(), "model" => model.clone())
            .record(ms as f64 / 1000.0);
    }
    if let Some(ms) = meta.total_ms {
        histogram!(name::ANSWER_SECONDS, "agent" => agent, "model" => model.clone())
            .record(ms as f64 / 1000.0);
    }
    if let Some(tokens) = meta.prompt_tokens {
        counter!(name::TOKENS, "model" => model.clone(), "kind" => "prompt")
            .increment(u64::from(tokens));
    }
    if let Some(tokens) = meta.completion_tokens {
        counter!(name::TOKENS, "model" => model, "kind" => "completion")
            .increment(u64::from(tokens));
    }
}

/// `outcome`: `delivered`, `failed` (retried later), `dead` or `gone`.
pub fn delivery_attempted(endpoint: &str, outcome: &'static str) {
    counter!(name::WEBHOOK_DELIVERIES, "endpoint" => endpoint.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// When each endpoint's oldest held delivery was made (Unix seconds), so
/// its age is computed at the scrape rather than when a worker last woke.
static OLDEST_PENDING: LazyLock<DashMap<String, f64>> = LazyLock::new(DashMap::new);

/// An endpoint worker's queue after a change: how many it holds and when
/// the oldest of them was made (RFC 3339), if any.
pub fn webhook_queue(endpoint: &str, depth: usize, oldest_created: Option<&str>) {
    gauge!(name::WEBHOOK_QUEUE_DEPTH, "endpoint" => endpoint.to_owned()).set(depth as f64);
    let created = oldest_created
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.timestamp_millis() as f64 / 1000.0);
    match created {
        Some(created) => {
            OLDEST_PENDING.insert(endpoint.to_owned(), created);
        }
        None => {
            OLDEST_PENDING.remove(endpoint);
            gauge!(name::WEBHOOK_OLDEST_PENDING, "endpoint" => endpoint.to_owned()).set(0.0);
        }
    }
}

/// Brings the age gauges up to this moment; the edge calls it before it
/// renders a scrape.
pub fn refresh_ages() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    for entry in OLDEST_PENDING.iter() {
        gauge!(name::WEBHOOK_OLDEST_PENDING, "endpoint" => entry.key().clone())
            .set((now - entry.value()).max(0.0));
    }
}

/// `limit`: which limit refused (`key`, `address`, `webchat_session`,
/// `webchat_address`, `conversation_messages`).
pub fn rate_limited(limit: &'static str) {
    counter!(name::RATE_LIMITED, "limit" => limit).increment(1);
}

pub fn slow_consumer_closed() {
    counter!(name::SLOW_CONSUMERS_CLOSED).increment(1);
}

/// `actor`: `persistence`, `webhooks`, `analyst`, `session`.
pub fn actor_restarted(actor: &'static str) {
    counter!(name::ACTOR_RESTARTS, "actor" => actor).increment(1);
}

/// `kind`: what retention removed (`delivery`, `event`, `conversation`) or
/// archived (`archived`).
pub fn pruned(kind: &'static str, rows: u64) {
    counter!(name::PRUNED, "kind" => kind).increment(rows);
}
