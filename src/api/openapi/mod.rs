//! The API contract: an OpenAPI 3.1 document built from the table of every
//! route (`operations.rs`) and the schemas of their bodies (`schemas.rs`),
//! served at `GET /openapi.json` (`GET /docs`, in `pages.rs`, renders it
//! with its own script: no CDN, it works offline).

pub mod operations;
mod schemas;

use std::sync::LazyLock;

use serde_json::{Map, Value, json};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::Response;

use operations::{Answer, Auth, Body, OPERATIONS, Operation};

/// The document, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

/// GET /openapi.json
pub fn routes() -> BoxedFilter<(warp::reply::Response,)> {
    warp::path!("openapi.json")
        .and(warp::get())
        .map(|| {
            Response::builder()
                .header("content-type", "application/json")
                .body(DOCUMENT.as_str().into())
                .expect("static headers")
        })
        .boxed()
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let item = paths
            .entry(operation.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item is an object");
        item.insert(operation.method.to_lowercase(), describe(operation));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tertulia",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Multi-tenant real-time chat runtime for AI agents. Every error is \
                `{\"error\": text, \"code\": word}` with the status shown. WebSocket protocols \
                are described in README.md and schemas/frames.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas::components(),
            "securitySchemes": security_schemes(),
        },
    })
}

fn describe(operation: &Operation) -> Value {
    let mut described = json!({
        "tags": [operation.tag],
        "summary": operation.summary,
        "operationId": operation_id(operation),
        "parameters": parameters(operation.path),
        "responses": responses(operation),
        "security": security(operation.auth),
    });
    if let Body::Json(schema, required) = operation.body {
        described["requestBody"] = json!({
            "required": required,
            "content": {"application/json": {"schema": reference(schema)}},
        });
    }
    described
}

/// `get_chat_sessions_session_id_history`.
fn operation_id(operation: &Operation) -> String {
    let words: Vec<&str> = operation
        .path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect();
    let path = if words.is_empty() {
        "root".to_owned()
    } else {
        words.join("_")
    };
    format!("{}_{path}", operation.method.to_lowercase())
}

/// One path parameter per `{name}`.
fn parameters(path: &str) -> Value {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": {"type": "string", "minLength": 1},
            })
        })
        .collect()
}

fn responses(operation: &Operation) -> Value {
    let mut responses = Map::new();
    for (status, answer) in operation.ok {
        let content = match answer {
            Answer::Json(schema) => json!({"application/json": {"schema": reference(schema)}}),
            Answer::Text(content_type) => json!({(*content_type): {"schema": {"type": "string"}}}),
            Answer::Empty => json!(null),
        };
        let mut response = json!({"description": reason(*status)});
        if !content.is_null() {
            response["content"] = content;
        }
        responses.insert(status.to_string(), response);
    }
    // A route answers 405 to another method and 404 to an unknown path
    // below it; every error carries the one error body.
    let mut errors: Vec<u16> = operation.errors.to_vec();
    errors.extend([404, 405]);
    errors.sort_unstable();
    errors.dedup();
    for status in errors {
        responses.insert(
            status.to_string(),
            json!({
                "description": reason(status),
                "content": {"application/json": {"schema": reference("Error")}},
            }),
        );
    }
    Value::Object(responses)
}

fn reason(status: u16) -> &'static str {
    warp::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("answer")
}

fn reference(schema: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{schema}")})
}

/// Each way of calling: a list of alternatives, each naming the schemes it
/// needs together (a client token goes with the tenant's API key).
fn security(auth: &[Auth]) -> Value {
    auth.iter()
        .map(|auth| match auth {
            Auth::Public => json!({}),
            Auth::ApiKey => json!({"apiKey": []}),
            Auth::ClientToken => json!({"apiKey": [], "clientToken": []}),
            Auth::WidgetKey => json!({"widgetKey": []}),
            Auth::StaffKey => json!({"staffKey": []}),
            Auth::Admin => json!({"adminToken": []}),
            Auth::Ticket => json!({"ticket": []}),
            Auth::MetricsToken => json!({"metricsToken": []}),
        })
        .collect()
}

fn security_schemes() -> Value {
    let header = |description: &str| json!({"type": "apiKey", "in": "header", "name": "X-API-Key", "description": description});
    let bearer =
        |description: &str| json!({"type": "http", "scheme": "bearer", "description": description});
    json!({
        "apiKey": header("A tenant's API key (`tk_…`): the whole tenant."),
        "widgetKey": header("A widget key (`wk_…`), from an origin in the tenant's allowed_origins."),
        "staffKey": header("A staff key (`sk_…`): one person of the tenant, for the console."),
        "clientToken": bearer("A client token (HS256 JWT, `sub` = the end user), with the tenant's API key."),
        "adminToken": bearer("The server's auth.admin_token."),
        "metricsToken": bearer("metrics.token, when the operator set one."),
        "ticket": {"type": "apiKey", "in": "query", "name": "ticket",
            "description": "A WebSocket ticket, from the websocket_url a session call returned."},
    })
}
