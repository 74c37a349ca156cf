//! The queue's rules as pure functions of plain values and "now": validation, priorities,
//! backoff, keys, and the claim and fail decisions. The DynamoDB store carries them out.

use crate::agents::model::MessageConfig;
use crate::clock::Millis;
use crate::conversations::model::ConversationItem;
use crate::error::{AppError, AppResult, LeaseRefusal};
use crate::ids::{LeaseHint, truncate};
use crate::queue::model::QueuePolicy;
use crate::queue::model::{MessageItem, MessageKeys, MessageStatus, Payload};
use crate::workers::model::{WorkerItem, WorkerStatus};

pub const LEASE_EXPIRED_ERROR: &str = "Lease expired while processing";
pub const MAX_ERROR_MESSAGE_CHARS: usize = 4_000;

fn check_text(field: &str, v: &str, max_bytes: usize) -> AppResult<()> {
    crate::ids::check_text(field, v, max_bytes)
}

pub fn validate_conversation_id(v: &str) -> AppResult<()> {
    crate::ids::ConversationId::parse(v).map(drop)
}

pub fn validate_worker_id(v: &str) -> AppResult<()> {
    crate::ids::WorkerId::parse(v).map(drop)
}

/// Attachments per message (spec W-7: at most 10).
pub const MAX_ATTACHMENTS: usize = 10;

/// A storage id: 1..=128 characters of `A-Z a-z 0-9 _ -` (it becomes an object key).
pub fn validate_storage_id(v: &str) -> AppResult<()> {
    if v.is_empty() || v.len() > 128 || !v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')) {
        return Err(AppError::validation(format!(
            "storageId '{}' must be 1 to 128 letters, digits, '_' or '-'",
            truncate(v, 40)
        )));
    }
    Ok(())
}

pub fn validate_workspace_id(v: &str) -> AppResult<()> {
    check_text("workspaceId", v, 128)
}

/// The caller must hold the conversation's live lock (append, and the other writes a worker makes
/// to a conversation it is processing).
pub fn check_lock_holder(c: &ConversationItem, worker_id: &str, now: Millis) -> AppResult<()> {
    match (&c.lock_worker_id, c.lock_until) {
        (Some(w), Some(until)) if w == worker_id && until > now => Ok(()),
        (Some(w), Some(_)) if w == worker_id => Err(AppError::lease(
            LeaseRefusal::LeaseExpired,
            format!("your lease on conversation '{}' has expired", c.conversation_id),
        )),
        _ => Err(AppError::Forbidden(format!(
            "conversation '{}' is not locked by this worker: only the holder of its live lease may write to it",
            c.conversation_id
        ))),
    }
}

pub fn validate_agent_key(v: &str) -> AppResult<()> {
    check_text("agentKey", v, 128)?;
    if !v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(AppError::validation(format!(
            "agentKey '{}' may only contain letters, digits, '-', '_' and '.'",
            truncate(v, 64)
        )));
    }
    Ok(())
}

/// `priority` clamped to 0..=maxPriority; NaN and infinities are refused (W18).
pub fn resolve_priority(p: Option<f64>, pol: &QueuePolicy) -> AppResult<f64> {
    match p {
        None => Ok(pol.default_priority),
        Some(v) if !v.is_finite() => Err(AppError::validation("priority must be a finite number")),
        Some(v) => Ok(v.clamp(0.0, pol.max_priority)),
    }
}

pub fn resolve_max_attempts(m: Option<i64>, pol: &QueuePolicy) -> AppResult<u32> {
    match m {
        None => Ok(pol.default_max_attempts),
        Some(v) if (1..=100).contains(&v) => Ok(v as u32),
        Some(v) => Err(AppError::validation(format!("maxAttempts must be between 1 and 100, got {v}"))),
    }
}

pub fn resolve_scheduled_for(s: Option<i64>, now: Millis, pol: &QueuePolicy) -> AppResult<Millis> {
    match s {
        None => Ok(now),
        Some(v) if v < 0 => Err(AppError::validation("scheduledFor must not be negative")),
        Some(v) if v > now + pol.max_schedule_ahead_ms => Err(AppError::validation(format!(
            "scheduledFor {v} is more than {} days ahead",
            pol.max_schedule_ahead_ms / 86_400_000
        ))),
        Some(v) => Ok(v),
    }
}

/// The payload as stored (spec §7.1 step 4), or why it is refused.
pub fn build_payload(mut p: Payload, cfg: Option<&MessageConfig>, pol: &QueuePolicy) -> AppResult<Payload> {
    let trimmed = p.provider_user_id.trim().to_string();
    if trimmed.is_empty() {
        return Err(AppError::validation(format!(
            "providerUserId is required but missing in payload.providerUserId={}",
            serde_json::Value::String(p.provider_user_id.clone())
        )));
    }
    check_text("payload.provider", &p.provider, 64)?;
    if let Some(x) = &p.external_message_id {
        check_text("payload.externalMessageId", x, 256)?;
    }
    p.provider_user_id = trimmed.clone();
    p.metadata.get_or_insert_with(Default::default).insert("providerUserId".into(), trimmed);
    if let Some(prompt) = cfg.and_then(|c| c.system_prompt.as_deref()).map(str::trim).filter(|s| !s.is_empty()) {
        let text = p.message_text.trim_end();
        p.message_text = if text.trim().is_empty() { prompt.to_string() } else { format!("{text}\n\n{prompt}") };
    }
    if let Some(atts) = p.attachments.as_mut() {
        if atts.len() > MAX_ATTACHMENTS {
            return Err(AppError::validation(format!(
                "payload.attachments has {} entries; at most {MAX_ATTACHMENTS}",
                atts.len()
            )));
        }
        for (i, a) in atts.iter_mut().enumerate() {
            validate_storage_id(&a.storage_id)
                .map_err(|e| AppError::validation(format!("payload.attachments[{i}]: {e}")))?;
            check_text(&format!("payload.attachments[{i}].telegramFileId"), &a.telegram_file_id, 256)
                .or_else(|e| if a.telegram_file_id.is_empty() { Ok(()) } else { Err(e) })?;
            if a.size_bytes.is_some_and(|n| n > pol.max_attachment_bytes) {
                return Err(AppError::PayloadTooLarge(format!(
                    "payload.attachments[{i}] is {} bytes; Telegram bots can download at most {} bytes (20 MB)",
                    a.size_bytes.unwrap_or(0),
                    pol.max_attachment_bytes
                )));
            }
            // URLs are made fresh at hydration; a caller-supplied one is never stored (W18).
            a.download_url = None;
        }
    }
    let size = serde_json::to_vec(&p).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > pol.max_payload_bytes {
        return Err(AppError::PayloadTooLarge(format!(
            "payload is {size} bytes; the limit is {} bytes",
            pol.max_payload_bytes
        )));
    }
    Ok(p)
}

/// Delay before retry number `n` (n ≥ 1), spec §9, with `r` uniform in [0, 1).
pub fn backoff_delay(n: u32, r: f64, pol: &QueuePolicy) -> Millis {
    let exp = (pol.retry_base_delay_ms as f64) * 2f64.powi(n.saturating_sub(1).min(60) as i32);
    let bounded = exp.clamp(pol.retry_base_delay_ms as f64, pol.retry_max_delay_ms as f64) as i64;
    let jitter = (bounded as f64 * pol.retry_jitter_ratio * r.clamp(0.0, 0.9999)).floor() as i64;
    bounded + jitter
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailOutcome {
    Requeue { at: Millis },
    DeadLetter,
}

/// What a failure does to a message that had `attempts` failures before.
pub fn plan_fail(attempts: u32, max_attempts: u32, now: Millis, r: f64, pol: &QueuePolicy) -> (u32, FailOutcome) {
    let n = attempts + 1;
    if n >= max_attempts {
        (n, FailOutcome::DeadLetter)
    } else {
        (n, FailOutcome::Requeue { at: now + backoff_delay(n, r, pol) })
    }
}

/// Whether `worker`/`lease` still holds `msg` at `now`; the precise refusal otherwise.
pub fn check_lease(msg: &MessageItem, worker_id: &str, lease_id: &str, now: Millis) -> AppResult<()> {
    if msg.status != MessageStatus::Processing {
        return Err(AppError::lease(
            LeaseRefusal::NotProcessing,
            format!("message {} is {}, not processing", msg.message_id, msg.status.as_str()),
        ));
    }
    if msg.lease_id.as_deref() != Some(lease_id) || msg.claimed_by.as_deref() != Some(worker_id) {
        return Err(AppError::lease(
            LeaseRefusal::LeaseMismatch,
            format!("worker '{worker_id}' does not hold lease '{lease_id}' on message {}", msg.message_id),
        ));
    }
    let until = msg.lease_expires_at.unwrap_or(0);
    if until <= now {
        return Err(AppError::lease(
            LeaseRefusal::LeaseExpired,
            format!("lease '{lease_id}' on message {} expired at {until} (now {now})", msg.message_id),
        ));
    }
    Ok(())
}

/// The caller must hold the live lease of the message (hydration, media, metadata). Anyone but
/// the holder gets 403 (nothing about the job is revealed); the holder whose lease ran out gets
/// 409 `lease_expired`.
pub fn check_holder(msg: &MessageItem, worker_id: &str, lease_id: Option<&str>, now: Millis) -> AppResult<()> {
    let holds = msg.status == MessageStatus::Processing
        && msg.claimed_by.as_deref() == Some(worker_id)
        && lease_id.is_none_or(|l| msg.lease_id.as_deref() == Some(l));
    if !holds {
        return Err(AppError::Forbidden(format!("message {} is not leased to worker '{worker_id}'", msg.message_id)));
    }
    let until = msg.lease_expires_at.unwrap_or(0);
    if until <= now {
        return Err(AppError::lease(
            LeaseRefusal::LeaseExpired,
            format!("your lease on message {} expired at {until} (now {now})", msg.message_id),
        ));
    }
    Ok(())
}

/// Why a conversation gave nothing to claim.
#[derive(Debug, Clone, PartialEq)]
pub enum NotClaimable {
    Empty,
    Locked { until: Millis },
    Owned { by: String, until: Millis },
    NotDue { at: Millis },
}

/// A claim attempt's plan for one conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimPlan {
    /// Take the head: queued, due, conversation unlocked and not owned by another live worker.
    Claim { head: MessageItem, hint: LeaseHint },
    /// The head is processing under an expired lease: take it again; the expiry counts as an attempt.
    Reclaim { head: MessageItem, hint: LeaseHint },
    /// The head's lease expired and it has used all its attempts: dead-letter it, then look again.
    DeadLetterExpired { head: MessageItem },
    /// The lock expired on a message that is not the head: recover that message first.
    RecoverLocked { msg_sk: String },
    /// Nothing to claim; `repair_ready_at` corrects the conversation's `readyAt` (Some(None) = remove).
    Nothing { why: NotClaimable, repair_ready_at: Option<Option<Millis>> },
}

/// Decide a claim from a consistent read of the conversation and its first open messages.
pub fn plan_claim(conv: &ConversationItem, open: &[MessageItem], worker_id: &str, now: Millis) -> ClaimPlan {
    let Some(head) = open.first() else {
        let repair = (conv.ready_at.is_some() && conv.open_count <= 0 && conv.lock_lease_id.is_none()).then_some(None);
        return ClaimPlan::Nothing { why: NotClaimable::Empty, repair_ready_at: repair };
    };
    let hint = if open.len() > 1 { LeaseHint::More } else { LeaseHint::Last };
    if let (Some(owner), Some(until)) = (&conv.owner_id, conv.owner_until)
        && owner != worker_id
        && until > now
    {
        let repair = (conv.ready_at.is_some_and(|r| r < until)).then_some(Some(until));
        return ClaimPlan::Nothing { why: NotClaimable::Owned { by: owner.clone(), until }, repair_ready_at: repair };
    }
    let expired_head = |head: &MessageItem| {
        if head.attempts + 1 >= head.max_attempts {
            ClaimPlan::DeadLetterExpired { head: head.clone() }
        } else {
            ClaimPlan::Reclaim { head: head.clone(), hint }
        }
    };
    if conv.lock_lease_id.is_some() {
        let until = conv.lock_until.unwrap_or(0);
        if until > now {
            return ClaimPlan::Nothing { why: NotClaimable::Locked { until }, repair_ready_at: None };
        }
        return match &conv.lock_msg_sk {
            Some(sk) if *sk == head.sk => expired_head(head),
            Some(sk) => ClaimPlan::RecoverLocked { msg_sk: sk.clone() },
            None => expired_head(head),
        };
    }
    if head.status == MessageStatus::Processing {
        // Processing without a lock cannot be written by this code; recover it by time.
        let until = head.lease_expires_at.unwrap_or(0);
        if until > now {
            return ClaimPlan::Nothing { why: NotClaimable::Locked { until }, repair_ready_at: None };
        }
        return expired_head(head);
    }
    if head.scheduled_for > now {
        let at = head.scheduled_for;
        let repair = (conv.ready_at.is_some_and(|r| r < at)).then_some(Some(at));
        return ClaimPlan::Nothing { why: NotClaimable::NotDue { at }, repair_ready_at: repair };
    }
    ClaimPlan::Claim { head: head.clone(), hint }
}

/// What recovering a lease does to its old holder's worker row.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReleasePlan {
    /// One job less (never below 0).
    pub lower_load: bool,
    /// The row still records the recovered lease as its assignment: the worker holds no lock any
    /// more (a worker holds at most one), so its assignment is released.
    pub unassign: bool,
}

/// The release of a recovered lease `lease` held by `w`. A stopped worker's row is left alone.
pub fn plan_release(w: &WorkerItem, lease: Option<&str>) -> ReleasePlan {
    if w.status == WorkerStatus::Stopped {
        return ReleasePlan::default();
    }
    ReleasePlan { lower_load: w.load > 0, unassign: lease.is_some_and(|l| w.assigned_lease_id.as_deref() == Some(l)) }
}

/// What a new message needs; see [`new_message`].
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Where the store keeps the message (its key formats are the store's business).
    pub keys: MessageKeys,
    pub conversation_id: String,
    pub agent_key: String,
    pub ulid: String,
    pub payload: Payload,
    pub priority: f64,
    pub due: Millis,
    pub max_attempts: u32,
    pub now: Millis,
}

/// A message as enqueue stores it: queued, open, no attempts.
pub fn new_message(m: NewMessage) -> MessageItem {
    let message_id = crate::ids::MessageRef { ulid: m.ulid.clone(), conversation_id: m.conversation_id.clone() }.id();
    MessageItem {
        pk: m.keys.pk,
        sk: m.keys.sk,
        open_key: Some(m.keys.open_key),
        message_id,
        conversation_id: m.conversation_id,
        agent_key: m.agent_key,
        payload: m.payload,
        status: MessageStatus::Queued,
        status_key: m.keys.status_key,
        status_part: Some(m.keys.status_part),
        priority: m.priority,
        scheduled_for: m.due,
        enqueued_for: m.due,
        attempts: 0,
        max_attempts: m.max_attempts,
        claimed_by: None,
        lease_id: None,
        lease_expires_at: None,
        last_error: None,
        next_retry_at: None,
        dead_lettered_at: None,
        completed_at: None,
        created_at: m.now,
        ttl: None,
    }
}

/// An error message as stored: bounded (W18).
pub fn bounded_error(msg: &str) -> String {
    truncate(msg, MAX_ERROR_MESSAGE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::model::Payload;

    fn pol() -> QueuePolicy {
        QueuePolicy::default()
    }

    fn payload(user: &str) -> Payload {
        Payload {
            provider: "telegram".into(),
            provider_user_id: user.into(),
            message_text: "hello  ".into(),
            external_message_id: None,
            raw_update_json: None,
            metadata: None,
            attachments: None,
        }
    }

    fn conv() -> ConversationItem {
        ConversationItem {
            pk: "C#c1".into(),
            sk: "CONV".into(),
            open_key: "!CONV".into(),
            conversation_id: "c1".into(),
            agent_key: "a".into(),
            created_at: 0,
            open_count: 1,
            ready_shard: "r0".into(),
            ready_at: Some(100),
            priority: Some(50.0),
            lock_lease_id: None,
            lock_worker_id: None,
            lock_msg_sk: None,
            lock_until: None,
            lock_heartbeat_at: None,
            owner_id: None,
            owner_until: None,
            rev: 1,
            history_workspace_id: None,
            history_at: None,
            head_seq: None,
            next_priority: None,
            next_seq: None,
            due_rank: None,
            next_rank: None,
        }
    }

    #[test]
    fn only_the_live_holder_passes() {
        let mut m = msg("01J0000000000000000000000A", MessageStatus::Processing, 0);
        m.claimed_by = Some("w1".into());
        m.lease_id = Some("L1".into());
        m.lease_expires_at = Some(1_000);
        assert!(check_holder(&m, "w1", None, 999).is_ok());
        assert!(check_holder(&m, "w1", Some("L1"), 999).is_ok());
        let code = |r: AppResult<()>| r.unwrap_err().code().as_str();
        assert_eq!(code(check_holder(&m, "w2", None, 999)), "Forbidden");
        assert_eq!(code(check_holder(&m, "w1", Some("L0"), 999)), "Forbidden");
        let late = check_holder(&m, "w1", None, 1_000).unwrap_err();
        assert_eq!(late.lease_refusal(), Some(LeaseRefusal::LeaseExpired));
        m.status = MessageStatus::Done;
        assert_eq!(code(check_holder(&m, "w1", None, 0)), "Forbidden", "a finished job is nobody's");

        let mut c = conv();
        assert_eq!(code(check_lock_holder(&c, "w1", 0)), "Forbidden", "unlocked");
        c.lock_worker_id = Some("w1".into());
        c.lock_until = Some(500);
        assert!(check_lock_holder(&c, "w1", 499).is_ok());
        assert_eq!(check_lock_holder(&c, "w1", 500).unwrap_err().lease_refusal(), Some(LeaseRefusal::LeaseExpired));
        assert_eq!(code(check_lock_holder(&c, "w2", 499)), "Forbidden");
    }

    #[test]
    fn attachments_are_bounded_and_never_keep_a_url() {
        let pol = QueuePolicy::default();
        let att = |id: &str, size: Option<u64>| crate::queue::model::Attachment {
            kind: crate::queue::model::AttachmentKind::Photo,
            status: crate::queue::model::AttachmentStatus::Ready,
            storage_id: id.into(),
            telegram_file_id: String::new(),
            file_name: None,
            mime_type: None,
            size_bytes: size,
            expires_at: 1,
            download_url: Some("https://x".into()),
        };
        let with = |atts: Vec<crate::queue::model::Attachment>| Payload { attachments: Some(atts), ..payload("u") };
        let ok = build_payload(with(vec![att("m1", Some(pol.max_attachment_bytes))]), None, &pol).unwrap();
        assert_eq!(ok.attachments.unwrap()[0].download_url, None);
        let too_big = build_payload(with(vec![att("m1", Some(pol.max_attachment_bytes + 1))]), None, &pol).unwrap_err();
        assert_eq!(too_big.code().as_str(), "PayloadTooLarge");
        assert!(too_big.to_string().contains("20 MB"));
        let many = (0..=MAX_ATTACHMENTS).map(|i| att(&format!("m{i}"), None)).collect();
        assert!(build_payload(with(many), None, &pol).unwrap_err().to_string().contains("at most 10"));
        for bad in ["", "../x", "a/b", &"x".repeat(129)] {
            assert!(validate_storage_id(bad).is_err(), "{bad}");
        }
        assert!(validate_storage_id("m01J-abc_9").is_ok());
    }

    fn msg(ulid: &str, status: MessageStatus, scheduled_for: Millis) -> MessageItem {
        let mut m = new_message(NewMessage {
            keys: MessageKeys {
                pk: "C#c1".into(),
                sk: format!("M#{ulid}"),
                open_key: format!("Q#{scheduled_for:013}#{ulid}"),
                status_key: format!("{scheduled_for:013}#{ulid}"),
                status_part: "queued#00".into(),
            },
            conversation_id: "c1".into(),
            agent_key: "a".into(),
            ulid: ulid.into(),
            payload: payload("u"),
            priority: 50.0,
            due: scheduled_for,
            max_attempts: 5,
            now: 0,
        });
        m.status = status;
        m
    }

    #[test]
    fn priority_defaults_clamps_and_refuses_nan() {
        assert_eq!(resolve_priority(None, &pol()).unwrap(), 50.0);
        assert_eq!(resolve_priority(Some(250.0), &pol()).unwrap(), 100.0);
        assert_eq!(resolve_priority(Some(-3.0), &pol()).unwrap(), 0.0);
        assert_eq!(resolve_priority(Some(7.5), &pol()).unwrap(), 7.5);
        assert!(resolve_priority(Some(f64::NAN), &pol()).is_err());
        assert!(resolve_priority(Some(f64::INFINITY), &pol()).is_err());
    }

    #[test]
    fn max_attempts_and_schedule_bounds() {
        assert_eq!(resolve_max_attempts(None, &pol()).unwrap(), 5);
        assert_eq!(resolve_max_attempts(Some(1), &pol()).unwrap(), 1);
        assert!(resolve_max_attempts(Some(0), &pol()).is_err());
        assert!(resolve_max_attempts(Some(-2), &pol()).is_err());
        assert_eq!(resolve_scheduled_for(None, 9, &pol()).unwrap(), 9);
        assert_eq!(resolve_scheduled_for(Some(5), 9, &pol()).unwrap(), 5);
        assert!(resolve_scheduled_for(Some(-1), 9, &pol()).is_err());
        assert!(resolve_scheduled_for(Some(9 + 400 * 86_400_000), 9, &pol()).is_err());
    }

    #[test]
    fn payload_is_trimmed_tagged_and_prompted() {
        let cfg = MessageConfig { system_prompt: Some("  Be brief. ".into()), telegram_attachment_retention_ms: None };
        let p = build_payload(payload("  42 "), Some(&cfg), &pol()).unwrap();
        assert_eq!(p.provider_user_id, "42");
        assert_eq!(p.metadata.unwrap()["providerUserId"], "42");
        assert_eq!(p.message_text, "hello\n\nBe brief.");
        let mut empty = payload("42");
        empty.message_text = "   ".into();
        assert_eq!(build_payload(empty, Some(&cfg), &pol()).unwrap().message_text, "Be brief.");
        assert_eq!(build_payload(payload("42"), None, &pol()).unwrap().message_text, "hello  ");
    }

    #[test]
    fn payload_refusals_are_precise() {
        let e = build_payload(payload("   "), None, &pol()).unwrap_err();
        assert_eq!(e.to_string(), "providerUserId is required but missing in payload.providerUserId=\"   \"");
        let mut big = payload("1");
        big.message_text = "x".repeat(300 * 1024);
        assert!(matches!(build_payload(big, None, &pol()), Err(AppError::PayloadTooLarge(_))));
    }

    #[test]
    fn backoff_follows_the_table() {
        let p = pol();
        for (n, lo, hi) in [
            (1, 1_000, 1_099),
            (2, 2_000, 2_199),
            (3, 4_000, 4_399),
            (4, 8_000, 8_799),
            (7, 64_000, 70_399),
            (8, 120_000, 131_998),
            (40, 120_000, 131_998),
        ] {
            assert_eq!(backoff_delay(n, 0.0, &p), lo, "n={n}");
            assert!(backoff_delay(n, 0.99999, &p) <= hi, "n={n}");
            assert!(backoff_delay(n, 0.5, &p) >= lo);
        }
    }

    #[test]
    fn fail_dead_letters_at_max_attempts() {
        let p = pol();
        assert_eq!(plan_fail(0, 5, 1_000, 0.0, &p), (1, FailOutcome::Requeue { at: 2_000 }));
        assert_eq!(plan_fail(3, 5, 1_000, 0.0, &p), (4, FailOutcome::Requeue { at: 9_000 }));
        assert_eq!(plan_fail(4, 5, 1_000, 0.0, &p).1, FailOutcome::DeadLetter);
        assert_eq!(plan_fail(0, 1, 1_000, 0.0, &p).1, FailOutcome::DeadLetter);
    }

    #[test]
    fn lease_checks_are_by_holder_and_time() {
        let mut m = msg("01AAAAAAAAAAAAAAAAAAAAAAAA", MessageStatus::Processing, 0);
        m.claimed_by = Some("w1".into());
        m.lease_id = Some("L".into());
        m.lease_expires_at = Some(1_000);
        assert!(check_lease(&m, "w1", "L", 999).is_ok());
        assert_eq!(check_lease(&m, "w1", "L", 1_000).unwrap_err().lease_refusal(), Some(LeaseRefusal::LeaseExpired));
        assert_eq!(check_lease(&m, "w2", "L", 10).unwrap_err().lease_refusal(), Some(LeaseRefusal::LeaseMismatch));
        assert_eq!(check_lease(&m, "w1", "X", 10).unwrap_err().lease_refusal(), Some(LeaseRefusal::LeaseMismatch));
        m.status = MessageStatus::Done;
        assert_eq!(check_lease(&m, "w1", "L", 10).unwrap_err().lease_refusal(), Some(LeaseRefusal::NotProcessing));
    }

    #[test]
    fn claim_takes_a_due_head_with_a_hint() {
        let a = msg("01AAAAAAAAAAAAAAAAAAAAAAAA", MessageStatus::Queued, 50);
        let b = msg("01BBBBBBBBBBBBBBBBBBBBBBBB", MessageStatus::Queued, 60);
        match plan_claim(&conv(), &[a.clone(), b], "w", 100) {
            ClaimPlan::Claim { head, hint } => {
                assert_eq!(head.sk, a.sk);
                assert_eq!(hint, LeaseHint::More);
            }
            p => panic!("{p:?}"),
        }
        assert!(matches!(plan_claim(&conv(), &[a], "w", 100), ClaimPlan::Claim { hint: LeaseHint::Last, .. }));
    }

    #[test]
    fn claim_respects_due_time_and_repairs_ready_at() {
        let a = msg("01AAAAAAAAAAAAAAAAAAAAAAAA", MessageStatus::Queued, 500);
        match plan_claim(&conv(), &[a], "w", 100) {
            ClaimPlan::Nothing { why: NotClaimable::NotDue { at: 500 }, repair_ready_at: Some(Some(500)) } => {}
            p => panic!("{p:?}"),
        }
        let mut empty = conv();
        empty.open_count = 0;
        assert_eq!(
            plan_claim(&empty, &[], "w", 100),
            ClaimPlan::Nothing { why: NotClaimable::Empty, repair_ready_at: Some(None) }
        );
    }

    #[test]
    fn claim_honours_live_locks_and_live_owners() {
        let a = msg("01AAAAAAAAAAAAAAAAAAAAAAAA", MessageStatus::Processing, 50);
        let mut c = conv();
        c.lock_lease_id = Some("L".into());
        c.lock_msg_sk = Some(a.sk.clone());
        c.lock_until = Some(1_000);
        assert!(matches!(
            plan_claim(&c, std::slice::from_ref(&a), "w", 999),
            ClaimPlan::Nothing { why: NotClaimable::Locked { until: 1_000 }, .. }
        ));
        // Expired: the head is taken again and the expiry counts.
        assert!(matches!(plan_claim(&c, std::slice::from_ref(&a), "w", 1_000), ClaimPlan::Reclaim { .. }));
        let mut tired = a.clone();
        tired.attempts = 4;
        assert!(matches!(plan_claim(&c, &[tired], "w", 1_000), ClaimPlan::DeadLetterExpired { .. }));
        // A lock on a message that is not the head is recovered first.
        let q = msg("01000000000000000000000000", MessageStatus::Queued, 10);
        assert_eq!(
            plan_claim(&c, &[q.clone(), a], "w", 2_000),
            ClaimPlan::RecoverLocked { msg_sk: c.lock_msg_sk.clone().unwrap() }
        );
        // Owned by another live worker: not for us, and readyAt moves to the owner's deadline.
        let mut o = conv();
        o.owner_id = Some("other".into());
        o.owner_until = Some(5_000);
        assert_eq!(
            plan_claim(&o, std::slice::from_ref(&q), "w", 100),
            ClaimPlan::Nothing {
                why: NotClaimable::Owned { by: "other".into(), until: 5_000 },
                repair_ready_at: Some(Some(5_000))
            }
        );
        assert!(matches!(plan_claim(&o, std::slice::from_ref(&q), "other", 100), ClaimPlan::Claim { .. }));
        assert!(matches!(plan_claim(&o, &[q], "w", 5_000), ClaimPlan::Claim { .. }));
    }

    #[test]
    fn a_recovered_lease_releases_load_and_assignment_unless_stopped() {
        let mut w: WorkerItem = serde_json::from_value(serde_json::json!({
            "workerId": "w", "provider": "fly", "status": "active", "load": 1, "heartbeatAt": 0,
            "assignedConversationId": "c", "assignedLeaseId": "L1"
        }))
        .unwrap();
        assert_eq!(plan_release(&w, Some("L1")), ReleasePlan { lower_load: true, unassign: true });
        // It claimed again since (another lease): only the load.
        assert_eq!(plan_release(&w, Some("L0")), ReleasePlan { lower_load: true, unassign: false });
        w.load = 0;
        assert_eq!(plan_release(&w, Some("L1")), ReleasePlan { lower_load: false, unassign: true });
        w.load = 1;
        w.status = WorkerStatus::Stopped;
        assert_eq!(plan_release(&w, Some("L1")), ReleasePlan::default(), "a stopped row is left alone");
    }

    #[test]
    fn validation_of_names() {
        assert!(validate_agent_key("support-bot_1.v2").is_ok());
        assert!(validate_agent_key("bad key").is_err());
        assert!(validate_agent_key("").is_err());
        assert!(validate_conversation_id("  ").is_err());
        assert!(validate_conversation_id("tg:1:2").is_ok());
        assert!(validate_conversation_id("a\nb").is_err());
        assert!(validate_worker_id(&"w".repeat(200)).is_err());
    }
}
