//! Answering: starting the session's `Agent`, beginning the next queued
//! question (or a question still being written, its output held until it is
//! durable), fanning the agent's reports out as frames, storing the answer
//! with the status its end calls for, and keeping a partial answer when the
//! session terminates.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::SessionMsg;
use super::log::PendingWrite;
use super::state::SessionState;
use crate::agent::actor::{Agent, AgentArgs, AgentMsg, AgentOutcome, AgentReport};
use crate::agent::{AgentError, AgentRequest};
use crate::conversation::outbound::CloseReason;
use crate::model::protocol::{Frame, ServerFrame};
use crate::model::{
    DoubleTexting, Handoff, MessageId, MessageStatus, REQUEST_HUMAN, Role, StoredMessage,
    ToolCallRecord, events, now_timestamp,
};

impl SessionState {
    pub async fn start_agent(
        &mut self,
        myself: &ActorRef<SessionMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let args = AgentArgs {
            session: myself.get_derived(),
        };
        let (agent, _) = Actor::spawn_linked(None, Agent, args, myself.get_cell()).await?;
        self.agent = Some(agent);
        self.agent_down = false;
        Ok(())
    }

    /// The agent's backoff is over: it starts again, and answers what waits.
    pub async fn restart_agent(
        &mut self,
        myself: &ActorRef<SessionMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if !self.terminating && self.agent.is_none() {
            self.start_agent(myself).await?;
            self.maybe_start_generation();
        }
        Ok(())
    }

    /// Starts the Agent if an answer is about to be needed and it is not
    /// running (nor waiting out a crash's backoff). A conversation that is
    /// only watched never starts one: an idle socket costs one actor fewer.
    pub async fn ensure_agent(&mut self, myself: &ActorRef<SessionMsg>) {
        if self.agent.is_some() || self.agent_down || self.terminating {
            return;
        }
        if let Err(error) = self.start_agent(myself).await {
            tracing::error!(session = %self.id(), %error, "the agent could not start");
        }
    }

    /// Starts answering the next queued user message, if nothing is in
    /// progress (and no merge window runs). When double texting merges or
    /// interrupts, every queued message is answered as one turn.
    pub fn maybe_start_generation(&mut self) {
        if !self.may_generate() || self.answering.is_merging() {
            return;
        }
        let begun = match self.double_texting() {
            DoubleTexting::Merge | DoubleTexting::Interrupt => self.answering.begin_merged(),
            DoubleTexting::Queue | DoubleTexting::Reject => self.answering.begin_next(),
        };
        let Some((question, message_id)) = begun else {
            return;
        };
        self.generate(&question, message_id);
    }

    /// Starts answering a user message that is still being written, so the
    /// model's own latency overlaps the write; its output is held until the
    /// message is durable (`release_held`). Only when nothing else waits.
    pub fn start_held_generation(&mut self, question: &StoredMessage) {
        // Under merge the answer waits for the window, so it is never begun early.
        let merges = self.double_texting() == DoubleTexting::Merge;
        if merges || !self.may_generate() || !self.wants_answer(question) {
            return;
        }
        if let Some(message_id) = self.answering.begin_held(question) {
            self.generate(question, message_id);
        }
    }

    fn may_generate(&self) -> bool {
        !self.terminating && !self.attendance.is_human() && self.agent.is_some()
    }

    fn generate(&mut self, question: &StoredMessage, message_id: MessageId) {
        let Some(agent) = self.agent.clone() else {
            return;
        };
        let request = AgentRequest {
            tenant: self.facts.tenant.clone(),
            session: self.id(),
            history: self.log.history_until(question, self.config.history_turns),
            context: self.facts.context.clone(),
            settings: self.settings.clone(),
            question_id: question.id,
        };
        let generate = AgentMsg::Generate {
            message_id,
            request,
            provider: self.provider.clone(),
        };
        if agent.cast(generate).is_err() {
            // The agent just died; its supervision event will fail this generation.
            tracing::warn!(session = %self.id(), "agent unavailable when starting an answer");
        }
    }

    /// The question `question` is durable: what its answer held back goes out,
    /// and an answer that already ended is stored. False if it was not held.
    pub fn release_held(&mut self, myself: &ActorRef<SessionMsg>, question: MessageId) -> bool {
        let Some(held) = self.answering.release(question) else {
            return false;
        };
        for frame in &held.frames {
            self.broadcast(frame);
        }
        if let Some(outcome) = held.ended {
            self.finish_generation(myself, outcome);
        }
        true
    }

    /// The question `question` could not be stored: its held answer is
    /// cancelled and forgotten, and the next question may begin.
    pub fn abandon_held(&mut self, question: MessageId) {
        let Some(message_id) = self.answering.abandon(question) else {
            return;
        };
        if let Some(agent) = &self.agent {
            let _ = agent.cast(AgentMsg::Cancel { message_id });
        }
        self.maybe_start_generation();
    }

    /// Generation ended: the answer is stored, or, while its question is
    /// still being written, the end is kept for `release_held`.
    fn end_generation(&mut self, myself: &ActorRef<SessionMsg>, outcome: AgentOutcome) {
        let Some(message_id) = self.answering.streaming_id() else {
            return;
        };
        let Some(generation) = self.answering.streaming(message_id) else {
            return;
        };
        match &mut generation.held {
            Some(held) => held.ended = Some(outcome),
            None => self.finish_generation(myself, outcome),
        }
    }

    /// Sends a frame of the answer in progress, or holds it with the answer.
    fn answer_frame(&mut self, message_id: MessageId, frame: Frame) {
        if let Some(generation) = self.answering.streaming(message_id)
            && let Some(held) = &mut generation.held
        {
            held.frames.push(frame);
            return;
        }
        self.broadcast(&frame);
    }

    /// A report from the agent on the answer in progress.
    pub fn on_agent_report(&mut self, myself: &ActorRef<SessionMsg>, report: AgentReport) {
        match report {
            AgentReport::Chunk { message_id, text } => {
                let Some(generation) = self.answering.streaming(message_id) else {
                    return;
                };
                generation.text.push_str(&text);
                let (reply_to, merged) = generation.announce();
                let frame = ServerFrame::Chunk {
                    content: text,
                    message_id,
                    snapshot: false,
                    reply_to,
                    merged,
                };
                self.answer_frame(message_id, frame.encode());
            }
            AgentReport::Meta { message_id, meta } => {
                if let Some(generation) = self.answering.any_with_id(message_id) {
                    generation.meta.merge(meta);
                }
            }
            AgentReport::Tool { message_id, call } => self.on_tool(myself, message_id, call),
            AgentReport::Finished {
                message_id,
                outcome,
            } => {
                if self.answering.streaming(message_id).is_some() {
                    self.end_generation(myself, outcome);
                }
            }
        }
    }

    /// The model called a tool or a tool answered: tell the subscribers; a
    /// successful `request_human` asks for a person.
    fn on_tool(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        message_id: MessageId,
        call: ToolCallRecord,
    ) {
        let Some(generation) = self.answering.streaming(message_id) else {
            return;
        };
        let frame = match &call.result {
            None => {
                let (reply_to, merged) = generation.announce();
                ServerFrame::ToolCall {
                    message_id,
                    call_id: call.call_id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                    reply_to,
                    merged,
                }
            }
            Some(content) => ServerFrame::ToolResult {
                message_id,
                call_id: call.call_id.clone(),
                name: call.name.clone(),
                content: content.clone(),
                is_error: call.is_error,
            },
        };
        let asks_for_a_person =
            call.name == REQUEST_HUMAN && call.result.is_some() && !call.is_error;
        let reason = asks_for_a_person
            .then(|| crate::agent::request_human_reason(&call.arguments))
            .flatten();
        let context = call
            .result
            .as_deref()
            .filter(|_| !call.is_error)
            .and_then(context_of_tool_answer);
        generation.record_tool(call);
        self.answer_frame(message_id, frame.encode());
        if let Some(patch) = context {
            self.context_changed_by(myself, patch);
        }
        if asks_for_a_person {
            let handoff = Handoff {
                requested_at: now_timestamp(),
                requested_by: "agent".into(),
                reason,
            };
            self.request_handoff(myself, handoff, None);
        }
    }

    /// Stores the answer in progress with the status its outcome calls for.
    pub fn finish_generation(&mut self, myself: &ActorRef<SessionMsg>, outcome: AgentOutcome) {
        let (status, failure) = match outcome {
            AgentOutcome::Completed => (MessageStatus::Complete, None),
            AgentOutcome::Cancelled => (MessageStatus::Interrupted, None),
            AgentOutcome::Interrupted(error) => {
                let content = format!("the answer was cut short: {error}");
                self.broadcast_error("agent_interrupted", content);
                (MessageStatus::Interrupted, None)
            }
            AgentOutcome::Failed(error) => {
                self.broadcast_error("agent_failed", format!("the agent failed: {error}"));
                (MessageStatus::Failed, Some(error.to_string()))
            }
        };
        let Some(question) = self
            .answering
            .start_storing()
            .map(|generation| generation.question)
        else {
            return;
        };
        let seq = self.log.take_seq();
        let message = answer_message(self, seq, status);
        if let Some(meta) = &message.agent {
            crate::metrics::answered(meta);
        }
        // A failure is recorded as `agent.failed`, in the same transaction as the message.
        let event = failure.map(|error| {
            let facts = self.event_facts();
            let agent = &self.settings.agent;
            events::agent_failed(&facts, &message, &question.to_string(), agent, &error)
        });
        self.persist(myself, message.clone(), event);
        self.log
            .hand_over(message.seq, PendingWrite::Answer { message, question });
    }

    /// The agent crashed: an answer in progress is kept as `failed`, and the
    /// agent restarts after its backoff.
    pub fn agent_crashed(&mut self, myself: &ActorRef<SessionMsg>, why: String) {
        self.agent = None;
        self.agent_down = true;
        if self.terminating {
            return;
        }
        tracing::error!(session = %self.id(), error = %why, "agent failed; restarting it");
        if let Some(message_id) = self.answering.streaming_id() {
            let content = "the agent crashed; the partial answer was kept";
            let frame = ServerFrame::error("agent_crashed", content).encode();
            self.answer_frame(message_id, frame);
            let error = AgentError(format!("the agent crashed: {why}"));
            self.end_generation(myself, AgentOutcome::Failed(error));
        }
        let delay = self.agent_backoff.next_delay();
        myself.send_after(delay, || SessionMsg::RestartAgent);
    }

    /// Closes every socket with `reason`. With `keep_partial`, an answer in
    /// progress is first stored as `interrupted` (shutdown); without it,
    /// nothing more is written (deletion).
    pub async fn terminate(&mut self, reason: CloseReason, keep_partial: bool) {
        self.terminating = true;
        if let Some(agent) = self.agent.take() {
            agent.stop(Some("session terminating".into()));
        }
        if keep_partial {
            self.keep_partial_answer().await;
        }
        self.subscribers.close_all(reason);
    }

    async fn keep_partial_answer(&mut self) {
        // An answer whose question is not yet durable is not kept: the
        // question, once stored, is answered again after the restart.
        let held = self
            .answering
            .current()
            .is_some_and(|generation| generation.held.is_some());
        if self.answering.streaming_id().is_none() || held {
            return;
        }
        let seq = self.log.take_seq();
        let message = answer_message(self, seq, MessageStatus::Interrupted);
        let Some(generation) = self.answering.take_streaming() else {
            return;
        };
        let question = generation.question;
        let frame = ServerFrame::done(&message, question, generation.merged()).encode();
        let write = self.append_with_events(message.clone(), None);
        match self.storage.write_and_wait(write).await {
            Ok(()) => {
                self.answering.answered(question, &Ok(message));
                self.broadcast(&frame);
            }
            Err(error) => {
                tracing::error!(session = %self.id(), %error, "partial answer not stored at shutdown");
                self.answering.answered(question, &Err(error));
            }
        }
    }
}

/// A tool may change the conversation's context: a JSON answer with a
/// `context` object is merged into it (the model still sees the whole answer).
fn context_of_tool_answer(answer: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str::<serde_json::Value>(answer)
        .ok()?
        .get_mut("context")?
        .take()
    {
        serde_json::Value::Object(patch) => Some(patch),
        _ => None,
    }
}

/// The answer in progress as a stored message at `seq`.
fn answer_message(state: &SessionState, seq: u64, status: MessageStatus) -> StoredMessage {
    let generation = state.answering.current().expect("an answer is in progress");
    let (tenant, text) = (state.facts.tenant.clone(), generation.text.clone());
    StoredMessage {
        id: generation.message_id,
        status,
        agent: generation.kept_meta(),
        tool_calls: generation.tool_calls.clone(),
        channel: state.facts.channel.clone(),
        ..StoredMessage::new(tenant, state.id(), seq, Role::Assistant, text)
    }
}
