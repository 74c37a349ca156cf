//! Pure push rules: time zones, slot validation (spec §3.2), the next run (§3.3) with the DST
//! rule (§3.4: a slot in a spring-forward gap moves forward by the gap's length, a slot in a
//! fall-back overlap fires once, at the earliest occurrence), the lateness rule for missed slots
//! (§3.7, with a staleness cut-off), run keys (§3.6) and the EventBridge Scheduler expression of
//! a schedule. Time is always passed in. Time-zone data: chrono-tz (the version in Cargo.lock).

use super::model::{DayOfMonth, Periodicity, Schedule};
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// The longest time zone name accepted (IANA names are shorter).
pub const MAX_TIMEZONE_CHARS: usize = 64;
/// A due slot later than this is not sent: it is recorded `skipped` (spec §16.3: no stale
/// pushes after a dispatcher outage). Normal lateness is under a minute (per-job schedules) or
/// under an hour (the hourly sweep).
pub const STALE_AFTER_MS: Millis = 6 * 3_600_000;
/// The 1-second guard of §3.3: the next run is strictly after now + 1 s.
pub const GUARD_MS: Millis = 1_000;

/// An IANA time zone name, matched case-insensitively (`europe/rome`); aliases such as `UTC`,
/// `EST`, `Etc/GMT+5` accepted; offsets (`+05:30`) and unknown names refused.
pub fn resolve_timezone(tz: &str) -> AppResult<Tz> {
    let t = tz.trim();
    if t.is_empty() {
        return Err(AppError::validation("Timezone is required"));
    }
    let invalid =
        || AppError::validation(format!("Invalid timezone '{}'", crate::ids::truncate(tz, MAX_TIMEZONE_CHARS)));
    if t.chars().count() > MAX_TIMEZONE_CHARS {
        return Err(invalid());
    }
    if let Ok(z) = t.parse::<Tz>() {
        return Ok(z);
    }
    chrono_tz::TZ_VARIANTS.iter().copied().find(|z| z.name().eq_ignore_ascii_case(t)).ok_or_else(invalid)
}

/// `HH:mm` (two digits each, 00–23 : 00–59) after trimming.
pub fn parse_time(time: &str) -> AppResult<NaiveTime> {
    let bad = || AppError::validation(format!("Invalid time '{}', expected HH:mm", crate::ids::truncate(time, 40)));
    let t = time.trim().as_bytes();
    if t.len() != 5 || t[2] != b':' || ![t[0], t[1], t[3], t[4]].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let h = u32::from(t[0] - b'0') * 10 + u32::from(t[1] - b'0');
    let m = u32::from(t[3] - b'0') * 10 + u32::from(t[4] - b'0');
    NaiveTime::from_hms_opt(h, m, 0).filter(|_| h < 24 && m < 60).ok_or_else(bad)
}

/// The day of a monthly slot: `Some(d)` for 1..=31, `None` for `"last"`.
pub fn day_of_month(d: &DayOfMonth) -> AppResult<Option<u32>> {
    let bad = || AppError::validation("Monthly schedule dayOfMonth must be 1..31 or 'last'");
    match d {
        DayOfMonth::Day(n) if (1..=31).contains(n) => Ok(Some(*n as u32)),
        DayOfMonth::Named(s) if s == "last" => Ok(None),
        _ => Err(bad()),
    }
}

/// One slot's fields.
pub fn validate_slot(s: &Schedule) -> AppResult<()> {
    match s {
        Schedule::Manual => Ok(()),
        Schedule::Daily { time } => parse_time(time).map(drop),
        Schedule::Weekly { weekday, time } => {
            parse_time(time)?;
            if !(1..=7).contains(weekday) {
                return Err(AppError::validation("Weekly schedule weekday must be in range 1..7"));
            }
            Ok(())
        }
        Schedule::Monthly { day_of_month: d, time } => {
            parse_time(time)?;
            day_of_month(d).map(drop)
        }
    }
}

/// A job's schedule: its kind must be the periodicity, then the slot must be valid.
pub fn validate_job_schedule(periodicity: Periodicity, s: &Schedule) -> AppResult<()> {
    if s.kind() != periodicity {
        return Err(AppError::validation("Schedule kind must match periodicity"));
    }
    validate_slot(s)
}

/// A push template's suggested times (spec §3.2 order).
pub fn validate_suggested_times(periodicity: Periodicity, list: &[Schedule]) -> AppResult<()> {
    if periodicity == Periodicity::Manual && !list.is_empty() {
        return Err(AppError::validation("Manual template does not accept suggested times"));
    }
    if list.iter().any(|s| s.kind() != periodicity) {
        return Err(AppError::validation("All suggested times must match template periodicity"));
    }
    if list.len() > 24 {
        return Err(AppError::validation("a template has at most 24 suggested times"));
    }
    list.iter().try_for_each(validate_slot)
}

/// The instant of a local wall-clock time in `tz`: the earliest one in a fall-back overlap; in a
/// spring-forward gap, the local time read with the offset in force before the gap, which is the
/// time moved forward by the gap's length (02:30 in a one-hour gap → 03:30).
pub fn local_instant(tz: &Tz, local: NaiveDateTime) -> Millis {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.timestamp_millis(),
        LocalResult::Ambiguous(a, b) => a.timestamp_millis().min(b.timestamp_millis()),
        LocalResult::None => {
            // The offset before the gap: the one in force a day earlier (zones do not change
            // offset twice within a day).
            let probe = Utc.from_utc_datetime(&(local - Duration::days(1)));
            let before = tz.offset_from_utc_datetime(&probe.naive_utc()).fix().local_minus_utc();
            (local - Duration::seconds(i64::from(before))).and_utc().timestamp_millis()
        }
    }
}

fn local_date_of(tz: &Tz, at: Millis) -> NaiveDate {
    let utc = chrono::DateTime::<Utc>::from_timestamp_millis(at).unwrap_or_default();
    utc.with_timezone(tz).date_naive()
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let first_next = NaiveDate::from_ymd_opt(ny, nm, 1);
    let first = NaiveDate::from_ymd_opt(year, month, 1);
    match (first, first_next) {
        (Some(a), Some(b)) => (b - a).num_days() as u32,
        _ => 31,
    }
}

/// The next run of `schedule` in `tz` (spec §3.3): the earliest instant strictly after
/// `now + 1 s` whose local wall-clock time is the slot (with the DST rule of
/// [`local_instant`]). `None` for manual schedules. Never from the previous slot: from now.
pub fn next_run_at(schedule: &Schedule, tz: &Tz, now: Millis) -> AppResult<Option<Millis>> {
    let from = now + GUARD_MS;
    // A day before the local date of `from`: a slot moved forward by a gap may still be ahead.
    let start = local_date_of(tz, from) - Duration::days(1);
    let at = |d: NaiveDate, t: NaiveTime| local_instant(tz, d.and_time(t));
    match schedule {
        Schedule::Manual => Ok(None),
        Schedule::Daily { time } => {
            let t = parse_time(time)?;
            (0..372)
                .map(|i| at(start + Duration::days(i), t))
                .find(|&x| x > from)
                .map(Some)
                .ok_or_else(|| AppError::internal("Unable to compute next daily run"))
        }
        Schedule::Weekly { weekday, time } => {
            let t = parse_time(time)?;
            (0..382)
                .map(|i| start + Duration::days(i))
                .filter(|d| i64::from(d.weekday().number_from_monday()) == *weekday)
                .map(|d| at(d, t))
                .find(|&x| x > from)
                .map(Some)
                .ok_or_else(|| AppError::validation("Unable to compute next weekly run"))
        }
        Schedule::Monthly { day_of_month: dom, time } => {
            let t = parse_time(time)?;
            let want = day_of_month(dom)?;
            let (mut y, mut m) = (start.year(), start.month());
            for _ in 0..38 {
                let len = days_in_month(y, m);
                let day = want.map_or(len, |d| d.min(len));
                if let Some(d) = NaiveDate::from_ymd_opt(y, m, day) {
                    let x = at(d, t);
                    if x > from {
                        return Ok(Some(x));
                    }
                }
                (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            }
            Err(AppError::internal("Unable to compute next monthly run"))
        }
    }
}

/// A job's `nextRunAt` at `now`: the next slot when enabled and recurring, else none.
pub fn job_next_run(enabled: bool, schedule: &Schedule, timezone: &str, now: Millis) -> AppResult<Option<Millis>> {
    if !enabled || schedule.kind() == Periodicity::Manual {
        return Ok(None);
    }
    next_run_at(schedule, &resolve_timezone(timezone)?, now)
}

/// What the dispatcher does with a due slot at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotDecision {
    /// Send it (lateness = now - slot).
    Send { lateness_ms: Millis },
    /// Missed by more than [`STALE_AFTER_MS`]: record it `skipped`, send nothing.
    Skip { lateness_ms: Millis },
}

/// The lateness rule (§3.7 with a cut-off): only the job's current slot counts (intermediate
/// missed slots collapse into it); sent when at most [`STALE_AFTER_MS`] late, else skipped.
pub fn slot_decision(slot: Millis, now: Millis) -> SlotDecision {
    let lateness_ms = (now - slot).max(0);
    if lateness_ms > STALE_AFTER_MS { SlotDecision::Skip { lateness_ms } } else { SlotDecision::Send { lateness_ms } }
}

/// The run key of a scheduled slot: `scheduled:<jobId>:<slot ms>`.
pub fn scheduled_run_key(job_id: &str, slot: Millis) -> String {
    format!("scheduled:{job_id}:{slot}")
}

/// The run key of a manual trigger: `manual:<jobId>:<idempotency key>` (the caller's key, or
/// the trigger time when it gave none).
pub fn manual_run_key(job_id: &str, key: &str) -> String {
    format!("manual:{job_id}:{key}")
}

/// An idempotency key: 1..=128 printable ASCII characters.
pub fn validate_idempotency_key(k: &str) -> AppResult<()> {
    if k.is_empty() || k.len() > 128 || !k.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(AppError::validation("idempotencyKey must be 1 to 128 printable ASCII characters without spaces"));
    }
    Ok(())
}

/// The EventBridge Scheduler expression that wakes the dispatcher at a job's slots (in the job's
/// time zone, `ScheduleExpressionTimezone`); `None` for manual jobs. A monthly day past the 28th
/// wakes it on every day from the 28th (the dispatcher only sends a due slot, so the extra
/// wake-ups do nothing; clamping to the month's length is the dispatcher's).
pub fn scheduler_expression(s: &Schedule) -> AppResult<Option<String>> {
    use chrono::Timelike;
    let hm = |t: &str| parse_time(t).map(|t| (t.minute(), t.hour()));
    Ok(match s {
        Schedule::Manual => None,
        Schedule::Daily { time } => {
            let (m, h) = hm(time)?;
            Some(format!("cron({m} {h} * * ? *)"))
        }
        Schedule::Weekly { weekday, time } => {
            let (m, h) = hm(time)?;
            let names = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
            let d = names
                .get((*weekday - 1).clamp(0, 6) as usize)
                .ok_or_else(|| AppError::validation("Weekly schedule weekday must be in range 1..7"))?;
            Some(format!("cron({m} {h} ? * {d} *)"))
        }
        Schedule::Monthly { day_of_month: dom, time } => {
            let (m, h) = hm(time)?;
            match day_of_month(dom)? {
                None => Some(format!("cron({m} {h} L * ? *)")),
                Some(d) if d <= 28 => Some(format!("cron({m} {h} {d} * ? *)")),
                Some(_) => Some(format!("cron({m} {h} 28-31 * ? *)")),
            }
        }
    })
}

/// An id of the form `<ULID>:<owner>` (push templates: the company; jobs: the user): its parts.
pub fn split_id(id: &str) -> Option<(&str, &str)> {
    let (ulid, owner) = id.split_once(':')?;
    let ok = crate::ids::is_ulid(ulid)
        && !owner.is_empty()
        && owner.len() <= MAX_OWNER_BYTES
        && !owner.chars().any(char::is_control);
    ok.then_some((ulid, owner))
}

/// The longest owner part of an id (a company or user id) read as a key.
pub const MAX_OWNER_BYTES: usize = 512;

/// `<ULID>:<owner>`.
pub fn make_id(ulid: &str, owner: &str) -> String {
    format!("{ulid}:{owner}")
}

/// A push template key: exact, case-sensitive (spec §1.1), 1..=128 characters, no control
/// characters.
pub fn validate_template_key(k: &str) -> AppResult<()> {
    if k.is_empty() || k.chars().count() > 128 || k.chars().any(char::is_control) {
        return Err(AppError::validation("templateKey must be 1 to 128 characters, without control characters"));
    }
    Ok(())
}

/// A push title and text: at most 200 / 10,000 characters (empty allowed, as the original).
pub fn validate_title_text(title: &str, text: &str) -> AppResult<()> {
    if title.chars().count() > 200 {
        return Err(AppError::validation("title must be at most 200 characters"));
    }
    if text.chars().count() > 10_000 {
        return Err(AppError::validation("text must be at most 10000 characters"));
    }
    Ok(())
}

/// The text of a broadcast message: title, blank line, text, outer whitespace trimmed.
pub fn broadcast_text(title: &str, text: &str) -> String {
    format!("{title}\n\n{text}").trim().to_string()
}

/// `listPushDispatches*`'s limit: default 50, 1..=200.
pub fn dispatch_limit(limit: Option<i64>) -> AppResult<usize> {
    let l = limit.unwrap_or(50);
    if !(1..=200).contains(&l) {
        return Err(AppError::validation(format!("limit must be 1 to 200, got {l}")));
    }
    Ok(l as usize)
}

/// `dispatchDuePushJobs`'s limit: default 200, 1..=1000.
pub fn due_limit(limit: Option<i64>) -> AppResult<usize> {
    let l = limit.unwrap_or(200);
    if !(1..=1000).contains(&l) {
        return Err(AppError::validation(format!("limit must be 1 to 1000, got {l}")));
    }
    Ok(l as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn ms(tz: &str, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Millis {
        let z = resolve_timezone(tz).unwrap();
        match z.with_ymd_and_hms(y, mo, d, h, mi, 0) {
            LocalResult::Single(t) => t.timestamp_millis(),
            other => panic!("{tz} {y}-{mo}-{d} {h}:{mi} is not a single local time: {other:?}"),
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Millis {
        NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, 0).unwrap().and_utc().timestamp_millis()
    }

    fn daily(t: &str) -> Schedule {
        Schedule::Daily { time: t.into() }
    }
    fn weekly(d: i64, t: &str) -> Schedule {
        Schedule::Weekly { weekday: d, time: t.into() }
    }
    fn monthly(d: i64, t: &str) -> Schedule {
        Schedule::Monthly { day_of_month: DayOfMonth::Day(d), time: t.into() }
    }
    fn last(t: &str) -> Schedule {
        Schedule::Monthly { day_of_month: DayOfMonth::Named("last".into()), time: t.into() }
    }

    fn next(s: &Schedule, tz: &str, now: Millis) -> Millis {
        next_run_at(s, &resolve_timezone(tz).unwrap(), now).unwrap().unwrap()
    }

    /// (case, schedule, zone, now (UTC), expected next run (UTC)).
    #[test]
    fn next_runs_over_many_zones() {
        let cases: Vec<(&str, Schedule, &str, Millis, Millis)> = vec![
            // Plain slots.
            ("daily later today", daily("09:00"), "Europe/Rome", utc(2026, 3, 10, 6, 0), utc(2026, 3, 10, 8, 0)),
            ("daily passed today", daily("09:00"), "Europe/Rome", utc(2026, 3, 10, 9, 0), utc(2026, 3, 11, 8, 0)),
            (
                "daily keeps local time across DST",
                daily("09:00"),
                "Europe/Rome",
                utc(2026, 3, 28, 9, 0),
                utc(2026, 3, 29, 7, 0),
            ),
            ("daily before DST", daily("09:00"), "Europe/Rome", utc(2026, 3, 27, 9, 0), utc(2026, 3, 28, 8, 0)),
            ("daily Tokyo (no DST)", daily("07:30"), "Asia/Tokyo", utc(2026, 6, 1, 0, 0), utc(2026, 6, 1, 22, 30)),
            ("daily Kolkata half hour", daily("10:00"), "Asia/Kolkata", utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 4, 30)),
            (
                "daily Kathmandu 45 min",
                daily("00:00"),
                "Asia/Kathmandu",
                utc(2026, 1, 1, 0, 0),
                utc(2026, 1, 1, 18, 15),
            ),
            ("daily Chatham +13:45", daily("12:00"), "Pacific/Chatham", utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 22, 15)),
            (
                "daily Kiritimati +14",
                daily("00:30"),
                "Pacific/Kiritimati",
                utc(2026, 1, 1, 0, 0),
                utc(2026, 1, 1, 10, 30),
            ),
            (
                "daily Pago Pago -11",
                daily("23:59"),
                "Pacific/Pago_Pago",
                utc(2026, 1, 1, 0, 0),
                utc(2026, 1, 1, 10, 59),
            ),
            ("daily UTC alias", daily("00:00"), "UTC", utc(2026, 1, 1, 0, 0), utc(2026, 1, 2, 0, 0)),
            ("daily Etc/GMT+5 is UTC-5", daily("00:00"), "Etc/GMT+5", utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 5, 0)),
            ("case-insensitive zone", daily("09:00"), "europe/rome", utc(2026, 7, 1, 0, 0), utc(2026, 7, 1, 7, 0)),
            // The midnight case (spec §3.5): on the configured day, not the day before.
            (
                "weekly Monday 00:30 London",
                weekly(1, "00:30"),
                "Europe/London",
                utc(2026, 1, 7, 12, 0),
                utc(2026, 1, 12, 0, 30),
            ),
            (
                "weekly Monday 00:30 Rome",
                weekly(1, "00:30"),
                "Europe/Rome",
                utc(2026, 1, 7, 12, 0),
                utc(2026, 1, 11, 23, 30),
            ),
            (
                "weekly Sunday 00:00 NY",
                weekly(7, "00:00"),
                "America/New_York",
                utc(2026, 1, 7, 12, 0),
                utc(2026, 1, 11, 5, 0),
            ),
            (
                "monthly day 1 00:15 Rome",
                monthly(1, "00:15"),
                "Europe/Rome",
                utc(2026, 1, 15, 0, 0),
                utc(2026, 1, 31, 23, 15),
            ),
            (
                "monthly day 1 00:15 London",
                monthly(1, "00:15"),
                "Europe/London",
                utc(2026, 1, 15, 0, 0),
                utc(2026, 2, 1, 0, 15),
            ),
            // Weekly.
            (
                "weekly same day later",
                weekly(3, "18:00"),
                "America/Los_Angeles",
                utc(2026, 1, 7, 12, 0),
                utc(2026, 1, 8, 2, 0),
            ),
            (
                "weekly today passed -> next week",
                weekly(3, "08:00"),
                "UTC",
                utc(2026, 1, 7, 9, 0),
                utc(2026, 1, 14, 8, 0),
            ),
            (
                "weekly Sunday Auckland",
                weekly(7, "09:00"),
                "Pacific/Auckland",
                utc(2026, 1, 7, 0, 0),
                utc(2026, 1, 10, 20, 0),
            ),
            // Monthly: clamping per month, last day, leap years.
            ("monthly 31 in February", monthly(31, "10:00"), "UTC", utc(2026, 2, 1, 0, 0), utc(2026, 2, 28, 10, 0)),
            (
                "monthly 31 in leap February",
                monthly(31, "10:00"),
                "UTC",
                utc(2028, 2, 1, 0, 0),
                utc(2028, 2, 29, 10, 0),
            ),
            ("monthly 29 non-leap", monthly(29, "10:00"), "UTC", utc(2027, 2, 1, 0, 0), utc(2027, 2, 28, 10, 0)),
            ("monthly 31 in April", monthly(31, "10:00"), "UTC", utc(2026, 4, 1, 0, 0), utc(2026, 4, 30, 10, 0)),
            (
                "monthly 31 no drift to May 31",
                monthly(31, "10:00"),
                "UTC",
                utc(2026, 4, 30, 11, 0),
                utc(2026, 5, 31, 10, 0),
            ),
            ("monthly last in leap Feb", last("23:00"), "UTC", utc(2024, 2, 10, 0, 0), utc(2024, 2, 29, 23, 0)),
            (
                "monthly last December -> year end",
                last("12:00"),
                "Asia/Tokyo",
                utc(2026, 12, 31, 4, 0),
                utc(2027, 1, 31, 3, 0),
            ),
            (
                "monthly 15 passed -> next month",
                monthly(15, "08:00"),
                "UTC",
                utc(2026, 12, 20, 0, 0),
                utc(2027, 1, 15, 8, 0),
            ),
            // Spring forward gaps: moved forward by the gap's length.
            (
                "gap NY 02:30 -> 03:30 EDT",
                daily("02:30"),
                "America/New_York",
                utc(2026, 3, 8, 0, 0),
                utc(2026, 3, 8, 7, 30),
            ),
            (
                "gap Rome 02:30 -> 03:30 CEST",
                daily("02:30"),
                "Europe/Rome",
                utc(2026, 3, 28, 12, 0),
                utc(2026, 3, 29, 1, 30),
            ),
            (
                "gap London 01:30 -> 02:30 BST",
                daily("01:30"),
                "Europe/London",
                utc(2026, 3, 28, 12, 0),
                utc(2026, 3, 29, 1, 30),
            ),
            (
                "gap Sydney 02:15 -> 03:15 AEDT",
                daily("02:15"),
                "Australia/Sydney",
                utc(2026, 10, 3, 12, 0),
                utc(2026, 10, 3, 16, 15),
            ),
            (
                "gap Lord Howe half hour 02:15 -> 02:45",
                daily("02:15"),
                "Australia/Lord_Howe",
                utc(2026, 10, 3, 12, 0),
                utc(2026, 10, 3, 15, 45),
            ),
            (
                "gap weekly Sunday 02:30 NY",
                weekly(7, "02:30"),
                "America/New_York",
                utc(2026, 3, 5, 0, 0),
                utc(2026, 3, 8, 7, 30),
            ),
            (
                "day after gap is normal",
                daily("02:30"),
                "America/New_York",
                utc(2026, 3, 8, 8, 0),
                utc(2026, 3, 9, 6, 30),
            ),
            // Fall back overlaps: the earliest occurrence, once.
            (
                "overlap NY 01:30 EDT",
                daily("01:30"),
                "America/New_York",
                utc(2026, 11, 1, 0, 0),
                utc(2026, 11, 1, 5, 30),
            ),
            (
                "overlap NY second 01:30 not fired",
                daily("01:30"),
                "America/New_York",
                utc(2026, 11, 1, 5, 30),
                utc(2026, 11, 2, 6, 30),
            ),
            (
                "overlap Rome 02:30 CEST",
                daily("02:30"),
                "Europe/Rome",
                utc(2026, 10, 24, 12, 0),
                utc(2026, 10, 25, 0, 30),
            ),
            (
                "overlap Sydney 02:30 AEDT",
                daily("02:30"),
                "Australia/Sydney",
                utc(2026, 4, 4, 12, 0),
                utc(2026, 4, 4, 15, 30),
            ),
            (
                "overlap Santiago 23:30",
                daily("23:30"),
                "America/Santiago",
                utc(2026, 4, 4, 12, 0),
                utc(2026, 4, 5, 2, 30),
            ),
            // The 1-second guard: a slot within (now, now + 1 s] moves to the next period.
            (
                "guard skips a slot 1 s away",
                daily("09:00"),
                "UTC",
                utc(2026, 1, 1, 9, 0) - 1_000,
                utc(2026, 1, 2, 9, 0),
            ),
            (
                "guard keeps a slot 1.001 s away",
                daily("09:00"),
                "UTC",
                utc(2026, 1, 1, 9, 0) - 1_001,
                utc(2026, 1, 1, 9, 0),
            ),
            ("created at its slot -> next period", daily("09:00"), "UTC", utc(2026, 1, 1, 9, 0), utc(2026, 1, 2, 9, 0)),
        ];
        for (name, s, tz, now, want) in cases {
            let got = next(&s, tz, now);
            assert_eq!(
                got,
                want,
                "{name}: got {got} ({:?}), want {want}",
                chrono::DateTime::from_timestamp_millis(got)
            );
        }
        // Cross-check with local construction for unambiguous times.
        assert_eq!(next(&daily("09:00"), "Europe/Rome", utc(2026, 3, 10, 6, 0)), ms("Europe/Rome", 2026, 3, 10, 9, 0));
    }

    #[test]
    fn a_daily_slot_fires_once_per_local_day_through_a_whole_year_in_dst_zones() {
        for tz in ["America/New_York", "Europe/Rome", "Europe/London", "Australia/Sydney", "America/Santiago"] {
            for time in ["00:30", "01:30", "02:30", "03:00", "12:00"] {
                let z = resolve_timezone(tz).unwrap();
                let mut now = utc(2026, 1, 1, 0, 0);
                let mut days = std::collections::BTreeSet::new();
                for _ in 0..365 {
                    let n = next(&daily(time), tz, now);
                    assert!(n > now + GUARD_MS);
                    let local = chrono::DateTime::from_timestamp_millis(n).unwrap().with_timezone(&z);
                    assert!(days.insert(local.date_naive()), "{tz} {time}: fired twice on {}", local.date_naive());
                    now = n;
                }
                assert_eq!(days.len(), 365);
            }
        }
    }

    #[test]
    fn validation_messages() {
        let e = |r: AppResult<()>| r.unwrap_err().to_string();
        assert_eq!(e(validate_slot(&daily("9:00"))), "Invalid time '9:00', expected HH:mm");
        assert_eq!(e(validate_slot(&daily("24:00"))), "Invalid time '24:00', expected HH:mm");
        assert_eq!(e(validate_slot(&daily("09:00:00"))), "Invalid time '09:00:00', expected HH:mm");
        assert_eq!(e(validate_slot(&daily("12:60"))), "Invalid time '12:60', expected HH:mm");
        assert!(validate_slot(&daily(" 09:00 ")).is_ok());
        assert_eq!(e(validate_slot(&weekly(0, "09:00"))), "Weekly schedule weekday must be in range 1..7");
        assert_eq!(e(validate_slot(&weekly(8, "09:00"))), "Weekly schedule weekday must be in range 1..7");
        assert_eq!(e(validate_slot(&monthly(32, "09:00"))), "Monthly schedule dayOfMonth must be 1..31 or 'last'");
        let bad_named = Schedule::Monthly { day_of_month: DayOfMonth::Named("first".into()), time: "09:00".into() };
        assert_eq!(e(validate_slot(&bad_named)), "Monthly schedule dayOfMonth must be 1..31 or 'last'");
        assert_eq!(
            e(validate_job_schedule(Periodicity::Weekly, &daily("09:00"))),
            "Schedule kind must match periodicity"
        );
        assert_eq!(
            e(validate_suggested_times(Periodicity::Manual, &[daily("09:00")])),
            "Manual template does not accept suggested times"
        );
        assert_eq!(
            e(validate_suggested_times(Periodicity::Daily, &[daily("09:00"), weekly(1, "09:00")])),
            "All suggested times must match template periodicity"
        );
        assert_eq!(
            e(validate_suggested_times(Periodicity::Daily, &[daily("09:00"), daily("25:00")])),
            "Invalid time '25:00', expected HH:mm"
        );
        assert!(validate_suggested_times(Periodicity::Daily, &[]).is_ok());
        let tz = |s: &str| resolve_timezone(s).map(|z| z.name().to_string()).map_err(|e| e.to_string());
        assert_eq!(tz("  "), Err("Timezone is required".into()));
        assert_eq!(tz("Mars/Olympus"), Err("Invalid timezone 'Mars/Olympus'".into()));
        assert_eq!(tz("+05:30"), Err("Invalid timezone '+05:30'".into()));
        assert_eq!(tz("europe/rome"), Ok("Europe/Rome".into()));
        assert_eq!(tz("EST"), Ok("EST".into()));
        assert_eq!(tz("UTC"), Ok("UTC".into()));
        assert_eq!(tz("Etc/GMT+5"), Ok("Etc/GMT+5".into()));
    }

    #[test]
    fn manual_and_disabled_jobs_have_no_next_run() {
        assert_eq!(job_next_run(true, &Schedule::Manual, "UTC", 0).unwrap(), None);
        assert_eq!(job_next_run(false, &daily("09:00"), "UTC", 0).unwrap(), None);
        assert!(job_next_run(true, &daily("09:00"), "Mars/Olympus", 0).is_err());
        assert_eq!(job_next_run(true, &daily("09:00"), "UTC", 0).unwrap(), Some(9 * 3_600_000));
    }

    #[test]
    fn lateness_and_staleness() {
        assert_eq!(slot_decision(1_000, 1_000), SlotDecision::Send { lateness_ms: 0 });
        assert_eq!(slot_decision(0, 59 * 60_000), SlotDecision::Send { lateness_ms: 59 * 60_000 });
        assert_eq!(slot_decision(0, STALE_AFTER_MS), SlotDecision::Send { lateness_ms: STALE_AFTER_MS });
        assert_eq!(slot_decision(0, STALE_AFTER_MS + 1), SlotDecision::Skip { lateness_ms: STALE_AFTER_MS + 1 });
        // A week-old slot (a dispatcher outage) is not sent.
        assert!(matches!(slot_decision(0, 7 * 86_400_000), SlotDecision::Skip { .. }));
        assert_eq!(scheduled_run_key("j", 5), "scheduled:j:5");
        assert_eq!(manual_run_key("j", "k1"), "manual:j:k1");
        assert!(validate_idempotency_key("abc-123").is_ok());
        assert!(validate_idempotency_key("").is_err() && validate_idempotency_key("a b").is_err());
    }

    #[test]
    fn scheduler_expressions() {
        let x = |s: Schedule| scheduler_expression(&s).unwrap();
        assert_eq!(x(Schedule::Manual), None);
        assert_eq!(x(daily("09:05")), Some("cron(5 9 * * ? *)".into()));
        assert_eq!(x(weekly(1, "00:30")), Some("cron(30 0 ? * MON *)".into()));
        assert_eq!(x(weekly(7, "23:00")), Some("cron(0 23 ? * SUN *)".into()));
        assert_eq!(x(monthly(15, "08:00")), Some("cron(0 8 15 * ? *)".into()));
        assert_eq!(x(monthly(31, "08:00")), Some("cron(0 8 28-31 * ? *)".into()));
        assert_eq!(x(last("08:00")), Some("cron(0 8 L * ? *)".into()));
    }
}
