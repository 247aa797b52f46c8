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

use tokio::time::Instant;

use super::handle::Runtime;
use crate::conversation::outbound::Outgoing;
use crate::conversation::session::{Attached, Joining};
use crate::error::{Error, Result};
use crate::model::conversation_stream::{LogPosition, LogReader, TailFrom};
use crate::model::protocol::{ServerFrame, WireMessage};
use crate::model::{Participant, Scope, SessionId, TenantId};
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
    reader: LogReader,
    /// The session's last `seq` when the tail attached: what the store
    /// holds up to here is read from it; frames announce the rest.
    attached_seq: u64,
    /// Whether the store was read up to `attached_seq`.
    backlog_read: bool,
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
        let position = match from {
            TailFrom::Start => LogPosition::default(),
            TailFrom::Now => LogPosition {
                seq: attached_seq,
                context: Some(version),
                answer: None,
            },
            TailFrom::At(position) => position,
        };
        if position.seq > attached_seq || position.context > Some(version) {
            return Err(Error::InvalidInput(
                "`offset` is past the end of this conversation".into(),
            ));
        }
        let mut tail = ConversationTail {
            attached,
            storage: self.inner.storage.clone(),
            tenant: scope.tenant.clone(),
            session,
            reader: LogReader::new(position, context, version),
            attached_seq,
            backlog_read: false,
            ended: false,
        };
        if from == TailFrom::Now {
            tail.skip_to_now().await?;
        }
        Ok(tail)
    }
}

impl ConversationTail {
    /// The offset of where the reader is.
    pub fn offset(&self) -> String {
        self.reader.position().offset()
    }

    /// Whether the conversation went away (deleted, erased, restarted, or
    /// the server stopping): nothing more will come on this tail.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// What the reader lacks that is there now, without waiting.
    pub async fn catch_up(&mut self) -> Result<TailBatch> {
        self.reader.catch_up_context();
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
            if self.reader.has_items() {
                return self.catch_up().await.map(Some);
            }
        }
        Ok(None)
    }

    /// `offset=now`: the position after everything there is, nothing sent.
    /// Frames already queued are taken as usual (so the reader's copy of
    /// the context and its place in an answer stay right), then skipped.
    async fn skip_to_now(&mut self) -> Result<()> {
        while let Some(frame) = self.attached.outbound.try_next_frame() {
            self.on_frame(frame.bytes()).await?;
        }
        self.reader.skip_items();
        Ok(())
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
        let after_seq = self.reader.position().seq;
        if after_seq >= until {
            return Ok(false);
        }
        let catching_up = !self.backlog_read;
        let query = MessageQuery {
            tenant: self.tenant.clone(),
            session: self.session,
            after_seq,
            limit: MESSAGES_PER_READ,
            newest: false,
        };
        let messages = self.storage.load_messages(query).await?;
        let full = messages.len() == MESSAGES_PER_READ;
        for message in messages.iter().filter(|message| message.seq <= until) {
            self.reader.stored(WireMessage::from(message), catching_up);
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
            } => self.reader.chunk(message_id, content, snapshot),
            ServerFrame::Message { message } if message.seq == self.reader.position().seq + 1 => {
                self.reader.stored(message, false)
            }
            ServerFrame::Message { message } => self.read_through(message.seq).await?,
            ServerFrame::Done { seq, .. } => self.read_through(seq).await?,
            ServerFrame::Context {
                version,
                patch,
                context,
            } => self.context_changed(version, patch, context),
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

    fn context_changed(
        &mut self,
        version: u64,
        patch: Option<serde_json::Value>,
        whole: Option<serde_json::Map<String, serde_json::Value>>,
    ) {
        // The tail's copy is lost: end, and the reader's next read attaches
        // afresh and is given the context whole.
        if !self.reader.context_changed(version, patch, whole) {
            tracing::warn!(session = %self.session, version, "a context patch did not apply to a tail's copy");
            self.ended = true;
        }
    }

    fn batch(&mut self, up_to_date: bool) -> TailBatch {
        TailBatch {
            items: self.reader.take_items(),
            next: self.reader.position().offset(),
            up_to_date,
        }
    }
}

impl Drop for ConversationTail {
    fn drop(&mut self) {
        self.attached.connection.stop(None);
    }
}
