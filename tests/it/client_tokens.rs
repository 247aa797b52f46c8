//! Client tokens: `Authorization: Bearer` names the end user inside a tenant.
//! With one, a caller sees only that user's conversations; with the API key
//! alone, the whole tenant's.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::server::*;

async fn create_as(server: &TestServer, token: Option<&str>) -> (u16, Value) {
    let mut request = server
        .http
        .post(server.url("/chat/sessions"))
        .header("X-API-Key", KEY);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn list_as(server: &TestServer, key: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut request = server
        .http
        .get(server.url("/chat/sessions"))
        .header("X-API-Key", key);
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_client_sees_only_its_own_conversations_and_the_tenant_sees_all() {
    let server = TestServer::start(config()).await;
    let (alice, bob) = (client_token("alice"), client_token("bob"));
    for token in [&alice, &alice, &bob] {
        assert_eq!(create_as(&server, Some(token)).await.0, 200);
    }
    let (_, mine) = list_as(&server, KEY, Some(&format!("Bearer {alice}"))).await;
    assert_eq!(mine["count"], 2);
    let (_, theirs) = list_as(&server, KEY, Some(&format!("Bearer {bob}"))).await;
    assert_eq!(theirs["count"], 1);
    let (_, everyone) = list_as(&server, KEY, None).await;
    assert_eq!(everyone["count"], 3);

    // Alice's websocket_url carries her scope: it opens her conversation and works.
    let (_, created) = create_as(&server, Some(&alice)).await;
    let mut ws = server
        .connect(created["websocket_url"].as_str().unwrap())
        .await;
    say(&mut ws, "hola").await;
    frames_until(&mut ws, "done").await;
    server.stop().await;
}

#[tokio::test]
async fn expired_forged_or_malformed_client_tokens_are_refused() {
    let server = TestServer::start(config()).await;
    let claims = |sub: &str, exp: u64| json!({"sub": sub, "exp": exp});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |claims: Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let refused = [
        format!(
            "Bearer {}",
            sign(claims("alice", now - 60), ACME_CLIENT_SECRET)
        ),
        format!(
            "Bearer {}",
            sign(
                claims("alice", now + 600),
                "someone-elses-secret-0123456789abcdef"
            )
        ),
        format!(
            "Bearer {}",
            sign(json!({"sub": "alice"}), ACME_CLIENT_SECRET)
        ),
        format!("Bearer {}", sign(claims("", now + 600), ACME_CLIENT_SECRET)),
        format!(
            "Bearer {}",
            sign(claims(&"x".repeat(129), now + 600), ACME_CLIENT_SECRET)
        ),
        "Bearer not-a-token".to_owned(),
        format!("Basic {}", client_token("alice")),
    ];
    for authorization in &refused {
        let (status, body) = list_as(&server, KEY, Some(authorization)).await;
        assert_eq!(
            (status, body["code"].clone()),
            (401, json!("invalid_client_token")),
            "{authorization}"
        );
    }
    // Globex has no client_token_secret: it takes no client tokens at all.
    let (status, _) = list_as(
        &server,
        OTHER_KEY,
        Some(&format!("Bearer {}", client_token("alice"))),
    )
    .await;
    assert_eq!(status, 401);
    // Nothing was created by any of it.
    assert_eq!(list_as(&server, KEY, None).await.1["count"], 0);
    server.stop().await;
}

#[tokio::test]
async fn the_admin_api_mints_client_tokens_with_the_tenants_secret() {
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

    let created: Value = admin("/admin/tenants", json!({"id": "lab"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        created["client_token_secret"].as_str().unwrap().len(),
        64,
        "a random secret, shown once"
    );
    let (_, tenants) = {
        let response = server
            .http
            .get(server.url("/admin/tenants"))
            .bearer_auth("adm")
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert!(
        !tenants.contains(created["client_token_secret"].as_str().unwrap()),
        "never listed"
    );

    let minted = admin(
        "/admin/tenants/acme/client-tokens",
        json!({"client_id": "carol", "ttl_secs": 60}),
    )
    .await
    .unwrap();
    assert_eq!(minted.status(), 201);
    let minted: Value = minted.json().await.unwrap();
    let token = minted["token"].as_str().unwrap();
    assert_eq!(create_as(&server, Some(token)).await.0, 200);
    let (_, carols) = list_as(&server, KEY, Some(&format!("Bearer {token}"))).await;
    assert_eq!(carols["count"], 1);

    for (path, body, status) in [
        (
            "/admin/tenants/acme/client-tokens",
            json!({"client_id": ""}),
            400,
        ),
        (
            "/admin/tenants/acme/client-tokens",
            json!({"client_id": "x".repeat(129)}),
            400,
        ),
        (
            "/admin/tenants/acme/client-tokens",
            json!({"client_id": "dan", "ttl_secs": 0}),
            400,
        ),
        (
            "/admin/tenants/acme/client-tokens",
            json!({"client": "dan"}),
            400,
        ),
        (
            "/admin/tenants/globex/client-tokens",
            json!({"client_id": "dan"}),
            400,
        ),
        (
            "/admin/tenants/nobody/client-tokens",
            json!({"client_id": "dan"}),
            404,
        ),
    ] {
        let response = admin(path, body.clone()).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path} {body}");
    }
    server.stop().await;
}

/// The Chat Endpoints seed's clients send their API key as
/// `Authorization: Bearer tk_…`: it names the tenant as `X-API-Key` does, on
/// REST and on back-end sockets. An unknown Bearer, or a Bearer key that
/// disagrees with `X-API-Key`, gets the same 401 as ever.
#[tokio::test]
async fn an_api_key_is_accepted_as_a_bearer_token() {
    let server = TestServer::start(config()).await;
    let bearer = |key: &str| format!("Bearer {key}");
    let created = server
        .http
        .post(server.url("/chat/sessions"))
        .header("Authorization", bearer(KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 200);
    let session = created.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let listed = server
        .http
        .get(server.url("/chat/sessions"))
        .header("Authorization", bearer(KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    assert_eq!(list_as(&server, KEY, Some(&bearer(KEY))).await.0, 200);

    // Another tenant's key as Bearer sees only its own tenant: not acme's conversation.
    let other = server
        .http
        .get(server.url(&format!("/chat/sessions/{session}/history")))
        .header("Authorization", bearer(OTHER_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);

    for (key, authorization) in [
        (None, bearer("tk_nobody")),
        (Some(KEY), bearer(OTHER_KEY)),
        (Some(KEY), "Bearer ".to_owned()),
    ] {
        let mut request = server.http.get(server.url("/chat/sessions"));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        let response = request
            .header("Authorization", &authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{key:?} {authorization}");
    }

    // A back-end socket with the key as Bearer.
    let mut request = server
        .url(&format!("/chat/ws/{session}"))
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", bearer(KEY).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let greeting = next_frame(&mut ws).await;
    assert_eq!(greeting["type"], "system");
    server.stop().await;
}
