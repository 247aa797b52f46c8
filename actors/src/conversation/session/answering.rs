//! The session's part that owns answering: the questions waiting for an
//! answer (in order, one answer at a time), the answer in progress (its
//! text, metadata and tool calls as they stream in), and who waits for the
//! stored answer to which question. Plain state with no actor and no I/O.
//!
//! An answer may begin while its question is still being written: it is
//! then *held*. Its frames and its end are kept back until the question is
//! durable (`release`), and dropped with it if the write fails (`abandon`),
//! so nothing of an answer reaches anyone before its question is on disk.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use super::log::AnswerReceiver;
use crate::agent::actor::AgentOutcome;
use crate::error::{Error, Result};
use crate::model::protocol::Frame;
use crate::model::{AnswerMeta, MessageId, StoredMessage, ToolCallRecord};

/// The answer being generated.
pub struct Generation {
    pub message_id: MessageId,
    /// Model, ids, tokens and timings, as they are reported.
    pub meta: AnswerMeta,
    /// Tool calls so far, with their results once they come.
    pub tool_calls: Vec<ToolCallRecord>,
    /// The user message being answered.
    pub question: MessageId,
    pub text: String,
    /// Generation is over and the answer is being stored: chunks are ignored.
    pub storing: bool,
    /// Set while the question is not yet durable.
    pub held: Option<Held>,
    /// Whether a frame naming the question went out already.
    announced: bool,
    /// Every question this answers, oldest first, when begun from the queue
    /// (more than one when double texting merged them).
    pub questions: Vec<StoredMessage>,
}

/// What an answer produced before its question was durable.
#[derive(Default)]
pub struct Held {
    /// Frames for every subscriber, in order.
    pub frames: Vec<Frame>,
    /// How generation ended, if it already has.
    pub ended: Option<AgentOutcome>,
}

impl Generation {
    fn new(message_id: MessageId, question: MessageId, held: Option<Held>) -> Generation {
        Generation {
            message_id,
            meta: AnswerMeta::default(),
            tool_calls: Vec::new(),
            question,
            text: String::new(),
            storing: false,
            held,
            announced: false,
            questions: Vec::new(),
        }
    }

    /// The question and those merged into it, for the answer's first frame
    /// only (`reply_to`, `merged`).
    pub fn announce(&mut self) -> (Option<MessageId>, Vec<MessageId>) {
        match std::mem::replace(&mut self.announced, true) {
            true => (None, Vec::new()),
            false => (Some(self.question), self.merged()),
        }
    }

    /// The earlier questions this answer answers too.
    pub fn merged(&self) -> Vec<MessageId> {
        let earlier = self.questions.len().saturating_sub(1);
        self.questions[..earlier]
            .iter()
            .map(|question| question.id)
            .collect()
    }

    /// What is worth keeping of the metadata (nothing, if nothing was reported).
    pub fn kept_meta(&self) -> Option<Box<AnswerMeta>> {
        (self.meta != AnswerMeta::default()).then(|| Box::new(self.meta.clone()))
    }

    /// Records a tool call, or its result over the call it answers.
    pub fn record_tool(&mut self, call: ToolCallRecord) {
        match self
            .tool_calls
            .iter_mut()
            .find(|known| known.call_id == call.call_id)
        {
            Some(known) => *known = call,
            None => self.tool_calls.push(call),
        }
    }
}

#[derive(Default)]
pub struct Answering {
    /// User messages waiting for an answer, in order.
    queue: VecDeque<StoredMessage>,
    current: Option<Generation>,
    /// Who waits for the answer to which user message.
    waiters: HashMap<MessageId, Vec<oneshot::Sender<Result<StoredMessage>>>>,
    /// The merge window running (double texting: merge), by its token.
    merging: Option<u64>,
    tokens: u64,
}

impl Answering {
    /// Starts with the questions a crash or a shutdown left unanswered.
    pub fn with_queue(queue: VecDeque<StoredMessage>) -> Answering {
        Answering {
            queue,
            ..Answering::default()
        }
    }

    pub fn enqueue(&mut self, question: StoredMessage) {
        self.queue.push_back(question);
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Forgets the waiting questions (a person takes over and answers them).
    pub fn clear_queue(&mut self) {
        self.queue.clear();
    }

    /// Whether nothing is queued or in progress.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.current.is_none()
    }

    /// The next question to answer, begun as the answer in progress; none
    /// while an answer is in progress or nothing waits.
    pub fn begin_next(&mut self) -> Option<(StoredMessage, MessageId)> {
        if self.current.is_some() {
            return None;
        }
        let question = self.queue.pop_front()?;
        let message_id = MessageId::new();
        self.current = Some(Generation::new(message_id, question.id, None));
        Some((question, message_id))
    }

    /// Begins answering every queued question as one turn: the last is the
    /// question, and whoever waits for an earlier one gets this answer.
    pub fn begin_merged(&mut self) -> Option<(StoredMessage, MessageId)> {
        if self.current.is_some() || self.queue.is_empty() {
            return None;
        }
        let questions: Vec<StoredMessage> = self.queue.drain(..).collect();
        let question = questions.last().expect("the queue was not empty").clone();
        for earlier in &questions[..questions.len() - 1] {
            let waiting = self.waiters.remove(&earlier.id).unwrap_or_default();
            self.waiters.entry(question.id).or_default().extend(waiting);
        }
        let message_id = MessageId::new();
        let mut generation = Generation::new(message_id, question.id, None);
        generation.questions = questions;
        self.current = Some(generation);
        Some((question, message_id))
    }

    /// Drops the answer in progress if nothing of it went out yet (it waits
    /// for its first token), putting its questions back at the head of the
    /// queue; its id is returned, to cancel the generation.
    pub fn discard_unstarted(&mut self) -> Option<MessageId> {
        let generation = self.current.take_if(|generation| {
            !generation.announced
                && generation.held.is_none()
                && !generation.storing
                && !generation.questions.is_empty()
        })?;
        for question in generation.questions.into_iter().rev() {
            self.queue.push_front(question);
        }
        Some(generation.message_id)
    }

    /// Opens (or restarts) the merge window; its token says which one ends.
    pub fn open_merge_window(&mut self) -> u64 {
        self.tokens += 1;
        self.merging = Some(self.tokens);
        self.tokens
    }

    /// The window with this token ended, and it was the one running.
    pub fn close_merge_window(&mut self, token: u64) -> bool {
        self.merging.take_if(|running| *running == token).is_some()
    }

    pub fn is_merging(&self) -> bool {
        self.merging.is_some()
    }

    /// A cancel while the merge window runs: the turn never starts. Whoever
    /// waits for its questions is told; the questions stay stored.
    pub fn cancel_merge(&mut self) -> bool {
        if self.merging.take().is_none() {
            return false;
        }
        for question in self.queue.drain(..) {
            for waiter in self.waiters.remove(&question.id).unwrap_or_default() {
                let cancelled = Error::Conflict("the answer was cancelled before it began".into());
                let _ = waiter.send(Err(cancelled));
            }
        }
        true
    }

    /// Begins answering a question that is still being written, when nothing
    /// else is queued or in progress; its answer is held until `release`.
    pub fn begin_held(&mut self, question: &StoredMessage) -> Option<MessageId> {
        if !self.is_idle() {
            return None;
        }
        let message_id = MessageId::new();
        let held = Some(Held::default());
        self.current = Some(Generation::new(message_id, question.id, held));
        Some(message_id)
    }

    /// The question is durable: what its answer held back, if it was held.
    pub fn release(&mut self, question: MessageId) -> Option<Held> {
        self.current
            .as_mut()
            .filter(|generation| generation.question == question)?
            .held
            .take()
    }

    /// The question could not be stored: its held answer is dropped, and
    /// its id returned (to cancel the generation).
    pub fn abandon(&mut self, question: MessageId) -> Option<MessageId> {
        let generation = self
            .current
            .take_if(|generation| generation.question == question && generation.held.is_some())?;
        Some(generation.message_id)
    }

    /// The answer in progress, whether or not it is being stored.
    pub fn current(&self) -> Option<&Generation> {
        self.current.as_ref()
    }

    /// The answer in progress with this id, unless it is already being stored.
    pub fn streaming(&mut self, message_id: MessageId) -> Option<&mut Generation> {
        self.current
            .as_mut()
            .filter(|generation| generation.message_id == message_id && !generation.storing)
    }

    /// The answer in progress with this id, stored or not.
    pub fn any_with_id(&mut self, message_id: MessageId) -> Option<&mut Generation> {
        self.current
            .as_mut()
            .filter(|generation| generation.message_id == message_id)
    }

    /// The id of the answer in progress, if it still streams.
    pub fn streaming_id(&self) -> Option<MessageId> {
        self.current
            .as_ref()
            .filter(|generation| !generation.storing)
            .map(|generation| generation.message_id)
    }

    /// Marks the answer in progress as being stored; its chunks are ignored from now on.
    pub fn start_storing(&mut self) -> Option<&Generation> {
        let generation = self.current.as_mut()?;
        generation.storing = true;
        Some(generation)
    }

    /// Takes the answer in progress if it still streams (shutdown keeps it).
    pub fn take_streaming(&mut self) -> Option<Generation> {
        self.current.take_if(|generation| !generation.storing)
    }

    /// The stored answer is settled: the next question may begin.
    pub fn finished(&mut self) {
        self.current = None;
    }

    /// Where the answer to `question` will arrive.
    pub fn wait_for(&mut self, question: MessageId) -> AnswerReceiver {
        let (answer, receiver) = oneshot::channel();
        self.waiters.entry(question).or_default().push(answer);
        receiver
    }

    /// Hands the stored answer (or why it is not) to whoever waits for it.
    pub fn answered(&mut self, question: MessageId, answer: &Result<StoredMessage>) {
        for waiter in self.waiters.remove(&question).unwrap_or_default() {
            let _ = waiter.send(match answer {
                Ok(message) => Ok(message.clone()),
                Err(error) => Err(error.clone()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::session::testing::stored;
    use crate::model::Role;

    #[test]
    fn questions_are_answered_one_at_a_time_in_order() {
        let mut answering = Answering::default();
        let first = stored(1, Role::User, "one");
        let second = stored(2, Role::User, "two");
        answering.enqueue(first.clone());
        answering.enqueue(second.clone());
        let (question, answer) = answering.begin_next().expect("the first begins");
        assert_eq!(question.id, first.id);
        assert!(answering.begin_next().is_none(), "the second waits");
        assert_eq!(answering.queued(), 1);
        answering.start_storing();
        assert!(
            answering.streaming(answer).is_none(),
            "chunks after the end are ignored"
        );
        answering.finished();
        let (question, _) = answering.begin_next().expect("then the second");
        assert_eq!(question.id, second.id);
        assert!(answering.queue.is_empty());
    }

    #[test]
    fn chunks_reach_only_the_answer_in_progress() {
        let mut answering = Answering::with_queue(VecDeque::from([stored(1, Role::User, "x")]));
        let (_, answer) = answering.begin_next().unwrap();
        answering
            .streaming(answer)
            .unwrap()
            .text
            .push_str("You said");
        assert!(
            answering.streaming(MessageId::new()).is_none(),
            "a stale id"
        );
        assert_eq!(answering.current().unwrap().text, "You said");
        assert_eq!(answering.streaming_id(), Some(answer));
        assert!(answering.take_streaming().is_some());
        assert!(answering.is_idle());
    }

    #[test]
    fn a_held_answer_is_released_by_its_question_or_abandoned_with_it() {
        let mut answering = Answering::default();
        let question = stored(1, Role::User, "x");
        let answer = answering.begin_held(&question).expect("idle: it begins");
        assert!(answering.begin_held(&question).is_none(), "one at a time");
        assert!(
            answering.release(MessageId::new()).is_none(),
            "another question"
        );
        let held = answering.release(question.id).expect("held until now");
        assert!(held.frames.is_empty() && held.ended.is_none());
        assert!(answering.release(question.id).is_none(), "released once");
        assert!(
            answering.abandon(question.id).is_none(),
            "a released answer is no longer abandoned with its question"
        );
        answering.finished();

        let question = stored(2, Role::User, "y");
        let held = answering.begin_held(&question).unwrap();
        assert_eq!(answering.abandon(question.id), Some(held));
        assert!(answering.is_idle());
        assert!(answer != held);
    }

    #[tokio::test]
    async fn every_waiter_gets_the_stored_answer() {
        let mut answering = Answering::default();
        let question = stored(1, Role::User, "x");
        let first = answering.wait_for(question.id);
        let second = answering.wait_for(question.id);
        let answer = stored(2, Role::Assistant, "You said: x");
        answering.answered(question.id, &Ok(answer.clone()));
        assert_eq!(first.await.unwrap().unwrap(), answer);
        assert_eq!(second.await.unwrap().unwrap(), answer);
    }

    #[test]
    fn a_tool_result_replaces_its_call() {
        let mut generation = Generation::new(MessageId::new(), MessageId::new(), None);
        let call = ToolCallRecord {
            call_id: "c1".into(),
            name: "create_estimate".into(),
            arguments: "{}".into(),
            result: None,
            is_error: false,
        };
        generation.record_tool(call.clone());
        generation.record_tool(ToolCallRecord {
            result: Some("ok".into()),
            ..call
        });
        assert_eq!(generation.tool_calls.len(), 1);
        assert_eq!(generation.tool_calls[0].result.as_deref(), Some("ok"));
        assert!(generation.kept_meta().is_none(), "nothing was reported");
    }
}
