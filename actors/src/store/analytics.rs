//! The statistics of a tenant over a time range, as aggregate queries the
//! database answers (`GROUP BY` a bucket cut from the stored time, over the
//! `tenant, created_at` indexes): counts and sums, and each answer's two
//! latencies grouped (the percentiles are taken from them in
//! `model/analytics.rs`), never the messages themselves. The messages are
//! read once: one statement gives counts, tokens and latencies together,
//! since each pass over a range costs about the same whatever it computes.
//! One round trip, read in the caller's task like the other reads.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::handle::Storage;
use crate::error::{Error, Result};
use crate::model::analytics::{
    CountRow, EventRow, InsightRow, MessageRow, NEUTRAL_BAND, SummaryQuery, SummaryRows,
};

/// Every statement filters by tenant and `[from, to)` on its time field;
/// `$len` cuts that field's text to the bucket's key.
pub(super) const QUERIES: &str = "\
SELECT string::slice(created_at, 0, $len) AS bucket, count() AS n FROM conversation \
 WHERE tenant = $tenant AND created_at >= $from AND created_at < $to GROUP BY bucket;
SELECT string::slice(created_at, 0, $len) AS bucket, role, channel ?? 'api' AS via, status, \
 agent.model AS model, count() AS n, math::sum(agent.prompt_tokens ?? 0) AS prompt, \
 math::sum(agent.completion_tokens ?? 0) AS completion, \
 array::group(agent.time_to_first_token_ms) AS ttft, array::group(agent.total_ms) AS total \
 FROM message WHERE tenant = $tenant AND created_at >= $from AND created_at < $to \
 GROUP BY bucket, role, via, status, model;
SELECT string::slice(created_at, 0, $len) AS bucket, type, count() AS n FROM event \
 WHERE tenant = $tenant AND created_at >= $from AND created_at < $to \
 AND type IN ['lead.captured', 'handoff.requested', 'handoff.taken'] GROUP BY bucket, type;
SELECT string::slice(analyzed_at, 0, $len) AS bucket, intent, \
 IF sentiment < -$band THEN 'negative' ELSE IF sentiment > $band THEN 'positive' ELSE 'neutral' END AS mood, \
 count() AS n, math::sum(sentiment) AS sentiment FROM insight \
 WHERE tenant = $tenant AND analyzed_at >= $from AND analyzed_at < $to GROUP BY bucket, intent, mood;";

/// How many statements `QUERIES` holds.
const STATEMENTS: usize = 4;

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
            events: rows::<EventRow>(next())?,
            insights: rows::<InsightRow>(next())?,
        })
    }
}
