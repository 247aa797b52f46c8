//! The statistics of a tenant over a time range, as aggregate queries the
//! database answers (`GROUP BY` a bucket cut from the stored time, over the
//! `tenant, created_at` indexes): counts, sums, medians and 95th
//! percentiles, never the messages themselves. One round trip, every
//! statement read in the caller's task like the other reads.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::handle::Storage;
use crate::error::{Error, Result};
use crate::model::analytics::{
    CountRow, EventRow, InsightRow, LatencyRow, MessageRow, NEUTRAL_BAND, SummaryQuery,
    SummaryRows, TokenRow,
};

/// Every statement filters by tenant and `[from, to)` on its time field;
/// `$len` cuts that field's text to the bucket's key.
const QUERIES: &str = "\
SELECT string::slice(created_at, 0, $len) AS bucket, count() AS n FROM conversation \
 WHERE tenant = $tenant AND created_at >= $from AND created_at < $to GROUP BY bucket;
SELECT string::slice(created_at, 0, $len) AS bucket, role, channel ?? 'api' AS via, status, \
 count() AS n FROM message WHERE tenant = $tenant AND created_at >= $from AND created_at < $to \
 GROUP BY bucket, role, via, status;
SELECT string::slice(created_at, 0, $len) AS bucket, \
 math::median(agent.time_to_first_token_ms) AS ttft_p50, \
 math::percentile(array::group(agent.time_to_first_token_ms), 95) AS ttft_p95, \
 math::median(agent.total_ms) AS total_p50, math::percentile(array::group(agent.total_ms), 95) AS total_p95 \
 FROM message WHERE tenant = $tenant AND created_at >= $from AND created_at < $to \
 AND role = 'assistant' AND agent.time_to_first_token_ms != NONE AND agent.total_ms != NONE \
 GROUP BY bucket;
SELECT math::median(agent.time_to_first_token_ms) AS ttft_p50, \
 math::percentile(array::group(agent.time_to_first_token_ms), 95) AS ttft_p95, \
 math::median(agent.total_ms) AS total_p50, math::percentile(array::group(agent.total_ms), 95) AS total_p95 \
 FROM message WHERE tenant = $tenant AND created_at >= $from AND created_at < $to \
 AND role = 'assistant' AND agent.time_to_first_token_ms != NONE AND agent.total_ms != NONE \
 GROUP ALL;
SELECT string::slice(created_at, 0, $len) AS bucket, agent.model AS model, \
 math::sum(agent.prompt_tokens ?? 0) AS prompt, math::sum(agent.completion_tokens ?? 0) AS completion \
 FROM message WHERE tenant = $tenant AND created_at >= $from AND created_at < $to \
 AND role = 'assistant' AND agent.model != NONE GROUP BY bucket, model;
SELECT string::slice(created_at, 0, $len) AS bucket, type, count() AS n FROM event \
 WHERE tenant = $tenant AND created_at >= $from AND created_at < $to \
 AND type IN ['lead.captured', 'handoff.requested', 'handoff.taken'] GROUP BY bucket, type;
SELECT string::slice(analyzed_at, 0, $len) AS bucket, intent, \
 IF sentiment < -$band THEN 'negative' ELSE IF sentiment > $band THEN 'positive' ELSE 'neutral' END AS mood, \
 count() AS n, math::sum(sentiment) AS sentiment FROM insight \
 WHERE tenant = $tenant AND analyzed_at >= $from AND analyzed_at < $to GROUP BY bucket, intent, mood;";

/// How many statements `QUERIES` holds.
const STATEMENTS: usize = 7;

fn rows<T: DeserializeOwned>(rows: Vec<Value>) -> Result<Vec<T>> {
    rows.into_iter()
        .map(|row| {
            serde_json::from_value(row.clone()).map_err(|error| {
                Error::Storage(format!("unexpected statistics row: {error}: {row}"))
            })
        })
        .collect()
}

impl Storage {
    /// The aggregate rows of a summary (the persistence actor first writes
    /// the counters it owes, so the figures include every acknowledged message).
    pub async fn summary_rows(&self, query: &SummaryQuery) -> Result<SummaryRows> {
        let (from, to) = query.range();
        let vars = json!({
            "tenant": query.tenant,
            "from": from,
            "to": to,
            "len": query.bucket.key_len(),
            "band": NEUTRAL_BAND,
        });
        self.flush().await;
        let read = self.db.select_each(QUERIES, vars, STATEMENTS);
        let mut each = super::read::bounded(read).await?.into_iter();
        let mut next = || each.next().unwrap_or_default();
        Ok(SummaryRows {
            conversations: rows::<CountRow>(next())?,
            messages: rows::<MessageRow>(next())?,
            latency: rows::<LatencyRow>(next())?,
            latency_total: rows::<LatencyRow>(next())?.into_iter().next(),
            tokens: rows::<TokenRow>(next())?,
            events: rows::<EventRow>(next())?,
            insights: rows::<InsightRow>(next())?,
        })
    }
}
