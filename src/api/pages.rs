//! The pages and scripts served by the binary itself (no build step): `/`
//! the demo chat, `/console` the agent console, `/widget.js` the embeddable
//! widget, and the scripts they share under `/assets/`. All are embedded
//! with `include_str!`.
//!
//! Every message is rendered by `assets/markdown.js`, which builds DOM nodes
//! and sets text only through text nodes, so message text can never become
//! HTML or script. The pages also carry a Content-Security-Policy that allows
//! scripts from this server only, so an injection would not run even if one
//! slipped through.
//!
//! The demo page needs an API key to create a conversation. If the `default`
//! tenant still uses the well-known development key from `config/default.toml`,
//! the page is pre-filled with it (it is public anyway); any other key is never
//! put in a page: the user pastes it.

use tertulia_actors::model::TenantId;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{Response, header};

use crate::app::AppState;

/// The development key shipped in `config/default.toml`.
pub const DEVELOPMENT_KEY: &str = "tk_dev_default_change_me";

/// The development tenant's staff key, for `/console` on a first run: let in
/// for that run only, and only while no tenant is configured.
pub const DEVELOPMENT_STAFF_KEY: &str = "sk_dev_default_change_me";

const INDEX: &str = include_str!("../static/index.html");
const CONSOLE: &str = include_str!("../static/console.html");
const MARKDOWN_JS: &str = include_str!("../static/markdown.js");
const CHAT_JS: &str = include_str!("../static/chat.js");
const DEMO_JS: &str = include_str!("../static/demo.js");
const CONSOLE_JS: &str = include_str!("../static/console.js");
const INSIGHTS_JS: &str = include_str!("../static/insights.js");
const DOCS: &str = include_str!("../static/docs.html");
const DOCS_JS: &str = include_str!("../static/docs.js");
/// One self-contained file for a landing page to include, assembled once at
/// compile time: the renderer, the shared transcript and socket, the widget.
const WIDGET_JS: &str = concat!(
    include_str!("../static/markdown.js"),
    "\n",
    include_str!("../static/chat.js"),
    "\n",
    include_str!("../static/widget.js"),
);

/// Scripts from this server only; sockets and fetches to it.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

pub fn routes(app: AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let index = warp::path::end()
        .and(warp::get())
        .map(move || page(index_html(&app)));
    let console = warp::path!("console")
        .and(warp::get())
        .map(|| page(CONSOLE.to_owned()));
    let widget = warp::path!("widget.js")
        .and(warp::get())
        .map(|| script(WIDGET_JS));
    let markdown = warp::path!("assets" / "markdown.js")
        .and(warp::get())
        .map(|| script(MARKDOWN_JS));
    let chat = warp::path!("assets" / "chat.js")
        .and(warp::get())
        .map(|| script(CHAT_JS));
    let demo = warp::path!("assets" / "demo.js")
        .and(warp::get())
        .map(|| script(DEMO_JS));
    let console_js = warp::path!("assets" / "console.js")
        .and(warp::get())
        .map(|| script(CONSOLE_JS));
    let insights_js = warp::path!("assets" / "insights.js")
        .and(warp::get())
        .map(|| script(INSIGHTS_JS));
    // GET /docs: the API document (/openapi.json), rendered by its own script.
    let docs = warp::path!("docs")
        .and(warp::get())
        .map(|| page(DOCS.to_owned()));
    let docs_js = warp::path!("assets" / "docs.js")
        .and(warp::get())
        .map(|| script(DOCS_JS));
    index
        .or(console)
        .unify()
        .or(widget)
        .unify()
        .or(markdown)
        .unify()
        .or(chat)
        .unify()
        .or(demo)
        .unify()
        .or(console_js)
        .unify()
        .or(insights_js)
        .unify()
        .or(docs)
        .unify()
        .or(docs_js)
        .unify()
        .boxed()
}

pub fn index_html(app: &AppState) -> String {
    let uses_dev_key = app
        .runtime
        .tenant_settings(&TenantId("default".into()))
        .is_some_and(|settings| settings.api_keys.iter().any(|key| key == DEVELOPMENT_KEY));
    INDEX.replace(
        "{{DEV_API_KEY}}",
        if uses_dev_key { DEVELOPMENT_KEY } else { "" },
    )
}

fn page(html: String) -> warp::reply::Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CONTENT_SECURITY_POLICY, PAGE_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(html.into())
        .expect("a page response is valid")
}

fn script(text: &'static str) -> warp::reply::Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/javascript; charset=utf-8")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        // A landing page on another origin loads the widget: allow it.
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(text.into())
        .expect("a script response is valid")
}
