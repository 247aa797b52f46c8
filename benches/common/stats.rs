//! Percentiles of a bench's samples. Benches that need it include this
//! file by path.

use std::time::Duration;

/// A distribution of durations, in milliseconds.
pub struct Stats {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        assert!(!samples.is_empty(), "no samples to summarise");
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let at = |q: f64| ms(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
        Stats {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: ms(*samples.last().unwrap()),
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.count, self.p50, self.p99, self.max
        )
    }
}
