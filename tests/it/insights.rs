//! Insights against the fake OpenAI-compatible server: structured output
//! (`json_schema`, strict) and its plain-JSON fallback, answers that break
//! the schema, a model that times out, retries, the quiet sweep, the
//! `conversation.analyzed` event, and the offline echo agent's clear 409.

use serde_json::{Value, json};

use crate::support::fake_llm::{FakeLlm, body_is_analysis, openai_config};
use crate::support::receiver::{Receiver, assert_matches_schema};
use crate::support::server::*;

const PLUMBER_INTENTS: [&str; 5] = [
    "diagnosis",
    "estimate",
    "installation",
    "emergency",
    "other",
];

/// acme on the fake model, analysed on demand only, retrying after 100 ms.
fn insights_config(llm: &FakeLlm) -> tertulia::config::Config {
    let mut config = openai_config(llm);
    let acme = config.tenants.get_mut("acme").unwrap();
    acme.insights.intents = PLUMBER_INTENTS.map(String::from).to_vec();
    acme.insights.quiet_after_secs = 0;
    config.insights.retry_schedule_ms = vec![100];
    config
}

/// A conversation with one question, answered.
async fn asked(server: &TestServer, question: &str) -> String {
    let (id, _) = server.create_session().await;
    say_over_rest(server, &id, question).await;
    id
}

async fn say_over_rest(server: &TestServer, id: &str, text: &str) {
    let before = server.history(id).await.len();
    let body = json!({"role": "user", "content": text});
    let (status, posted) = server
        .post(&format!("/chat/{id}/messages"), KEY, body)
        .await;
    assert_eq!(status, 201, "{posted}");
    eventually("the answer", || async {
        server.history(id).await.len() == before + 2
    })
    .await;
}

fn analyses(llm: &FakeLlm) -> Vec<Value> {
    llm.requests()
        .into_iter()
        .filter(body_is_analysis)
        .collect()
}

async fn analyze(server: &TestServer, id: &str) -> (u16, Value) {
    server
        .post(&format!("/chat/{id}/analyze"), KEY, json!({}))
        .await
}

#[tokio::test]
async fn a_conversation_is_analysed_with_structured_output_once_per_change() {
    let llm = FakeLlm::start().await;
    let receiver = Receiver::start().await;
    let mut config = insights_config(&llm);
    config.auth.admin_token = "adm".into();
    let server = TestServer::start(config).await;
    let hook = json!({"url": receiver.url("/crm"), "events": ["conversation.analyzed"]});
    let created = server
        .http
        .post(server.url("/admin/tenants/acme/webhooks"))
        .bearer_auth("adm")
        .json(&hook)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = asked(&server, "Tengo una fuga en la cocina, ¿cuánto cuesta?").await;

    let (status, insight) = analyze(&server, &id).await;
    assert_eq!(status, 200, "{insight}");
    assert_eq!(insight["conversation_id"], id.as_str());
    assert_eq!(insight["intent"], "estimate");
    assert_eq!(insight["lead_quality"], "warm");
    assert_eq!(insight["language"], "es");
    assert_eq!(insight["sentiment"], -0.3);
    assert_eq!(insight["resolved"], false);
    assert_eq!(insight["topics"], json!(["fuga", "presupuesto"]));
    assert_eq!(insight["model"], "gpt-test-2026");
    assert_eq!(
        (
            insight["prompt_tokens"].clone(),
            insight["completion_tokens"].clone()
        ),
        (json!(120), json!(40))
    );
    assert_eq!(insight["through_seq"], 2);
    assert!(insight.get("tenant").is_none(), "{insight}");

    // What the model was asked: strict structured output, the tenant's intents, the transcript.
    let asked_for = &analyses(&llm)[0];
    assert_eq!(asked_for["response_format"]["type"], "json_schema");
    assert_eq!(asked_for["response_format"]["json_schema"]["strict"], true);
    let schema = &asked_for["response_format"]["json_schema"]["schema"];
    assert_eq!(
        schema["properties"]["intent"]["enum"],
        json!(PLUMBER_INTENTS)
    );
    let transcript = asked_for["messages"][1]["content"].as_str().unwrap();
    assert!(
        transcript.starts_with("user: Tengo una fuga"),
        "{transcript}"
    );
    assert!(transcript.contains("\nassistant: Hola"), "{transcript}");

    let (status, stored) = server.get(&format!("/chat/{id}/insights"), Some(KEY)).await;
    assert_eq!((status, &stored), (200, &insight));
    // Nothing new: the same insights, and the model is not asked again.
    let (_, again) = analyze(&server, &id).await;
    assert_eq!(again, insight);
    assert_eq!(analyses(&llm).len(), 1);
    // The event reaches the CRM's endpoint, as its schema says.
    let received = receiver
        .wait_for("conversation.analyzed", |r| !r.is_empty())
        .await;
    let payload = received[0].json();
    assert_matches_schema(&payload);
    assert_eq!(payload["data"]["intent"], "estimate");
    assert_eq!(payload["data"]["conversation_id"], id.as_str());

    // A new message: analysed again, through the newer seq.
    say_over_rest(&server, &id, "¿Y el lunes?").await;
    let (status, newer) = analyze(&server, &id).await;
    assert_eq!(
        (status, newer["through_seq"].clone()),
        (200, json!(4)),
        "{newer}"
    );
    assert_eq!(analyses(&llm).len(), 2);
    // The statistics count the insights: one per conversation, the latest.
    let (_, summary) = server.get("/analytics/summary", Some(KEY)).await;
    assert_eq!(summary["total"]["intents"], json!({"estimate": 1}));
    assert_eq!(summary["total"]["sentiment"]["negative"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_model_without_structured_output_is_asked_for_plain_json() {
    let llm = FakeLlm::start().await;
    let server = TestServer::start(insights_config(&llm)).await;
    let id = asked(&server, "analysis-no-structured: se me rompió la cisterna").await;
    let (status, insight) = analyze(&server, &id).await;
    assert_eq!(status, 200, "{insight}");
    assert_eq!(insight["intent"], "estimate");
    let asked = analyses(&llm);
    assert_eq!(asked.len(), 2, "structured first, then plain JSON");
    assert_eq!(asked[1]["response_format"]["type"], "json_object");
    let instructions = asked[1]["messages"][0]["content"].as_str().unwrap();
    assert!(
        instructions.contains("\"lead_quality\""),
        "the schema is in the instructions"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bad_or_late_answer_fails_clearly_stores_nothing_and_is_retried() {
    let llm = FakeLlm::start().await;
    let mut config = insights_config(&llm);
    config
        .tenants
        .get_mut("acme")
        .unwrap()
        .openai
        .first_token_timeout_ms = 500;
    let server = TestServer::start(config).await;
    for (question, why) in [
        ("analysis-invalid-json: hola", "JSON object"),
        ("analysis-bad-intent: hola", "`intent`"),
        ("analysis-timeout: hola", "in time"),
    ] {
        let id = asked(&server, question).await;
        let (status, body) = analyze(&server, &id).await;
        assert_eq!(
            (status, body["code"].clone()),
            (502, json!("analysis_failed")),
            "{body}"
        );
        assert!(
            body["error"].as_str().unwrap().contains(why),
            "{question}: {body}"
        );
        let (status, body) = server.get(&format!("/chat/{id}/insights"), Some(KEY)).await;
        assert_eq!(
            (status, body["code"].clone()),
            (404, json!("not_analyzed")),
            "{body}"
        );
        // The chat goes on.
        say_over_rest(&server, &id, "¿sigues ahí?").await;
    }
    // A model that fails once: the retry (after 100 ms) stores the insights.
    let id = asked(&server, "analysis-fail-once: hola").await;
    let (status, _) = analyze(&server, &id).await;
    assert_eq!(status, 502);
    eventually("the retried analysis", || async {
        server
            .get(&format!("/chat/{id}/insights"), Some(KEY))
            .await
            .0
            == 200
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_quiet_conversation_is_analysed_by_itself() {
    let llm = FakeLlm::start().await;
    let mut config = insights_config(&llm);
    config.insights.sweep_every_ms = 100;
    config
        .tenants
        .get_mut("acme")
        .unwrap()
        .insights
        .quiet_after_secs = 1;
    let server = TestServer::start(config).await;
    let id = asked(&server, "Quiero instalar un calentador").await;
    eventually("insights once the conversation is quiet", || async {
        server
            .get(&format!("/chat/{id}/insights"), Some(KEY))
            .await
            .0
            == 200
    })
    .await;
    assert_eq!(analyses(&llm).len(), 1, "analysed once");
    server.stop().await;
}

#[tokio::test]
async fn offline_insights_say_they_need_a_model_and_never_fake_one() {
    let server = TestServer::start(config()).await;
    let (id, url) = server.create_session().await;
    let mut ws = server.connect(&url).await;
    say(&mut ws, "hola").await;
    frames_until(&mut ws, "done").await;
    let (status, body) = analyze(&server, &id).await;
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("insights_need_a_model")),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("openai"), "{body}");
    let (status, body) = server.get(&format!("/chat/{id}/insights"), Some(KEY)).await;
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("insights_need_a_model"))
    );
    // Unknown, malformed and another tenant's conversations are not found.
    for (path, key) in [
        (format!("/chat/{}/insights", uuid::Uuid::now_v7()), KEY),
        ("/chat/not-an-id/insights".to_owned(), KEY),
        (format!("/chat/{id}/insights"), OTHER_KEY),
    ] {
        let (status, body) = server.get(&path, Some(key)).await;
        assert_eq!(
            (status, body["code"].clone()),
            (404, json!("session_not_found")),
            "{path}"
        );
    }
    let (status, body) = server.get(&format!("/chat/{id}/insights"), None).await;
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("missing_api_key"))
    );
    // Statistics work offline.
    let (status, summary) = server.get("/analytics/summary", Some(KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(summary["total"]["answers"]["complete"], 1, "{summary}");
    server.stop().await;
}

#[tokio::test]
async fn the_console_draws_the_insights_view_and_a_conversations_summary() {
    use crate::support::browser::{Browser, js_string};
    let llm = FakeLlm::start().await;
    let mut config = insights_config(&llm);
    config.auth.admin_token = "adm".into();
    let server = TestServer::start(config).await;
    let staff = make_key(&server, "adm", "acme", "staff").await;
    let id = asked(&server, "Tengo una fuga en la cocina").await;
    let other = asked(&server, "¿Instalan calentadores?").await;
    for conversation in [&id, &other] {
        assert_eq!(analyze(&server, conversation).await.0, 200);
    }

    let browser = Browser::start().await;
    browser.goto(&server.url("/console")).await;
    browser
        .js(&format!(
            "document.getElementById('key').value = {}; document.getElementById('signin').requestSubmit();",
            js_string(&staff)
        ))
        .await;
    browser
        .until(
            "signed in",
            "!document.getElementById('show-insights').hidden",
        )
        .await;
    browser
        .js("document.getElementById('show-insights').click()")
        .await;
    browser
        .until(
            "five charts",
            "document.querySelectorAll('#insights svg.chart').length === 5",
        )
        .await;
    // The intents chart counts both conversations as estimates; the bars are drawn.
    let intents = browser
        .js("return Array.from(document.querySelectorAll('#insights figure')).find(f => f.querySelector('figcaption').textContent === 'Intents').textContent")
        .await;
    assert!(intents.as_str().unwrap().contains("estimate2"), "{intents}");
    let bars = browser
        .js("return document.querySelectorAll('#insights rect[data-value]').length")
        .await;
    assert!(bars.as_u64().unwrap() > 30, "{bars}");
    let totals = browser
        .js("return document.querySelector('#insights .totals').textContent")
        .await;
    assert!(
        totals.as_str().unwrap().starts_with("2 conversations"),
        "{totals}"
    );
    browser.screenshot("console-insights").await;
    // The CSV export: a header and one line per day.
    browser
        .js("document.querySelector('#insights .export').click()")
        .await;
    let rows = browser
        .until(
            "the CSV",
            "return document.querySelector('#insights .export').dataset.rows",
        )
        .await;
    assert_eq!(
        rows, "32",
        "a header, and a line for each day from 30 days ago to today"
    );

    // A conversation shows its summary and intent beside the transcript.
    browser
        .js("document.getElementById('show-insights').click()")
        .await;
    let row = format!("document.querySelector('#list li[data-id=\"{id}\"]')");
    browser.until("the conversation listed", &row).await;
    browser.js(&format!("{row}.click()")).await;
    let summary = browser
        .until(
            "its summary",
            "return document.querySelector('#insight .summary')?.textContent",
        )
        .await;
    assert_eq!(
        summary,
        "El cliente tiene una fuga y quiere un presupuesto."
    );
    let panel = browser
        .js("return document.getElementById('insight').textContent")
        .await;
    assert!(
        panel.as_str().unwrap().contains("Intentestimate"),
        "{panel}"
    );
    browser.screenshot("console-conversation-insights").await;
    browser.close().await;
    server.stop().await;
}
