//! Store cost per message: batches of 100 messages across 100 conversations
//! through the real write path (the persistence actor: bulk inserts, lazy
//! counters), beside SurrealDB's own floor for the same documents (one
//! `INSERT` of the 100 rows in one transaction) and the per-message shape the
//! store used before (a `CREATE` and an `UPDATE` of the conversation per
//! message). Same SurrealDB, same engine, same process, rounds alternated.
//! Then the same on surrealkv without one index at a time
//! (`message_client_id`, `message_by_time`), to show what each costs.
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
        println!("µs per message:");
        println!(
            "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "engine", "floor", "before", "now", "eager", "now/floor", "eager/fl", "before/now"
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
        let untimed = format!(
            "surrealkv://{}/untimed.db?sync=every",
            dir.path().display()
        );
        measure(
            "surrealkv, without message_by_time",
            &untimed,
            rounds,
            Some(("message_by_time", "message")),
        )
        .await;
    });
}

/// One engine: each shape on its own database (a raw transaction must not
/// race the persistence actor's own writes: surrealkv would report a write
/// conflict), rounds alternated between them. Every figure is the total
/// time over the total messages; the real path's owed counters are written
/// during the rounds (every 200 ms) and by one final flush, both counted.
/// "eager" is the real path with a flush after every batch: the counters of
/// all 100 conversations written once per batch, the worst case.
async fn measure(name: &str, endpoint: &str, rounds: usize, without: Option<(&str, &str)>) {
    let mut shapes = Vec::new();
    for shape in ["floor", "before", "now", "eager"] {
        let endpoint = endpoint.replace(".db", &format!("-{shape}.db"));
        let bench = StoreBench::open(&endpoint, CONVERSATIONS).await;
        if let Some((index, table)) = without {
            bench.remove_index(index, table).await;
        }
        shapes.push(bench);
    }
    for bench in &mut shapes {
        for _ in 0..5 {
            let messages = bench.messages();
            bench.raw_insert(&messages).await;
        }
    }
    let mut totals = [Duration::ZERO; 4];
    for _ in 0..rounds {
        let messages = shapes[0].messages();
        totals[0] += shapes[0].raw_insert(&messages).await;
        let messages = shapes[1].messages();
        totals[1] += shapes[1].per_message_statements(&messages).await;
        let messages = shapes[2].messages();
        totals[2] += shapes[2].append(messages).await;
        let messages = shapes[3].messages();
        totals[3] += shapes[3].append(messages).await + shapes[3].settle().await;
    }
    totals[2] += shapes[2].settle().await;
    let per_message = |total: Duration| total.as_secs_f64() * 1e6 / (rounds * CONVERSATIONS) as f64;
    let [floor, before, now, eager] = totals.map(per_message);
    println!(
        "{:<40} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.2} {:>10.2} {:>10.2}",
        name,
        floor,
        before,
        now,
        eager,
        now / floor,
        eager / floor,
        before / now
    );
}
