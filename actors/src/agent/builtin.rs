//! The built-in providers: `echo` (offline, deterministic, the default so
//! `cargo run` streams with no key) and `external` (never answers by
//! itself: replies come in over REST, from an n8n workflow or a person).

use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use super::{AgentEvent, AgentProvider, AgentRequest, AgentStream};
use crate::model::AnswerMeta;

/// The `external` agent: never answers by itself. Replies come from outside
/// (`POST /chat/{id}/messages` as `assistant`), so a workflow that receives
/// `message.created` can answer, and the answer reaches every socket live.
pub struct ExternalAgent;

impl AgentProvider for ExternalAgent {
    fn answer(&self, _request: AgentRequest) -> AgentStream {
        futures_util::stream::empty().boxed()
    }

    fn answers(&self) -> bool {
        false
    }
}

/// The offline, deterministic default: answers `You said: <message>` word by
/// word, a configurable pause between words, so `cargo run` streams with no key.
pub struct EchoAgent {
    pub word_delay: Duration,
}

impl EchoAgent {
    /// The full reply for a message: what the stream adds up to.
    pub fn reply_to(content: &str) -> String {
        format!("You said: {}", content.trim())
    }
}

impl AgentProvider for EchoAgent {
    fn answer(&self, request: AgentRequest) -> AgentStream {
        let asked = request.question();
        let words: Vec<String> = EchoAgent::reply_to(asked)
            .split_inclusive(' ')
            .map(str::to_owned)
            .collect();
        let delay = self.word_delay;
        stream::iter(words.into_iter().enumerate())
            .then(move |(index, word)| async move {
                if index > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(AgentEvent::Text(word))
            })
            .chain(stream::once(async {
                Ok(AgentEvent::Meta(AnswerMeta {
                    agent: Some("echo".into()),
                    finish_reason: Some("stop".into()),
                    ..AnswerMeta::default()
                }))
            }))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Map;

    use super::*;
    use crate::agent::Turn;
    use crate::model::{MessageId, Role, SessionId, TenantId, TenantSettings};

    #[tokio::test]
    async fn echo_streams_its_reply_word_by_word() {
        let agent = EchoAgent {
            word_delay: Duration::ZERO,
        };
        let request = AgentRequest {
            tenant: TenantId("t".into()),
            session: SessionId::new(),
            history: vec![Turn {
                role: Role::User,
                content: "hola que tal".into(),
            }],
            context: Map::new(),
            settings: Arc::new(TenantSettings::default()),
            question_id: MessageId::new(),
        };
        let pieces: Vec<String> = agent
            .answer(request)
            .filter_map(|piece| async move {
                match piece.unwrap() {
                    AgentEvent::Text(text) => Some(text),
                    AgentEvent::Meta(_) | AgentEvent::Tool(_) => None,
                }
            })
            .collect()
            .await;
        assert_eq!(pieces, vec!["You ", "said: ", "hola ", "que ", "tal"]);
        assert_eq!(pieces.concat(), EchoAgent::reply_to("hola que tal"));
    }
}
