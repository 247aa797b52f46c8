//! `X-Request-Id`: the caller's id for a request, when it is a sane one, or
//! a new one; put back on the request (handlers and logs see the same id)
//! and echoed on the response. Part of the accept loop (`server/mod.rs`).

use warp::http::{HeaderMap, HeaderValue};

pub const HEADER: &str = "x-request-id";
/// The longest id taken from a caller; longer (or odd) ones are replaced.
const MAX_LEN: usize = 128;

/// The request's id: the caller's if it is 1 to 128 characters of letters,
/// digits and `-_.:`, else a new UUID. Either way it is in `headers` after.
pub fn of(headers: &mut HeaderMap) -> String {
    let given = headers
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_sane(id))
        .map(str::to_owned);
    let id = given.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(HEADER, value);
    }
    id
}

/// Puts the request's id on its response.
pub fn echo(headers: &mut HeaderMap, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(HEADER, value);
    }
}

fn is_sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_id_is_kept_and_any_other_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("req-42:a.b_c"));
        assert_eq!(of(&mut headers), "req-42:a.b_c");
        for odd in ["", "has space", &"x".repeat(129), "naïve"] {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(odd) {
                headers.insert(HEADER, value);
            }
            let id = of(&mut headers);
            assert_ne!(id, odd);
            assert_eq!(id.len(), 36, "a new UUID");
            assert_eq!(headers[HEADER], id.as_str());
        }
    }
}
