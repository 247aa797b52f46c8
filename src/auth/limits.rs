//! Rate limits at the edge: per API key and per client IP, and for webchat
//! messages per webchat `session_id` and per client IP, with each tenant's
//! own quotas (`rate_limits` in its settings). The per-conversation message
//! limit lives in the session actor, since messages arrive over sockets and
//! REST alike.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use tertulia_actors::model::RateLimits;
use tertulia_actors::model::TenantId;
use tertulia_actors::{Error, Runtime};

/// How often keys and addresses not seen lately are forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

struct TenantLimiters {
    settings: RateLimits,
    keys: DefaultKeyedRateLimiter<String>,
    ips: DefaultKeyedRateLimiter<IpAddr>,
    webchat_sessions: DefaultKeyedRateLimiter<String>,
    webchat_ips: DefaultKeyedRateLimiter<IpAddr>,
}

/// Every tenant's limiters, made on first use with the tenant's quotas.
#[derive(Clone)]
pub struct Limiter {
    runtime: Runtime,
    tenants: Arc<DashMap<TenantId, Arc<TenantLimiters>>>,
    /// Open sockets by client address.
    sockets: Arc<DashMap<IpAddr, usize>>,
}

/// One open socket of an address, counted until it is dropped.
pub struct SocketPermit {
    sockets: Arc<DashMap<IpAddr, usize>>,
    ip: IpAddr,
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        // Removed at zero, so the map holds only addresses with sockets.
        self.sockets.remove_if_mut(&self.ip, |_, open| {
            *open = open.saturating_sub(1);
            *open == 0
        });
    }
}

impl Limiter {
    pub fn new(runtime: Runtime) -> Self {
        Limiter {
            runtime,
            tenants: Arc::new(DashMap::new()),
            sockets: Arc::new(DashMap::new()),
        }
    }

    /// Counts one request by this key (if any) from this address (if known).
    pub fn check(
        &self,
        tenant: &TenantId,
        key: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<(), Error> {
        let limiters = self.limiters(tenant);
        let clock = DefaultClock::default();
        if let Some(key) = key
            && let Err(not_until) = limiters.keys.check_key(&key.to_owned())
        {
            tertulia_actors::metrics::rate_limited("key");
            return Err(Error::rate_limited(not_until.wait_time_from(clock.now())));
        }
        if let Some(ip) = ip
            && let Err(not_until) = limiters.ips.check_key(&ip)
        {
            tertulia_actors::metrics::rate_limited("address");
            return Err(Error::rate_limited(not_until.wait_time_from(clock.now())));
        }
        Ok(())
    }

    /// Admits one more socket from this address (if known), unless it holds
    /// `max` already.
    pub fn admit_socket(
        &self,
        ip: Option<IpAddr>,
        max: usize,
    ) -> Result<Option<SocketPermit>, crate::http::error::ApiError> {
        let Some(ip) = ip else { return Ok(None) };
        let mut open = self.sockets.entry(ip).or_insert(0);
        if *open >= max {
            tertulia_actors::metrics::rate_limited("sockets_per_address");
            return Err(crate::http::error::ApiError::TooManySockets { limit: max });
        }
        *open += 1;
        drop(open);
        Ok(Some(SocketPermit {
            sockets: self.sockets.clone(),
            ip,
        }))
    }

    /// Counts one webchat message for this webchat `session_id` from this address.
    pub fn check_webchat(
        &self,
        tenant: &TenantId,
        session_id: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), Error> {
        let limiters = self.limiters(tenant);
        let clock = DefaultClock::default();
        if let Err(not_until) = limiters.webchat_sessions.check_key(&session_id.to_owned()) {
            tertulia_actors::metrics::rate_limited("webchat_session");
            return Err(Error::rate_limited(not_until.wait_time_from(clock.now())));
        }
        if let Some(ip) = ip
            && let Err(not_until) = limiters.webchat_ips.check_key(&ip)
        {
            tertulia_actors::metrics::rate_limited("webchat_address");
            return Err(Error::rate_limited(not_until.wait_time_from(clock.now())));
        }
        Ok(())
    }

    /// Forgets keys and addresses whose buckets are full again, so memory
    /// follows recent traffic rather than every client ever seen.
    pub fn sweep(&self) {
        for entry in self.tenants.iter() {
            entry.keys.retain_recent();
            entry.ips.retain_recent();
            entry.webchat_sessions.retain_recent();
            entry.webchat_ips.retain_recent();
        }
    }

    fn limiters(&self, tenant: &TenantId) -> Arc<TenantLimiters> {
        let settings = self
            .runtime
            .tenant_settings(tenant)
            .map(|settings| settings.rate_limits)
            .unwrap_or_default();
        if let Some(existing) = self
            .tenants
            .get(tenant)
            .filter(|limiters| limiters.settings == settings)
        {
            return existing.clone();
        }
        let fresh = Arc::new(TenantLimiters {
            settings,
            keys: RateLimiter::keyed(RateLimits::quota(settings.api_key_per_minute)),
            ips: RateLimiter::keyed(RateLimits::quota(settings.ip_per_minute)),
            webchat_sessions: RateLimiter::keyed(RateLimits::quota(
                settings.webchat_session_per_minute,
            )),
            webchat_ips: RateLimiter::keyed(RateLimits::quota(settings.webchat_ip_per_minute)),
        });
        self.tenants.insert(tenant.clone(), fresh.clone());
        fresh
    }
}
