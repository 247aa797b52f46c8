//! The runtime's webhook calls, for the admin API: endpoints, test events,
//! deliveries and replays. Endpoint changes run inside the `Webhooks` actor
//! (as an [`EndpointChange`]), so they never race its own.

use std::time::Duration;

use serde::Deserialize;

use super::handle::Runtime;
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::model::TenantSettings;
use crate::model::{
    Delivery, DeliveryStatus, TenantId, WebhookEndpoint, WebhookFormat, now_timestamp,
};
use crate::net::egress::{EgressError, EgressPolicy};
use crate::tree::root::TenantDirectory;
use crate::webhooks::{
    EndpointChange, WebhooksMsg, endpoint_problem, from_config, later, new_secret,
};

/// The most deliveries one listing returns.
pub const MAX_DELIVERIES: usize = 500;

/// An endpoint's settings as the admin API takes them; on a change, fields
/// left out stay as they are. An empty `header_name` removes the header.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointInput {
    pub url: Option<String>,
    /// `whsec_` + base64; left out on creation, one is made.
    pub secret: Option<String>,
    pub events: Option<Vec<String>>,
    pub format: Option<WebhookFormat>,
    pub enabled: Option<bool>,
    pub header_name: Option<String>,
    pub header_value: Option<String>,
    pub description: Option<String>,
}

impl EndpointInput {
    fn apply(self, endpoint: &mut WebhookEndpoint) {
        if let Some(url) = self.url {
            endpoint.url = url;
        }
        if let Some(secret) = self.secret {
            endpoint.secret = secret;
        }
        if let Some(events) = self.events {
            endpoint.events = events;
        }
        if let Some(format) = self.format {
            endpoint.format = format;
        }
        if let Some(enabled) = self.enabled {
            endpoint.enabled = enabled;
            if enabled {
                endpoint.disabled_reason = None;
            }
        }
        match self.header_name {
            Some(name) if name.is_empty() => {
                endpoint.header_name = None;
                endpoint.header_value = None;
            }
            Some(name) => {
                endpoint.header_name = Some(name);
                endpoint.header_value = self.header_value.or(endpoint.header_value.take());
            }
            None => {
                if let Some(value) = self.header_value {
                    endpoint.header_value = Some(value);
                }
            }
        }
        if let Some(description) = self.description {
            endpoint.description = (!description.is_empty()).then_some(description);
        }
    }
}

/// Checks the config file's endpoints and agent URLs before anything starts,
/// so a mistake stops the server with a message naming it.
pub(super) fn check_configured(
    config: &RuntimeConfig,
    tenants: &TenantDirectory,
    policy: &EgressPolicy,
) -> Result<()> {
    for entry in tenants.iter() {
        agent_urls_allowed(entry.value(), policy)
            .map_err(|error| Error::Startup(format!("tenant `{}`: {error}", entry.key())))?;
    }
    let mut seen = std::collections::HashSet::new();
    for (index, entry) in config.webhooks.endpoints.iter().enumerate() {
        let name = format!("webhooks.endpoints[{index}] (`{}`)", entry.name);
        if !tenants.contains_key(&TenantId(entry.tenant.clone())) {
            return Err(Error::Startup(format!(
                "{name}: no tenant `{}`",
                entry.tenant
            )));
        }
        if !seen.insert((entry.tenant.clone(), entry.name.clone())) {
            return Err(Error::Startup(format!(
                "{name}: two endpoints of tenant `{}` have this name",
                entry.tenant
            )));
        }
        if entry.resolve_secret().is_empty() {
            return Err(Error::Startup(format!(
                "{name}: no secret (set `secret`, or `secret_env` to a variable that is set)"
            )));
        }
        let endpoint = from_config(entry, None, Duration::ZERO);
        if let Some(problem) = endpoint_problem(&endpoint, policy) {
            return Err(Error::Startup(format!("{name}: {problem}")));
        }
    }
    Ok(())
}

/// Refuses agent and tool URLs that point where requests may not go.
fn agent_urls_allowed(settings: &TenantSettings, policy: &EgressPolicy) -> Result<()> {
    let mut urls = vec![
        ("openai.base_url".to_owned(), &settings.openai.base_url),
        ("webhook_agent.url".to_owned(), &settings.webhook_agent.url),
    ];
    for (index, tool) in settings.tools.iter().enumerate() {
        urls.push((format!("tools[{index}].url"), &tool.url));
    }
    for (field, url) in urls {
        if let Err(error @ EgressError::Forbidden(_)) = policy.check_url(url) {
            return Err(Error::UrlNotAllowed(format!("`{field}`: {error}")));
        }
    }
    Ok(())
}

impl Runtime {
    /// Refuses tenant settings whose agent or tool URLs the SSRF guard forbids.
    pub(super) fn check_agent_urls(&self, settings: &TenantSettings) -> Result<()> {
        agent_urls_allowed(settings, &self.inner.policy)
    }

    /// The tenant's endpoints, oldest first.
    pub async fn list_webhooks(&self, tenant: &TenantId) -> Result<Vec<WebhookEndpoint>> {
        self.known_tenant(tenant)?;
        let tenant = tenant.clone();
        self.inner
            .webhooks
            .call(|reply| WebhooksMsg::List { tenant, reply })
            .await
    }

    pub async fn webhook(&self, tenant: &TenantId, endpoint_id: &str) -> Result<WebhookEndpoint> {
        self.known_tenant(tenant)?;
        let (tenant, endpoint_id) = (tenant.clone(), endpoint_id.to_owned());
        self.inner
            .webhooks
            .call(|reply| WebhooksMsg::Get {
                tenant,
                endpoint_id,
                reply,
            })
            .await?
    }

    /// Makes an endpoint (`url` required; a secret is made unless given).
    pub async fn create_webhook(
        &self,
        tenant: &TenantId,
        input: EndpointInput,
    ) -> Result<WebhookEndpoint> {
        self.known_tenant(tenant)?;
        if input.url.is_none() {
            return Err(Error::InvalidInput("`url` is required".into()));
        }
        let now = now_timestamp();
        let mut endpoint = WebhookEndpoint {
            endpoint_id: format!("ep_{}", uuid::Uuid::now_v7().simple()),
            tenant: tenant.clone(),
            url: String::new(),
            secret: new_secret(),
            previous_secret: None,
            previous_secret_expires_at: None,
            events: Vec::new(),
            format: WebhookFormat::Json,
            enabled: true,
            disabled_reason: None,
            header_name: None,
            header_value: None,
            description: None,
            source: "admin".into(),
            created_at: now.clone(),
            updated_at: now,
        };
        input.apply(&mut endpoint);
        self.change_webhook(
            tenant,
            &endpoint.endpoint_id.clone(),
            Box::new(move |current| match current {
                Some(_) => Err(Error::Conflict("an endpoint with this id exists".into())),
                None => Ok(endpoint),
            }),
        )
        .await
    }

    /// Changes the given fields of an endpoint. `enabled: true` also clears
    /// a receiver's `410 Gone`.
    pub async fn update_webhook(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        input: EndpointInput,
    ) -> Result<WebhookEndpoint> {
        let id = endpoint_id.to_owned();
        self.change_webhook(
            tenant,
            endpoint_id,
            Box::new(move |current| {
                let mut endpoint = current.ok_or(Error::WebhookNotFound(id))?;
                input.apply(&mut endpoint);
                endpoint.updated_at = now_timestamp();
                Ok(endpoint)
            }),
        )
        .await
    }

    /// Replaces the signing secret (with `secret`, or a new one). Requests
    /// carry the old secret's signature too for `webhooks.rotation_overlap_secs`.
    pub async fn rotate_webhook_secret(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        secret: Option<String>,
    ) -> Result<WebhookEndpoint> {
        let id = endpoint_id.to_owned();
        let overlap = Duration::from_secs(self.inner.config.webhooks.rotation_overlap_secs);
        self.change_webhook(
            tenant,
            endpoint_id,
            Box::new(move |current| {
                let mut endpoint = current.ok_or(Error::WebhookNotFound(id))?;
                let old =
                    std::mem::replace(&mut endpoint.secret, secret.unwrap_or_else(new_secret));
                endpoint.previous_secret = Some(old);
                endpoint.previous_secret_expires_at = Some(later(overlap));
                endpoint.updated_at = now_timestamp();
                Ok(endpoint)
            }),
        )
        .await
    }

    async fn change_webhook(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        change: EndpointChange,
    ) -> Result<WebhookEndpoint> {
        self.known_tenant(tenant)?;
        let policy = self.inner.policy.clone();
        // Validated inside the actor, after the change, on the whole endpoint.
        let change: EndpointChange = Box::new(move |current| {
            let endpoint = change(current)?;
            match endpoint_problem(&endpoint, &policy) {
                Some(problem) => Err(problem),
                None => Ok(endpoint),
            }
        });
        let (tenant, endpoint_id) = (tenant.clone(), endpoint_id.to_owned());
        self.inner
            .webhooks
            .call(|reply| WebhooksMsg::Change {
                tenant,
                endpoint_id,
                change,
                reply,
            })
            .await?
    }

    /// Removes an endpoint and its deliveries.
    pub async fn delete_webhook(&self, tenant: &TenantId, endpoint_id: &str) -> Result<()> {
        self.known_tenant(tenant)?;
        let (tenant, endpoint_id) = (tenant.clone(), endpoint_id.to_owned());
        self.inner
            .webhooks
            .call(|reply| WebhooksMsg::Delete {
                tenant,
                endpoint_id,
                reply,
            })
            .await?
    }

    /// Sends a `webhook.test` event to one endpoint, through the usual
    /// delivery (signed, retried, listed); answers with its delivery.
    pub async fn send_test_webhook(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
    ) -> Result<Delivery> {
        self.known_tenant(tenant)?;
        let (tenant, endpoint_id) = (tenant.clone(), endpoint_id.to_owned());
        self.inner
            .webhooks
            .call(|reply| WebhooksMsg::SendTest {
                tenant,
                endpoint_id,
                reply,
            })
            .await?
    }

    /// An endpoint's newest deliveries (in one status, if given).
    pub async fn webhook_deliveries(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        self.webhook(tenant, endpoint_id).await?;
        self.inner
            .storage
            .list_deliveries(tenant, endpoint_id, status, limit.clamp(1, MAX_DELIVERIES))
            .await
    }

    /// Sends one delivery again from its first attempt, or every dead one
    /// (`delivery_id: None`); answers with how many were replayed.
    pub async fn replay_webhook(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        delivery_id: Option<String>,
    ) -> Result<usize> {
        self.known_tenant(tenant)?;
        let (tenant, endpoint_id) = (tenant.clone(), endpoint_id.to_owned());
        self.inner
            .webhooks
            .call(|reply| WebhooksMsg::Replay {
                tenant,
                endpoint_id,
                delivery_id,
                reply,
            })
            .await?
    }
}
