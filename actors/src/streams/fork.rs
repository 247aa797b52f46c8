//! Forks, and deleting a stream forks still read. A fork is a stream whose
//! data below its fork point is its source's: it reads the source's units
//! there (and its source's source's, along the chain) and appends its own
//! after. The source counts its live forks: a delete while any remain only
//! hides it (410 to its callers, 409 to a `PUT` at its path) and keeps its
//! units; the last fork to go deletes it for good, and so on up the chain.

use super::state::StreamState;
use crate::error::{Error, Result};
use crate::model::now_timestamp;
use crate::model::stream::{Segment, StreamConfig, StreamRecord, same_type};
use crate::store::Write;

/// `Stream-Forked-From` with `Stream-Fork-Offset` and `Stream-Fork-Sub-Offset`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ForkRequest {
    /// The fork point; the source's tail if absent.
    pub position: Option<u64>,
    /// Bytes (or JSON messages) of the append at `position` to take too.
    pub sub: Option<u64>,
    /// The fork's `Content-Type`, if given: it must be the source's.
    pub content_type: Option<String>,
}

/// What a fork starts from, as its source agreed to it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ForkBase {
    pub source_path: String,
    pub source_id: String,
    /// The source's settings, which a fork takes where it gives none.
    pub config: StreamConfig,
    pub parts: Vec<Segment>,
    pub point: u64,
}

/// A new stream's record: empty, or a fork starting at its fork point.
pub(super) fn new_record(
    state: &StreamState,
    config: StreamConfig,
    closed: bool,
    fork: Option<ForkBase>,
) -> StreamRecord {
    let (inherited, forked_from, tail) = match fork {
        Some(fork) => (
            fork.parts,
            Some((fork.source_path, fork.source_id)),
            fork.point,
        ),
        None => (Vec::new(), None, 0),
    };
    StreamRecord {
        tenant: state.tenant.clone(),
        path: state.path.clone(),
        stream_id: uuid::Uuid::now_v7().simple().to_string(),
        config,
        tail,
        closed,
        last_seq: None,
        created_at: now_timestamp(),
        inherited,
        forked_from,
        forks: 0,
        deleted: false,
        size_bytes: 0,
    }
}

impl StreamState {
    /// The stream, unless there is none or it was deleted.
    pub(super) fn live(&self) -> Option<&StreamRecord> {
        self.record.as_ref().filter(|record| !record.deleted)
    }

    /// The stream, or why it cannot be used: missing (404) or deleted
    /// while forks read it (410).
    pub(super) fn existing(&self) -> Result<&StreamRecord> {
        match &self.record {
            None => Err(Error::StreamNotFound(self.path.clone())),
            Some(record) if record.deleted => Err(Error::StreamGone(self.path.clone())),
            Some(record) => Ok(record),
        }
    }

    pub(super) async fn add_fork(&mut self, request: ForkRequest) -> Result<ForkBase> {
        let record = match self.existing() {
            Err(Error::StreamGone(_)) => {
                return Err(Error::Conflict("the source stream was deleted".into()));
            }
            other => other?.clone(),
        };
        if let Some(kind) = &request.content_type
            && !same_type(kind, &record.config.content_type)
        {
            return Err(Error::Conflict(format!(
                "the source's content type is {}",
                record.config.content_type
            )));
        }
        let position = request.position.unwrap_or(record.tail);
        if position > record.tail {
            return Err(Error::InvalidInput(
                "the fork offset is past the source's end".into(),
            ));
        }
        let point = match request.sub.filter(|sub| *sub > 0) {
            None => position,
            Some(sub) => self.sub_offset(&record, position, sub).await?,
        };
        let mut counted = record.clone();
        counted.forks += 1;
        self.write_record(counted.clone()).await?;
        Ok(ForkBase {
            source_path: record.path.clone(),
            source_id: record.stream_id.clone(),
            config: record.config.clone(),
            parts: record.parts_below(point),
            point,
        })
    }

    /// The fork point `sub` into the append that starts at `position`.
    async fn sub_offset(&self, record: &StreamRecord, position: u64, sub: u64) -> Result<u64> {
        let (stream_id, _) = record.part_at(position);
        let unit = self
            .storage
            .stream_units(stream_id, position, 1)
            .await?
            .into_iter()
            .next()
            .filter(|unit| unit.position == position && position < record.tail);
        let Some(unit) = unit else {
            return Err(Error::InvalidInput(
                "Stream-Fork-Sub-Offset needs an append at Stream-Fork-Offset".into(),
            ));
        };
        let append_end = if unit.append_end > 0 {
            unit.append_end
        } else {
            unit.end
        };
        match position.checked_add(sub) {
            Some(point) if point <= append_end.min(record.tail) => Ok(point),
            _ => Err(Error::InvalidInput(
                "Stream-Fork-Sub-Offset reaches past the append".into(),
            )),
        }
    }

    /// A fork of this stream is gone: one fewer, and if this stream was
    /// deleted and that was its last, it goes for good (its own source next).
    pub(super) async fn release_fork(
        &mut self,
        stream_id: &str,
    ) -> Result<Option<(String, String)>> {
        let Some(record) = self
            .record
            .clone()
            .filter(|record| record.stream_id == stream_id)
        else {
            return Ok(None);
        };
        let mut released = record.clone();
        released.forks = released.forks.saturating_sub(1);
        if released.deleted && released.forks == 0 {
            return self.remove(released).await;
        }
        self.write_record(released).await?;
        Ok(None)
    }

    /// `DELETE`: hidden while forks read from it, else gone with its units.
    pub(super) async fn delete(&mut self) -> Result<Option<(String, String)>> {
        let record = self.existing()?.clone();
        if record.forks > 0 {
            let mut hidden = record;
            hidden.deleted = true;
            self.write_record(hidden).await?;
            self.producers.clear();
            self.publish();
            return Ok(None);
        }
        self.remove(record).await
    }

    /// Deletes the stream and its units; its source, if it was a fork.
    async fn remove(&mut self, record: StreamRecord) -> Result<Option<(String, String)>> {
        self.storage
            .write_and_wait(Write::DeleteStream(Box::new(record.clone())))
            .await?;
        self.record = None;
        self.producers.clear();
        self.publish();
        Ok(record.forked_from)
    }

    async fn write_record(&mut self, record: StreamRecord) -> Result<()> {
        let write = Write::AppendStream {
            record: Box::new(record.clone()),
            units: Vec::new(),
            producer: None,
        };
        self.storage.write_and_wait(write).await?;
        self.record = Some(record);
        Ok(())
    }
}
