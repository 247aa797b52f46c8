//! The admin API: tenants and keys made at run time, stored as hashes,
//! revocable at once, surviving restarts, and refused without the admin token.

use serde_json::{Value, json};

use crate::support::server::*;

const ADMIN: &str = "adm_test_token";

fn admin_config() -> tertulia::config::Config {
    let mut config = config();
    config.auth.admin_token = ADMIN.into();
    config
}

async fn admin(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = server.http.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates tenant `id` and an API key for it; returns the key.
async fn tenant_with_key(server: &TestServer, id: &str) -> String {
    let body = json!({"id": id, "name": "Initech", "greeting": "Initech here"});
    let (status, created) = admin(
        server,
        reqwest::Method::POST,
        "/admin/tenants",
        Some(body),
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/admin/tenants/{id}/keys");
    let (status, key) = admin(
        server,
        reqwest::Method::POST,
        &path,
        Some(json!({"kind": "api"})),
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

async fn create_session_with(server: &TestServer, key: &str) -> u16 {
    server
        .http
        .post(server.url("/chat/sessions"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_is_off_without_one() {
    let server = TestServer::start(config()).await;
    let (status, body) = admin(
        &server,
        reqwest::Method::GET,
        "/admin/tenants",
        None,
        Some("anything"),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("admin_disabled"))
    );
    server.stop().await;

    let server = TestServer::start(admin_config()).await;
    let routes = [
        (reqwest::Method::GET, "/admin/tenants", None),
        (
            reqwest::Method::POST,
            "/admin/tenants",
            Some(json!({"id": "x"})),
        ),
        (reqwest::Method::GET, "/admin/tenants/acme/keys", None),
        (
            reqwest::Method::POST,
            "/admin/tenants/acme/keys",
            Some(json!({"kind": "api"})),
        ),
        (reqwest::Method::DELETE, "/admin/keys/key_x", None),
    ];
    for (method, path, body) in routes {
        let (status, missing) = admin(&server, method.clone(), path, body.clone(), None).await;
        assert_eq!(
            (status, missing["code"].clone()),
            (401, json!("missing_admin_token")),
            "{method} {path}"
        );
        let (status, wrong) =
            admin(&server, method.clone(), path, body.clone(), Some("nope")).await;
        assert_eq!(status, 401, "{method} {path}: {wrong}");
        // A tenant's API key is not an admin token.
        let (status, _) = admin(&server, method.clone(), path, body, Some(KEY)).await;
        assert_eq!(status, 401, "{method} {path}");
    }
    let (_, listed) = admin(
        &server,
        reqwest::Method::GET,
        "/admin/tenants",
        None,
        Some(ADMIN),
    )
    .await;
    assert_eq!(listed["count"], 2, "nothing was created: {listed}");
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_and_key_made_by_the_admin_work_and_revocation_is_immediate() {
    let server = TestServer::start(admin_config()).await;
    let key = tenant_with_key(&server, "initech").await;
    assert!(key.starts_with("tk_") && key.len() == 67, "{key}");

    // The key works at once, for its own tenant only.
    let response = server
        .http
        .post(server.url("/chat/sessions"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.unwrap();
    let mut ws = server
        .connect_raw(created["websocket_url"].as_str().unwrap())
        .await;
    assert_eq!(next_frame(&mut ws).await["content"], "Initech here");
    let (_, theirs) = server.get("/chat/sessions", Some(&key)).await;
    assert_eq!(theirs["count"], 1);
    let (_, acme) = server.get("/chat/sessions", Some(KEY)).await;
    assert_eq!(acme["count"], 0, "acme does not see initech's session");

    // Listings never show the secret.
    let (status, keys) = admin(
        &server,
        reqwest::Method::GET,
        "/admin/tenants/initech/keys",
        None,
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(keys["count"], 1);
    let listed = &keys["keys"][0];
    assert!(
        listed.get("key").is_none() && listed.get("hash").is_none(),
        "{listed}"
    );
    assert_eq!(listed["prefix"], &key[..11]);

    // Revoked: refused from the next request on.
    let path = format!("/admin/keys/{}", listed["key_id"].as_str().unwrap());
    let (status, revoked) = admin(&server, reqwest::Method::DELETE, &path, None, Some(ADMIN)).await;
    assert_eq!((status, revoked["status"].clone()), (200, json!("revoked")));
    assert_eq!(create_session_with(&server, &key).await, 401);
    let (status, again) = admin(&server, reqwest::Method::DELETE, &path, None, Some(ADMIN)).await;
    assert_eq!(
        (status, again["code"].clone()),
        (404, json!("key_not_found"))
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_admin_input_is_refused_with_the_field_named() {
    let server = TestServer::start(admin_config()).await;
    let post = |body: Value| {
        admin(
            &server,
            reqwest::Method::POST,
            "/admin/tenants",
            Some(body),
            Some(ADMIN),
        )
    };
    for (body, needle) in [
        (json!({"id": "Bad Id!"}), "`id`"),
        (json!({"id": ""}), "`id`"),
        (json!({"id": "x".repeat(65)}), "`id`"),
        (json!({"id": "ok", "agent": "gpt-9"}), "`agent`"),
        (json!({"id": "ok", "name": " "}), "`name`"),
        (
            json!({"id": "ok", "greeting": "g".repeat(2001)}),
            "`greeting`",
        ),
        (json!({"id": "ok", "api_keys": ["tk_mine"]}), "`api_keys`"),
        (json!({"id": "ok", "colour": "red"}), "colour"),
        (json!({"name": "no id"}), "id"),
    ] {
        let (status, error) = post(body.clone()).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    let (status, error) = post(json!({"id": "acme"})).await;
    assert_eq!(
        (status, error["code"].clone()),
        (409, json!("conflict")),
        "config tenants are taken"
    );
    let (status, _) = post(json!({"id": "dup"})).await;
    assert_eq!(status, 201);
    let (status, _) = post(json!({"id": "dup"})).await;
    assert_eq!(status, 409);

    let server = &server;
    let keys = |tenant: &str, body: Value| {
        let path = format!("/admin/tenants/{tenant}/keys");
        async move {
            admin(
                server,
                reqwest::Method::POST,
                &path,
                Some(body),
                Some(ADMIN),
            )
            .await
        }
    };
    let (status, _) = keys("dup", json!({"kind": "root"})).await;
    assert_eq!(status, 400);
    let (status, _) = keys("dup", json!({})).await;
    assert_eq!(status, 400);
    let (status, error) = keys("nobody", json!({"kind": "api"})).await;
    assert_eq!(
        (status, error["code"].clone()),
        (404, json!("tenant_not_found"))
    );
    let (status, _) = admin(
        server,
        reqwest::Method::GET,
        "/admin/tenants/nobody/keys",
        None,
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, 404);
    let (_, listed) = admin(
        server,
        reqwest::Method::GET,
        "/admin/tenants",
        None,
        Some(ADMIN),
    )
    .await;
    assert_eq!(listed["count"], 3);
}

#[tokio::test]
async fn tenants_and_keys_survive_a_restart_and_revocations_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = durable_config(dir.path());
    config.auth.admin_token = ADMIN.into();
    let server = TestServer::start(config.clone()).await;
    let kept = tenant_with_key(&server, "initech").await;
    let path = "/admin/tenants/initech/keys";
    let (_, doomed) = admin(
        &server,
        reqwest::Method::POST,
        path,
        Some(json!({"kind": "api"})),
        Some(ADMIN),
    )
    .await;
    let doomed_key = doomed["key"].as_str().unwrap().to_owned();
    let revoke = format!("/admin/keys/{}", doomed["key_id"].as_str().unwrap());
    admin(&server, reqwest::Method::DELETE, &revoke, None, Some(ADMIN)).await;
    server.stop().await;

    let server = TestServer::start(config).await;
    assert_eq!(create_session_with(&server, &kept).await, 200);
    assert_eq!(create_session_with(&server, &doomed_key).await, 401);
    let (_, listed) = admin(
        &server,
        reqwest::Method::GET,
        "/admin/tenants",
        None,
        Some(ADMIN),
    )
    .await;
    let ids: Vec<&str> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["acme", "globex", "initech"]);
    server.stop().await;
}

#[tokio::test]
async fn a_tenants_settings_change_at_once_and_are_validated() {
    let server = TestServer::start(admin_config()).await;
    let key = tenant_with_key(&server, "initech").await;
    let created: Value = server
        .http
        .post(server.url("/chat/sessions"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = created["websocket_url"].as_str().unwrap().to_owned();
    // The session is live, with a socket attached, while its tenant changes.
    let mut ws = server.connect_raw(&url).await;
    assert_eq!(next_frame(&mut ws).await["content"], "Initech here");

    let patch = |body: Value| {
        server
            .http
            .patch(server.url("/admin/tenants/initech"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let changed = patch(
        json!({"greeting": "Initech, new and improved", "rate_limits": {"api_key_per_minute": 3}}),
    )
    .await
    .unwrap();
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["greeting"], "Initech, new and improved");
    assert_eq!(
        changed["name"], "Initech",
        "fields left out stay as they were"
    );

    // A new socket on the live session gets the new greeting; new limits apply.
    let mut second = server.connect_raw(&url).await;
    assert_eq!(
        next_frame(&mut second).await["content"],
        "Initech, new and improved"
    );
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let response = server
                .http
                .get(server.url("/chat/sessions"))
                .header("X-API-Key", &key)
                .send()
                .await
                .unwrap();
            statuses.push(response.status().as_u16());
        }
        statuses
    };
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // The old socket still chats.
    say(&mut ws, "still here").await;
    frames_until(&mut ws, "done").await;

    for (body, needle) in [
        (json!({"agent": "gpt-9"}), "`agent`"),
        (json!({"greeting": "g".repeat(2001)}), "`greeting`"),
        (json!({"allowed_origins": ["nope"]}), "`allowed_origins[0]`"),
        (
            json!({"rate_limits": {"ip_per_minute": 0}}),
            "rate_limits.ip_per_minute",
        ),
        (
            json!({"client_token_secret": "short"}),
            "`client_token_secret`",
        ),
        (json!({"colour": "red"}), "colour"),
        (
            json!({"double_texting": {"merge_window_ms": 60_000}}),
            "double_texting.merge_window_ms",
        ),
        (
            json!({"double_texting": {"policy": "later"}}),
            "unknown variant `later`, expected one of `queue`",
        ),
    ] {
        let response = patch(body.clone()).await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    let config_tenant = server
        .http
        .patch(server.url("/admin/tenants/acme"))
        .bearer_auth(ADMIN)
        .json(&json!({"greeting": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        config_tenant.status(),
        409,
        "config-file tenants change in the config file"
    );
    let unknown = server
        .http
        .patch(server.url("/admin/tenants/nobody"))
        .bearer_auth(ADMIN)
        .json(&json!({"greeting": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    server.stop().await;
}
