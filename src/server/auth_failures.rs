//! Brute force on keys, tokens and tickets: every 401 the server answers
//! counts against the client's address, and an address over
//! `server.auth_failures_per_minute` is answered 429 before its requests are
//! routed, until its quota refills. Part of the accept loop (`server/mod.rs`),
//! so it covers every surface, sockets' upgrades included.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct AuthFailures {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses refused until then.
    blocked: DashMap<IpAddr, Instant>,
}

impl AuthFailures {
    /// `per_minute` failures per address (also allowed as one burst).
    pub fn new(per_minute: NonZeroU32) -> Self {
        AuthFailures {
            failures: RateLimiter::dashmap(Quota::per_minute(per_minute)),
            blocked: DashMap::new(),
        }
    }

    /// How long this address is still refused, if it is.
    pub fn refused_for(&self, ip: IpAddr) -> Option<Duration> {
        let until = *self.blocked.get(&ip)?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.blocked.remove(&ip);
            return None;
        }
        Some(left)
    }

    /// Counts a 401 answered to this address.
    pub fn failed(&self, ip: IpAddr) {
        if let Err(not_until) = self.failures.check_key(&ip) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.blocked.insert(ip, Instant::now() + wait);
            tertulia_actors::metrics::rate_limited("auth_failures");
            tracing::warn!(%ip, ?wait, "too many failed authentications; refusing the address");
        }
    }

    /// Forgets addresses whose quota is full again and whose refusal ended.
    pub fn sweep(&self) {
        self.failures.retain_recent();
        let now = Instant::now();
        self.blocked.retain(|_, until| *until > now);
    }
}
