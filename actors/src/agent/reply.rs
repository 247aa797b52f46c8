//! A workflow's reply (the `webhook` agent) as it arrives in pieces: plain
//! text, newline-delimited JSON, or one JSON document. Pure: the bytes of
//! each piece go in, text comes out; `webhook.rs` feeds them from the HTTP
//! body. Property tests (10,000 cases each) check that however the body is
//! cut, the text is the body's (invalid UTF-8 as U+FFFD), every NDJSON line
//! is shown once and in order, the last one too without a newline, and that
//! no input panics.

use serde_json::Value;

use crate::agent::{AgentError, AgentEvent};

/// What each piece of a body and its end become.
pub trait ReplyDecoder: Send + 'static {
    fn push(&mut self, bytes: &[u8]) -> Vec<Result<AgentEvent, AgentError>>;
    fn finish(&mut self) -> Vec<Result<AgentEvent, AgentError>>;
}

/// Plain text: shown as it arrives, never splitting a character; bytes
/// that are not UTF-8 become U+FFFD and the text after them goes on.
#[derive(Default)]
pub struct TextReply {
    pending: Vec<u8>,
}

impl TextReply {
    fn decode(&mut self, at_end: bool) -> String {
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    text.push_str(valid);
                    self.pending.clear();
                    return text;
                }
                Err(error) => {
                    let valid = error.valid_up_to();
                    text.push_str(std::str::from_utf8(&self.pending[..valid]).expect("valid"));
                    match error.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        // A character cut by the end of this piece: wait for the rest.
                        None if !at_end => {
                            self.pending.drain(..valid);
                            return text;
                        }
                        None => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.clear();
                            return text;
                        }
                    }
                }
            }
        }
    }
}

fn shown(text: String) -> Vec<Result<AgentEvent, AgentError>> {
    match text.is_empty() {
        true => Vec::new(),
        false => vec![Ok(AgentEvent::Text(text))],
    }
}

impl ReplyDecoder for TextReply {
    fn push(&mut self, bytes: &[u8]) -> Vec<Result<AgentEvent, AgentError>> {
        self.pending.extend_from_slice(bytes);
        shown(self.decode(false))
    }

    fn finish(&mut self) -> Vec<Result<AgentEvent, AgentError>> {
        shown(self.decode(true))
    }
}

/// Newline-delimited JSON: each line's text as soon as the line is whole;
/// the last line counts without its newline too.
#[derive(Default)]
pub struct LinesReply {
    pending: Vec<u8>,
}

impl LinesReply {
    fn line(line: &[u8]) -> Option<Result<AgentEvent, AgentError>> {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(value) => reply_text(&value).map(|text| Ok(AgentEvent::Text(text))),
            Err(error) => Some(Err(AgentError(format!(
                "a line of the workflow's reply is not JSON: {error}"
            )))),
        }
    }
}

impl ReplyDecoder for LinesReply {
    fn push(&mut self, bytes: &[u8]) -> Vec<Result<AgentEvent, AgentError>> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            events.extend(Self::line(&line));
        }
        events
    }

    fn finish(&mut self) -> Vec<Result<AgentEvent, AgentError>> {
        let rest = std::mem::take(&mut self.pending);
        Self::line(&rest).into_iter().collect()
    }
}

/// A whole JSON reply's text.
pub fn json_reply(body: &[u8]) -> Result<String, AgentError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| AgentError(format!("the workflow's reply is not JSON: {error}")))?;
    reply_text(&value)
        .ok_or_else(|| AgentError("the workflow's JSON has no `reply` or `output` text".into()))
}

/// The reply text in a JSON answer: `reply` or `output`, of the object or
/// of the first element of an array (n8n's "all items"); or a JSON string.
pub fn reply_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => items.first().and_then(reply_text),
        Value::Object(object) => ["reply", "output", "delta", "content", "text"]
            .iter()
            .find_map(|field| object.get(*field)?.as_str().map(str::to_owned)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn cases() -> ProptestConfig {
        ProptestConfig {
            cases: 10_000,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Feeds `body` cut at `cuts` (any points), then its end; the text
    /// shown and the errors met.
    fn feed(decoder: &mut dyn ReplyDecoder, body: &[u8], cuts: &[usize]) -> (String, usize) {
        let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (body.len() + 1)).collect();
        points.sort();
        points.push(body.len());
        let (mut text, mut errors, mut from) = (String::new(), 0, 0);
        let mut events = Vec::new();
        for point in points {
            events.extend(decoder.push(&body[from..point]));
            from = point;
        }
        events.extend(decoder.finish());
        for event in events {
            match event {
                Ok(AgentEvent::Text(piece)) => text.push_str(&piece),
                Ok(other) => panic!("a reply yields only text, not {other:?}"),
                Err(_) => errors += 1,
            }
        }
        (text, errors)
    }

    /// One line of NDJSON for `text`, in one of the shapes workflows send.
    fn line_for(text: &str, shape: u8) -> String {
        match shape % 5 {
            0 => json!(text).to_string(),
            1 => json!({"delta": text}).to_string(),
            2 => json!({"output": text, "n": 1e300}).to_string(),
            3 => json!([{"reply": text}]).to_string(),
            _ => json!({"content": text, "extra": {"deep": [[[null]]]}}).to_string(),
        }
    }

    proptest! {
        #![proptest_config(cases())]

        #[test]
        fn a_text_reply_is_its_bytes_however_it_is_cut(
            body in prop::collection::vec(any::<u8>(), 0..512),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let (text, errors) = feed(&mut TextReply::default(), &body, &cuts);
            prop_assert_eq!(errors, 0);
            prop_assert_eq!(text, String::from_utf8_lossy(&body));
        }

        #[test]
        fn a_utf8_text_reply_arrives_byte_for_byte(
            body in any::<String>(),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let (text, _) = feed(&mut TextReply::default(), body.as_bytes(), &cuts);
            prop_assert_eq!(text, body);
        }

        #[test]
        fn every_ndjson_line_is_shown_once_in_order(
            texts in prop::collection::vec(any::<String>(), 0..8),
            shapes in prop::collection::vec(any::<u8>(), 8),
            crlf in any::<bool>(),
            final_newline in any::<bool>(),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            let mut body = texts
                .iter()
                .zip(&shapes)
                .map(|(text, shape)| line_for(text, *shape))
                .collect::<Vec<_>>()
                .join(&format!("{end}{end}"));
            if final_newline {
                body.push_str(end);
            }
            let (text, errors) = feed(&mut LinesReply::default(), body.as_bytes(), &cuts);
            prop_assert_eq!(errors, 0);
            prop_assert_eq!(text, texts.concat());
        }

        #[test]
        fn any_ndjson_bytes_give_text_or_errors_never_a_panic(
            body in prop::collection::vec(any::<u8>(), 0..512).prop_map(|bytes| {
                // Any bytes, with many of the ones NDJSON is made of.
                bytes.into_iter().map(|byte| match byte % 8 { 0 => b'\n', 1 => b'{', 2 => b'"', _ => byte }).collect::<Vec<u8>>()
            }),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            feed(&mut LinesReply::default(), &body, &cuts);
        }

        #[test]
        fn a_json_reply_is_its_text_or_a_clear_error(
            text in any::<String>(),
            shape in any::<u8>(),
            garbage in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            prop_assert_eq!(json_reply(line_for(&text, shape).as_bytes()).unwrap(), text);
            if let Err(error) = json_reply(&garbage) {
                prop_assert!(error.0.starts_with("the workflow"));
            }
        }
    }

    #[test]
    fn replies_are_found_where_n8n_puts_them() {
        assert_eq!(
            reply_text(&json!({"reply": "hola"})).as_deref(),
            Some("hola")
        );
        assert_eq!(
            reply_text(&json!([{"output": "hola"}])).as_deref(),
            Some("hola")
        );
        assert_eq!(reply_text(&json!("hola")).as_deref(), Some("hola"));
        assert_eq!(reply_text(&json!({"answer": 5})), None);
    }

    #[test]
    fn a_last_line_without_its_newline_is_shown() {
        let (text, errors) = feed(&mut LinesReply::default(), b"\"a\"\n{\"delta\":\"b\"}", &[]);
        assert_eq!((text.as_str(), errors), ("ab", 0));
    }

    #[test]
    fn text_after_a_byte_that_is_not_utf8_is_shown() {
        let (text, _) = feed(&mut TextReply::default(), b"ok \xff then more", &[4]);
        assert_eq!(text, "ok \u{FFFD} then more");
    }
}
