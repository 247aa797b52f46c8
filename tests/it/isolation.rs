//! Isolation, route by route: tenant B's credentials against tenant A's
//! resources are refused exactly like missing ones. The list of routes is read
//! from the source (`warp::path!` and the method after it), so a new route
//! without a case here fails `every_route_has_an_isolation_case`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::server::*;

/// How a route must treat another tenant's credentials.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Public: no credentials needed, no tenant data shown.
    Public,
    /// Takes A's session id: B gets the same 404 as for a session that never existed.
    ForeignSessionIsNotFound,
    /// A collection: B's call succeeds but shows or changes none of A's data.
    OwnTenantOnly,
    /// Admin: a tenant key is not an admin token.
    AdminOnly,
    /// A CORS preflight: answers any origin, touches nothing, shows nothing.
    Preflight,
    /// Takes a webchat `session_id` (put in for `{}`): to another tenant, an
    /// id used in A is unknown (reads 404; writes open B's own conversation).
    Webchat,
    /// The agent console: a tenant key is not a staff key (403), and B's staff
    /// get 404 for A's conversation and none of A's in lists.
    Console,
    /// The console feed socket: it takes only a staff member's feed ticket.
    ConsoleFeed,
    /// The whole tenant's figures: B counts only its own; a client token
    /// (one end user) is refused.
    TenantFigures,
    /// A client library's protocol naming A's conversation by its id (in the
    /// body or the path): to B it is an id never seen (a webchat conversation
    /// of B's own, nothing of A's shown); to another client, 404.
    Adapter,
    /// Takes a widget key in the path: a tenant's API key there is refused.
    WidgetPath,
    /// A Durable Stream of A's (`/ds/acme/v1/stream/alice-notes`): B's key
    /// gets the 404 of a missing stream, a client token 403; it stays as it was.
    Stream,
    /// A conversation of A's read as a Durable Stream
    /// (`/ds/acme/v1/conversation/{id}`): B's key, and a client token of
    /// another client, get the 404 of a conversation that never existed.
    ConversationStream,
}

/// Acme's Durable Stream the intruders try.
const STREAM: &str = "/ds/acme/v1/stream/alice-notes";

/// The webchat `session_id` alice's conversation goes by.
const WEBCHAT_ID: &str = "alice-webchat-0123456789";

/// Every route (method, path with `{}` for parameters) and its isolation rule.
const CASES: &[(&str, Expect)] = &[
    ("GET /healthz", Expect::Public),
    ("GET /readyz", Expect::Public),
    // Operator figures: tenants and endpoints are labels, conversations never.
    ("GET /metrics", Expect::Public),
    ("GET /openapi.json", Expect::Public),
    ("GET /docs", Expect::Public),
    ("GET /assets/docs.js", Expect::Public),
    ("GET /", Expect::Public),
    ("GET /console", Expect::Public),
    ("GET /widget.js", Expect::Public),
    ("GET /assets/markdown.js", Expect::Public),
    ("GET /assets/chat.js", Expect::Public),
    ("GET /assets/demo.js", Expect::Public),
    ("GET /assets/console.js", Expect::Public),
    ("GET /assets/insights.js", Expect::Public),
    ("GET /console/api/me", Expect::Console),
    ("GET /console/api/conversations", Expect::Console),
    (
        "GET /console/api/conversations/{}/messages",
        Expect::Console,
    ),
    (
        "POST /console/api/conversations/{}/messages",
        Expect::Console,
    ),
    (
        "POST /console/api/conversations/{}/takeover",
        Expect::Console,
    ),
    (
        "POST /console/api/conversations/{}/handback",
        Expect::Console,
    ),
    ("POST /console/api/conversations/{}/socket", Expect::Console),
    (
        "GET /console/api/conversations/{}/insights",
        Expect::Console,
    ),
    ("POST /console/api/feed", Expect::Console),
    ("GET /console/ws", Expect::ConsoleFeed),
    ("GET /analytics/summary", Expect::TenantFigures),
    ("POST /chat/sessions", Expect::OwnTenantOnly),
    ("OPTIONS /chat/sessions", Expect::Preflight),
    ("GET /chat/sessions", Expect::OwnTenantOnly),
    (
        "GET /chat/sessions/{}/history",
        Expect::ForeignSessionIsNotFound,
    ),
    (
        "POST /chat/sessions/{}/context",
        Expect::ForeignSessionIsNotFound,
    ),
    (
        "POST /chat/sessions/{}/ticket",
        Expect::ForeignSessionIsNotFound,
    ),
    ("DELETE /chat/sessions/{}", Expect::ForeignSessionIsNotFound),
    ("GET /chat/ws/{}", Expect::ForeignSessionIsNotFound),
    ("POST /chat/conversation", Expect::OwnTenantOnly),
    ("GET /chat/conversations", Expect::OwnTenantOnly),
    ("GET /chat/{}/messages", Expect::ForeignSessionIsNotFound),
    ("POST /chat/{}/messages", Expect::ForeignSessionIsNotFound),
    ("PATCH /chat/{}", Expect::ForeignSessionIsNotFound),
    ("GET /chat/{}/contact", Expect::ForeignSessionIsNotFound),
    ("POST /chat/{}/handoff", Expect::ForeignSessionIsNotFound),
    ("POST /chat/{}/analyze", Expect::ForeignSessionIsNotFound),
    ("GET /chat/{}/insights", Expect::ForeignSessionIsNotFound),
    // Reads first: once B writes with alice's id, B has a conversation of its own by that id.
    ("GET /api/webchat/history/{}", Expect::Webchat),
    ("POST /api/webchat/messages", Expect::Webchat),
    ("OPTIONS /api/webchat/messages", Expect::Preflight),
    ("OPTIONS /api/webchat/history/{}", Expect::Preflight),
    ("POST /api/webchat/consent", Expect::Webchat),
    ("OPTIONS /api/webchat/consent", Expect::Preflight),
    // After the writes above: B has a conversation of its own by this id.
    ("POST /api/webchat/handoff", Expect::Webchat),
    ("OPTIONS /api/webchat/handoff", Expect::Preflight),
    ("GET /api/webchat/stream", Expect::Webchat),
    ("POST /ai-sdk/chat", Expect::Adapter),
    ("OPTIONS /ai-sdk/chat", Expect::Preflight),
    ("PUT /ds/{}/v1/stream/{}", Expect::Stream),
    ("POST /ds/{}/v1/stream/{}", Expect::Stream),
    ("GET /ds/{}/v1/stream/{}", Expect::Stream),
    ("HEAD /ds/{}/v1/stream/{}", Expect::Stream),
    ("DELETE /ds/{}/v1/stream/{}", Expect::Stream),
    ("OPTIONS /ds/{}/v1/stream/{}", Expect::Preflight),
    ("GET /ds/{}/v1/conversation/{}", Expect::ConversationStream),
    ("HEAD /ds/{}/v1/conversation/{}", Expect::ConversationStream),
    ("OPTIONS /ds/{}/v1/conversation/{}", Expect::Preflight),
    ("GET /ai-sdk/chat/{}/stream", Expect::Adapter),
    ("OPTIONS /ai-sdk/chat/{}/stream", Expect::Preflight),
    ("POST /ag-ui", Expect::Adapter),
    ("OPTIONS /ag-ui", Expect::Preflight),
    ("POST /n8n-chat/{}", Expect::WidgetPath),
    ("OPTIONS /n8n-chat/{}", Expect::Preflight),
    ("GET /admin/backup", Expect::AdminOnly),
    ("POST /admin/tenants", Expect::AdminOnly),
    ("GET /admin/tenants", Expect::AdminOnly),
    ("PATCH /admin/tenants/{}", Expect::AdminOnly),
    ("POST /admin/tenants/{}/erase", Expect::AdminOnly),
    ("POST /admin/tenants/{}/keys", Expect::AdminOnly),
    ("GET /admin/tenants/{}/keys", Expect::AdminOnly),
    ("POST /admin/tenants/{}/client-tokens", Expect::AdminOnly),
    ("DELETE /admin/keys/{}", Expect::AdminOnly),
    ("POST /admin/tenants/{}/webhooks", Expect::AdminOnly),
    ("GET /admin/tenants/{}/webhooks", Expect::AdminOnly),
    ("GET /admin/tenants/{}/webhooks/{}", Expect::AdminOnly),
    ("PATCH /admin/tenants/{}/webhooks/{}", Expect::AdminOnly),
    ("DELETE /admin/tenants/{}/webhooks/{}", Expect::AdminOnly),
    (
        "POST /admin/tenants/{}/webhooks/{}/rotate-secret",
        Expect::AdminOnly,
    ),
    ("POST /admin/tenants/{}/webhooks/{}/test", Expect::AdminOnly),
    (
        "GET /admin/tenants/{}/webhooks/{}/deliveries",
        Expect::AdminOnly,
    ),
    (
        "POST /admin/tenants/{}/webhooks/{}/deliveries/{}/replay",
        Expect::AdminOnly,
    ),
    (
        "POST /admin/tenants/{}/webhooks/{}/replay-dead",
        Expect::AdminOnly,
    ),
];

#[test]
fn every_route_has_an_isolation_case() {
    let covered: BTreeSet<String> = CASES.iter().map(|(route, _)| route.to_string()).collect();
    assert_eq!(
        crate::support::source::routes_in_source(),
        covered,
        "add the new route to CASES in tests/it/isolation.rs"
    );
}

#[tokio::test]
async fn another_tenants_or_another_clients_credentials_are_refused_on_every_route() {
    let mut config = config();
    config.auth.admin_token = "adm_isolation".into();
    let server = TestServer::start(config).await;
    // Acme's client alice owns a conversation with a message in it.
    let alice = client_token("alice");
    let created: Value = server
        .http
        .post(server.url("/chat/sessions"))
        .header("X-API-Key", KEY)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = created["session_id"].as_str().unwrap().to_owned();
    let mut ws = server
        .connect(created["websocket_url"].as_str().unwrap())
        .await;
    say(&mut ws, "alice's secret").await;
    frames_until(&mut ws, "done").await;
    // And a webchat visitor of acme's, who consented and left an email.
    let webchat = |path: &str, body: Value| {
        server
            .http
            .post(server.url(path))
            .header("X-API-Key", KEY)
            .json(&body)
            .send()
    };
    let consent = json!({"session_id": WEBCHAT_ID, "granted": true, "text_version": "v1"});
    assert_eq!(
        webchat("/api/webchat/consent", consent)
            .await
            .unwrap()
            .status(),
        201
    );
    let visit =
        json!({"session_id": WEBCHAT_ID, "author": "Alice", "content": "alice@acme.example"});
    let reply: Value = webchat("/api/webchat/messages", visit)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice_webchat = reply["metadata"]["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // And a Durable Stream of acme's.
    let notes = server
        .http
        .put(server.url(STREAM))
        .header("X-API-Key", KEY)
        .header("content-type", "text/plain")
        .body("alice's secret notes")
        .send()
        .await
        .unwrap();
    assert_eq!(notes.status(), 201);

    let globex_staff = make_key(&server, "adm_isolation", "globex", "staff").await;
    let bob = client_token("bob");
    // Tenant B; and client B inside tenant A.
    let intruders: [(&str, &str, Option<&str>); 2] =
        [("globex", OTHER_KEY, None), ("acme's bob", KEY, Some(&bob))];
    for (route, expect) in CASES {
        let (method, template) = route.split_once(' ').unwrap();
        let id = match expect {
            Expect::Webchat => WEBCHAT_ID,
            _ => &session,
        };
        let path = match expect {
            _ if template.starts_with("/ds/{}/v1/conversation/") => {
                format!("/ds/acme/v1/conversation/{session}")
            }
            Expect::Stream | Expect::Preflight if template.starts_with("/ds/") => STREAM.to_owned(),
            _ => template.replacen("{}", id, 1),
        };
        let method: reqwest::Method = method.parse().unwrap();
        for (who, key, token) in intruders {
            match expect {
                Expect::Public => {
                    let response = server
                        .http
                        .request(method.clone(), server.url(&path))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200, "{route}");
                    let text = response.text().await.unwrap();
                    assert!(!text.contains("alice's secret"), "{route}");
                    assert!(!text.contains(&session), "{route}");
                }
                Expect::ForeignSessionIsNotFound if template.starts_with("/chat/ws/") => {
                    let mut request =
                        crate::support::sockets::socket_request(&server, &session, key);
                    if let Some(token) = token {
                        request
                            .headers_mut()
                            .insert("authorization", format!("Bearer {token}").parse().unwrap());
                    }
                    let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
                    crate::support::sockets::assert_http_status(refused, 404);
                }
                Expect::ForeignSessionIsNotFound => {
                    let (status, body) = call(&server, method.clone(), &path, key, token).await;
                    assert_eq!(
                        (status, body["code"].clone()),
                        (404, json!("session_not_found")),
                        "{who}: {route}"
                    );
                }
                Expect::OwnTenantOnly => {
                    let (status, body) = call(&server, method.clone(), &path, key, token).await;
                    assert!(
                        (200..300).contains(&status),
                        "{who}: {route}: {status} {body}"
                    );
                    assert!(
                        !body.to_string().contains(&session),
                        "{who}: {route} shows alice's session: {body}"
                    );
                }
                // Webchat callers are tenants (API or widget keys); client tokens play no part.
                Expect::Webchat if token.is_some() => {}
                Expect::Webchat if template == "/api/webchat/stream" => {
                    let request = crate::support::sockets::stream_request(
                        &server,
                        &format!("session_id={WEBCHAT_ID}"),
                        &[("x-api-key", key)],
                    );
                    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
                    // B's own conversation: B's greeting, and nothing of alice's.
                    let greeting = next_frame(&mut ws).await;
                    assert_eq!(greeting["content"], "Hi from Globex", "{who}: {route}");
                    send(&mut ws, json!({"type": "resume", "after_seq": 0})).await;
                    send(&mut ws, json!({"type": "ping"})).await;
                    let (_, replayed) = frames_until(&mut ws, "pong").await;
                    let replayed = serde_json::to_string(&replayed).unwrap();
                    assert!(
                        !replayed.contains("alice") && !replayed.contains(&alice_webchat),
                        "{who}: {route}: {replayed}"
                    );
                }
                Expect::Webchat if method == reqwest::Method::GET => {
                    let (status, body) = call(&server, method.clone(), &path, key, token).await;
                    assert_eq!(
                        (status, body["code"].clone()),
                        (404, json!("session_not_found")),
                        "{who}: {route}"
                    );
                }
                Expect::Webchat => {
                    let (status, body) = call(&server, method.clone(), &path, key, token).await;
                    assert!(
                        (200..300).contains(&status),
                        "{who}: {route}: {status} {body}"
                    );
                    let text = body.to_string();
                    assert!(
                        !text.contains(&alice_webchat) && !text.contains("alice@acme"),
                        "{who}: {route} shows alice's conversation: {body}"
                    );
                }
                Expect::Stream => {
                    let (status, body) = call(&server, method.clone(), &path, key, token).await;
                    let expected = match token {
                        Some(_) => (403, "client_token_not_allowed"),
                        None => (404, "stream_not_found"),
                    };
                    assert_eq!(status, expected.0, "{who}: {route}: {body}");
                    if method != reqwest::Method::HEAD {
                        assert_eq!(body["code"], expected.1, "{who}: {route}");
                    }
                }
                Expect::ConversationStream => {
                    let (status, body) = call(&server, method.clone(), &path, key, token).await;
                    assert_eq!(status, 404, "{who}: {route}: {body}");
                    if method != reqwest::Method::HEAD {
                        assert_eq!(body["code"], "session_not_found", "{who}: {route}");
                    }
                }
                Expect::Preflight => {
                    let response = server
                        .http
                        .request(method.clone(), server.url(&path))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 204, "{route}");
                    assert!(response.text().await.unwrap().is_empty(), "{route}");
                }
                Expect::Console => {
                    let (status, body) = call(&server, method.clone(), &path, key, token).await;
                    assert_eq!(
                        (status, body["code"].clone()),
                        (403, json!("not_a_staff_key")),
                        "{who}: {route}"
                    );
                    let (status, body) =
                        call(&server, method.clone(), &path, &globex_staff, None).await;
                    if template.contains("{}") {
                        assert_eq!(
                            (status, body["code"].clone()),
                            (404, json!("session_not_found")),
                            "globex staff: {route}"
                        );
                    } else {
                        assert!((200..300).contains(&status), "{route}: {status} {body}");
                        assert!(!body.to_string().contains(&session), "{route}: {body}");
                    }
                }
                Expect::TenantFigures => {
                    let (status, body) = call(&server, method.clone(), &path, key, token).await;
                    if token.is_some() {
                        assert_eq!(
                            (status, body["code"].clone()),
                            (403, json!("client_token_not_allowed")),
                            "{who}: {route}"
                        );
                    } else {
                        assert_eq!(status, 200, "{who}: {route}: {body}");
                        assert_eq!(body["total"]["conversations_started"], 0, "{who}: {body}");
                        assert!(body["total"]["messages"].as_object().unwrap().is_empty());
                    }
                }
                Expect::ConsoleFeed => {
                    // A tenant key is no ticket (the feed's own isolation is
                    // tested in console.rs: B's feed never carries A's changes).
                    let url = server
                        .url(&format!("/console/ws?ticket={key}"))
                        .replacen("http", "ws", 1);
                    let refused = tokio_tungstenite::connect_async(url).await.unwrap_err();
                    crate::support::sockets::assert_http_status(refused, 401);
                }
                Expect::Adapter => {
                    let (status, text) = adapter_call(&server, &path, &session, key, token).await;
                    let expected = match (token, method == reqwest::Method::GET) {
                        (Some(_), _) => 404,
                        (None, true) => 204,
                        (None, false) => 200,
                    };
                    assert_eq!(status, expected, "{who}: {route}: {text}");
                    assert!(!text.contains("alice's secret"), "{who}: {route}: {text}");
                }
                Expect::WidgetPath => {
                    let path = template.replacen("{}", key, 1);
                    let (status, body) = call(&server, method.clone(), &path, key, token).await;
                    assert_eq!(
                        (status, body["code"].clone()),
                        (403, json!("api_key_in_url")),
                        "{who}: {route}"
                    );
                }
                Expect::AdminOnly => {
                    // A tenant key or a client token is not an admin token.
                    let bearer = token.unwrap_or(key);
                    let response = server
                        .http
                        .request(method.clone(), server.url(&path))
                        .bearer_auth(bearer)
                        .json(&json!({"kind": "api", "id": "intruder", "client_id": "x"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 401, "{who}: {route}");
                }
            }
        }
    }
    // Alice's conversation is untouched; she and the whole tenant still see it.
    let history = server.history(&session).await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["content"], "alice's secret");
    let (status, mine) = call(
        &server,
        reqwest::Method::GET,
        "/chat/sessions",
        KEY,
        Some(&alice),
    )
    .await;
    assert_eq!((status, mine["count"].clone()), (200, json!(1)));
    let (_, tenant_wide) = server.get("/chat/sessions", Some(KEY)).await;
    assert!(tenant_wide.to_string().contains(&session));
    let (_, visit) = server
        .get(&format!("/api/webchat/history/{WEBCHAT_ID}"), Some(KEY))
        .await;
    assert_eq!(visit["count"], 2, "{visit}");
    assert_eq!(visit["conversation_id"], alice_webchat.as_str());
    let (_, contact) = server
        .get(&format!("/chat/{alice_webchat}/contact"), Some(KEY))
        .await;
    assert_eq!(contact["email"], "alice@acme.example", "{contact}");
    let notes = server
        .http
        .get(server.url(STREAM))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(notes.text().await.unwrap(), "alice's secret notes");
    server.stop().await;
}

/// An adapter's call naming `session`: its status and body text.
async fn adapter_call(
    server: &TestServer,
    path: &str,
    session: &str,
    key: &str,
    token: Option<&str>,
) -> (u16, String) {
    let body = match path {
        "/ai-sdk/chat" => Some(
            json!({"id": session, "messages": [{"id": "i1", "role": "user",
            "parts": [{"type": "text", "text": "from an intruder"}]}]}),
        ),
        "/ag-ui" => Some(
            json!({"threadId": session, "runId": "r1", "messages": [{"id": "i1",
            "role": "user", "content": "from an intruder"}]}),
        ),
        _ => None,
    };
    let mut request = match &body {
        Some(body) => server.http.post(server.url(path)).json(body),
        None => server.http.get(server.url(path)),
    };
    request = request.header("X-API-Key", key);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// A call with a tenant key, a client token if given, and a small JSON body
/// where the route takes one.
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    key: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = server
        .http
        .request(method.clone(), server.url(path))
        .header("X-API-Key", key);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if path == "/api/webchat/messages" {
        request = request.json(
            &json!({"session_id": WEBCHAT_ID, "author": "Mallory", "content": "from an intruder"}),
        );
    } else if path == "/api/webchat/consent" {
        request = request
            .json(&json!({"session_id": WEBCHAT_ID, "granted": false, "text_version": "v1"}));
    } else if method == reqwest::Method::POST && path.ends_with("/messages") {
        request = request.json(&json!({"role": "user", "content": "from an intruder"}));
    } else if path == "/api/webchat/handoff" {
        request = request.json(&json!({"session_id": WEBCHAT_ID, "reason": "from an intruder"}));
    } else if method == reqwest::Method::POST && path.ends_with("/handoff") {
        request = request.json(&json!({"reason": "from an intruder"}));
    } else if method == reqwest::Method::POST {
        request = request.json(&json!({"note": "from an intruder"}));
    } else if method == reqwest::Method::PATCH {
        request = request.json(&json!({"version": 1, "title": "taken over"}));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
