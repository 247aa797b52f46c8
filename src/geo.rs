//! Optional IP geolocation of webchat visitors (`[webchat.geolocation]`).
//!
//! A lookup never stands between a visitor and their reply: a cached answer
//! is stored with the message; otherwise the message is stored without one
//! and a background task asks the provider (with a short timeout) and adds
//! the answer to the stored message when it arrives. Answers are cached per
//! address; failures are not, so a provider that recovers is used again.
//! Loopback and private addresses are not looked up unless configured.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashSet;
use serde_json::Value;

use crate::config::GeolocationConfig;

/// The largest provider answer kept, in bytes.
const MAX_ANSWER_BYTES: usize = 8 * 1024;

/// A handle on the provider; cheap to clone. Disabled when no URL is configured.
#[derive(Clone)]
pub struct Geolocator {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    url: String,
    token: String,
    client: reqwest::Client,
    cache: quick_cache::sync::Cache<IpAddr, (Instant, Arc<Value>)>,
    ttl: Duration,
    include_private: bool,
    /// Addresses being looked up now: one request per address at a time.
    in_flight: DashSet<IpAddr>,
}

impl Geolocator {
    /// Checks the settings; the error names the bad one.
    pub fn new(config: &GeolocationConfig) -> Result<Self, String> {
        if config.url.is_empty() {
            return Ok(Geolocator { inner: None });
        }
        let valid_url = (config.url.starts_with("http://") || config.url.starts_with("https://"))
            && config.url.contains("{ip}");
        if !valid_url {
            return Err(format!(
                "webchat.geolocation.url must be an http(s) URL with `{{ip}}` in it, not `{}`",
                config.url
            ));
        }
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| {
                format!("webchat.geolocation: cannot build the HTTP client: {error}")
            })?;
        Ok(Geolocator {
            inner: Some(Arc::new(Inner {
                url: config.url.clone(),
                token: config.token.clone(),
                client,
                cache: quick_cache::sync::Cache::new(config.cache_capacity.max(1)),
                ttl: Duration::from_secs(config.cache_ttl_secs),
                include_private: config.include_private,
                in_flight: DashSet::new(),
            })),
        })
    }

    /// A fresh cached answer for `ip`, if there is one.
    pub fn cached(&self, ip: IpAddr) -> Option<Value> {
        let inner = self.inner.as_ref()?;
        let (at, answer) = inner.cache.get(&ip)?;
        (at.elapsed() < inner.ttl).then(|| answer.as_ref().clone())
    }

    /// Whether a lookup of `ip` would be made (a provider is configured, the
    /// address is public or private ones are allowed, and none is cached).
    pub fn wants(&self, ip: IpAddr) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.include_private || is_public(ip))
            && self.cached(ip).is_none()
    }

    /// Looks `ip` up in the background and hands a successful answer to
    /// `then`. Nothing happens if a lookup of `ip` is already running.
    pub fn lookup_later<F, Fut>(&self, ip: IpAddr, then: F)
    where
        F: FnOnce(Value) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        if !inner.in_flight.insert(ip) {
            return;
        }
        tokio::spawn(async move {
            let answer = inner.fetch(ip).await;
            inner.in_flight.remove(&ip);
            match answer {
                Ok(answer) => {
                    inner
                        .cache
                        .insert(ip, (Instant::now(), Arc::new(answer.clone())));
                    then(answer).await;
                }
                Err(error) => tracing::warn!(%ip, %error, "geolocation lookup failed"),
            }
        });
    }
}

impl Inner {
    async fn fetch(&self, ip: IpAddr) -> Result<Value, String> {
        let url = self.url.replace("{ip}", &ip.to_string());
        let mut request = self.client.get(url);
        if !self.token.is_empty() {
            request = request.bearer_auth(&self.token);
        }
        let response = request.send().await.map_err(|error| error.to_string())?;
        if !response.status().is_success() {
            return Err(format!("the provider answered {}", response.status()));
        }
        let body = response.bytes().await.map_err(|error| error.to_string())?;
        if body.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer is {} bytes; at most {MAX_ANSWER_BYTES} are kept",
                body.len()
            ));
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(answer @ Value::Object(_)) => Ok(answer),
            Ok(_) => Err("the answer is not a JSON object".into()),
            Err(error) => Err(format!("the answer is not JSON: {error}")),
        }
    }
}

/// Whether an address can be on the public internet (no provider knows the others).
fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(ip) => {
            !(ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                // Carrier-grade NAT (100.64.0.0/10).
                || ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(ip) => {
            !(ip.is_loopback()
                || ip.is_unspecified()
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || (ip.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}
