//! Analysis through the runtime: a tenant's statistics over a time range,
//! counted by the database (`store/analytics.rs`), and each conversation's
//! insights from the tenant's model (the Analyst, `insights/`).

use super::handle::Runtime;
use crate::error::{Error, Result};
use crate::model::analytics::{Summary, SummaryQuery};
use crate::model::insight::Insight;
use crate::model::{Scope, SessionId, TenantId};

impl Runtime {
    /// The tenant's statistics over `[from, to)` (RFC 3339 times or dates;
    /// by default the last 30 days, or 48 hours by hour), per `bucket`
    /// (`hour` or `day`) and in total.
    pub async fn analytics_summary(
        &self,
        tenant: &TenantId,
        from: Option<&str>,
        to: Option<&str>,
        bucket: Option<&str>,
    ) -> Result<Summary> {
        self.known_tenant(tenant)?;
        let query = SummaryQuery::new(tenant.clone(), from, to, bucket, chrono::Utc::now())
            .map_err(Error::InvalidInput)?;
        let rows = self.inner.storage.summary_rows(&query).await?;
        Ok(Summary::assemble(&query, &rows))
    }
}

impl Runtime {
    /// Analyses the conversation now (its insights as they are when nothing
    /// was said since) and waits for the result. A tenant with no model
    /// gets `NoModel`; the chat itself never waits for this.
    pub async fn analyze(&self, scope: &Scope, session: SessionId) -> Result<Insight> {
        self.session(scope, session).await?;
        let settings = self
            .tenant_settings(&scope.tenant)
            .ok_or_else(|| Error::TenantNotFound(scope.tenant.clone()))?;
        settings.insight_model().ok_or(Error::NoModel)?;
        self.inner
            .analyst
            .analyze((scope.tenant.clone(), session))
            .await
    }

    /// The conversation's latest insights.
    pub async fn insights(&self, scope: &Scope, session: SessionId) -> Result<Insight> {
        self.session(scope, session).await?;
        let stored = self
            .inner
            .storage
            .load_insight(&scope.tenant, session)
            .await?;
        match stored {
            Some(insight) => Ok(insight),
            None => {
                let settings = self.tenant_settings(&scope.tenant);
                match settings.as_deref().and_then(|s| s.insight_model()) {
                    Some(_) => Err(Error::NotAnalyzed),
                    None => Err(Error::NoModel),
                }
            }
        }
    }
}
