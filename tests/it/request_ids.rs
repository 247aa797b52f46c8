//! The events a request causes carry its `X-Request-Id`: a message posted
//! over REST, and a message sent on a socket (the id of the request that
//! opened it); a request that sent none gets the id the server made and
//! echoed.

use serde_json::json;

use crate::support::server::*;
use crate::support::sockets::socket_request;

async fn event_request_ids(server: &TestServer) -> Vec<(String, Option<String>)> {
    server
        .acme_events(&["message.created"])
        .await
        .into_iter()
        .map(|event| {
            let content = event.data["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let id = event.data["request_id"].as_str().map(str::to_owned);
            (content, id)
        })
        .collect()
}

#[tokio::test]
async fn a_message_created_event_names_the_request_that_stored_it() {
    // Events are recorded for delivery only when an endpoint wants them.
    let receiver = crate::support::receiver::Receiver::start().await;
    let mut config = config();
    config.auth.admin_token = "adm_ids".into();
    let server = TestServer::start(config).await;
    let endpoint = json!({"url": receiver.url("/hook"), "events": ["message.created"]});
    let created = server
        .http
        .post(server.url("/admin/tenants/acme/webhooks"))
        .bearer_auth("adm_ids")
        .json(&endpoint)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (session, _) = server.create_session().await;

    let posted = server
        .http
        .post(server.url(&format!("/chat/{session}/messages")))
        .header("X-API-Key", KEY)
        .header("X-Request-Id", "crm-sync:4711")
        .json(&json!({"role": "user", "content": "por REST", "respond": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let unnamed = server
        .http
        .post(server.url(&format!("/chat/{session}/messages")))
        .header("X-API-Key", KEY)
        .json(&json!({"role": "user", "content": "sin id", "respond": false}))
        .send()
        .await
        .unwrap();
    let made = unnamed.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    let mut request = socket_request(&server, &session, KEY);
    request
        .headers_mut()
        .insert("x-request-id", "browser-tab-9".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    next_frame(&mut ws).await;
    say(&mut ws, "por el socket").await;
    frames_until(&mut ws, "done").await;

    eventually("the three messages' events", || async {
        let ids = event_request_ids(&server).await;
        ids.iter().any(|(content, _)| content == "por el socket")
    })
    .await;
    let ids = event_request_ids(&server).await;
    let id_of = |content: &str| {
        ids.iter()
            .find(|(stored, _)| stored == content)
            .and_then(|(_, id)| id.clone())
    };
    assert_eq!(id_of("por REST").as_deref(), Some("crm-sync:4711"));
    assert_eq!(id_of("sin id"), Some(made));
    assert_eq!(id_of("por el socket").as_deref(), Some("browser-tab-9"));
    // The answer is the agent's, caused by no request of its own.
    let answer = ids
        .iter()
        .find(|(content, _)| content.contains("por el socket") && content != "por el socket");
    if let Some((_, id)) = answer {
        assert_eq!(id, &None);
    }
}
