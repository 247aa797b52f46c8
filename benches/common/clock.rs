//! A bench-only agent ("clock") whose every chunk is the time it was
//! emitted (µs since the Unix epoch, then `;`), so each reader measures
//! emission → receipt on the same clock. Benches that need it include this
//! file by path.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tertulia_actors::runtime::{AgentEvent, AgentProvider, AgentRequest, AgentStream};

pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Streams `chunks` pieces, each the time it was emitted, `interval` apart.
pub struct Clock {
    pub chunks: usize,
    pub interval: Duration,
}

impl AgentProvider for Clock {
    fn answer(&self, _request: AgentRequest) -> AgentStream {
        let interval = self.interval;
        futures_util::stream::iter(0..self.chunks)
            .then(move |index| async move {
                if index > 0 && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                } else if index % 64 == 63 {
                    // An unpaced model still yields now and then, as network reads do.
                    tokio::task::yield_now().await;
                }
                Ok(AgentEvent::Text(format!("{:020};", unix_micros())))
            })
            .boxed()
    }
}

/// The latency of each stamp in a chunk's text, received at `received`.
pub fn stamp_latencies(content: &str, received: u64) -> impl Iterator<Item = u64> + '_ {
    content
        .split(';')
        .filter(|stamp| !stamp.is_empty())
        .map(move |stamp| received.saturating_sub(stamp.parse::<u64>().unwrap()))
}
