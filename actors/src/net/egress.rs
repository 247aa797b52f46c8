//! The SSRF guard for every request tertulia makes on a tenant's behalf:
//! webhook deliveries, tool calls and agent requests. A tenant can name any
//! URL; without this, it could make the server call its own admin port, the
//! cloud metadata service or a database on the private network.
//!
//! Two checks, because either alone can be dodged: a URL whose host is an
//! address is checked before the request (reqwest connects to address
//! literals without resolving), and every name is resolved by
//! [`GuardedResolver`], which drops the addresses that are not allowed, so
//! the address checked is the one connected to (no DNS rebinding between a
//! check and the connection). Redirects are never followed and proxies from
//! the environment are not used, so nothing else picks the address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// Which addresses outbound requests may reach: every public address, plus
/// the networks the operator allows (`[egress] allow`).
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allowed: Arc<Vec<IpNet>>,
}

/// Why a URL may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("`{0}` is not an http(s) URL")]
    NotHttp(String),
    #[error(
        "{0} is a loopback, private or link-local address; the operator can allow it with `egress.allow`"
    )]
    Forbidden(String),
}

impl EgressPolicy {
    /// A policy that also allows these networks (`127.0.0.0/8`, `10.1.2.3`, `::1/128`).
    pub fn new(allow: &[String]) -> Result<EgressPolicy, String> {
        let allowed = allow
            .iter()
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("`egress.allow` entry `{entry}` is not an address or a network")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EgressPolicy {
            allowed: Arc::new(allowed),
        })
    }

    /// Whether a request may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// Checks a URL before a request: http(s), and a host that is not a
    /// forbidden address (or `localhost`). Names are checked again, address
    /// by address, when they are resolved.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, EgressError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| EgressError::NotHttp(url.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EgressError::NotHttp(url.to_owned()));
        }
        match parsed.host() {
            Some(url::Host::Ipv4(ip)) if !self.permits(ip.into()) => {
                Err(EgressError::Forbidden(ip.to_string()))
            }
            Some(url::Host::Ipv6(ip)) if !self.permits(ip.into()) => {
                Err(EgressError::Forbidden(ip.to_string()))
            }
            Some(url::Host::Domain(name)) if is_localhost(name) => {
                let loopback = IpAddr::from([127, 0, 0, 1]);
                if self.permits(loopback) {
                    Ok(parsed)
                } else {
                    Err(EgressError::Forbidden(name.to_owned()))
                }
            }
            Some(_) => Ok(parsed),
            None => Err(EgressError::NotHttp(url.to_owned())),
        }
    }

    /// A client builder that resolves through this policy, follows no
    /// redirects and ignores proxy settings from the environment.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: self.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
    }
}

fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// An IPv4 address dressed as IPv6 (`::ffff:127.0.0.1`) is checked as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Not loopback, private, link-local, shared (CGNAT), unspecified,
/// broadcast, multicast, documentation or reserved.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

/// Resolves names with the system resolver and keeps only allowed addresses.
struct GuardedResolver {
    policy: EgressPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| policy.permits(addr.ip()))
                .collect();
            if allowed.is_empty() && !resolved.is_empty() {
                let error = EgressError::Forbidden(format!("{host} ({})", resolved[0].ip()));
                return Err(Box::new(error) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a request failed because the egress guard refused its address.
pub fn refused_by_guard(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<EgressError>().is_some() {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let strict = EgressPolicy::default();
        for url in [
            "http://127.0.0.1:9/",
            "http://10.0.0.5/hook",
            "http://172.16.3.4/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:8080/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
            "http://localhost:5678/webhook",
            "http://api.localhost/",
        ] {
            assert!(
                matches!(strict.check_url(url), Err(EgressError::Forbidden(_))),
                "{url}"
            );
        }
        for url in [
            "https://hooks.slack.com/services/x",
            "http://93.184.215.14/",
        ] {
            assert!(strict.check_url(url).is_ok(), "{url}");
        }
        assert!(matches!(
            strict.check_url("ftp://example.com/"),
            Err(EgressError::NotHttp(_))
        ));
        assert!(matches!(
            strict.check_url("not a url"),
            Err(EgressError::NotHttp(_))
        ));

        let loopback = EgressPolicy::new(&["127.0.0.0/8".into(), "::1".into()]).unwrap();
        assert!(loopback.check_url("http://127.0.0.1:9/").is_ok());
        assert!(loopback.check_url("http://localhost:9/").is_ok());
        assert!(loopback.check_url("http://[::1]:9/").is_ok());
        assert!(loopback.check_url("http://10.0.0.5/").is_err());
        assert!(EgressPolicy::new(&["nonsense".into()]).is_err());
    }

    #[tokio::test]
    async fn names_are_judged_by_the_addresses_they_resolve_to() {
        use reqwest::dns::Resolve;
        let name = || "localhost".parse::<reqwest::dns::Name>().unwrap();
        let strict = GuardedResolver {
            policy: EgressPolicy::default(),
        };
        let error = match strict.resolve(name()).await {
            Ok(_) => panic!("localhost resolved under the strict policy"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("localhost"), "{error}");
        let loopback = GuardedResolver {
            policy: EgressPolicy::new(&["127.0.0.0/8".into(), "::1".into()]).unwrap(),
        };
        let addrs: Vec<SocketAddr> = match loopback.resolve(name()).await {
            Ok(addrs) => addrs.collect(),
            Err(error) => panic!("{error}"),
        };
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|addr| addr.ip().is_loopback()));
    }
}
