//! Usage metering rules, pure: validation, the UTC day of an instant, the counter shard of a
//! message, and whose usage a message is.

use super::model::Usage;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};

/// Counter shards per (agent, day): completes of one agent spread over this many items. 32 keeps
/// each under ~320 writes/s even when a single agent takes 10,000 messages/s (issue 12); it was
/// 8, and counters written then sit in shards 0..7, which the reads still cover.
pub const AGENT_SHARDS: u32 = 32;
/// Largest accepted token count or cost of one message.
pub const MAX_UNITS: u64 = 1_000_000_000_000;
/// Longest model name, in bytes.
pub const MAX_MODEL_BYTES: usize = 128;
/// Most days one stats read covers (default 30).
pub const MAX_DAYS: i64 = 366;
pub const DEFAULT_DAYS: i64 = 30;
const DAY_MS: Millis = 86_400_000;

/// Refuse usage that cannot be true (before anything is written).
pub fn validate(u: &Usage) -> AppResult<()> {
    for (name, v) in
        [("inputTokens", u.input_tokens), ("outputTokens", u.output_tokens), ("costMicros", u.cost_micros.unwrap_or(0))]
    {
        if v > MAX_UNITS {
            return Err(AppError::validation(format!("usage.{name} must be at most {MAX_UNITS}")));
        }
    }
    if let Some(m) = &u.model {
        crate::ids::check_text("usage.model", m, MAX_MODEL_BYTES)?;
    }
    Ok(())
}

/// Days since 1970-01-01 → (year, month, day) (proleptic Gregorian; H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The UTC day of `at`: `YYYY-MM-DD`.
pub fn day_of(at: Millis) -> String {
    let (y, m, d) = civil(at.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day range `[from, to]` of the `days` UTC days ending with today (`days` clamped 1..=366).
pub fn day_range(now: Millis, days: Option<i64>) -> (String, String) {
    let n = days.unwrap_or(DEFAULT_DAYS).clamp(1, MAX_DAYS);
    (day_of(now - (n - 1) * DAY_MS), day_of(now))
}

/// Whose usage a message is: `metadata.consumerUserId`, else the user of a
/// `user-agent:<agentKey>:<consumerUserId>` conversation, else nobody's (counted for the agent only).
pub fn consumer_user_of(conversation_id: &str, agent_key: &str, metadata_user: Option<&str>) -> Option<String> {
    if let Some(u) = metadata_user.map(str::trim).filter(|u| !u.is_empty()) {
        return Some(u.to_string());
    }
    conversation_id
        .strip_prefix("user-agent:")
        .and_then(|r| r.strip_prefix(agent_key))
        .and_then(|r| r.strip_prefix(':'))
        .filter(|u| !u.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(-1), "1969-12-31");
        assert_eq!(day_of(1_700_000_000_000), "2023-11-14");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
        assert_eq!(day_of(951_868_799_999), "2000-02-29");
        assert_eq!(day_of(951_868_800_000), "2000-03-01");
        assert_eq!(day_of(4_107_542_400_000), "2100-03-01");
        assert_eq!(day_range(1_700_000_000_000, Some(3)), ("2023-11-12".into(), "2023-11-14".into()));
        assert_eq!(day_range(1_700_000_000_000, Some(0)).0, "2023-11-14");
        assert_eq!(day_range(1_700_000_000_000, None).0, "2023-10-16");
    }

    #[test]
    fn usage_bounds_and_owner() {
        let u = Usage { input_tokens: 1, output_tokens: MAX_UNITS, model: Some("m".into()), cost_micros: None };
        assert!(validate(&u).is_ok());
        assert!(validate(&Usage { output_tokens: MAX_UNITS + 1, ..u.clone() }).is_err());
        assert!(validate(&Usage { cost_micros: Some(MAX_UNITS + 1), ..u.clone() }).is_err());
        assert!(validate(&Usage { model: Some("x".repeat(129)), ..u.clone() }).is_err());
        assert!(validate(&Usage { model: Some("a\u{0}".into()), ..u }).is_err());
        assert_eq!(consumer_user_of("c", "bot", Some(" u1 ")).as_deref(), Some("u1"));
        assert_eq!(consumer_user_of("user-agent:bot:u2", "bot", None).as_deref(), Some("u2"));
        assert_eq!(consumer_user_of("user-agent:bot:u2", "other", None), None);
        assert_eq!(consumer_user_of("user-agent:bot:", "bot", Some("")), None);
        assert_eq!(consumer_user_of("telegram:1:2", "bot", None), None);
    }
}
