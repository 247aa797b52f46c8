//! The API contract: `/openapi.json` names every route declared in `src/`
//! (the same discovery as the isolation test), every reference in it
//! resolves, every operation says who may call it and answers errors with
//! the one error body; `/docs` renders it in Chromium with nothing fetched
//! from another origin.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::browser::Browser;
use crate::support::server::*;

async fn document(server: &TestServer) -> Value {
    let (status, document) = server.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    document
}

/// "METHOD /path" with `{}` for each parameter, as the route discovery writes it.
fn documented(document: &Value) -> BTreeSet<String> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        let template: Vec<String> = path
            .split('/')
            .map(|segment| match segment.starts_with('{') {
                true => "{}".to_owned(),
                false => segment.to_owned(),
            })
            .collect();
        for method in item.as_object().unwrap().keys() {
            operations.insert(format!("{} {}", method.to_uppercase(), template.join("/")));
        }
    }
    operations
}

#[tokio::test]
async fn the_document_names_every_route_and_no_other() {
    let server = TestServer::start(config()).await;
    let document = document(&server).await;
    assert_eq!(document["openapi"], "3.1.0");
    let routes = crate::support::source::routes_in_source();
    let documented = documented(&document);
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes the document lacks (add them to src/api/openapi/operations.rs): {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented routes that do not exist: {extra:?}"
    );
}

#[tokio::test]
async fn every_operation_has_auth_answers_and_resolving_references() {
    let server = TestServer::start(config()).await;
    let document = document(&server).await;
    let schemas = document["components"]["schemas"].as_object().unwrap();
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    let mut ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let at = format!("{method} {path}");
            assert!(
                ids.insert(operation["operationId"].as_str().unwrap().to_owned()),
                "{at}: id twice"
            );
            let security = operation["security"].as_array().unwrap();
            assert!(!security.is_empty(), "{at}: who may call it?");
            for requirement in security {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(scheme), "{at}: no scheme {scheme}");
                }
            }
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses
                    .keys()
                    .any(|status| status.starts_with('1') || status.starts_with('2')),
                "{at}"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{at} {status}"
                    );
                }
            }
            let parameters = operation["parameters"].as_array().unwrap();
            assert_eq!(parameters.len(), path.matches('{').count(), "{at}");
        }
    }
}

#[tokio::test]
async fn the_docs_page_renders_the_document_offline() {
    let server = TestServer::start(config()).await;
    let browser = Browser::start().await;
    browser.goto(&server.url("/docs")).await;
    let shown = browser
        .until(
            "the operations are listed",
            "document.querySelectorAll('details').length",
        )
        .await;
    let operations: usize = documented(&document(&server).await).len();
    assert_eq!(shown.as_u64().unwrap() as usize, operations);
    let elsewhere = browser
        .js("return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin))")
        .await;
    assert_eq!(
        elsewhere,
        serde_json::json!([]),
        "fetched from another origin"
    );
    browser.close().await;
}
