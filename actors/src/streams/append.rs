//! What one `POST` to a stream does, decided without I/O: a closure, an
//! append, a duplicate a producer retried, or a refusal (a closed stream,
//! another content type, a `Stream-Seq` that does not advance, a fenced or
//! out-of-sequence producer). The stream's actor writes what this plans.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::stream::{
    JsonBodyError, ProducerDecision, ProducerRecord, ProducerState, StreamRecord, StreamUnit,
    json_messages, producer_decision, same_type,
};
use crate::store::Write;

/// A `POST` as the edge read it (and as it crosses to a stream's owner in
/// a cluster).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Append {
    pub content_type: Option<String>,
    #[serde(with = "base64_bytes")]
    pub body: Bytes,
    /// `Stream-Seq`: must be greater (byte-wise) than the last one accepted.
    pub seq: Option<String>,
    pub producer: Option<ProducerHeaders>,
    /// `Stream-Closed: true`: no append may follow this one.
    pub close: bool,
    /// The most bytes the stream may hold (the tenant's `max_stream_bytes`).
    pub max_bytes: u64,
}

/// `Producer-Id`, `Producer-Epoch`, `Producer-Seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducerHeaders {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// How a `POST` ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Appended {
    /// Appended (or closed): the stream now, and the producer's state.
    Done {
        record: StreamRecord,
        producer: Option<ProducerState>,
    },
    /// A producer's retry of what is already appended: nothing written.
    Duplicate {
        record: StreamRecord,
        producer: ProducerState,
    },
    /// The stream is closed: nothing may be appended.
    Closed(StreamRecord),
    /// `Stream-Seq` did not advance.
    SeqRegression,
    StaleEpoch {
        current: u64,
    },
    EpochStartsAtZero,
    Gap {
        expected: u64,
        received: u64,
    },
}

/// A body as base64 text, for the JSON that crosses between nodes.
pub mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &Bytes, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(&STANDARD.encode(body))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(input)?;
        STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// What to write (the write, the record after it, the producer's state),
/// if anything, and the answer once it is durable.
pub struct Plan {
    pub write: Option<(Write, StreamRecord, Option<ProducerState>)>,
    pub answer: Appended,
}

fn answer(answer: Appended) -> Result<Plan> {
    Ok(Plan {
        write: None,
        answer,
    })
}

/// Decides `append` on `record`, whose producer (if the append names one)
/// is at `known`.
pub fn plan_append(
    record: &StreamRecord,
    known: Option<ProducerState>,
    append: &Append,
) -> Result<Plan> {
    let producer = match &append.producer {
        Some(headers) => match producer_decision(known, headers.epoch, headers.seq) {
            ProducerDecision::Accept(state) => Some(state),
            ProducerDecision::Duplicate(producer) => {
                return answer(Appended::Duplicate {
                    record: record.clone(),
                    producer,
                });
            }
            ProducerDecision::StaleEpoch { current } => {
                return answer(Appended::StaleEpoch { current });
            }
            ProducerDecision::EpochStartsAtZero => return answer(Appended::EpochStartsAtZero),
            ProducerDecision::Gap { expected, received } => {
                return answer(Appended::Gap { expected, received });
            }
        },
        None => None,
    };
    let close_only = append.body.is_empty() && append.close;
    if close_only && record.closed {
        return answer(Appended::Done {
            record: record.clone(),
            producer: known,
        });
    }
    if record.closed {
        return answer(Appended::Closed(record.clone()));
    }
    let units = match close_only {
        true => Vec::new(),
        false => checked_units(record, append)?,
    };
    if let Some(seq) = &append.seq
        && record.last_seq.as_ref().is_some_and(|last| seq <= last)
    {
        return answer(Appended::SeqRegression);
    }
    let added: u64 = units.iter().map(|unit| unit_bytes(record, unit)).sum();
    let size = record.size_bytes.saturating_add(added);
    if size > append.max_bytes {
        return Err(Error::ContentTooLarge {
            actual: usize::try_from(size).unwrap_or(usize::MAX),
            limit: usize::try_from(append.max_bytes).unwrap_or(usize::MAX),
        });
    }
    let mut next = record.clone();
    next.size_bytes = size;
    next.tail = units.last().map_or(record.tail, |unit| unit.end);
    next.closed = append.close;
    if append.seq.is_some() {
        next.last_seq = append.seq.clone();
    }
    let stored_producer = append
        .producer
        .as_ref()
        .zip(producer)
        .map(|(headers, state)| ProducerRecord {
            stream_id: record.stream_id.clone(),
            producer: headers.id.clone(),
            state,
        });
    let write = Write::AppendStream {
        record: Box::new(next.clone()),
        units,
        producer: stored_producer,
    };
    Ok(Plan {
        write: Some((write, next.clone(), producer)),
        answer: Appended::Done {
            record: next,
            producer,
        },
    })
}

/// The units of an append with a body, once its content type and body are checked.
fn checked_units(record: &StreamRecord, append: &Append) -> Result<Vec<StreamUnit>> {
    if append.body.is_empty() {
        return Err(Error::InvalidInput("an append needs a body".into()));
    }
    match &append.content_type {
        None => Err(Error::InvalidInput("an append needs a Content-Type".into())),
        Some(kind) if !same_type(kind, &record.config.content_type) => {
            Err(Error::Conflict(format!(
                "the stream's content type is {}",
                record.config.content_type
            )))
        }
        Some(_) => units_of(record, &append.body, false),
    }
}

/// The bytes a unit holds for the stream's size: a JSON message's text, or
/// the appended bytes.
pub fn unit_bytes(record: &StreamRecord, unit: &StreamUnit) -> u64 {
    match record.config.is_json() {
        true => unit.data.len() as u64,
        false => unit.end - unit.position,
    }
}

/// `body` as units after the stream's tail: one per JSON message, or one
/// for the bytes. `initial`: a `PUT`'s body (`[]` is then no message).
pub fn units_of(record: &StreamRecord, body: &[u8], initial: bool) -> Result<Vec<StreamUnit>> {
    let unit = |position: u64, end: u64, data: String, append_end: u64| StreamUnit {
        tenant: record.tenant.clone(),
        stream_id: record.stream_id.clone(),
        position,
        end,
        data,
        append_end,
    };
    if !record.config.is_json() {
        let end = record.tail + body.len() as u64;
        return Ok(vec![unit(record.tail, end, STANDARD.encode(body), end)]);
    }
    let messages = json_messages(body, initial).map_err(|error| match error {
        JsonBodyError::Invalid(why) => Error::InvalidInput(format!("the body is not JSON: {why}")),
        JsonBodyError::EmptyArray => {
            Error::InvalidInput("an empty JSON array appends nothing".into())
        }
    })?;
    let append_end = record.tail + messages.len() as u64;
    Ok(messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            let position = record.tail + index as u64;
            unit(position, position + 1, message, append_end)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TenantId;
    use crate::model::stream::StreamConfig;

    fn stream(content_type: &str) -> StreamRecord {
        StreamRecord {
            tenant: TenantId("t".into()),
            path: "p".into(),
            stream_id: "s1".into(),
            config: StreamConfig {
                content_type: content_type.into(),
                ttl_secs: None,
                expires_at: None,
            },
            tail: 10,
            closed: false,
            last_seq: Some("b".into()),
            created_at: String::new(),
            inherited: Vec::new(),
            forked_from: None,
            forks: 0,
            deleted: false,
            size_bytes: 10,
        }
    }

    fn post(body: &str) -> Append {
        Append {
            content_type: Some("text/plain".into()),
            body: Bytes::from(body.to_owned()),
            seq: None,
            producer: None,
            close: false,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn an_append_moves_the_tail_by_its_bytes() {
        let plan = plan_append(&stream("text/plain"), None, &post("hola")).unwrap();
        let (_, next, _) = plan.write.unwrap();
        assert_eq!(next.tail, 14);
    }

    #[test]
    fn refusals_write_nothing() {
        let record = stream("text/plain");
        let mut regress = post("x");
        regress.seq = Some("a".into());
        assert!(matches!(
            plan_append(&record, None, &regress).unwrap().answer,
            Appended::SeqRegression
        ));
        let mut other = post("{}");
        other.content_type = Some("application/json".into());
        assert!(matches!(
            plan_append(&record, None, &other),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            plan_append(&record, None, &post("")),
            Err(Error::InvalidInput(_))
        ));
        let mut closed = record.clone();
        closed.closed = true;
        let plan = plan_append(&closed, None, &post("x")).unwrap();
        assert!(plan.write.is_none() && matches!(plan.answer, Appended::Closed(_)));
    }

    #[test]
    fn an_append_past_the_streams_size_limit_is_refused() {
        let mut append = post("12345");
        append.max_bytes = 14;
        let refused = plan_append(&stream("text/plain"), None, &append);
        assert!(matches!(
            refused,
            Err(Error::ContentTooLarge {
                actual: 15,
                limit: 14
            })
        ));
        append.max_bytes = 15;
        let (_, next, _) = plan_append(&stream("text/plain"), None, &append)
            .unwrap()
            .write
            .unwrap();
        assert_eq!(next.size_bytes, 15);
    }

    #[test]
    fn closing_twice_is_one_closure() {
        let mut close = post("");
        close.close = true;
        let (_, closed, _) = plan_append(&stream("text/plain"), None, &close)
            .unwrap()
            .write
            .unwrap();
        assert!(closed.closed && closed.tail == 10);
        let again = plan_append(&closed, None, &close).unwrap();
        assert!(again.write.is_none() && matches!(again.answer, Appended::Done { .. }));
    }

    #[test]
    fn json_messages_each_take_one_position() {
        let mut append = post("[1, {\"a\": 2}, [3]]");
        append.content_type = Some("application/json".into());
        let (write, next, _) = plan_append(&stream("application/json"), None, &append)
            .unwrap()
            .write
            .unwrap();
        assert_eq!(next.tail, 13);
        let Write::AppendStream { units, .. } = write else {
            panic!("an append")
        };
        let data: Vec<&str> = units.iter().map(|unit| unit.data.as_str()).collect();
        assert_eq!(data, ["1", "{\"a\":2}", "[3]"]);
    }
}
