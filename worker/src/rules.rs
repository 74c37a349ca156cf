//! The worker's pure decisions: the poll schedule, what each control state means, how a backend
//! answer is classified, the retry waits, the idle limit and the exit codes. No I/O; time is
//! passed in (epoch ms), so every rule is tested with made-up clocks.

/// Milliseconds since the epoch (or any fixed origin: only differences matter).
pub type Millis = i64;

/// The timing knobs the rules read (from the worker's [`crate::config::Config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Poll interval right after a job (the user is likely to answer soon).
    pub fast_poll_ms: Millis,
    /// How long after a job the fast interval applies.
    pub fast_window_ms: Millis,
    /// Poll interval otherwise.
    pub idle_poll_ms: Millis,
    /// Local idle limit: no job for this long and the worker stops on its own.
    pub idle_limit_ms: Millis,
    /// How often an idle worker calls `worker-heartbeat` (liveness + control state).
    pub control_every_ms: Millis,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            fast_poll_ms: 250,
            fast_window_ms: 20_000,
            idle_poll_ms: 2_000,
            idle_limit_ms: 1_800_000,
            control_every_ms: 30_000,
        }
    }
}

/// How long to wait before the next claim after an empty one: the fast interval within the
/// window after the last job ended, then the idle interval (never past the idle limit's end,
/// so the limit is noticed on time).
pub fn poll_delay(t: &Timing, now: Millis, last_job_end: Option<Millis>, last_activity: Millis) -> Millis {
    let base = match last_job_end {
        Some(end) if now - end < t.fast_window_ms => t.fast_poll_ms,
        _ => t.idle_poll_ms,
    };
    let until_idle = (last_activity + t.idle_limit_ms - now).max(0);
    base.min(until_idle.max(1)).max(1)
}

/// The local idle limit has passed.
pub fn idle_expired(t: &Timing, now: Millis, last_activity: Millis) -> bool {
    now - last_activity >= t.idle_limit_ms
}

/// Time for a `worker-heartbeat` (liveness and control state) between claims.
pub fn control_due(t: &Timing, now: Millis, last_control: Option<Millis>) -> bool {
    last_control.is_none_or(|at| now - at >= t.control_every_ms)
}

/// Why the worker leaves its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The backend said `drain` (idle deadline, stale heartbeat, operator): snapshot, exit.
    Drain,
    /// The backend said `exit` (row missing or already stopping/stopped): nothing to save.
    Exit,
    /// SIGTERM/SIGINT: snapshot, exit.
    Signal,
    /// The local idle limit: snapshot, exit.
    Idle,
    /// The token was refused (revoked, replaced, worker stopped): nothing can be saved.
    TokenRefused,
    /// The backend could not be reached for longer than the limit.
    BackendLost,
    /// The process that started this worker is gone (`AGENT_FACTORY_EXIT_WITH_PARENT`).
    ParentGone,
}

impl StopReason {
    /// The snapshot reason sent to `snapshot-prepare`, or `None` when no snapshot is taken.
    pub fn snapshot_reason(self) -> Option<&'static str> {
        match self {
            StopReason::Drain => Some("drain"),
            StopReason::Signal => Some("signal"),
            StopReason::Idle => Some("manual"),
            StopReason::Exit | StopReason::TokenRefused | StopReason::BackendLost | StopReason::ParentGone => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Drain => "drain",
            StopReason::Exit => "exit",
            StopReason::Signal => "signal",
            StopReason::Idle => "idle",
            StopReason::TokenRefused => "token_refused",
            StopReason::BackendLost => "backend_lost",
            StopReason::ParentGone => "parent_gone",
        }
    }
}

/// What the worker does on a control state (`action` of `control-state`/`worker-heartbeat`).
/// An unknown action with `shouldStop` is treated as `drain` (save, then stop).
pub fn on_control(action: &str, should_stop: bool) -> Option<StopReason> {
    match (action, should_stop) {
        ("continue", false) => None,
        ("exit", _) => Some(StopReason::Exit),
        ("drain", _) => Some(StopReason::Drain),
        (_, true) => Some(StopReason::Drain),
        (_, false) => None,
    }
}

/// How the snapshot on the way out went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// Finalized: the backend holds the archive.
    Saved,
    /// Not attempted (no conversation ever served, or the stop reason takes none).
    NotNeeded,
    /// Prepare, upload or finalize failed (reported with `snapshot-fail` where possible).
    Failed,
}

/// Exit codes (documented in the README, "The reference worker"):
/// - 0: stopped as asked (drain, exit, signal, idle) with the snapshot saved or not needed;
/// - 1: could not start (configuration, bootstrap code refused, backend unreachable at boot);
/// - 2: usage error (unknown flag, bad number);
/// - 3: stopped as asked, but the snapshot failed (the data dir was not saved);
/// - 4: the token was refused (revoked, replaced, or the worker was stopped);
/// - 5: the backend was unreachable for longer than `BACKEND_LOST_MS`;
/// - 6: the parent process (the local runner) went away.
pub fn exit_code(reason: StopReason, snapshot: SnapshotOutcome) -> i32 {
    match reason {
        StopReason::TokenRefused => 4,
        StopReason::BackendLost => 5,
        StopReason::ParentGone => 6,
        _ if snapshot == SnapshotOutcome::Failed => 3,
        _ => 0,
    }
}

pub const EXIT_START_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// A backend answer, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ok,
    /// 409 with a lease reason, or 403 on a lease call: the job is no longer ours.
    LeaseLost,
    /// 401: the token no longer works.
    TokenRefused,
    /// 429: wait this long, then try again.
    RetryAfter(Millis),
    /// Transport error, 5xx, 408: try again later.
    Transient,
    /// Any other 4xx: the request itself is wrong; retrying cannot help.
    Refused,
}

/// Classify an HTTP status (`None` = no answer: transport error) and the error body's `code` /
/// `reason` / `retryAfterMs`.
pub fn classify(status: Option<u16>, code: Option<&str>, reason: Option<&str>, retry_after_ms: Option<u64>) -> Answer {
    let Some(status) = status else { return Answer::Transient };
    match status {
        200..=299 => Answer::Ok,
        401 => Answer::TokenRefused,
        409 if reason.is_some() => Answer::LeaseLost,
        403 if code == Some("Forbidden") => Answer::LeaseLost,
        429 => Answer::RetryAfter(retry_after_ms.map_or(1_000, |ms| ms.min(300_000) as Millis)),
        408 | 500..=599 => Answer::Transient,
        _ => Answer::Refused,
    }
}

/// A `reply` answered 409 without a lease reason: the part was recorded before with other
/// content (an earlier run of this job, whose worker died after replying): the user has the
/// answer already, so the job completes without a second reply (and without appending a reply
/// the user never saw).
pub fn reply_already_answered(answer: &Answer, status: Option<u16>) -> bool {
    *answer == Answer::Refused && status == Some(409)
}

/// The wait before retry number `attempt` (1-based) of a call that failed transiently:
/// 250 ms doubling, capped at `cap_ms`.
pub fn retry_wait(attempt: u32, cap_ms: Millis) -> Millis {
    let shift = attempt.saturating_sub(1).min(16);
    (250i64 << shift).min(cap_ms)
}

/// The loop's wait after a transient failure of claim/control (consecutive failures so far),
/// between the idle poll interval and 30 s.
pub fn error_backoff(t: &Timing, consecutive: u32) -> Millis {
    retry_wait(consecutive.max(1) + 2, 30_000).max(t.idle_poll_ms.min(30_000))
}

/// The backend has been unreachable too long (first failure of the current run at `since`).
pub fn backend_lost(now: Millis, since: Option<Millis>, limit_ms: Millis) -> bool {
    since.is_some_and(|s| limit_ms > 0 && now - s >= limit_ms)
}

/// The engine's output as a reply: trailing whitespace trimmed (partial last lines kept);
/// `None` when nothing is left ("empty output" fails the job).
pub fn reply_text(stdout: &str) -> Option<String> {
    let t = stdout.trim_end();
    let t = t.trim_start_matches(['\n', '\r']);
    (!t.trim().is_empty()).then(|| t.to_string())
}

/// The echo engine's reply.
pub fn echo_reply(message_text: &str) -> String {
    let text = if message_text.trim().is_empty() { "(empty message)" } else { message_text };
    format!("echo: {text}")
}

/// An error text cut to what `fail` stores comfortably.
pub fn short_error(s: &str) -> String {
    const MAX: usize = 1_000;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Timing {
        Timing {
            fast_poll_ms: 250,
            fast_window_ms: 20_000,
            idle_poll_ms: 2_000,
            idle_limit_ms: 60_000,
            control_every_ms: 30_000,
        }
    }

    #[test]
    fn polls_fast_right_after_a_job_then_backs_off() {
        let t = t();
        let start = 1_000_000;
        // Never had a job: idle interval.
        assert_eq!(poll_delay(&t, start, None, start), 2_000);
        // Just finished one: fast, for the whole window.
        assert_eq!(poll_delay(&t, start + 10, Some(start), start), 250);
        assert_eq!(poll_delay(&t, start + 19_999, Some(start), start), 250);
        // Window over: idle interval.
        assert_eq!(poll_delay(&t, start + 20_000, Some(start), start), 2_000);
        // Never sleeps past the idle limit (checked on time), never zero.
        assert_eq!(poll_delay(&t, start + 59_500, Some(start), start), 500);
        assert_eq!(poll_delay(&t, start + 70_000, Some(start), start), 1);
    }

    #[test]
    fn idle_limit_and_control_cadence() {
        let t = t();
        assert!(!idle_expired(&t, 59_999, 0));
        assert!(idle_expired(&t, 60_000, 0));
        assert!(control_due(&t, 5, None), "first iteration asks");
        assert!(!control_due(&t, 29_999, Some(0)));
        assert!(control_due(&t, 30_000, Some(0)));
    }

    #[test]
    fn control_actions() {
        assert_eq!(on_control("continue", false), None);
        assert_eq!(on_control("drain", true), Some(StopReason::Drain));
        assert_eq!(on_control("exit", true), Some(StopReason::Exit));
        assert_eq!(on_control("something_new", true), Some(StopReason::Drain), "unknown + stop: save first");
        assert_eq!(on_control("something_new", false), None);
        assert_eq!(StopReason::Drain.snapshot_reason(), Some("drain"));
        assert_eq!(StopReason::Idle.snapshot_reason(), Some("manual"));
        assert_eq!(StopReason::Signal.snapshot_reason(), Some("signal"));
        assert_eq!(StopReason::Exit.snapshot_reason(), None);
        assert_eq!(StopReason::TokenRefused.snapshot_reason(), None);
    }

    #[test]
    fn exit_codes() {
        use SnapshotOutcome::*;
        assert_eq!(exit_code(StopReason::Drain, Saved), 0);
        assert_eq!(exit_code(StopReason::Signal, NotNeeded), 0);
        assert_eq!(exit_code(StopReason::Idle, Failed), 3);
        assert_eq!(exit_code(StopReason::Exit, NotNeeded), 0);
        assert_eq!(exit_code(StopReason::TokenRefused, NotNeeded), 4);
        assert_eq!(exit_code(StopReason::BackendLost, Failed), 5);
        assert_eq!(exit_code(StopReason::ParentGone, NotNeeded), 6);
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(Some(200), None, None, None), Answer::Ok);
        assert_eq!(classify(None, None, None, None), Answer::Transient);
        assert_eq!(classify(Some(409), Some("Conflict"), Some("lease_expired"), None), Answer::LeaseLost);
        assert_eq!(
            classify(Some(409), Some("Conflict"), None, None),
            Answer::Refused,
            "a conflict without lease reason"
        );
        assert_eq!(classify(Some(403), Some("Forbidden"), None, None), Answer::LeaseLost);
        assert_eq!(classify(Some(401), Some("Unauthorized"), None, None), Answer::TokenRefused);
        assert_eq!(classify(Some(429), Some("RateLimited"), None, Some(3_000)), Answer::RetryAfter(3_000));
        assert_eq!(classify(Some(429), None, None, None), Answer::RetryAfter(1_000));
        assert_eq!(classify(Some(502), None, None, None), Answer::Transient);
        assert_eq!(classify(Some(408), None, None, None), Answer::Transient);
        assert_eq!(classify(Some(400), Some("ValidationError"), None, None), Answer::Refused);
        assert_eq!(classify(Some(404), Some("NotFound"), None, None), Answer::Refused);
    }

    #[test]
    fn a_reply_part_recorded_before_means_answered() {
        let a = classify(Some(409), Some("Conflict"), None, None);
        assert!(reply_already_answered(&a, Some(409)));
        let lost = classify(Some(409), Some("Conflict"), Some("lease_mismatch"), None);
        assert!(!reply_already_answered(&lost, Some(409)), "a lost lease is not an answer");
        assert!(!reply_already_answered(&Answer::Refused, Some(400)));
    }

    #[test]
    fn waits_and_backend_loss() {
        assert_eq!(retry_wait(1, 10_000), 250);
        assert_eq!(retry_wait(3, 10_000), 1_000);
        assert_eq!(retry_wait(40, 10_000), 10_000);
        let t = t();
        assert_eq!(error_backoff(&t, 1), 2_000);
        assert_eq!(error_backoff(&t, 10), 30_000);
        assert!(!backend_lost(100, None, 50));
        assert!(!backend_lost(100, Some(60), 50));
        assert!(backend_lost(110, Some(60), 50));
        assert!(!backend_lost(1_000_000, Some(0), 0), "0 = never give up");
    }

    #[test]
    fn engine_output_and_echo() {
        assert_eq!(reply_text("hello\n").as_deref(), Some("hello"));
        assert_eq!(reply_text("partial line").as_deref(), Some("partial line"));
        assert_eq!(reply_text("\nline 1\nline 2\n\n").as_deref(), Some("line 1\nline 2"));
        assert_eq!(reply_text("  \n\n"), None);
        assert_eq!(echo_reply("hi"), "echo: hi");
        assert_eq!(echo_reply(" "), "echo: (empty message)");
        let long = "é".repeat(800);
        let s = short_error(&long);
        assert!(s.len() <= 1_004 && s.ends_with('…'));
    }
}
