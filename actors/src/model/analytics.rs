//! Statistics per tenant: the question (`SummaryQuery`, a time range cut
//! into hour or day buckets), the rows the database's aggregate queries
//! answer with (`SummaryRows`), and the summary put together from them
//! (`Summary`, also as CSV). Plain data: the store runs the queries, and
//! nothing here reads a message.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{TenantId, stored_time as stored};

/// The most buckets one summary may have (a year of days, a month of hours).
pub const MAX_BUCKETS: usize = 800;
/// A sentiment below minus this is negative, above it positive.
pub const NEUTRAL_BAND: f64 = 0.25;

/// How a summary's range is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn parse(text: &str) -> Result<Bucket, String> {
        match text {
            "hour" => Ok(Bucket::Hour),
            "day" => Ok(Bucket::Day),
            other => Err(format!("`bucket` must be `hour` or `day`, not `{other}`")),
        }
    }

    /// How many leading characters of a stored timestamp name its bucket
    /// (`2026-12-02T07` or `2026-12-02`): stored times sort as text.
    pub fn key_len(self) -> usize {
        match self {
            Bucket::Hour => 13,
            Bucket::Day => 10,
        }
    }

    fn step(self) -> Duration {
        match self {
            Bucket::Hour => Duration::hours(1),
            Bucket::Day => Duration::days(1),
        }
    }

    fn floor(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let date = at.date_naive();
        let hour = match self {
            Bucket::Hour => chrono::Timelike::hour(&at),
            Bucket::Day => 0,
        };
        Utc.from_utc_datetime(&date.and_hms_opt(hour, 0, 0).expect("a valid hour"))
    }
}

/// What a summary covers: `[from, to)`, in buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryQuery {
    pub tenant: TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    pub bucket: Bucket,
}

/// An instant given as RFC 3339 or as a date (its midnight, UTC).
fn parse_instant(text: &str, field: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|date| Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight")))
        .map_err(|_| format!("`{field}` must be an RFC 3339 time or a date (2026-12-01)"))
}

impl SummaryQuery {
    /// The range asked for: `to` defaults to `now`, `from` to 30 days (or,
    /// by hour, 48 hours) before `to`; `bucket` to `day`.
    pub fn new(
        tenant: TenantId,
        from: Option<&str>,
        to: Option<&str>,
        bucket: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<SummaryQuery, String> {
        let bucket = bucket.map_or(Ok(Bucket::Day), Bucket::parse)?;
        let to = to.map_or(Ok(now), |to| parse_instant(to, "to"))?;
        let back = match bucket {
            Bucket::Hour => Duration::hours(48),
            Bucket::Day => Duration::days(30),
        };
        let from = from.map_or(Ok(to - back), |from| parse_instant(from, "from"))?;
        if from >= to {
            return Err("`from` must be before `to`".into());
        }
        let query = SummaryQuery {
            tenant,
            from,
            to,
            bucket,
        };
        let buckets = query.bucket_starts().len();
        if buckets > MAX_BUCKETS {
            return Err(format!(
                "the range has {buckets} buckets; the most is {MAX_BUCKETS} (use `bucket=day` or a shorter range)"
            ));
        }
        Ok(query)
    }

    /// `from` and `to` as stored times.
    pub fn range(&self) -> (String, String) {
        (stored(self.from), stored(self.to))
    }

    /// The start of every bucket the range touches, in order.
    fn bucket_starts(&self) -> Vec<DateTime<Utc>> {
        let mut starts = Vec::new();
        let mut at = self.bucket.floor(self.from);
        while at < self.to && starts.len() <= MAX_BUCKETS {
            starts.push(at);
            at += self.bucket.step();
        }
        starts
    }
}

/// A count per bucket (`GROUP BY bucket`).
#[derive(Debug, Clone, Deserialize)]
pub struct CountRow {
    pub bucket: String,
    pub n: u64,
}

/// Messages per bucket, role, channel, status and model: their count, the
/// tokens they cost, and their answer latencies (one value per answer, as
/// the database groups them; absent for messages that have none).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MessageRow {
    pub bucket: String,
    pub role: String,
    pub via: String,
    pub status: String,
    #[serde(default)]
    pub model: Option<String>,
    pub n: u64,
    #[serde(default)]
    pub prompt: Option<f64>,
    #[serde(default)]
    pub completion: Option<f64>,
    #[serde(default)]
    pub ttft: Vec<Option<f64>>,
    #[serde(default)]
    pub total: Vec<Option<f64>>,
}

/// Recorded events per bucket and type (leads, handoffs).
#[derive(Debug, Clone, Deserialize)]
pub struct EventRow {
    pub bucket: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub n: u64,
}

/// Insights per bucket, intent and mood, with their summed sentiment.
#[derive(Debug, Clone, Deserialize)]
pub struct InsightRow {
    pub bucket: String,
    pub intent: String,
    pub mood: String,
    pub n: u64,
    pub sentiment: f64,
}

/// What the aggregate queries answered.
#[derive(Debug, Clone, Default)]
pub struct SummaryRows {
    pub conversations: Vec<CountRow>,
    pub messages: Vec<MessageRow>,
    pub events: Vec<EventRow>,
    pub insights: Vec<InsightRow>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Answers {
    pub complete: u64,
    pub interrupted: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sentiment {
    pub negative: u64,
    pub neutral: u64,
    pub positive: u64,
    pub mean: Option<f64>,
    #[serde(skip)]
    sum: f64,
}

/// The figures of one bucket, or of the whole range.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub conversations_started: u64,
    /// role → channel (`webchat`, or `api` for REST and sockets) → count.
    pub messages: BTreeMap<String, BTreeMap<String, u64>>,
    /// Assistant messages by how they ended.
    pub answers: Answers,
    pub time_to_first_token_ms: Percentiles,
    pub full_answer_ms: Percentiles,
    /// model → tokens.
    pub tokens: BTreeMap<String, Tokens>,
    pub leads_captured: u64,
    pub handoffs_requested: u64,
    pub handoffs_taken_over: u64,
    /// intent → conversations analysed with it.
    pub intents: BTreeMap<String, u64>,
    pub sentiment: Sentiment,
    /// Latencies gathered until the percentiles are taken.
    #[serde(skip)]
    latencies: (Vec<f64>, Vec<f64>),
}

/// The `p`th percentile of `values`, interpolated between ranks (as
/// SurrealDB's `math::percentile` and a spreadsheet's PERCENTILE compute it).
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = p / 100.0 * last as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64))
}

fn percentiles(values: &mut [f64]) -> Percentiles {
    values.sort_by(f64::total_cmp);
    Percentiles {
        p50: percentile(values, 50.0),
        p95: percentile(values, 95.0),
    }
}

/// One bucket of a summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BucketStats {
    pub start: String,
    #[serde(flatten)]
    pub stats: Stats,
}

/// A tenant's statistics over a range, per bucket and in total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub from: String,
    pub to: String,
    pub bucket: Bucket,
    pub total: Stats,
    pub buckets: Vec<BucketStats>,
}

impl Stats {
    fn add_message(&mut self, row: &MessageRow) {
        *self
            .messages
            .entry(row.role.clone())
            .or_default()
            .entry(row.via.clone())
            .or_default() += row.n;
        if row.role != "assistant" {
            return;
        }
        match row.status.as_str() {
            "failed" => self.answers.failed += row.n,
            "interrupted" => self.answers.interrupted += row.n,
            _ => self.answers.complete += row.n,
        }
        if let Some(model) = &row.model {
            let tokens = self.tokens.entry(model.clone()).or_default();
            tokens.prompt += row.prompt.unwrap_or(0.0) as u64;
            tokens.completion += row.completion.unwrap_or(0.0) as u64;
        }
        self.latencies.0.extend(row.ttft.iter().flatten());
        self.latencies.1.extend(row.total.iter().flatten());
    }

    /// Takes the percentiles of the latencies gathered.
    fn settle(&mut self) {
        let (mut ttft, mut total) = std::mem::take(&mut self.latencies);
        self.time_to_first_token_ms = percentiles(&mut ttft);
        self.full_answer_ms = percentiles(&mut total);
    }

    fn add_event(&mut self, row: &EventRow) {
        match row.kind.as_str() {
            "lead.captured" => self.leads_captured += row.n,
            "handoff.requested" => self.handoffs_requested += row.n,
            "handoff.taken" => self.handoffs_taken_over += row.n,
            _ => {}
        }
    }

    fn add_insight(&mut self, row: &InsightRow) {
        *self.intents.entry(row.intent.clone()).or_default() += row.n;
        let sentiment = &mut self.sentiment;
        match row.mood.as_str() {
            "negative" => sentiment.negative += row.n,
            "positive" => sentiment.positive += row.n,
            _ => sentiment.neutral += row.n,
        }
        sentiment.sum += row.sentiment;
        let count = sentiment.negative + sentiment.neutral + sentiment.positive;
        sentiment.mean = Some(sentiment.sum / count as f64);
    }
}

impl Summary {
    /// Puts the rows together: every bucket of the range (empty ones too),
    /// and the totals (counts summed, percentiles over every answer's latency).
    pub fn assemble(query: &SummaryQuery, rows: &SummaryRows) -> Summary {
        let len = query.bucket.key_len();
        let starts = query.bucket_starts();
        let mut buckets: Vec<BucketStats> = starts
            .iter()
            .map(|start| BucketStats {
                start: start.to_rfc3339_opts(SecondsFormat::Secs, true),
                stats: Stats::default(),
            })
            .collect();
        let index: BTreeMap<String, usize> = buckets
            .iter()
            .enumerate()
            .map(|(at, bucket)| (bucket.start[..len].to_owned(), at))
            .collect();
        let mut total = Stats::default();
        let mut each = |key: &str, apply: &dyn Fn(&mut Stats)| {
            if let Some(&at) = index.get(key) {
                apply(&mut buckets[at].stats);
            }
            apply(&mut total);
        };
        for row in &rows.conversations {
            each(&row.bucket, &|stats| stats.conversations_started += row.n);
        }
        for row in &rows.messages {
            each(&row.bucket, &|stats| stats.add_message(row));
        }
        for row in &rows.events {
            each(&row.bucket, &|stats| stats.add_event(row));
        }
        for row in &rows.insights {
            each(&row.bucket, &|stats| stats.add_insight(row));
        }
        for bucket in &mut buckets {
            bucket.stats.settle();
        }
        total.settle();
        let (from, to) = query.range();
        Summary {
            from,
            to,
            bucket: query.bucket,
            total,
            buckets,
        }
    }

    /// One line per bucket, for a spreadsheet; intents and models seen in
    /// the range get a column each.
    pub fn to_csv(&self) -> String {
        let intents: Vec<&String> = self.total.intents.keys().collect();
        let models: Vec<&String> = self.total.tokens.keys().collect();
        let mut header = vec![
            "bucket_start",
            "conversations_started",
            "messages_user",
            "messages_assistant",
            "messages_system",
            "answers_complete",
            "answers_interrupted",
            "answers_failed",
            "ttft_p50_ms",
            "ttft_p95_ms",
            "full_answer_p50_ms",
            "full_answer_p95_ms",
            "leads_captured",
            "handoffs_requested",
            "handoffs_taken_over",
            "sentiment_mean",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        header.extend(intents.iter().map(|intent| format!("intent_{intent}")));
        header.extend(models.iter().map(|model| format!("tokens_{model}")));
        let mut out = csv_line(&header);
        for bucket in &self.buckets {
            let stats = &bucket.stats;
            let by_role = |role: &str| {
                stats
                    .messages
                    .get(role)
                    .map_or(0, |channels| channels.values().sum::<u64>())
                    .to_string()
            };
            let number = |value: Option<f64>| value.map_or(String::new(), |v| format!("{v}"));
            let mut line = vec![
                bucket.start.clone(),
                stats.conversations_started.to_string(),
                by_role("user"),
                by_role("assistant"),
                by_role("system"),
                stats.answers.complete.to_string(),
                stats.answers.interrupted.to_string(),
                stats.answers.failed.to_string(),
                number(stats.time_to_first_token_ms.p50),
                number(stats.time_to_first_token_ms.p95),
                number(stats.full_answer_ms.p50),
                number(stats.full_answer_ms.p95),
                stats.leads_captured.to_string(),
                stats.handoffs_requested.to_string(),
                stats.handoffs_taken_over.to_string(),
                number(stats.sentiment.mean),
            ];
            line.extend(
                intents
                    .iter()
                    .map(|intent| stats.intents.get(*intent).copied().unwrap_or(0).to_string()),
            );
            line.extend(models.iter().map(|model| {
                let tokens = stats.tokens.get(*model).copied().unwrap_or_default();
                (tokens.prompt + tokens.completion).to_string()
            }));
            out.push_str(&csv_line(&line));
        }
        out
    }
}

/// One CSV record (RFC 4180): fields with a comma, quote or newline are quoted.
fn csv_line(fields: &[String]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|field| {
            if field.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", field.replace('"', "\"\""))
            } else {
                field.clone()
            }
        })
        .collect();
    format!("{}\r\n", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(from: &str, to: &str, bucket: &str) -> SummaryQuery {
        SummaryQuery::new(
            TenantId("t".into()),
            Some(from),
            Some(to),
            Some(bucket),
            Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn a_range_is_cut_into_every_bucket_it_touches() {
        let q = query("2026-12-01T10:30:00Z", "2026-12-01T13:00:00Z", "hour");
        let starts: Vec<String> = q
            .bucket_starts()
            .iter()
            .map(|at| stored(*at)[..13].to_owned())
            .collect();
        assert_eq!(starts, ["2026-12-01T10", "2026-12-01T11", "2026-12-01T12"]);
        assert_eq!(
            q.range(),
            (
                "2026-12-01T10:30:00.000000Z".into(),
                "2026-12-01T13:00:00.000000Z".into()
            )
        );
        let days = query("2026-11-01", "2026-12-01", "day");
        assert_eq!(days.bucket_starts().len(), 30);
    }

    #[test]
    fn bad_ranges_are_refused_with_the_field_named() {
        let now = Utc::now();
        let new = |from, to, bucket| SummaryQuery::new(TenantId("t".into()), from, to, bucket, now);
        assert!(
            new(Some("yesterday"), None, None)
                .unwrap_err()
                .contains("`from`")
        );
        assert!(
            new(None, None, Some("week"))
                .unwrap_err()
                .contains("`bucket`")
        );
        assert!(
            new(Some("2026-12-02"), Some("2026-12-01"), None)
                .unwrap_err()
                .contains("before")
        );
        assert!(
            new(Some("2020-01-01"), Some("2026-01-01"), Some("hour"))
                .unwrap_err()
                .contains("buckets")
        );
    }

    #[test]
    fn rows_add_up_per_bucket_and_in_total() {
        let q = query("2026-12-01", "2026-12-03", "day");
        let rows = SummaryRows {
            conversations: vec![CountRow {
                bucket: "2026-12-01".into(),
                n: 2,
            }],
            messages: vec![
                MessageRow {
                    bucket: "2026-12-01".into(),
                    role: "user".into(),
                    via: "webchat".into(),
                    status: "complete".into(),
                    n: 3,
                    ..MessageRow::default()
                },
                MessageRow {
                    bucket: "2026-12-02".into(),
                    role: "assistant".into(),
                    via: "api".into(),
                    status: "failed".into(),
                    model: Some("m".into()),
                    n: 3,
                    prompt: Some(30.0),
                    ttft: vec![Some(100.0), None, Some(300.0), Some(100.0)],
                    ..MessageRow::default()
                },
            ],
            insights: vec![
                InsightRow {
                    bucket: "2026-12-02".into(),
                    intent: "emergency".into(),
                    mood: "negative".into(),
                    n: 1,
                    sentiment: -0.8,
                },
                InsightRow {
                    bucket: "2026-12-02".into(),
                    intent: "estimate".into(),
                    mood: "positive".into(),
                    n: 1,
                    sentiment: 0.6,
                },
            ],
            ..SummaryRows::default()
        };
        let summary = Summary::assemble(&q, &rows);
        assert_eq!(summary.buckets.len(), 2);
        assert_eq!(summary.buckets[0].start, "2026-12-01T00:00:00Z");
        assert_eq!(summary.buckets[0].stats.conversations_started, 2);
        assert_eq!(summary.buckets[1].stats.answers.failed, 3);
        assert_eq!(summary.total.tokens["m"].prompt, 30);
        let ttft = summary.total.time_to_first_token_ms;
        assert_eq!(
            (ttft.p50, ttft.p95),
            (Some(100.0), Some(280.0)),
            "interpolated"
        );
        assert_eq!(summary.buckets[0].stats.full_answer_ms.p50, None);
        assert_eq!(summary.total.messages["user"]["webchat"], 3);
        assert_eq!(summary.total.intents["emergency"], 1);
        let mean = summary.total.sentiment.mean.unwrap();
        assert!((mean - (-0.1)).abs() < 1e-9, "{mean}");
        let csv = summary.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3, "{csv}");
        assert!(
            lines[0].ends_with("intent_emergency,intent_estimate,tokens_m"),
            "{csv}"
        );
        assert!(
            lines[1].starts_with("2026-12-01T00:00:00Z,2,3,0,0,"),
            "{csv}"
        );
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.5));
    }

    #[test]
    fn csv_fields_with_commas_or_quotes_are_quoted() {
        let line = csv_line(&["a,b".into(), "say \"hi\"".into(), "plain".into()]);
        assert_eq!(line, "\"a,b\",\"say \"\"hi\"\"\",plain\r\n");
    }
}
