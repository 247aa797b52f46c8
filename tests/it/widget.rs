//! Widget keys: public keys for a chat widget on a landing page. They open
//! conversations only, only from the tenant's allowed origins (the page's
//! `Origin` on the HTTP call and again on the socket), and are rate limited.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::server::*;

const SHOP: &str = "https://shop.example";

async fn widget_server() -> (TestServer, String) {
    let mut config = config();
    config.auth.admin_token = "adm".into();
    config.tenants.get_mut("acme").unwrap().allowed_origins = vec![SHOP.into()];
    let server = TestServer::start(config).await;
    let key = make_key(&server, "adm", "acme", "widget").await;
    assert!(key.starts_with("wk_"), "{key}");
    (server, key)
}

async fn create_from(server: &TestServer, key: &str, origin: Option<&str>) -> reqwest::Response {
    let mut request = server
        .http
        .post(server.url("/chat/sessions"))
        .header("X-API-Key", key);
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_widget_on_an_allowed_origin_opens_a_conversation_and_chats() {
    let (server, key) = widget_server().await;
    let preflight = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/chat/sessions"))
        .header("Origin", SHOP)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert!(
        preflight.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-api-key")
    );

    let created = create_from(&server, &key, Some(SHOP)).await;
    assert_eq!(created.status(), 200);
    assert_eq!(created.headers()["access-control-allow-origin"], SHOP);
    let created: Value = created.json().await.unwrap();
    let mut request = created["websocket_url"]
        .as_str()
        .unwrap()
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", SHOP.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "system");
    say(&mut ws, "hola desde la tienda").await;
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["content"], "You said: hola desde la tienda");
    server.stop().await;
}

#[tokio::test]
async fn a_widget_key_from_another_origin_or_none_is_refused() {
    let (server, key) = widget_server().await;
    for origin in [
        None,
        Some("https://evil.example"),
        Some("https://shop.example.evil.example"),
    ] {
        let refused = create_from(&server, &key, origin).await;
        assert_eq!(refused.status(), 403, "{origin:?}");
        assert!(
            refused
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "origin_not_allowed");
    }
    // A ticket from an allowed page cannot be used from another origin.
    let created: Value = create_from(&server, &key, Some(SHOP))
        .await
        .json()
        .await
        .unwrap();
    let url = created["websocket_url"].as_str().unwrap();
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
    crate::support::sockets::assert_http_status(refused, 403);
    let (_, listed) = server.get("/chat/sessions", Some(KEY)).await;
    assert_eq!(
        listed["count"], 1,
        "only the allowed page's conversation exists"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_widget_key_is_refused_everywhere_but_session_creation() {
    let (server, key) = widget_server().await;
    let (session, _) = server.create_session().await;
    let routes = [
        (reqwest::Method::GET, "/chat/sessions".to_owned()),
        (
            reqwest::Method::GET,
            format!("/chat/sessions/{session}/history"),
        ),
        (
            reqwest::Method::POST,
            format!("/chat/sessions/{session}/context"),
        ),
        (
            reqwest::Method::POST,
            format!("/chat/sessions/{session}/ticket"),
        ),
        (reqwest::Method::DELETE, format!("/chat/sessions/{session}")),
    ];
    for (method, path) in routes {
        let response = server
            .http
            .request(method.clone(), server.url(&path))
            .header("X-API-Key", &key)
            .header("Origin", SHOP)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(body["code"], "widget_key_not_allowed", "{method} {path}");
    }
    let refused = tokio_tungstenite::connect_async(crate::support::sockets::socket_request(
        &server, &session, &key,
    ))
    .await
    .unwrap_err();
    crate::support::sockets::assert_http_status(refused, 403);
    assert_eq!(server.history(&session).await.len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn widget_keys_are_rate_limited_and_origins_are_validated() {
    let mut config = config();
    config.auth.admin_token = "adm".into();
    let server = TestServer::start(config).await;
    let admin = |path: &str, body: Value| {
        server
            .http
            .post(server.url(path))
            .bearer_auth("adm")
            .json(&body)
            .send()
    };
    let refused = admin(
        "/admin/tenants",
        json!({"id": "shop", "allowed_origins": ["https://ok.example", "ok.example/"]}),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("allowed_origins[1]"),
        "{body}"
    );

    let body =
        json!({"id": "shop", "allowed_origins": [SHOP], "rate_limits": {"api_key_per_minute": 2}});
    assert_eq!(admin("/admin/tenants", body).await.unwrap().status(), 201);
    let key: Value = admin("/admin/tenants/shop/keys", json!({"kind": "widget"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap();
    assert_eq!(create_from(&server, key, Some(SHOP)).await.status(), 200);
    assert_eq!(create_from(&server, key, Some(SHOP)).await.status(), 200);
    assert_eq!(create_from(&server, key, Some(SHOP)).await.status(), 429);
    server.stop().await;
}

/// The Frontend API seed's page creates a conversation with no key at all
/// (`fetch(".../chat/sessions", {method: "POST"})`). A tenant that opts in
/// (`keyless_sessions`) accepts that from its allowed origins only; the
/// conversation is then reachable with its ticket, from that origin. Every
/// other tenant, and any other origin, still gets 401.
#[tokio::test]
async fn a_keyless_page_from_an_allowed_origin_opens_a_conversation_only_where_allowed() {
    let mut config = config();
    let acme = config.tenants.get_mut("acme").unwrap();
    acme.allowed_origins = vec![SHOP.into()];
    acme.keyless_sessions = true;
    let server = TestServer::start(config).await;
    let keyless = |origin: Option<&str>| {
        let mut request = server.http.post(server.url("/chat/sessions"));
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        request.send()
    };

    let created = keyless(Some(SHOP)).await.unwrap();
    assert_eq!(created.status(), 200);
    assert_eq!(created.headers()["access-control-allow-origin"], SHOP);
    let created: Value = created.json().await.unwrap();
    let url = created["websocket_url"].as_str().unwrap().to_owned();
    let with_origin = |origin: &str| {
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        request
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(with_origin(SHOP))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "system");
    say(&mut ws, "sin llave").await;
    let (done, _) = frames_until(&mut ws, "done").await;
    assert_eq!(done["content"], "You said: sin llave");
    assert!(
        tokio_tungstenite::connect_async(with_origin("https://evil.example"))
            .await
            .is_err(),
        "the ticket works from the page's origin only"
    );

    for origin in [None, Some("https://evil.example")] {
        let refused = keyless(origin).await.unwrap();
        assert_eq!(refused.status(), 401, "{origin:?}");
    }
    // The conversation is not listed to anyone without the tenant's key.
    let (status, _) = server.get("/chat/sessions", None).await;
    assert_eq!(status, 401);
    server.stop().await;
}

/// A tenant that has not opted in takes no keyless sessions, even from its
/// allowed origins.
#[tokio::test]
async fn keyless_sessions_are_off_unless_a_tenant_opts_in() {
    let mut config = config();
    config.tenants.get_mut("acme").unwrap().allowed_origins = vec![SHOP.into()];
    let server = TestServer::start(config).await;
    let refused = server
        .http
        .post(server.url("/chat/sessions"))
        .header("Origin", SHOP)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let made: tertulia_actors::model::TenantSettings =
        serde_json::from_value(json!({"name": "From a file"})).unwrap();
    assert!(
        !made.keyless_sessions,
        "a tenant from a config file starts with it off"
    );
    server.stop().await;
}
