//! Identifiers: ULIDs for messages and history entries, lease ids, message ids.
//!
//! A message id names its item directly: `<ULID>:<conversationId>`, so every call that carries a
//! message id is a direct key access (no lookup index).

use crate::clock::Millis;
use crate::error::AppError;
use std::sync::Mutex;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// 128 random bits from the operating system.
pub fn random_u128() -> u128 {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("operating system randomness");
    u128::from_le_bytes(b)
}

/// A uniform float in [0, 1) (used for backoff jitter).
pub fn random_unit() -> f64 {
    (random_u128() >> 75) as f64 / (1u64 << 53) as f64
}

fn encode(v: u128) -> String {
    let mut out = [0u8; 26];
    for (i, c) in out.iter_mut().enumerate() {
        let shift = 125 - 5 * i as u32;
        *c = CROCKFORD[((v >> shift) & 0x1f) as usize];
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

/// The last ULID made by this process (time, random part), if any.
static LAST: Mutex<Option<(u64, u128)>> = Mutex::new(None);

/// A ULID for time `ms`: 48 bits of time then 80 random bits, monotonic within this process
/// (two ids made in the same millisecond sort in creation order).
pub fn ulid(ms: Millis) -> String {
    let ms = ms.max(0) as u64 & ((1 << 48) - 1);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let (ms, rand) = match *last {
        Some((lms, lrand)) if ms <= lms && lrand < (1u128 << 80) - 1 => (lms, lrand + 1),
        _ => (ms, random_u128() & ((1u128 << 80) - 1)),
    };
    *last = Some((ms, rand));
    encode(((ms as u128) << 80) | rand)
}

pub fn is_ulid(s: &str) -> bool {
    s.len() == 26 && s.bytes().all(|b| CROCKFORD.contains(&b))
}

/// What the claim saw behind the claimed message: lets complete/fail pick the right conditional
/// write first. A wrong hint costs one retry, never correctness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseHint {
    /// Other open messages were queued behind this one.
    More,
    /// This was the last open message of its conversation.
    Last,
}

/// A lease id: `<ULID>-<m|l>`.
pub fn lease_id(now: Millis, hint: LeaseHint) -> String {
    let h = match hint {
        LeaseHint::More => 'm',
        LeaseHint::Last => 'l',
    };
    format!("{}-{h}", ulid(now))
}

pub fn lease_hint(lease_id: &str) -> LeaseHint {
    if lease_id.ends_with("-m") { LeaseHint::More } else { LeaseHint::Last }
}

/// The checks every caller-supplied text id passes: not blank, at most `max_bytes`, no control
/// characters. The caps keep every key far below DynamoDB's limits (2,048-byte partition key,
/// 1,024-byte sort key), so an over-long id is a `ValidationError`, never an SDK error.
pub fn check_text(field: &str, v: &str, max_bytes: usize) -> Result<(), AppError> {
    if v.trim().is_empty() {
        return Err(AppError::validation(format!("{field} is required and must not be blank")));
    }
    if v.len() > max_bytes {
        return Err(AppError::validation(format!("{field} is longer than {max_bytes} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(AppError::validation(format!("{field} must not contain control characters")));
    }
    Ok(())
}

/// Longest conversation id (its key `C#<id>` is a partition key).
pub const MAX_CONVERSATION_ID_BYTES: usize = 512;
/// Longest worker id (the workers table's partition key).
pub const MAX_WORKER_ID_BYTES: usize = 128;

/// A conversation id that passed [`check_text`]: only valid values can be held.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConversationId(String);

impl ConversationId {
    pub fn parse(v: &str) -> Result<Self, AppError> {
        check_text("conversationId", v, MAX_CONVERSATION_ID_BYTES)?;
        Ok(Self(v.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A worker id that passed [`check_text`]: only valid values can be held.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerId(String);

impl WorkerId {
    pub fn parse(v: &str) -> Result<Self, AppError> {
        check_text("workerId", v, MAX_WORKER_ID_BYTES)?;
        Ok(Self(v.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A parsed message id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub ulid: String,
    pub conversation_id: String,
}

impl MessageRef {
    pub fn id(&self) -> String {
        format!("{}:{}", self.ulid, self.conversation_id)
    }

    pub fn parse(message_id: &str) -> Result<Self, AppError> {
        let bad = || {
            AppError::validation(format!(
                "messageId '{}' is not a message id (expected '<ULID>:<conversationId>')",
                truncate(message_id, 120)
            ))
        };
        let (u, c) = message_id.split_once(':').ok_or_else(bad)?;
        if !is_ulid(u) || c.is_empty() {
            return Err(bad());
        }
        let c = ConversationId::parse(c)
            .map_err(|e| AppError::validation(format!("messageId '{}': {e}", truncate(message_id, 60))))?;
        Ok(Self { ulid: u.to_string(), conversation_id: c.into_string() })
    }
}

/// Shorten a caller-supplied string for an error message.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let t: String = s.chars().take(max).collect();
        format!("{t}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_sort_by_time_then_creation() {
        let a = ulid(1_000);
        let b = ulid(1_000);
        let c = ulid(2_000);
        assert!(is_ulid(&a) && is_ulid(&b) && is_ulid(&c));
        assert!(a < b, "same millisecond keeps creation order");
        assert!(b < c);
        // The time prefix encodes the millisecond.
        assert!(ulid(0) < ulid(1_700_000_000_000));
    }

    #[test]
    fn ids_for_the_same_instant_differ_and_are_not_counted_from_zero() {
        let a = ulid(0);
        let b = ulid(0);
        assert_ne!(a, b);
        assert!(a < b);
        assert_ne!(&a[10..], "0000000000000001", "the random part is drawn, not counted from zero");
    }

    #[test]
    fn message_ids_round_trip_and_reject_garbage() {
        let r = MessageRef { ulid: ulid(5), conversation_id: "tg:bot:42".into() };
        let p = MessageRef::parse(&r.id()).unwrap();
        assert_eq!(p, r);
        assert!(MessageRef::parse("nope").is_err());
        assert!(MessageRef::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV:").is_err());
        assert!(MessageRef::parse("short:conv").is_err());
        let long = format!("{}:{}", ulid(5), "c".repeat(3_000));
        assert_eq!(MessageRef::parse(&long).unwrap_err().code().as_str(), "ValidationError", "beyond the key limit");
        assert!(ConversationId::parse(&"c".repeat(512)).is_ok());
        assert!(ConversationId::parse(&"c".repeat(513)).is_err());
        assert!(WorkerId::parse("w\u{0}").is_err() && WorkerId::parse(" ").is_err());
    }

    #[test]
    fn lease_ids_carry_their_hint() {
        assert_eq!(lease_hint(&lease_id(1, LeaseHint::More)), LeaseHint::More);
        assert_eq!(lease_hint(&lease_id(1, LeaseHint::Last)), LeaseHint::Last);
        assert_ne!(lease_id(1, LeaseHint::Last), lease_id(1, LeaseHint::Last));
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..1000 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
