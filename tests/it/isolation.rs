//! Isolation, route by route: tenant B's credentials against tenant A's
//! resources are refused exactly like missing ones. The list of routes is read
//! from the source (`warp::path!` and the method after it), so a new route
//! without a case here fails `every_route_has_an_isolation_case`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::common::*;

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
}

/// Every route (method, path with `{}` for parameters) and its isolation rule.
const CASES: &[(&str, Expect)] = &[
    ("GET /healthz", Expect::Public),
    ("GET /readyz", Expect::Public),
    ("GET /", Expect::Public),
    ("POST /chat/sessions", Expect::OwnTenantOnly),
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
    ("POST /admin/tenants", Expect::AdminOnly),
    ("GET /admin/tenants", Expect::AdminOnly),
    ("POST /admin/tenants/{}/keys", Expect::AdminOnly),
    ("GET /admin/tenants/{}/keys", Expect::AdminOnly),
    ("DELETE /admin/keys/{}", Expect::AdminOnly),
];

/// "METHOD /path" for every route declared in `src/`.
fn routes_in_source() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest
            .find("warp::path!(")
            .map(|at| (at, "path!"))
            .into_iter()
            .chain(rest.find("warp::path::end()").map(|at| (at, "end")))
            .min_by_key(|(at, _)| *at)
        {
            let (start, kind) = at;
            let after = &rest[start..];
            let (route_path, consumed) = if kind == "end" {
                ("/".to_owned(), "warp::path::end()".len())
            } else {
                let close = after.find(')').unwrap();
                let inside = &after["warp::path!(".len()..close];
                let segments: Vec<String> = inside
                    .split('/')
                    .map(|segment| segment.trim())
                    .map(|segment| {
                        match segment.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                            Some(literal) => literal.to_owned(),
                            None => "{}".to_owned(),
                        }
                    })
                    .collect();
                (format!("/{}", segments.join("/")), close)
            };
            let method = ["get", "post", "put", "patch", "delete"]
                .iter()
                .filter_map(|method| {
                    after
                        .find(&format!("warp::{method}()"))
                        .map(|at| (at, method))
                })
                .min_by_key(|(at, _)| *at)
                .map(|(_, method)| method.to_uppercase())
                .unwrap_or_else(|| panic!("no method after {route_path} in {}", path.display()));
            routes.insert(format!("{method} {route_path}"));
            rest = &after[consumed..];
        }
    }
    routes
}

#[test]
fn every_route_has_an_isolation_case() {
    let covered: BTreeSet<String> = CASES.iter().map(|(route, _)| route.to_string()).collect();
    assert_eq!(
        routes_in_source(),
        covered,
        "add the new route to CASES in tests/it/isolation.rs"
    );
}

#[tokio::test]
async fn another_tenants_credentials_are_refused_on_every_route() {
    let mut config = config();
    config.auth.admin_token = "adm_isolation".into();
    let server = TestServer::start(config).await;
    // Tenant A's data: a conversation with a message.
    let (session, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    say(&mut ws, "acme's secret").await;
    frames_until(&mut ws, "done").await;

    for (route, expect) in CASES {
        let (method, template) = route.split_once(' ').unwrap();
        let path = template.replacen("{}", &session, 1);
        let method: reqwest::Method = method.parse().unwrap();
        match expect {
            Expect::Public => {
                let response = server
                    .http
                    .request(method, server.url(&path))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{route}");
                assert!(
                    !response.text().await.unwrap().contains("acme's secret"),
                    "{route}"
                );
            }
            Expect::ForeignSessionIsNotFound if template.starts_with("/chat/ws/") => {
                let request = crate::session_api::socket_request(&server, &session, OTHER_KEY);
                let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
                crate::session_api::assert_http_status(refused, 404);
            }
            Expect::ForeignSessionIsNotFound => {
                let (status, body) = call(&server, method, &path, OTHER_KEY).await;
                assert_eq!(
                    (status, body["code"].clone()),
                    (404, json!("session_not_found")),
                    "{route}"
                );
            }
            Expect::OwnTenantOnly => {
                let (status, body) = call(&server, method, &path, OTHER_KEY).await;
                assert_eq!(status, 200, "{route}: {body}");
                assert!(
                    !body.to_string().contains(&session),
                    "{route} shows acme's session: {body}"
                );
            }
            Expect::AdminOnly => {
                let (status, body) = call(&server, method, &path, OTHER_KEY).await;
                assert_eq!(status, 401, "{route}: {body}");
            }
        }
    }
    // After all of that, acme's conversation is untouched.
    let history = server.history(&session).await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["content"], "acme's secret");
    let (_, listed) = server.get("/chat/sessions", Some(KEY)).await;
    assert_eq!(listed["count"], 1);
    server.stop().await;
}

/// A call with `key` both as `X-API-Key` and as a bearer token, with a small
/// JSON body where the route takes one.
async fn call(server: &TestServer, method: reqwest::Method, path: &str, key: &str) -> (u16, Value) {
    let mut request = server
        .http
        .request(method.clone(), server.url(path))
        .header("X-API-Key", key)
        .bearer_auth(key);
    if method == reqwest::Method::POST {
        request = request.json(&json!({"kind": "api", "id": "intruder", "note": "from globex"}));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
