//! What the benches share: every client of a bench connects from 127.0.0.1
//! and sends as fast as it can, so the tenant's rate limits are lifted.

use tertulia_actors::model::RateLimits;

/// Rate limits no bench reaches.
pub fn unlimited() -> RateLimits {
    RateLimits {
        api_key_per_minute: 1_000_000,
        ip_per_minute: 1_000_000,
        session_messages_per_minute: 1_000_000,
        webchat_session_per_minute: 1_000_000,
        webchat_ip_per_minute: 1_000_000,
    }
}
