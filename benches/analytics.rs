//! The time one statistics summary (`GET /analytics/summary`) takes over a
//! tenant's 100,000 stored messages: written through the real write path
//! (the persistence actor), spread over 30 days, then summed, counted and
//! ranked by SurrealDB's aggregate queries. By day over 30 days and by hour
//! over the last 48 hours, with the `message_by_time` index and, on a second
//! database, without it.
//!
//! ```sh
//! cargo bench --bench analytics                 # surrealkv, 100,000 messages
//! ANALYTICS_MESSAGES=20000 cargo bench --bench analytics
//! ```

use std::time::Duration;

use tertulia_actors::store_bench::StoreBench;

const CONVERSATIONS: usize = 1000;
const RUNS: usize = 9;

fn main() {
    let messages: usize = std::env::var("ANALYTICS_MESSAGES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (name, drop_index) in [("with message_by_time", false), ("without it", true)] {
            let endpoint = format!(
                "surrealkv://{}/{}.db?sync=every",
                dir.path().display(),
                if drop_index { "unindexed" } else { "indexed" }
            );
            let mut bench = StoreBench::open(&endpoint, CONVERSATIONS).await;
            if drop_index {
                bench.remove_index("message_by_time", "message").await;
            }
            let history = bench.history(messages, 30);
            for batch in history.chunks(1000) {
                bench.append(batch.to_vec()).await;
            }
            bench.settle().await;
            println!("{messages} messages in {CONVERSATIONS} conversations over 30 days, {name}:");
            for (bucket, days) in [("day", 30), ("hour", 2)] {
                let mut times = Vec::new();
                let mut counted = 0;
                for _ in 0..RUNS {
                    let (elapsed, total) = bench.summary(bucket, days).await;
                    times.push(elapsed);
                    counted = total;
                }
                times.sort();
                if std::env::var_os("ANALYTICS_STATEMENTS").is_some() {
                    let len = if bucket == "day" { 10 } else { 13 };
                    for (statement, took) in bench.summary_statements(len, days).await {
                        println!("    {:>8.1} ms  {statement}", ms(took));
                    }
                }
                println!(
                    "  by {bucket:<4} over {days:>2} days: median {:>8.1} ms  (min {:.1}, max {:.1}; {counted} messages counted)",
                    ms(times[RUNS / 2]),
                    ms(times[0]),
                    ms(times[RUNS - 1]),
                );
            }
        }
    });
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
