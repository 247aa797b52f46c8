//! The integration tests: one binary (each test binary links SurrealDB), one
//! module per surface. Every test starts a real server on 127.0.0.1:0.

mod admin;
mod ag_ui;
mod ai_sdk;
mod analytics;
mod backup;
mod browser;
mod client_tokens;
mod console;
mod conversations;
mod double_texting;
mod durability;
mod erasure;
mod insights;
mod isolation;
mod layering;
mod layout;
mod live_context;
mod llm;
mod metrics;
mod n8n_chat;
mod openapi;
mod process;
mod rate_limits;
mod reliability;
mod retention;
mod schemas;
mod seed_frontend;
mod session_api;
mod supervision;
mod support;
mod webchat;
mod webhook_agent;
mod webhooks;
mod websocket;
mod widget;
