//! The Fly Machines provider's pure decisions: Fly's state words → [`MachineState`], HTTP status
//! → error class, retry delays (jittered exponential backoff that honours `Retry-After`) and the
//! client-side token buckets. No I/O; time and randomness are passed in. The adapter
//! (`adapters::fly`) does the HTTP.

use super::provider::MachineState;
use std::time::Duration;

/// Fly's machine `state` → [`MachineState`]. Unknown words are `Gone`: the caller never
/// concludes "running" from a word it does not know (spec §8.5, with the stopping/stopped split
/// the original lacks).
pub fn machine_state(fly_state: &str) -> MachineState {
    match fly_state.trim().to_ascii_lowercase().as_str() {
        "creating" | "created" | "starting" | "started" | "restarting" | "updating" | "replacing" => {
            MachineState::Active
        }
        "stopping" | "suspending" | "destroying" => MachineState::Stopping,
        "stopped" | "suspended" => MachineState::Stopped,
        _ => MachineState::Gone,
    }
}

/// Volume states that mean the volume is on its way out or gone: such volumes are not listed.
pub fn volume_gone(fly_state: &str) -> bool {
    matches!(fly_state.trim().to_ascii_lowercase().as_str(), "destroyed" | "destroying" | "pending_destroy")
}

/// How a non-2xx status is classified (by status only, never by body text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    NotFound,
    Retryable,
    Fatal,
}

pub fn classify_status(status: u16) -> StatusClass {
    match status {
        404 => StatusClass::NotFound,
        408 | 409 | 412 | 429 | 500..=599 => StatusClass::Retryable,
        _ => StatusClass::Fatal,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Fly; it is ignored).
pub fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    let s = v?.trim().parse::<f64>().ok()?;
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(86_400.0)))
}

/// Retry settings of the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (≥ 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled each time, capped at `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited out inside the call: the call gives up and
    /// the caller (next cycle) sees `Retryable` with the provider's `retry_after`.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

/// The wait before attempt `attempt + 1` (attempt counts from 1), or `None` to give up.
/// Equal jitter: half the exponential step plus a random share of the other half (`rand` is any
/// u32). A `Retry-After` is a floor: never retried sooner than the provider asked.
pub fn retry_delay(p: &RetryPolicy, attempt: u32, retry_after: Option<Duration>, rand: u32) -> Option<Duration> {
    if attempt >= p.max_attempts {
        return None;
    }
    if let Some(ra) = retry_after
        && ra > p.max_retry_after
    {
        return None;
    }
    let exp = p.base_backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(p.max_backoff);
    let half = exp / 2;
    let jitter = half.mul_f64(f64::from(rand) / f64::from(u32::MAX));
    let backoff = half + jitter;
    Some(retry_after.map_or(backoff, |ra| ra.max(backoff)))
}

/// A token bucket: `rate` tokens per second, at most `burst` banked. `take` reserves a token and
/// returns how long the caller must wait before using it (zero when one was banked); the balance
/// may go negative, so concurrent callers queue in order instead of all waking at once.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    pub rate_per_s: f64,
    pub burst: f64,
    tokens: f64,
    last_ms: f64,
}

impl TokenBucket {
    pub fn new(rate_per_s: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self { rate_per_s: rate_per_s.max(0.001), burst, tokens: burst, last_ms: 0.0 }
    }

    /// Reserve one token at `now_ms` (monotonic milliseconds); returns the wait.
    pub fn take(&mut self, now_ms: f64) -> Duration {
        let elapsed = (now_ms - self.last_ms).max(0.0);
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.rate_per_s / 1000.0).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate_per_s) }
    }
}

/// The kinds of Machines API call the adapter rate-limits separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    /// GET machine(s), GET volumes.
    Read,
    /// GET `/machines/{id}/wait`.
    Wait,
    /// POST machines (create).
    Create,
    /// POST `/machines/{id}` (update), `/start`.
    Start,
    /// POST `/machines/{id}/stop`.
    Stop,
    /// DELETE machine.
    Destroy,
    /// POST volumes (create).
    Volume,
    /// DELETE volumes.
    VolumeDelete,
}

/// Per-action limits (requests per second, burst). Fly limits Machines API actions per action
/// and per machine (its docs: about 1 req/s per action per machine with a burst of 3; reads
/// about 5 req/s with a burst of 10). One adapter instance works on many machines of one app,
/// so the defaults are app-wide buckets a little under what Fly allows for a handful of
/// machines: machine and volume creates 1/s (burst 3); start, stop, destroy and volume deletes
/// 3/s (burst 6) each; reads and waits 5/s (burst 10). A 429 that gets through anyway is retried after its `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    pub read: (f64, f64),
    pub mutate: (f64, f64),
    pub create: (f64, f64),
}

impl Default for RateLimits {
    fn default() -> Self {
        Self { read: (5.0, 10.0), mutate: (3.0, 6.0), create: (1.0, 3.0) }
    }
}

impl RateLimits {
    /// The bucket settings of one action kind.
    pub fn for_kind(&self, k: ActionKind) -> (f64, f64) {
        match k {
            ActionKind::Read | ActionKind::Wait => self.read,
            ActionKind::Start | ActionKind::Stop | ActionKind::Destroy | ActionKind::VolumeDelete => self.mutate,
            ActionKind::Create | ActionKind::Volume => self.create,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_the_four_classes() {
        for s in ["creating", "created", "starting", "started", "restarting", "updating", "replacing"] {
            assert_eq!(machine_state(s), MachineState::Active, "{s}");
        }
        for s in ["stopping", "suspending", "destroying"] {
            assert_eq!(machine_state(s), MachineState::Stopping, "{s}");
        }
        for s in ["stopped", "suspended", "Stopped "] {
            assert_eq!(machine_state(s), MachineState::Stopped, "{s}");
        }
        for s in ["destroyed", "failed", "launch_failed", "replaced", "migrated", "absent", "", "weird"] {
            assert_eq!(machine_state(s), MachineState::Gone, "{s}");
        }
        assert!(volume_gone("pending_destroy") && volume_gone("destroyed") && !volume_gone("created"));
    }

    #[test]
    fn status_classes() {
        assert_eq!(classify_status(404), StatusClass::NotFound);
        for s in [408, 409, 412, 429, 500, 502, 503, 599] {
            assert_eq!(classify_status(s), StatusClass::Retryable, "{s}");
        }
        for s in [400, 401, 403, 405, 410, 422, 301] {
            assert_eq!(classify_status(s), StatusClass::Fatal, "{s}");
        }
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(Some(" 0.5 ")), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(parse_retry_after(Some("-1")), None);
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn backoff_grows_is_jittered_bounded_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            max_retry_after: Duration::from_secs(3),
        };
        // Attempt 1: 50..=100 ms; attempt 2: 100..=200; attempt 3 and on: capped at 175..=350.
        assert_eq!(retry_delay(&p, 1, None, 0), Some(Duration::from_millis(50)));
        assert_eq!(retry_delay(&p, 1, None, u32::MAX), Some(Duration::from_millis(100)));
        assert_eq!(retry_delay(&p, 2, None, 0), Some(Duration::from_millis(100)));
        assert_eq!(retry_delay(&p, 4, None, u32::MAX), Some(Duration::from_millis(350)));
        let mid = retry_delay(&p, 2, None, u32::MAX / 2).unwrap();
        assert!(mid > Duration::from_millis(100) && mid < Duration::from_millis(200), "{mid:?}");
        // Retry-After is a floor, and a too-long one gives up inside the call.
        assert_eq!(retry_delay(&p, 1, Some(Duration::from_secs(2)), 0), Some(Duration::from_secs(2)));
        assert_eq!(retry_delay(&p, 1, Some(Duration::from_millis(1)), 0), Some(Duration::from_millis(50)));
        assert_eq!(retry_delay(&p, 1, Some(Duration::from_secs(4)), 0), None);
        // Bounded attempts.
        assert_eq!(retry_delay(&p, 5, None, 0), None);
        assert!(retry_delay(&RetryPolicy { max_attempts: 1, ..p }, 1, None, 0).is_none());
    }

    #[test]
    fn token_bucket_allows_a_burst_then_paces() {
        let mut b = TokenBucket::new(2.0, 3.0);
        for _ in 0..3 {
            assert_eq!(b.take(0.0), Duration::ZERO);
        }
        // The 4th and 5th wait 0.5 s and 1 s: queued in order.
        assert_eq!(b.take(0.0), Duration::from_millis(500));
        assert_eq!(b.take(0.0), Duration::from_millis(1000));
        // 3 s later the debt (2 tokens) is repaid and the bucket is full again (never above burst).
        for _ in 0..3 {
            assert_eq!(b.take(3_000.0), Duration::ZERO);
        }
        assert_eq!(b.take(3_000.0), Duration::from_millis(500));
        // Time going backwards refills nothing.
        let mut c = TokenBucket::new(1.0, 1.0);
        assert_eq!(c.take(10_000.0), Duration::ZERO);
        assert_eq!(c.take(5_000.0), Duration::from_secs(1));
    }
}
