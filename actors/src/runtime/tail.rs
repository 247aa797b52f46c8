//! A conversation tailed as a Durable Stream (`model/conversation_stream.rs`
//! says what its items and offsets are). A [`ConversationTail`] is a
//! listener attached to the session as a `Reader` (in no presence count):
//! it reads what the reader lacks from the store, then turns the session's
//! frames into items, keeping the reader's position as it goes. The edge
//! asks it for batches; dropping it detaches.
//!
//! Stored messages up to the session's last `seq` when the tail attached
//! are read from the store; every later one is announced by a frame
//! (`message`, or `done` for an answer) and read from the store too when
//! the frame alone does not carry it whole, so a message reads the same
//! however the reader met it.

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::handle::Runtime;
use crate::conversation::outbound::Outgoing;
use crate::conversation::session::{Attached, Joining};
use crate::error::{Error, Result};
use crate::model::conversation_stream::{LogPosition, PartialAnswer, TailFrom, TailItem};
use crate::model::protocol::{ServerFrame, WireMessage};
use crate::model::{MessageId, Participant, Scope, SessionId, TenantId};
use crate::store::{MessageQuery, Storage};

/// Stored messages read per round.
const MESSAGES_PER_READ: usize = 256;

/// What a read of the tail found.
#[derive(Debug, Clone, PartialEq)]
pub struct TailBatch {
    /// Each item's JSON text, in order.
    pub items: Vec<String>,
    /// The offset after the last item.
    pub next: String,
    /// Whether the reader has everything there is.
    pub up_to_date: bool,
}

/// A reader's live view of one conversation.
pub struct ConversationTail {
    attached: Attached,
    storage: Storage,
    tenant: TenantId,
    session: SessionId,
    position: LogPosition,
    /// The context at `version`, kept current from `context` frames.
    context: Map<String, Value>,
    version: u64,
    /// The session's last `seq` when the tail attached: what the store
    /// holds up to here is read from it; frames announce the rest.
    attached_seq: u64,
    /// Whether the store was read up to `attached_seq`.
    backlog_read: bool,
    items: Vec<TailItem>,
    ended: bool,
}

impl Runtime {
    /// Tails a conversation this scope may see, from `from`. An offset
    /// past the conversation's end is refused: no read ever gave it.
    pub async fn tail_conversation(
        &self,
        scope: &Scope,
        session: SessionId,
        from: TailFrom,
    ) -> Result<ConversationTail> {
        self.check_owner(scope, session).await?;
        let joining = Joining::Listening;
        let mut attached = self
            .attach(&scope.tenant, session, None, joining, Participant::Reader)
            .await?;
        let (context, version) = attached.context.take().unwrap_or_default();
        let attached_seq = attached.last_seq;
        let mut tail = ConversationTail {
            attached,
            storage: self.inner.storage.clone(),
            tenant: scope.tenant.clone(),
            session,
            position: LogPosition::default(),
            context,
            version,
            attached_seq,
            backlog_read: false,
            items: Vec::new(),
            ended: false,
        };
        match from {
            TailFrom::Start => {}
            TailFrom::Now => tail.skip_to_now(),
            TailFrom::At(position) => {
                if position.seq > attached_seq || position.context > Some(version) {
                    return Err(Error::InvalidInput(
                        "`offset` is past the end of this conversation".into(),
                    ));
                }
                tail.position = position;
            }
        }
        Ok(tail)
    }
}

impl ConversationTail {
    /// The offset of where the reader is.
    pub fn offset(&self) -> String {
        self.position.offset()
    }

    /// Whether the conversation went away (deleted, erased, restarted, or
    /// the server stopping): nothing more will come on this tail.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// What the reader lacks that is there now, without waiting.
    pub async fn catch_up(&mut self) -> Result<TailBatch> {
        if self.position.context < Some(self.version) {
            self.push_context();
        }
        if !self.read_backlog().await? {
            return Ok(self.batch(false));
        }
        while let Some(frame) = self.attached.outbound.try_next_frame() {
            self.on_frame(frame.bytes()).await?;
        }
        Ok(self.batch(true))
    }

    /// Waits for something new until `deadline`: `None` if nothing came
    /// (or the conversation went away; see [`ConversationTail::ended`]).
    pub async fn next(&mut self, deadline: Instant) -> Result<Option<TailBatch>> {
        let batch = self.catch_up().await?;
        if !batch.items.is_empty() || !batch.up_to_date {
            return Ok(Some(batch));
        }
        while !self.ended {
            let Ok(outgoing) =
                tokio::time::timeout_at(deadline, self.attached.outbound.next()).await
            else {
                return Ok(None);
            };
            match outgoing {
                Outgoing::Frame(frame) => self.on_frame(frame.bytes()).await?,
                Outgoing::Close(_) | Outgoing::Detached => self.ended = true,
            }
            if !self.items.is_empty() {
                return self.catch_up().await.map(Some);
            }
        }
        Ok(None)
    }

    /// `offset=now`: the position after everything there is, nothing sent.
    fn skip_to_now(&mut self) {
        self.position = LogPosition {
            seq: self.attached_seq,
            context: Some(self.version),
            answer: None,
        };
        while let Some(frame) = self.attached.outbound.try_next_frame() {
            if let Ok(ServerFrame::Chunk {
                content,
                message_id,
                ..
            }) = serde_json::from_slice(frame.bytes())
            {
                self.on_chunk(message_id, content, true);
            }
        }
        self.items.clear();
        self.backlog_read = true;
    }

    /// Reads stored messages the reader lacks, up to where the tail
    /// attached; whether it read them all.
    async fn read_backlog(&mut self) -> Result<bool> {
        if !self.backlog_read {
            self.backlog_read = !self.read_stored(self.attached_seq).await?;
        }
        Ok(self.backlog_read)
    }

    /// Reads one round of the stored messages after the reader's `seq`, up
    /// to `until`; whether more may follow.
    async fn read_stored(&mut self, until: u64) -> Result<bool> {
        if self.position.seq >= until {
            return Ok(false);
        }
        let query = MessageQuery {
            tenant: self.tenant.clone(),
            session: self.session,
            after_seq: self.position.seq,
            limit: MESSAGES_PER_READ,
            newest: false,
        };
        let messages = self.storage.load_messages(query).await?;
        let full = messages.len() == MESSAGES_PER_READ;
        for message in messages.iter().filter(|message| message.seq <= until) {
            self.on_stored(WireMessage::from(message));
        }
        // A `seq` whose write failed is never stored: a round may end on
        // a gap, and the next one starts past it.
        let last = messages.last().map_or(until, |message| message.seq);
        Ok(full && last < until)
    }

    /// One frame from the session, as items.
    async fn on_frame(&mut self, bytes: &[u8]) -> Result<()> {
        let Ok(frame) = serde_json::from_slice::<ServerFrame>(bytes) else {
            return Ok(());
        };
        match frame {
            ServerFrame::Chunk {
                content,
                message_id,
                snapshot,
                ..
            } => self.on_chunk(message_id, content, snapshot),
            ServerFrame::Message { message } if message.seq == self.position.seq + 1 => {
                self.on_stored(message)
            }
            ServerFrame::Message { message } => self.read_through(message.seq).await?,
            ServerFrame::Done { seq, .. } => self.read_through(seq).await?,
            ServerFrame::Context {
                version,
                patch,
                context,
            } => self.on_context(version, patch, context),
            _ => {}
        }
        Ok(())
    }

    /// Reads every stored message up to `seq` the reader lacks (a frame
    /// announced `seq`, so all before it are stored too).
    async fn read_through(&mut self, seq: u64) -> Result<()> {
        while self.read_stored(seq).await? {}
        Ok(())
    }

    /// A piece of an answer (a snapshot is its whole text so far).
    fn on_chunk(&mut self, message_id: MessageId, content: String, snapshot: bool) {
        let had = self
            .position
            .answer
            .filter(|part| part.message_id == message_id)
            .map(|part| part.bytes);
        let (content, bytes) = match (had, snapshot) {
            // The reader has `had` bytes of it: the rest of the text so far.
            (Some(had), true) => {
                let rest = content.get(had..).unwrap_or_default().to_owned();
                (rest, had.max(content.len()))
            }
            (Some(had), false) => {
                let bytes = had + content.len();
                (content, bytes)
            }
            (None, _) => {
                let bytes = content.len();
                (content, bytes)
            }
        };
        self.position.answer = Some(PartialAnswer { message_id, bytes });
        if !content.is_empty() {
            self.items.push(TailItem::Chunk {
                message_id,
                content,
            });
        }
    }

    /// A stored message: the rest of its text first if the reader had part
    /// of it as an answer being written, then the message.
    fn on_stored(&mut self, message: WireMessage) {
        if message.seq <= self.position.seq {
            return;
        }
        if let Some(part) = self.position.answer
            && part.message_id == message.id
        {
            let rest = message.content.get(part.bytes..).unwrap_or_default();
            if !rest.is_empty() {
                self.items.push(TailItem::Chunk {
                    message_id: message.id,
                    content: rest.to_owned(),
                });
            }
            self.position.answer = None;
        }
        self.position.seq = message.seq;
        self.items.push(TailItem::Message { message });
    }

    /// The context changed: kept current, and the reader is given it whole.
    fn on_context(
        &mut self,
        version: u64,
        patch: Option<Value>,
        whole: Option<Map<String, Value>>,
    ) {
        match (whole, patch) {
            (Some(whole), _) => self.context = whole,
            (None, Some(patch)) => {
                let mut document = Value::Object(std::mem::take(&mut self.context));
                let applied = serde_json::from_value::<json_patch::Patch>(patch)
                    .ok()
                    .is_some_and(|patch| json_patch::patch(&mut document, &patch).is_ok());
                self.context = match document {
                    Value::Object(context) => context,
                    _ => Map::new(),
                };
                // The tail's copy is lost: end, and the reader's next read
                // attaches afresh and is given the context whole.
                if !applied {
                    tracing::warn!(session = %self.session, version, "a context patch did not apply to the tail's copy");
                    self.ended = true;
                    return;
                }
            }
            (None, None) => return,
        }
        self.version = version;
        if self.position.context < Some(version) {
            self.push_context();
        }
    }

    fn push_context(&mut self) {
        self.position.context = Some(self.version);
        self.items.push(TailItem::Context {
            version: self.version,
            context: self.context.clone(),
        });
    }

    fn batch(&mut self, up_to_date: bool) -> TailBatch {
        TailBatch {
            items: self.items.drain(..).map(|item| item.encode()).collect(),
            next: self.position.offset(),
            up_to_date,
        }
    }
}

impl Drop for ConversationTail {
    fn drop(&mut self) {
        self.attached.connection.stop(None);
    }
}
