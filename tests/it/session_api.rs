//! The frontend session API over REST, as the seed "Chat API – Documentación
//! para el Frontend" documents it, and every way to call it wrongly.

use serde_json::{Value, json};

use crate::support::server::*;
use crate::support::sockets::*;

#[tokio::test]
async fn the_seeds_whole_flow_works() {
    let server = TestServer::start(config()).await;

    // POST /chat/sessions with a context.
    let response = server
        .http
        .post(server.url("/chat/sessions"))
        .header("X-API-Key", KEY)
        .json(&json!({"context": {"total_spent": 120, "total_invoices": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["status"], "created");
    let session = created["session_id"].as_str().unwrap().to_owned();
    let websocket_url = created["websocket_url"].as_str().unwrap();
    assert!(websocket_url.starts_with(&format!(
        "ws://{}/chat/ws/{session}?ticket=",
        server.server.addr
    )));

    // The browser opens websocket_url as is and is greeted.
    let mut ws = server.connect_raw(websocket_url).await;
    let greeting = next_frame(&mut ws).await;
    assert_eq!(
        greeting,
        json!({"type": "system", "content": "Hola, ¿en qué te ayudo?"})
    );

    // A message is acknowledged, then streamed back as chunks and one done.
    send(
        &mut ws,
        json!({"type": "message", "content": "¿Cuánto he gastado?", "client_msg_id": "m-1"}),
    )
    .await;
    let ack = next_frame(&mut ws).await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["client_msg_id"], "m-1");
    assert_eq!(ack["seq"], 1);
    let (done, chunks) = frames_until(&mut ws, "done").await;
    assert!(chunks.len() > 1, "the answer streams in pieces: {chunks:?}");
    assert_eq!(done["content"], "You said: ¿Cuánto he gastado?");
    assert_eq!(chunk_text(&chunks), done["content"]);
    assert_eq!(done["seq"], 2);
    assert_eq!(done["status"], "complete");

    // GET history: role and content, oldest first.
    let history = server.history(&session).await;
    let turns: Vec<(Value, Value)> = history
        .iter()
        .map(|m| (m["role"].clone(), m["content"].clone()))
        .collect();
    assert_eq!(
        turns,
        vec![
            (json!("user"), json!("¿Cuánto he gastado?")),
            (json!("assistant"), json!("You said: ¿Cuánto he gastado?")),
        ]
    );
    assert_eq!(history[0]["id"], ack["message_id"]);
    assert_eq!(history[1]["id"], done["message_id"]);

    // POST context merges into the old one.
    let response = server
        .http
        .post(server.url(&format!("/chat/sessions/{session}/context")))
        .header("X-API-Key", KEY)
        .json(&json!({"total_spent": 150, "vip": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["status"], "updated");
    assert_eq!(updated["session_id"], session.as_str());
    assert_eq!(
        updated["context"],
        json!({"total_spent": 150, "total_invoices": 3, "vip": true})
    );

    // GET /chat/sessions lists it with its context and counts.
    let (status, listed) = server.get("/chat/sessions?detail=true", Some(KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["sessions"][0]["session_id"], session.as_str());
    assert_eq!(listed["sessions"][0]["context"]["vip"], true);
    assert_eq!(listed["sessions"][0]["message_count"], 2);

    // DELETE closes the socket with a reason and removes everything.
    let response = server
        .http
        .delete(server.url(&format!("/chat/sessions/{session}")))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "deleted", "session_id": session})
    );
    assert_eq!(
        close_of(&mut ws).await,
        (4004, "session deleted".to_owned())
    );
    let (status, body) = server
        .get(&format!("/chat/sessions/{session}/history"), Some(KEY))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("session_not_found"))
    );
    let (_, listed) = server.get("/chat/sessions", Some(KEY)).await;
    assert_eq!(listed["count"], 0);
    server.stop().await;
}

#[tokio::test]
async fn a_session_can_be_created_without_a_body() {
    let server = TestServer::start(config()).await;
    let response = server
        .http
        .post(server.url("/chat/sessions"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "created");
    server.stop().await;
}

/// Every route that takes a session id, with the method and a body.
fn session_routes(session: &str) -> Vec<(reqwest::Method, String, Option<Value>)> {
    vec![
        (
            reqwest::Method::GET,
            format!("/chat/sessions/{session}/history"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/chat/sessions/{session}/context"),
            Some(json!({"a": 1})),
        ),
        (
            reqwest::Method::POST,
            format!("/chat/sessions/{session}/ticket"),
            None,
        ),
        (
            reqwest::Method::DELETE,
            format!("/chat/sessions/{session}"),
            None,
        ),
    ]
}

async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = server.http.request(method, server.url(path));
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn unknown_and_malformed_session_ids_are_a_json_404() {
    let server = TestServer::start(config()).await;
    for session in ["01a20000-0000-7000-8000-000000000000", "not-a-uuid"] {
        for (method, path, body) in session_routes(session) {
            let (status, body) = call(&server, method.clone(), &path, body, Some(KEY)).await;
            assert_eq!(status, 404, "{method} {path}: {body}");
            assert_eq!(body["code"], "session_not_found", "{method} {path}");
            assert!(body["error"].is_string());
        }
        let request = socket_request(&server, session, KEY);
        let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
        assert_http_status(refused, 404);
    }
    server.stop().await;
}

/// Opens a socket expecting the handshake to be refused with `status` and a JSON error.
async fn assert_refused<R>(request: R, status: u16)
where
    R: tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
{
    assert_http_status(
        tokio_tungstenite::connect_async(request).await.unwrap_err(),
        status,
    );
}

#[tokio::test]
async fn missing_or_wrong_api_keys_are_a_json_401_everywhere() {
    let server = TestServer::start(config()).await;
    let (session, _) = server.create_session().await;
    let mut routes = session_routes(&session);
    routes.push((
        reqwest::Method::POST,
        "/chat/sessions".into(),
        Some(json!({})),
    ));
    routes.push((reqwest::Method::GET, "/chat/sessions".into(), None));
    for (method, path, body) in routes {
        let (status, missing) = call(&server, method.clone(), &path, body.clone(), None).await;
        assert_eq!(
            (status, missing["code"].clone()),
            (401, json!("missing_api_key")),
            "{method} {path}"
        );
        let (status, wrong) = call(&server, method.clone(), &path, body, Some("tk_wrong")).await;
        assert_eq!(
            (status, wrong["code"].clone()),
            (401, json!("invalid_api_key")),
            "{method} {path}"
        );
    }
    // A socket with neither a key nor a ticket, or a wrong key.
    let url = format!("ws://{}/chat/ws/{session}", server.server.addr);
    assert_refused(url.clone(), 401).await;
    let forged = format!("{url}?ticket=eyJ0IjoiYWNtZSJ9.AAAA");
    assert_refused(forged, 401).await;
    // The session was not touched by any of it.
    assert_eq!(server.history(&session).await.len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn another_tenants_session_is_reported_as_not_found() {
    let server = TestServer::start(config()).await;
    let (session, websocket_url) = server.create_session().await;
    let mut ws = server.connect(&websocket_url).await;
    say(&mut ws, "secreto de acme").await;
    frames_until(&mut ws, "done").await;

    for (method, path, body) in session_routes(&session) {
        let (status, body) = call(&server, method.clone(), &path, body, Some(OTHER_KEY)).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["code"], "session_not_found");
    }
    let (_, listed) = server.get("/chat/sessions", Some(OTHER_KEY)).await;
    assert_eq!(listed["count"], 0);
    let request = socket_request(&server, &session, OTHER_KEY);
    assert_refused(request, 404).await;

    // A ticket for one session does not open another.
    let (other_session, _) = server.create_session().await;
    let ticket = websocket_url.split("ticket=").nth(1).unwrap();
    let stolen = format!(
        "ws://{}/chat/ws/{other_session}?ticket={ticket}",
        server.server.addr
    );
    assert_refused(stolen, 401).await;

    // Acme's data is intact.
    assert_eq!(server.history(&session).await.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused_and_change_nothing() {
    let mut config = config();
    config.server.max_body_bytes = 1024;
    let server = TestServer::start(config).await;
    let (session, _) = server.create_session().await;
    let context_path = format!("/chat/sessions/{session}/context");

    let raw = |path: &str, body: &'static str| {
        server
            .http
            .post(server.url(path))
            .header("X-API-Key", KEY)
            .header("Content-Type", "application/json")
            .body(body)
    };
    for (path, body, code) in [
        (context_path.as_str(), "{not json", "bad_request"),
        (context_path.as_str(), "[1, 2]", "bad_request"),
        (context_path.as_str(), "\"text\"", "bad_request"),
        ("/chat/sessions", "{\"context\": 5}", "bad_request"),
        ("/chat/sessions", "{oops", "bad_request"),
    ] {
        let response = raw(path, body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path} {body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], code, "{path} {body}: {error}");
    }
    let huge = json!({"blob": "x".repeat(4096)});
    let (status, body) = call(
        &server,
        reqwest::Method::POST,
        &context_path,
        Some(huge),
        Some(KEY),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (413, json!("payload_too_large"))
    );
    for limit in ["0", "-1", "abc", "100000"] {
        let (status, body) = server
            .get(&format!("/chat/sessions?limit={limit}"), Some(KEY))
            .await;
        assert_eq!(status, 400, "limit={limit}: {body}");
        let path = format!("/chat/sessions/{session}/history?limit={limit}");
        let (status, _) = server.get(&path, Some(KEY)).await;
        assert_eq!(status, 400, "history limit={limit}");
    }
    let (status, body) = server.get("/nothing/here", Some(KEY)).await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));

    // Only the session created above exists, with its original context.
    let (_, listed) = server.get("/chat/sessions?detail=true", Some(KEY)).await;
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["sessions"][0]["context"], json!({"plan": "pro"}));
    server.stop().await;
}

#[tokio::test]
async fn an_expired_ticket_is_refused_and_a_new_one_works() {
    let mut config = config();
    config.auth.ticket_ttl_secs = 1;
    let server = TestServer::start(config).await;
    let (_, expired) = server.create_session().await;
    // Tickets expire on whole seconds: past two, this one is stale.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_refused(expired, 401).await;
    server.stop().await;

    let server = TestServer::start(crate::support::server::config()).await;
    let (session_2, _) = server.create_session().await;
    let (status, body) = call(
        &server,
        reqwest::Method::POST,
        &format!("/chat/sessions/{session_2}/ticket"),
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server
        .connect(body["websocket_url"].as_str().unwrap())
        .await;
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = TestServer::start(config()).await;
    assert_eq!(
        server.get("/healthz", None).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        server.get("/readyz", None).await,
        (200, json!({"status": "ready"}))
    );
    let page = server.http.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<title>tertulia</title>")
    );
    server.stop().await;
}

/// A body sent with `Transfer-Encoding: chunked` (no `Content-Length`), as
/// some HTTP clients and n8n's HTTP node send it, is read up to the same
/// limit as any other; beyond it, 413.
#[tokio::test]
async fn chunked_bodies_are_accepted_up_to_the_body_limit() {
    let server = TestServer::start(config()).await;
    let context = json!({"context": {"plan": "pro", "source": "n8n"}}).to_string();
    let (status, body) = chunked_post(&server, "/chat/sessions", &context).await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().unwrap().to_owned();
    let (status, listed) = server.get("/chat/conversations", Some(KEY)).await;
    assert_eq!(status, 200, "{listed}");
    let stored = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|conversation| conversation.to_string().contains(&session))
        .cloned()
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(stored["context"]["source"], "n8n", "{stored}");

    let huge = json!({"context": {"blob": "x".repeat(200_000)}}).to_string();
    let (status, body) = chunked_post(&server, "/chat/sessions", &huge).await;
    assert_eq!(
        (status, body["code"].clone()),
        (413, json!("payload_too_large"))
    );
    server.stop().await;
}

/// POSTs `body` in 1 KiB chunks over a raw connection; the status and JSON.
async fn chunked_post(server: &TestServer, path: &str, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.server.addr)
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for piece in body.as_bytes().chunks(1024) {
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(piece);
        chunk.extend_from_slice(b"\r\n");
        // The server may answer 413 and close before the rest is sent.
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    let status = response[9..12].parse().unwrap();
    let (_, payload) = response.split_once("\r\n\r\n").unwrap();
    let json = payload
        .find('{')
        .and_then(|start| serde_json::from_str(payload[start..].lines().next()?).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// The Frontend API seed's listing: `{"sessions": ["uuid1", "uuid2"], "count": 2}`,
/// the ids of the active conversations; `detail=true` lists every one as an object.
#[tokio::test]
async fn the_session_list_has_the_seeds_shape_and_details_on_request() {
    let server = TestServer::start(config()).await;
    let (first, _) = server.create_session().await;
    let (second, _) = server.create_session().await;
    let (archived, _) = server.create_session().await;
    let (status, body) = call(
        &server,
        reqwest::Method::PATCH,
        &format!("/chat/{archived}"),
        Some(json!({"status": "archived", "version": 1})),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (status, listed) = server.get("/chat/sessions", Some(KEY)).await;
    assert_eq!(status, 200);
    let mut ids: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().expect("an id string"))
        .collect();
    ids.sort();
    let mut active = vec![first.as_str(), second.as_str()];
    active.sort();
    assert_eq!(ids, active, "{listed}");
    assert_eq!(listed["count"], 2);
    assert_eq!(
        listed.as_object().unwrap().len(),
        2,
        "exactly the seed's keys"
    );

    let (_, detailed) = server.get("/chat/sessions?detail=true", Some(KEY)).await;
    assert_eq!(detailed["count"], 3);
    assert!(
        detailed["sessions"][0]["session_id"].is_string(),
        "{detailed}"
    );
    let (status, body) = server.get("/chat/sessions?detail=maybe", Some(KEY)).await;
    assert_eq!((status, body["code"].clone()), (400, json!("bad_request")));
    server.stop().await;
}
