//! The `Origin` of browser calls. A widget key is good only from the pages
//! its tenant lists in `allowed_origins`; a WebSocket upgrade from a browser
//! is checked the same way whatever its credential, because browsers apply
//! no same-origin rule to WebSockets: without the check, any site a
//! signed-in staff member visits could open a socket with a ticket or key it
//! got hold of (cross-site WebSocket hijacking).

use tertulia_actors::Runtime;
use tertulia_actors::model::TenantId;

use crate::http::error::ApiError;

/// The request's `Origin`, if the tenant allows it for widget keys.
pub fn allowed_origin(
    runtime: &Runtime,
    tenant: &TenantId,
    origin: Option<&str>,
) -> Result<String, ApiError> {
    let origin = origin.ok_or(ApiError::OriginNotAllowed)?;
    listed(runtime, tenant, origin)
        .then(|| origin.to_owned())
        .ok_or(ApiError::OriginNotAllowed)
}

/// Checks a WebSocket upgrade's `Origin`. Browsers always send one, so a
/// request without it is a back end or a native client, whose credential
/// is all there is to check. A browser's page must be served by this server
/// (the chat page, the console: same origin as `Host`) or be one of the
/// tenant's `allowed_origins`; anything else, `null` included, is 403
/// `origin_not_allowed`.
pub fn check_socket_origin(
    runtime: &Runtime,
    tenant: &TenantId,
    origin: Option<&str>,
    host: Option<&str>,
) -> Result<(), ApiError> {
    let Some(origin) = origin else {
        return Ok(());
    };
    if same_origin(origin, host) || listed(runtime, tenant, origin) {
        Ok(())
    } else {
        Err(ApiError::OriginNotAllowed)
    }
}

fn listed(runtime: &Runtime, tenant: &TenantId, origin: &str) -> bool {
    runtime.tenant_settings(tenant).is_some_and(|settings| {
        settings
            .allowed_origins
            .iter()
            .any(|allowed| allowed == origin)
    })
}

/// Whether `origin` names the authority the request was sent to. The scheme
/// is not compared: behind a TLS-terminating proxy the page is `https` and
/// the hop to us is not, yet it is still our page.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let (Some(host), Ok(url)) = (host, url::Url::parse(origin)) else {
        return false;
    };
    let Some(origin_host) = url.host_str() else {
        return false;
    };
    let authority = match url.port() {
        Some(port) => format!("{origin_host}:{port}"),
        None => origin_host.to_owned(),
    };
    authority.eq_ignore_ascii_case(host.trim())
}

#[cfg(test)]
mod tests {
    use super::same_origin;

    #[test]
    fn same_origin_compares_the_authority_with_host() {
        assert!(same_origin("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(same_origin("https://Chat.Example", Some("chat.example")));
        assert!(same_origin("http://[::1]:9000", Some("[::1]:9000")));
        assert!(!same_origin(
            "http://127.0.0.1:8081",
            Some("127.0.0.1:8080")
        ));
        assert!(!same_origin("https://evil.example", Some("chat.example")));
        assert!(!same_origin(
            "https://chat.example.evil",
            Some("chat.example")
        ));
        assert!(!same_origin("null", Some("chat.example")));
        assert!(!same_origin("http://127.0.0.1:8080", None));
    }
}
