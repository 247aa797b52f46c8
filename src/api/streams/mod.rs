//! Durable Streams (the open protocol, `PROTOCOL.md` of
//! durable-streams/durable-streams) under a tenant:
//! `/ds/{tenant}/v1/stream/{path}`. `PUT` creates, `POST` appends or
//! closes, `GET` reads (catch-up, long-poll, SSE), `HEAD` tells the tail,
//! `DELETE` removes. The tenant's API key is the credential; a tenant with
//! `streams.anonymous` lets anyone in. Headers and status codes are the
//! protocol's; every answer carries `X-Content-Type-Options: nosniff` and a
//! `Cross-Origin-Resource-Policy`.
//!
//! ```text
//! mod.rs           the route, who may call, the headers every answer carries
//! write.rs         PUT, POST, DELETE
//! read.rs          GET (catch-up, long-poll, SSE) and HEAD
//! events.rs        the cursor and SSE events every live read shares
//! conversation.rs  a conversation as a read-only stream
//! ```

mod conversation;
mod events;
mod read;
mod write;

use std::collections::HashMap;

use bytes::Bytes;
use tertulia_actors::Runtime;
use tertulia_actors::model::TenantId;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::app::AppState;
use crate::auth::limits::Limiter;
use crate::http::ClientIp;
use crate::http::error::ApiError;

/// The largest append (or initial body) accepted, in bytes.
pub const MAX_APPEND_BYTES: u64 = 16 * 1024 * 1024;

pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let rest = warp::path::tail()
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<ClientIp>())
        .and(crate::http::optional_body(MAX_APPEND_BYTES))
        .and(app.filter())
        .boxed();
    // /ds/{tenant}/v1/stream/{path…}: PUT creates
    let put = warp::path!("ds" / String / "v1" / "stream" / ..)
        .and(warp::put())
        .and(rest.clone())
        .then(handle);
    // POST appends or closes
    let post = warp::path!("ds" / String / "v1" / "stream" / ..)
        .and(warp::post())
        .and(rest.clone())
        .then(handle);
    // GET reads: catch-up, long-poll, SSE
    let get = warp::path!("ds" / String / "v1" / "stream" / ..)
        .and(warp::get())
        .and(rest.clone())
        .then(handle);
    // HEAD: the tail and settings
    let head = warp::path!("ds" / String / "v1" / "stream" / ..)
        .and(warp::head())
        .and(rest.clone())
        .then(handle);
    // DELETE
    let delete = warp::path!("ds" / String / "v1" / "stream" / ..)
        .and(warp::delete())
        .and(rest.clone())
        .then(handle);
    // OPTIONS: CORS preflight
    let options = warp::path!("ds" / String / "v1" / "stream" / ..)
        .and(warp::options())
        .and(rest)
        .then(handle);
    put.or(post)
        .unify()
        .or(conversation::routes(app))
        .unify()
        .or(get)
        .unify()
        .or(head)
        .unify()
        .or(delete)
        .unify()
        .or(options)
        .unify()
        .boxed()
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    tenant: String,
    tail: warp::path::Tail,
    method: Method,
    headers: HeaderMap,
    query: HashMap<String, String>,
    ip: Option<ClientIp>,
    body: Bytes,
    app: AppState,
) -> warp::reply::Response {
    let host = headers
        .get("host")
        .and_then(|host| host.to_str().ok())
        .map(str::to_owned);
    let call = Call {
        base: app.http_base(host),
        path: percent_decoded(tail.as_str()),
        method,
        headers,
        query,
        body,
    };
    let reply = serve(app, tenant, ip, call).await;
    secured(reply.unwrap_or_else(warp::Reply::into_response))
}

/// One request to a stream.
pub struct Call {
    pub path: String,
    /// This server's base URL as the client reached it (for `Location`).
    pub base: String,
    pub method: Method,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
    pub body: Bytes,
}

impl Call {
    /// A header's value, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The API key and `Authorization` the call carries (an API key sent
    /// as a bearer counts as the key).
    pub fn credentials(&self, runtime: &Runtime) -> (Option<String>, Option<String>) {
        crate::auth::bearer_api_key(
            runtime,
            self.header("x-api-key").map(str::to_owned),
            self.header("authorization").map(str::to_owned),
        )
    }
}

async fn serve(
    app: AppState,
    tenant: String,
    ip: Option<ClientIp>,
    call: Call,
) -> Result<warp::reply::Response, ApiError> {
    if call.method == Method::OPTIONS {
        return Ok(preflight(&call, "GET, HEAD, PUT, POST, DELETE, OPTIONS"));
    }
    let tenant = access(&app.runtime, &app.limiter, &tenant, &call, ip)?;
    if !tertulia_actors::model::stream::valid_path(&call.path) {
        return Err(ApiError::BadRequest(
            "the stream path is empty or malformed".into(),
        ));
    }
    let runtime = &app.runtime;
    match call.method {
        Method::PUT => write::create(runtime, &tenant, &call).await,
        Method::POST => write::append(runtime, &tenant, &call).await,
        Method::DELETE => write::delete(runtime, &tenant, &call).await,
        Method::GET => read::get(runtime, &tenant, &call).await,
        Method::HEAD => read::head(runtime, &tenant, &call).await,
        _ => unreachable!("the routes take only these methods"),
    }
}

/// Who may use the streams of `tenant` (named in the URL): its API key, or
/// anyone where the tenant opened its namespace. Another tenant's key gets
/// what an unknown tenant gets, so tenants cannot be probed. Counted
/// against the key's and the address's rate limits.
fn access(
    runtime: &Runtime,
    limiter: &Limiter,
    tenant: &str,
    call: &Call,
    ip: Option<ClientIp>,
) -> Result<TenantId, ApiError> {
    let tenant = TenantId(tenant.to_owned());
    let settings = runtime.tenant_settings(&tenant);
    let (key, authorization) = call.credentials(runtime);
    let anonymous = settings
        .as_ref()
        .is_some_and(|settings| settings.streams.anonymous);
    if key.is_some() || !anonymous {
        let scope = crate::auth::resolve(runtime, key.as_deref(), authorization.as_deref())?;
        if scope.client.is_some() {
            return Err(ApiError::ClientTokenNotAllowed);
        }
        if scope.tenant != tenant {
            return Err(ApiError::from(tertulia_actors::Error::StreamNotFound(
                call.path.clone(),
            )));
        }
    }
    limiter.check(&tenant, key.as_deref(), ip.map(|ip| ip.0))?;
    Ok(tenant)
}

/// A CORS preflight for `methods`: any origin may call (the credential is
/// a header, never a cookie).
fn preflight(call: &Call, methods: &'static str) -> warp::reply::Response {
    let headers = call
        .header("access-control-request-headers")
        .unwrap_or("content-type");
    status(StatusCode::NO_CONTENT)
        .header("access-control-allow-origin", "*")
        .header("access-control-allow-methods", methods)
        .header("access-control-allow-headers", headers)
        .header("access-control-max-age", "600")
        .body(Default::default())
        .expect("a preflight is valid")
}

/// The headers every answer carries: no sniffing, readable cross-origin,
/// and the protocol's headers visible to a browser's script.
fn secured(mut response: warp::reply::Response) -> warp::reply::Response {
    let headers = response.headers_mut();
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    headers
        .entry("access-control-allow-origin")
        .or_insert(HeaderValue::from_static("*"));
    headers.insert(
        "access-control-expose-headers",
        HeaderValue::from_static(
            "stream-next-offset, stream-cursor, stream-up-to-date, stream-closed, stream-seq, \
             stream-ttl, stream-expires-at, producer-epoch, producer-seq, producer-expected-seq, \
             producer-received-seq, etag, location, content-type",
        ),
    );
    response
}

/// The headers that describe a stream: its type, tail, closure.
pub(super) fn described(
    builder: warp::http::response::Builder,
    record: &tertulia_actors::model::stream::StreamRecord,
) -> warp::http::response::Builder {
    let builder = builder
        .header("content-type", record.config.content_type.as_str())
        .header(
            "stream-next-offset",
            tertulia_actors::model::stream::offset_text(record.tail),
        );
    match record.closed {
        true => builder.header("stream-closed", "true"),
        false => builder,
    }
}

pub(super) fn status(code: StatusCode) -> warp::http::response::Builder {
    Response::builder().status(code)
}

/// The path as the client meant it (`%2F` and friends decoded); a path
/// that does not decode is kept as sent (and then refused as malformed
/// only if it breaks the rules).
fn percent_decoded(path: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", path.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| path.to_owned())
}
