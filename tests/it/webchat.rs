//! The webchat channel (seed "Canal Webchat"): the synchronous message call
//! and its metadata, history, the stream, origin recording behind trusted
//! proxies, geolocation beside the reply, consent and lead capture, rate
//! limits, bad input, and snapshots of the bodies a frontend is written against.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tertulia_actors::model::TenantId;
use tertulia_actors::runtime::{AgentError, AgentProvider, AgentRequest, AgentStream, EchoAgent};
use tokio::sync::watch;

use crate::support::server::*;
use crate::support::sockets::*;

/// A visitor id as a widget would make it.
const VISITOR: &str = "visitor-7d1c2f0e-4b8a";

async fn post_as(
    server: &TestServer,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = server.http.post(server.url(path)).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        headers,
    )
}

/// POST /api/webchat/messages with acme's API key.
async fn chat(server: &TestServer, session_id: &str, content: &str) -> (u16, Value) {
    let body =
        json!({"session_id": session_id, "author": "Ana", "content": content, "locale": "es-MX"});
    let (status, body, _) =
        post_as(server, "/api/webchat/messages", body, &[("X-API-Key", KEY)]).await;
    (status, body)
}

async fn consent(server: &TestServer, session_id: &str, granted: bool) -> Value {
    let body =
        json!({"session_id": session_id, "granted": granted, "text_version": "privacy-2026-10"});
    let (status, body, _) =
        post_as(server, "/api/webchat/consent", body, &[("X-API-Key", KEY)]).await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn webchat_history(server: &TestServer, session_id: &str) -> Value {
    let (status, body) = server
        .get(&format!("/api/webchat/history/{session_id}"), Some(KEY))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn the_sync_call_returns_the_reply_with_ids_of_stored_messages() {
    let server = TestServer::start(config()).await;
    let (status, body) = chat(&server, VISITOR, "¿Tienen envíos a Monterrey?").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["reply"],
        EchoAgent::reply_to("¿Tienen envíos a Monterrey?")
    );
    let metadata = &body["metadata"];
    let conversation = metadata["conversation_id"].as_str().unwrap();

    // The ids are the stored messages, seen through the Conversation API.
    let (status, messages) = server
        .get(&format!("/chat/{conversation}/messages"), Some(KEY))
        .await;
    assert_eq!(status, 200);
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["id"], metadata["last_message_id"]);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["author"], "Ana");
    assert_eq!(messages[0]["direction"], "inbound");
    assert_eq!(messages[1]["id"], metadata["assistant_message_id"]);
    assert_eq!(messages[1]["content"], body["reply"]);
    assert_eq!(messages[1]["direction"], "outbound");
    assert_eq!(metadata["status"], "complete");
    assert_eq!(metadata["session_id"], VISITOR);
    // No model, so no provider response id.
    assert_eq!(metadata["assistant_response_id"], Value::Null);

    // The same session_id continues the same conversation.
    let (_, again) = chat(&server, VISITOR, "¿Y a Tijuana?").await;
    assert_eq!(again["metadata"]["conversation_id"], conversation);
    let history = webchat_history(&server, VISITOR).await;
    assert_eq!(history["count"], 4);
    assert_eq!(history["conversation_id"], conversation);
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents[0], "¿Tienen envíos a Monterrey?");
    assert_eq!(contents[3], EchoAgent::reply_to("¿Y a Tijuana?"));

    // It is a conversation like any other: listed, with its channel.
    let (_, listed) = server.get("/chat/conversations", Some(KEY)).await;
    assert_eq!(listed[0]["id"], conversation);
    assert_eq!(listed[0]["channel"], "webchat");
    server.stop().await;
}

#[tokio::test]
async fn first_messages_racing_with_one_session_id_share_one_conversation() {
    let server = TestServer::start(config()).await;
    let calls = (0..6).map(|n| {
        let server = &server;
        async move { chat(server, "racing-visitor-0001", &format!("hola {n}")).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    let conversations: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["metadata"]["conversation_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(conversations.len(), 1, "{conversations:?}");
    assert_eq!(
        webchat_history(&server, "racing-visitor-0001").await["count"],
        12
    );
    server.stop().await;
}

#[tokio::test]
async fn a_webchat_message_reaches_every_socket_and_both_streams_share_the_frames() {
    let server = TestServer::start(config()).await;
    // The page's own stream, and a back office watching on /chat/ws.
    let request = stream_request(
        &server,
        &format!("session_id={VISITOR}&locale=es-MX"),
        &[("x-api-key", KEY), ("user-agent", "StreamBrowser/1.0")],
    );
    let (mut page, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(next_frame(&mut page).await["type"], "system");
    let conversation = webchat_history(&server, VISITOR).await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let console = crate::support::sockets::socket_request(&server, &conversation, KEY);
    let (mut console, _) = tokio_tungstenite::connect_async(console).await.unwrap();
    assert_eq!(next_frame(&mut console).await["type"], "system");

    let (status, body) = chat(&server, VISITOR, "hola desde REST").await;
    assert_eq!(status, 200, "{body}");
    for socket in [&mut page, &mut console] {
        let (message, _) = frames_until(socket, "message").await;
        assert_eq!(message["message"]["content"], "hola desde REST");
        assert_eq!(message["message"]["author"], "Ana");
        let (done, chunks) = frames_until(socket, "done").await;
        assert_eq!(done["content"], body["reply"]);
        assert_eq!(chunk_text(&chunks), body["reply"].as_str().unwrap());
    }

    // A message sent on the stream is stamped with the socket's origin.
    send(
        &mut page,
        json!({"type": "message", "content": "y desde el socket", "author": "Ana G."}),
    )
    .await;
    frames_until(&mut page, "done").await;
    let history = webchat_history(&server, VISITOR).await;
    let from_socket = &history["messages"][2];
    assert_eq!(from_socket["content"], "y desde el socket");
    assert_eq!(from_socket["author"], "Ana G.");
    assert_eq!(from_socket["locale"], "es-MX");
    assert_eq!(from_socket["user_agent"], "StreamBrowser/1.0");
    assert_eq!(from_socket["ip"], "127.0.0.1");
    server.stop().await;
}

#[tokio::test]
async fn a_slow_reply_is_a_504_and_still_lands_in_the_history() {
    let mut config = config();
    config.agents.echo.word_delay_ms = 100;
    config.webchat.reply_timeout_ms = 50;
    let server = TestServer::start(config).await;
    let (status, body) = chat(&server, VISITOR, "una respuesta lenta por favor").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], "reply_timeout");
    let conversation = body["conversation_id"].as_str().unwrap().to_owned();
    let asked = body["last_message_id"].clone();
    eventually("the reply is stored", || async {
        let history = webchat_history(&server, VISITOR).await;
        history["count"] == 2 && history["messages"][1]["status"] == "complete"
    })
    .await;
    let history = webchat_history(&server, VISITOR).await;
    assert_eq!(history["conversation_id"], conversation.as_str());
    assert_eq!(history["messages"][0]["id"], asked);
    assert_eq!(
        history["messages"][1]["content"],
        EchoAgent::reply_to("una respuesta lenta por favor")
    );
    server.stop().await;
}

/// Fails every answer before it begins.
struct Failing;

impl AgentProvider for Failing {
    fn answer(&self, _request: AgentRequest) -> AgentStream {
        futures_util::stream::iter(vec![Err(AgentError("the model is down".into()))]).boxed()
    }
}

#[tokio::test]
async fn a_failed_reply_is_a_502_naming_the_stored_messages() {
    let mut config = config();
    config.tenants.get_mut("acme").unwrap().agent = "failing".into();
    let mut agents: HashMap<String, Arc<dyn AgentProvider>> = HashMap::new();
    agents.insert("failing".into(), Arc::new(Failing));
    let server = TestServer::start_with_agents(config, agents).await;
    let (status, body) = chat(&server, VISITOR, "hola").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "agent_failed");
    let history = webchat_history(&server, VISITOR).await;
    assert_eq!(history["messages"][0]["id"], body["last_message_id"]);
    assert_eq!(history["messages"][1]["id"], body["assistant_message_id"]);
    assert_eq!(history["messages"][1]["status"], "failed");
    assert_eq!(history["messages"][1]["content"], "");
    server.stop().await;
}

#[tokio::test]
async fn leads_are_captured_only_after_consent() {
    let server = TestServer::start(config()).await;
    let contact_of = |conversation: String| {
        let server = &server;
        async move {
            server
                .get(&format!("/chat/{conversation}/contact"), Some(KEY))
                .await
        }
    };

    // Without consent: personal data stays in the message, never in contacts.
    let (_, first) = chat(&server, VISITOR, "soy Ana, mi correo es ana@example.com").await;
    let conversation = first["metadata"]["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = contact_of(conversation.clone()).await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("contact_not_found"))
    );

    // Consent, recorded with who, when, where and which text.
    let recorded = consent(&server, VISITOR, true).await;
    assert_eq!(recorded["conversation_id"], conversation.as_str());
    assert_eq!(recorded["granted"], true);
    let (_, listed) = server.get("/chat/conversations", Some(KEY)).await;
    let stored = &listed[0]["consent"];
    assert_eq!(stored["granted"], true);
    assert_eq!(stored["text_version"], "privacy-2026-10");
    assert_eq!(stored["subject"], VISITOR);
    assert_eq!(stored["ip"], "127.0.0.1");
    assert_eq!(stored["recorded_at"], recorded["recorded_at"]);

    // A name alone is a contact, not yet a lead.
    chat(&server, VISITOR, "Me llamo ana lópez").await;
    let (status, contact) = contact_of(conversation.clone()).await;
    assert_eq!(status, 200, "{contact}");
    assert_eq!(contact["name"], "Ana López");
    assert_eq!(contact["origin"], "webchat");
    assert!(contact.get("lead_captured_at").is_none(), "{contact}");
    let events = server.acme_events(&["lead.captured"]).await;
    assert!(events.is_empty(), "{events:?}");

    // An email and a phone (Mexican, from the locale) make it a lead, once.
    chat(
        &server,
        VISITOR,
        "escríbeme a ANA.LOPEZ@Example.MX o al 55 1234 5678",
    )
    .await;
    chat(&server, VISITOR, "o mejor al +52 55 8765 4321").await;
    let (_, contact) = contact_of(conversation.clone()).await;
    assert_eq!(contact["email"], "ANA.LOPEZ@example.mx");
    assert_eq!(contact["phone"], "+525587654321", "the newest number wins");
    assert_eq!(
        contact["name"], "Ana López",
        "the author does not replace a stated name"
    );
    assert!(contact["lead_captured_at"].is_string());
    let events = server.acme_events(&["lead.captured"]).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, "lead.captured");
    assert_eq!(events[0].conversation_id.unwrap().to_string(), conversation);
    assert_eq!(events[0].data["email"], "ANA.LOPEZ@example.mx");
    assert_eq!(events[0].data["phone"], "+525512345678");
    assert_eq!(events[0].data["external_id"], VISITOR);

    // Consent withdrawn: nothing more is copied.
    consent(&server, VISITOR, false).await;
    chat(&server, VISITOR, "nuevo correo: otra@example.com").await;
    let (_, contact) = contact_of(conversation).await;
    assert_eq!(contact["email"], "ANA.LOPEZ@example.mx");
    server.stop().await;
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    // Untrusted: the visitor's own X-Forwarded-For is ignored, for the record and the limit.
    let mut untrusted = config();
    untrusted
        .tenants
        .get_mut("acme")
        .unwrap()
        .rate_limits
        .webchat_ip_per_minute = 2;
    let server = TestServer::start(untrusted.clone()).await;
    for (n, forged) in ["203.0.113.1", "203.0.113.2"].iter().enumerate() {
        let body =
            json!({"session_id": format!("forger-session-000{n}"), "author": "x", "content": "hi"});
        let headers = [("X-API-Key", KEY), ("X-Forwarded-For", *forged)];
        let (status, _, _) = post_as(&server, "/api/webchat/messages", body, &headers).await;
        assert_eq!(status, 200);
    }
    let history = webchat_history(&server, "forger-session-0000").await;
    assert_eq!(history["messages"][0]["ip"], "127.0.0.1");
    let body = json!({"session_id": "forger-session-0009", "author": "x", "content": "hi"});
    let headers = [("X-API-Key", KEY), ("X-Forwarded-For", "203.0.113.3")];
    let (status, refused, _) = post_as(&server, "/api/webchat/messages", body, &headers).await;
    assert_eq!(status, 429, "one address, whatever it claims: {refused}");
    server.stop().await;

    // Trusted (the proxy is on loopback): the forwarded address is the client's.
    let mut trusted = untrusted;
    trusted.server.trusted_proxies = vec!["127.0.0.0/8".into()];
    let server = TestServer::start(trusted).await;
    for (n, client) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .iter()
        .enumerate()
    {
        let body = json!({"session_id": format!("proxied-session-000{n}"), "author": "x", "content": "hi"});
        let forwarded = format!("{client}, 127.0.0.1");
        let headers = [("X-API-Key", KEY), ("X-Forwarded-For", forwarded.as_str())];
        let (status, body, _) = post_as(&server, "/api/webchat/messages", body, &headers).await;
        assert_eq!(status, 200, "each client has its own bucket: {body}");
    }
    let history = webchat_history(&server, "proxied-session-0002").await;
    assert_eq!(history["messages"][0]["ip"], "203.0.113.3");
    server.stop().await;
}

/// A geolocation provider on loopback that answers only when released.
struct GeoProvider {
    url: String,
    calls: Arc<AtomicUsize>,
    authorization: Arc<std::sync::Mutex<Option<String>>>,
    release: watch::Sender<bool>,
}

async fn geo_provider() -> GeoProvider {
    use warp::Filter;
    let calls = Arc::new(AtomicUsize::new(0));
    let authorization = Arc::new(std::sync::Mutex::new(None));
    let (release, released) = watch::channel(false);
    let route = warp::path!("geo" / String)
        .and(warp::header::optional::<String>("authorization"))
        .then({
            let calls = calls.clone();
            let authorization = authorization.clone();
            move |ip: String, auth: Option<String>| {
                calls.fetch_add(1, Ordering::SeqCst);
                *authorization.lock().unwrap() = auth;
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|released| *released).await;
                    warp::reply::json(&json!({"ip": ip, "country": "MX", "city": "Monterrey"}))
                }
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    GeoProvider {
        url: format!("http://{addr}/geo/{{ip}}"),
        calls,
        authorization,
        release,
    }
}

#[tokio::test]
async fn geolocation_never_holds_up_the_reply_and_is_added_when_it_comes() {
    let provider = geo_provider().await;
    let mut config = config();
    config.server.trusted_proxies = vec!["127.0.0.1".into()];
    config.webchat.geolocation.url = provider.url.clone();
    config.webchat.geolocation.token = "geo-token".into();
    // Far longer than the test: only the provider's answer ends the lookup.
    config.webchat.geolocation.timeout_ms = 60_000;
    let server = TestServer::start(config).await;
    let send = |content: &'static str| {
        let server = &server;
        async move {
            let body = json!({"session_id": VISITOR, "author": "Ana", "content": content});
            let headers = [("X-API-Key", KEY), ("X-Forwarded-For", "203.0.113.7")];
            post_as(server, "/api/webchat/messages", body, &headers).await
        }
    };

    // The provider is holding the lookup; the reply comes regardless.
    let (status, body, _) = send("hola").await;
    assert_eq!(status, 200, "{body}");
    eventually("the provider is asked", || async {
        provider.calls.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        provider.authorization.lock().unwrap().as_deref(),
        Some("Bearer geo-token")
    );
    assert_eq!(
        webchat_history(&server, VISITOR).await["messages"][0]["geo"],
        Value::Null
    );

    // When it answers, the stored message gets the location.
    provider.release.send(true).unwrap();
    eventually("the location is stored with the message", || async {
        webchat_history(&server, VISITOR).await["messages"][0]["geo"]["city"] == "Monterrey"
    })
    .await;

    // The next message from that address uses the cache: no second lookup.
    send("otra vez").await;
    let history = webchat_history(&server, VISITOR).await;
    assert_eq!(history["messages"][2]["geo"]["country"], "MX");
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_geolocation_provider_that_is_down_changes_nothing() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/geo/{{ip}}", closed.local_addr().unwrap());
    drop(closed);
    let mut config = config();
    config.server.trusted_proxies = vec!["127.0.0.1".into()];
    config.webchat.geolocation.url = url;
    let server = TestServer::start(config).await;
    let body = json!({"session_id": VISITOR, "author": "Ana", "content": "hola"});
    let headers = [("X-API-Key", KEY), ("X-Forwarded-For", "203.0.113.9")];
    let (status, body, _) = post_as(&server, "/api/webchat/messages", body, &headers).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], EchoAgent::reply_to("hola"));
    let history = webchat_history(&server, VISITOR).await;
    assert_eq!(history["messages"][0]["ip"], "203.0.113.9");
    assert_eq!(history["messages"][0]["geo"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn messages_are_limited_per_session_id_and_per_address() {
    let mut config = config();
    let limits = &mut config.tenants.get_mut("acme").unwrap().rate_limits;
    limits.webchat_session_per_minute = 2;
    limits.webchat_ip_per_minute = 3;
    let server = TestServer::start(config).await;
    assert_eq!(chat(&server, "limited-session-0001", "1").await.0, 200);
    assert_eq!(chat(&server, "limited-session-0001", "2").await.0, 200);
    let body = json!({"session_id": "limited-session-0001", "author": "Ana", "content": "3"});
    let (status, refused, headers) = post_as(
        &server,
        "/api/webchat/messages",
        body,
        &[("X-API-Key", KEY)],
    )
    .await;
    assert_eq!(
        (status, refused["code"].clone()),
        (429, json!("rate_limited"))
    );
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Another session from the same address: its third message overall passes, the fourth does not.
    assert_eq!(chat(&server, "limited-session-0002", "3").await.0, 200);
    assert_eq!(chat(&server, "limited-session-0002", "4").await.0, 429);
    // Nothing refused was stored.
    assert_eq!(
        webchat_history(&server, "limited-session-0001").await["count"],
        4
    );
    assert_eq!(
        webchat_history(&server, "limited-session-0002").await["count"],
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_webchat_input_is_refused_with_the_field_named_and_stores_nothing() {
    let mut config = config();
    config.limits.max_content_bytes = 100;
    config.server.max_body_bytes = 1024;
    let server = TestServer::start(config).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"author": "Ana", "content": "hi"}), "`session_id`"),
        (
            json!({"session_id": "", "author": "Ana", "content": "hi"}),
            "`session_id`",
        ),
        (
            json!({"session_id": "has spaces in it", "author": "Ana", "content": "hi"}),
            "`session_id`",
        ),
        (
            json!({"session_id": "x".repeat(129), "author": "Ana", "content": "hi"}),
            "`session_id`",
        ),
        (json!({"session_id": VISITOR, "content": "hi"}), "`author`"),
        (
            json!({"session_id": VISITOR, "author": "  ", "content": "hi"}),
            "`author`",
        ),
        (
            json!({"session_id": VISITOR, "author": "a".repeat(101), "content": "hi"}),
            "`author`",
        ),
        (json!({"session_id": VISITOR, "author": "Ana"}), "`content`"),
        (
            json!({"session_id": VISITOR, "author": "Ana", "content": " "}),
            "`content`",
        ),
        (
            json!({"session_id": VISITOR, "author": "Ana", "content": "x".repeat(101)}),
            "`content`",
        ),
        (
            json!({"session_id": VISITOR, "author": "Ana", "content": 5}),
            "`content`",
        ),
        (
            json!({"session_id": VISITOR, "author": "Ana", "content": "hi", "locale": "not a locale"}),
            "`locale`",
        ),
        (
            json!({"session_id": VISITOR, "author": "Ana", "content": "hi", "role": "assistant"}),
            "`role`",
        ),
        (json!([1, 2]), "JSON object"),
    ];
    let consent_cases = [
        (
            json!({"session_id": VISITOR, "text_version": "v1"}),
            "`granted`",
        ),
        (
            json!({"session_id": VISITOR, "granted": "yes", "text_version": "v1"}),
            "`granted`",
        ),
        (
            json!({"session_id": VISITOR, "granted": true}),
            "`text_version`",
        ),
        (
            json!({"session_id": VISITOR, "granted": true, "text_version": "v".repeat(65)}),
            "`text_version`",
        ),
    ];
    let cases = cases
        .into_iter()
        .map(|(body, field)| ("/api/webchat/messages", body, field))
        .chain(consent_cases.map(|(body, field)| ("/api/webchat/consent", body, field)));
    for (path, body, field) in cases {
        let (status, answer, _) = post_as(&server, path, body.clone(), &[("X-API-Key", KEY)]).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["code"], "bad_request");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{path} {body}: {answer}"
        );
    }
    let raw = server
        .http
        .post(server.url("/api/webchat/messages"))
        .header("X-API-Key", KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let oversized = server
        .http
        .post(server.url("/api/webchat/messages"))
        .header("X-API-Key", KEY)
        .body(vec![b' '; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413);
    // Unauthorised: no key, an unknown key.
    let body = json!({"session_id": VISITOR, "author": "Ana", "content": "hi"});
    let (status, answer, _) = post_as(&server, "/api/webchat/messages", body.clone(), &[]).await;
    assert_eq!(
        (status, answer["code"].clone()),
        (401, json!("missing_api_key"))
    );
    let (status, answer, _) = post_as(
        &server,
        "/api/webchat/messages",
        body,
        &[("X-API-Key", "tk_nope")],
    )
    .await;
    assert_eq!(
        (status, answer["code"].clone()),
        (401, json!("invalid_api_key"))
    );
    let (status, answer) = server
        .get("/api/webchat/history/never-seen-visitor", Some(KEY))
        .await;
    assert_eq!(
        (status, answer["code"].clone()),
        (404, json!("session_not_found"))
    );

    // Nothing was opened by any of it.
    let (_, listed) = server.get("/chat/conversations", Some(KEY)).await;
    assert_eq!(listed, json!([]));
    server.stop().await;
}

#[tokio::test]
async fn a_widget_key_works_from_allowed_origins_only_and_needs_a_long_session_id() {
    let mut config = config();
    config.auth.admin_token = "adm_webchat".into();
    config.tenants.get_mut("acme").unwrap().allowed_origins = vec!["https://shop.example".into()];
    let server = TestServer::start(config).await;
    let widget = make_key(&server, "adm_webchat", "acme", "widget").await;
    let body = json!({"session_id": VISITOR, "author": "Ana", "content": "hola"});

    let allowed = [
        ("X-API-Key", widget.as_str()),
        ("Origin", "https://shop.example"),
    ];
    let (status, answer, headers) =
        post_as(&server, "/api/webchat/messages", body.clone(), &allowed).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    // The widget sees the words, not the visitor's address or browser.
    let history = server
        .http
        .get(server.url(&format!("/api/webchat/history/{VISITOR}")))
        .header("X-API-Key", &widget)
        .header("Origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        history.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let history: Value = history.json().await.unwrap();
    assert_eq!(history["count"], 2);
    assert!(history["messages"][0].get("ip").is_none(), "{history}");

    for origin in [Some("https://evil.example"), None] {
        let mut headers = vec![("X-API-Key", widget.as_str())];
        headers.extend(origin.map(|origin| ("Origin", origin)));
        let (status, answer, _) =
            post_as(&server, "/api/webchat/messages", body.clone(), &headers).await;
        assert_eq!(
            (status, answer["code"].clone()),
            (403, json!("origin_not_allowed"))
        );
    }
    let short = json!({"session_id": "abc123", "author": "Ana", "content": "hola"});
    let (status, answer, _) = post_as(&server, "/api/webchat/messages", short, &allowed).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("at least 16"),
        "{answer}"
    );
    // A widget key is still refused on the Conversation API.
    let (status, answer, _) = post_as(&server, "/chat/conversation", json!({}), &allowed).await;
    assert_eq!(
        (status, answer["code"].clone()),
        (403, json!("widget_key_not_allowed"))
    );

    // The browser's preflight for each webchat call.
    for (path, method) in [
        ("/api/webchat/messages", "POST"),
        ("/api/webchat/consent", "POST"),
        ("/api/webchat/history/some-visitor-id-000", "GET"),
    ] {
        let preflight = server
            .http
            .request(reqwest::Method::OPTIONS, server.url(path))
            .header("Origin", "https://shop.example")
            .header("Access-Control-Request-Method", method)
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), 204, "{path}");
        assert_eq!(preflight.headers()["access-control-allow-methods"], method);
    }

    // The stream: the widget key in the query (a page cannot set headers), from an allowed origin.
    let stream = |key: &str, origin: &str| {
        let query = format!("session_id={VISITOR}&key={key}");
        tokio_tungstenite::connect_async(stream_request(&server, &query, &[("origin", origin)]))
    };
    let (mut ws, _) = stream(&widget, "https://shop.example").await.unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "system");
    let refused = stream(&widget, "https://evil.example").await.unwrap_err();
    crate::support::sockets::assert_http_status(refused, 403);
    // An API key in a URL would be logged everywhere: refused.
    let refused = stream(KEY, "https://shop.example").await.unwrap_err();
    crate::support::sockets::assert_http_status(refused, 400);
    server.stop().await;
}

#[tokio::test]
async fn webchat_bodies_match_their_snapshots() {
    let server = TestServer::start(config()).await;
    let recorded = consent(&server, "snapshot-visitor-0001", true).await;
    insta::assert_json_snapshot!("consent", recorded, {
        ".conversation_id" => "[id]",
        ".recorded_at" => "[time]",
    });
    let (_, reply) = chat(&server, "snapshot-visitor-0001", "Hola, me llamo Ana").await;
    insta::assert_json_snapshot!("reply", reply, {
        ".metadata.conversation_id" => "[id]",
        ".metadata.last_message_id" => "[id]",
        ".metadata.assistant_message_id" => "[id]",
    });
    let history = webchat_history(&server, "snapshot-visitor-0001").await;
    insta::assert_json_snapshot!("history", history, {
        ".conversation_id" => "[id]",
        ".messages[].id" => "[id]",
        ".messages[].conversation_id" => "[id]",
        ".messages[].created_at" => "[time]",
    });

    let mut slow = config();
    slow.agents.echo.word_delay_ms = 200;
    slow.webchat.reply_timeout_ms = 20;
    server.stop().await;
    let server = TestServer::start(slow).await;
    let (status, timeout) = chat(&server, "snapshot-visitor-0002", "despacio").await;
    assert_eq!(status, 504);
    insta::assert_json_snapshot!("timeout", timeout, {
        ".conversation_id" => "[id]",
        ".last_message_id" => "[id]",
    });
    server.stop().await;
}

#[tokio::test]
async fn a_conversation_that_crashes_mid_reply_says_so_and_still_answers() {
    let mut config = config();
    config.agents.echo.word_delay_ms = 50;
    let server = TestServer::start(config).await;
    let asking = tokio::spawn({
        let http = server.http.clone();
        let url = server.url("/api/webchat/messages");
        async move {
            let response = http
                .post(url)
                .header("X-API-Key", KEY)
                .json(&json!({"session_id": VISITOR, "author": "Ana", "content": "una pregunta larga de verdad"}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    // Once the question is stored and the answer has begun, the conversation crashes.
    let conversation = loop {
        let (status, history) = server
            .get(&format!("/api/webchat/history/{VISITOR}"), Some(KEY))
            .await;
        if status == 200 && history["count"] == 1 {
            break history["conversation_id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    server
        .server
        .runtime
        .inject_session_panic(&TenantId("acme".into()), conversation.parse().unwrap())
        .await
        .unwrap();
    let (status, body) = asking.await.unwrap();
    assert_eq!(
        (status, body["code"].clone()),
        (503, json!("reply_pending")),
        "{body}"
    );
    assert_eq!(body["conversation_id"], conversation.as_str());
    // The restarted conversation answers the stored question.
    eventually("the question is answered after the restart", || async {
        let history = webchat_history(&server, VISITOR).await;
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|message| {
                message["role"] == "assistant"
                    && message["content"] == EchoAgent::reply_to("una pregunta larga de verdad")
            })
    })
    .await;
    server.stop().await;
}
