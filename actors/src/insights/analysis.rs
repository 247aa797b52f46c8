//! One analysis, start to stored: the conversation's newest messages as a
//! transcript, the tenant's model asked for an answer that fits the
//! insights schema, the answer validated, then the insights and their
//! `conversation.analyzed` event written in one transaction. Runs in a task
//! of the Analyst's; nothing here is an actor.

use std::sync::Arc;

use crate::agent::{AgentProvider, AnalysisRequest};
use crate::error::{Error, Result};
use crate::model::events::{self, ConversationFacts};
use crate::model::insight::{Insight, answer_schema, validate_answer};
use crate::model::{Role, SessionId, StoredMessage, TenantId, TenantSettings, now_timestamp};
use crate::store::{MessageQuery, Storage, Write};

/// The newest messages read for one analysis.
const MAX_MESSAGES: usize = 200;

/// What the model is told, before the transcript.
const INSTRUCTIONS: &str = "You analyse one conversation between a business's customer \
(`user`) and the business (`assistant`, or a named member of staff) for the business. \
Read the whole transcript and describe it as the JSON Schema asks: a short summary of what \
the customer wanted and what happened, the customer's language, the one intent that fits \
best, the customer's sentiment, whether they got what they came for, how likely they are \
to buy, a few short topics, and what a person should do next (null if nothing). \
Write the summary and follow_up in the customer's language. Never invent facts.";

/// Everything one analysis needs.
pub struct Job {
    pub storage: Storage,
    pub settings: Arc<TenantSettings>,
    pub provider: Arc<dyn AgentProvider>,
    pub tenant: TenantId,
    pub session: SessionId,
}

/// The transcript the model reads: whole messages, newest kept, within budget.
fn transcript(messages: &[StoredMessage], budget: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut used = 0;
    for message in messages.iter().rev() {
        let who = match (message.role, &message.author) {
            (Role::User, _) => "user".to_owned(),
            (Role::Assistant, Some(author)) => format!("assistant ({author})"),
            (Role::Assistant, None) => "assistant".to_owned(),
            (Role::System, _) => "system".to_owned(),
        };
        let line = format!("{who}: {}", message.content);
        used += line.len() + 1;
        if used > budget && !lines.is_empty() {
            break;
        }
        lines.push(line);
    }
    lines.reverse();
    lines.join("\n")
}

impl Job {
    /// Runs the analysis; when nothing was said since the last one, its
    /// insights are returned as they are and the model is not asked.
    pub async fn run(self) -> Result<Insight> {
        let model = self
            .settings
            .insight_model()
            .ok_or(Error::NoModel)?
            .to_owned();
        let record = self
            .storage
            .load_session(&self.tenant, self.session)
            .await?
            .ok_or_else(|| Error::SessionNotFound {
                tenant: self.tenant.clone(),
                session: self.session,
            })?;
        let messages = self
            .storage
            .load_messages(MessageQuery {
                tenant: self.tenant.clone(),
                session: self.session,
                after_seq: 0,
                limit: MAX_MESSAGES,
                newest: true,
            })
            .await?;
        let Some(through_seq) = messages.last().map(|message| message.seq) else {
            return Err(Error::NothingToAnalyze);
        };
        if let Some(known) = self
            .storage
            .load_insight(&self.tenant, self.session)
            .await?
            && known.through_seq >= through_seq
        {
            return Ok(known);
        }
        if messages
            .iter()
            .all(|message| message.content.trim().is_empty())
        {
            return Err(Error::NothingToAnalyze);
        }
        let intents = &self.settings.insights.intents;
        let request = AnalysisRequest {
            model: model.clone(),
            instructions: INSTRUCTIONS.into(),
            transcript: transcript(&messages, self.settings.openai.history_budget_chars),
            schema: answer_schema(intents),
        };
        let asked = self
            .provider
            .analyze(&self.settings, request)
            .ok_or(Error::NoModel)?;
        let reply = asked
            .await
            .map_err(|error| Error::AnalysisFailed(error.0))?;
        let answer = validate_answer(&reply.content, intents).map_err(Error::AnalysisFailed)?;
        let insight = Insight {
            tenant: self.tenant.clone(),
            conversation_id: self.session,
            answer,
            model: if reply.model.is_empty() {
                model
            } else {
                reply.model
            },
            prompt_tokens: reply.prompt_tokens,
            completion_tokens: reply.completion_tokens,
            through_seq,
            analyzed_at: now_timestamp(),
        };
        let event = events::conversation_analyzed(&ConversationFacts::of(&record), &insight);
        let write = Write::WithEvents(
            Box::new(Write::PutInsight(Box::new(insight.clone()))),
            vec![event],
        );
        self.storage.write_and_wait(write).await?;
        Ok(insight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transcript_keeps_the_newest_whole_messages_within_budget() {
        let tenant = TenantId("t".into());
        let session = SessionId::new();
        let message = |seq, role, text: &str| {
            StoredMessage::new(tenant.clone(), session, seq, role, text.into())
        };
        let messages = vec![
            message(1, Role::User, "an old question that is long enough to drop"),
            message(2, Role::Assistant, "an answer"),
            message(3, Role::User, "the newest question"),
        ];
        let text = transcript(&messages, 60);
        assert_eq!(text, "assistant: an answer\nuser: the newest question");
        // The newest message is always sent, however long.
        assert_eq!(transcript(&messages[2..], 3), "user: the newest question");
    }
}
