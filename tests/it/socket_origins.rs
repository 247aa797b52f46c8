//! Cross-site WebSocket hijacking and tickets: a browser's upgrade (it
//! always sends `Origin`) is served only from a page of this server or of
//! the tenant's `allowed_origins`, whatever credential it carries; a back
//! end (no `Origin`) is judged by its credential alone. A ticket opens one
//! kind of socket, for one conversation, until it expires.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;

use crate::support::server::*;
use crate::support::sockets::{socket_request, stream_request};

const SHOP: &str = "https://shop.example";
const EVIL: &str = "https://evil.example";

async fn origin_server(ticket_ttl_secs: u64) -> TestServer {
    let mut config = config();
    config.auth.admin_token = "adm".into();
    config.auth.ticket_ttl_secs = ticket_ttl_secs;
    let acme = config.tenants.get_mut("acme").unwrap();
    acme.allowed_origins = vec![SHOP.into()];
    TestServer::start(config).await
}

fn with_origin(mut request: Request, origin: Option<&str>) -> Request {
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    request
}

fn url_request(url: &str, origin: Option<&str>) -> Request {
    with_origin(url.into_client_request().unwrap(), origin)
}

/// Opens `request`; `Ok` if upgraded, else the HTTP status and code.
async fn open(request: Request) -> Result<Ws, (u16, String)> {
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            Err((
                response.status().as_u16(),
                body["code"].as_str().unwrap_or_default().to_owned(),
            ))
        }
        Err(other) => panic!("the upgrade failed below HTTP: {other}"),
    }
}

/// A staff member's `websocket_url` for the console feed.
async fn feed_url(server: &TestServer, staff: &str) -> String {
    let response = server
        .http
        .post(server.url("/console/api/feed"))
        .header("X-API-Key", staff)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["websocket_url"].as_str().unwrap().to_owned()
}

fn refused(result: Result<Ws, (u16, String)>, what: &str) -> (u16, String) {
    match result {
        Ok(_) => panic!("{what}: upgraded, but it must be refused"),
        Err(refusal) => refusal,
    }
}

#[tokio::test]
async fn a_browser_socket_from_another_site_is_refused_whatever_it_carries() {
    let server = origin_server(300).await;
    let (session, websocket_url) = server.create_session().await;
    let ours = format!("http://{}", server.server.addr);
    let forbidden = (403, "origin_not_allowed".to_owned());
    // A ticket from another site's page, or from a sandboxed one (`null`).
    for origin in [EVIL, "null", "http://127.0.0.1:1"] {
        let request = url_request(&websocket_url, Some(origin));
        assert_eq!(refused(open(request).await, origin), forbidden, "{origin}");
    }
    // An API key from another site's page.
    let request = with_origin(socket_request(&server, &session, KEY), Some(EVIL));
    assert_eq!(refused(open(request).await, "key"), forbidden);
    let query = "session_id=visitor-1";
    let request = stream_request(&server, query, &[("x-api-key", KEY), ("origin", EVIL)]);
    assert_eq!(refused(open(request).await, "webchat key"), forbidden);
    // From our own pages, the tenant's listed page, and a back end: served.
    for origin in [Some(ours.as_str()), Some(SHOP), None] {
        let mut ws = open(url_request(&websocket_url, origin)).await.unwrap();
        assert_eq!(next_frame(&mut ws).await["type"], "system", "{origin:?}");
    }
    let request = with_origin(socket_request(&server, &session, KEY), Some(&ours));
    open(request).await.unwrap();
    let request = stream_request(&server, query, &[("x-api-key", KEY), ("origin", SHOP)]);
    open(request).await.unwrap();
    // Nothing a refused upgrade did reached the conversation.
    let history = server.history(&session).await;
    assert!(
        history.iter().all(|message| message["role"] == "agent"),
        "{history:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_console_feed_opens_only_from_our_page_or_a_listed_one() {
    let server = origin_server(300).await;
    let staff = make_key(&server, "adm", "acme", "staff").await;
    let url = feed_url(&server, &staff).await;
    let refusal = refused(open(url_request(&url, Some(EVIL))).await, "feed");
    assert_eq!(refusal, (403, "origin_not_allowed".to_owned()));
    let ours = format!("http://{}", server.server.addr);
    open(url_request(&feed_url(&server, &staff).await, Some(&ours)))
        .await
        .unwrap();
    open(url_request(&feed_url(&server, &staff).await, None))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_ticket_opens_one_kind_of_socket_for_one_conversation_until_it_expires() {
    let server = origin_server(1).await;
    let staff = make_key(&server, "adm", "acme", "staff").await;
    let (session, websocket_url) = server.create_session().await;
    let (other, _) = server.create_session().await;
    let ticket = websocket_url.split("ticket=").nth(1).unwrap().to_owned();
    let addr = server.server.addr;
    let invalid = (401, "invalid_ticket".to_owned());
    // A conversation's ticket opens neither another conversation nor the feed.
    let elsewhere = format!("ws://{addr}/chat/ws/{other}?ticket={ticket}");
    assert_eq!(
        refused(open(url_request(&elsewhere, None)).await, "other"),
        invalid
    );
    let feed = format!("ws://{addr}/console/ws?ticket={ticket}");
    assert_eq!(
        refused(open(url_request(&feed, None)).await, "feed"),
        invalid
    );
    // A feed ticket opens no conversation.
    let feed_ticket = feed_url(&server, &staff).await;
    let feed_ticket = feed_ticket.split("ticket=").nth(1).unwrap();
    let as_session = format!("ws://{addr}/chat/ws/{session}?ticket={feed_ticket}");
    assert_eq!(
        refused(open(url_request(&as_session, None)).await, "as session"),
        invalid
    );
    // A tampered ticket is refused.
    let (payload, signature) = ticket.split_once('.').unwrap();
    let tampered = format!("ws://{addr}/chat/ws/{session}?ticket={payload}x.{signature}");
    assert_eq!(
        refused(open(url_request(&tampered, None)).await, "tampered"),
        invalid
    );
    // Past its lifetime (1 s here), the genuine ticket is refused too, and a
    // renewed one is served.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_eq!(
        refused(open(url_request(&websocket_url, None)).await, "expired"),
        invalid
    );
    let (status, renewed) = server
        .post(&format!("/chat/sessions/{session}/ticket"), KEY, json!({}))
        .await;
    assert_eq!(status, 200, "{renewed}");
    let url = renewed["websocket_url"].as_str().unwrap();
    open(url_request(url, None)).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_ticket_lifetime_past_an_hour_is_refused_at_start() {
    for ttl in [0, 3_601] {
        let mut config = config();
        config.auth.ticket_ttl_secs = ttl;
        let error = tertulia::start(config, Default::default()).await.err();
        let message = error.map(|error| error.to_string()).unwrap_or_default();
        assert!(message.contains("auth.ticket_ttl_secs"), "{ttl}: {message}");
    }
}
