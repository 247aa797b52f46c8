//! Store cost per message: batches of 100 messages across 100 conversations
//! through the real write path (the persistence actor: bulk inserts, lazy
//! counters), beside SurrealDB's own floor for the same documents (one
//! `INSERT` of the 100 rows in one transaction) and the per-message shape the
//! store used before (a `CREATE` and an `UPDATE` of the conversation per
//! message). Same SurrealDB, same engine, same process, rounds alternated.
//!
//! ```sh
//! cargo bench --bench store             # surrealkv (fsync on every commit) and mem://
//! STORE_ROUNDS=200 cargo bench --bench store
//! ```

use std::time::Duration;

use tertulia_actors::store_bench::StoreBench;

const CONVERSATIONS: usize = 100;

fn main() {
    let rounds: usize = std::env::var("STORE_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(60);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        println!(
            "batches of {CONVERSATIONS} messages across {CONVERSATIONS} conversations, {rounds} rounds each"
        );
        println!(
            "{:<44} {:>14} {:>14} {:>14} {:>10} {:>10}",
            "engine", "floor µs/msg", "before µs/msg", "now µs/msg", "now/floor", "before/now"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let surrealkv = format!(
            "surrealkv://{}/store.db?sync=every",
            dir.path().display()
        );
        measure("surrealkv, sync=every", &surrealkv, rounds, None).await;
        measure("mem://", "mem://", rounds, None).await;
        let unindexed = format!(
            "surrealkv://{}/unindexed.db?sync=every",
            dir.path().display()
        );
        measure(
            "surrealkv, without message_client_id",
            &unindexed,
            rounds,
            Some(("message_client_id", "message")),
        )
        .await;
    });
}

/// One engine: the three shapes alternated round by round; every figure is
/// the total time over the total messages (the counters the real path owes
/// are written during the rounds and by one final flush, both counted).
async fn measure(name: &str, endpoint: &str, rounds: usize, without: Option<(&str, &str)>) {
    let mut bench = StoreBench::open(endpoint, CONVERSATIONS).await;
    if let Some((index, table)) = without {
        bench.remove_index(index, table).await;
    }
    for _ in 0..5 {
        let messages = bench.messages();
        bench.append(messages).await;
    }
    bench.settle().await;
    let (mut floor, mut before, mut now) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let messages = bench.messages();
        floor += bench.raw_insert(&messages).await;
        let messages = bench.messages();
        before += bench.per_message_statements(&messages).await;
        let messages = bench.messages();
        now += bench.append(messages).await;
    }
    now += bench.settle().await;
    let per_message = |total: Duration| total.as_secs_f64() * 1e6 / (rounds * CONVERSATIONS) as f64;
    let (floor, before, now) = (per_message(floor), per_message(before), per_message(now));
    println!(
        "{:<44} {:>14.1} {:>14.1} {:>14.1} {:>10.2} {:>10.2}",
        name,
        floor,
        before,
        now,
        now / floor,
        before / now
    );
}
