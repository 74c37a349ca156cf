//! Push items (control table, `docs/data-model.md` §pushing) and the shapes the ops take.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};

/// How often a job fires by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Periodicity {
    Manual,
    Daily,
    Weekly,
    Monthly,
}

impl Periodicity {
    pub fn as_str(self) -> &'static str {
        match self {
            Periodicity::Manual => "manual",
            Periodicity::Daily => "daily",
            Periodicity::Weekly => "weekly",
            Periodicity::Monthly => "monthly",
        }
    }
}

/// A monthly slot's day: `1..=31` (clamped to the month's length) or `"last"`. Kept loose
/// (any integer or string) so validation can answer with the spec's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DayOfMonth {
    Day(i64),
    Named(String),
}

/// A schedule slot (spec §3.1): a local wall-clock time, `HH:mm`, in the job's time zone.
/// `weekday`: 1 = Monday .. 7 = Sunday.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    Manual,
    Daily {
        time: String,
    },
    Weekly {
        weekday: i64,
        time: String,
    },
    Monthly {
        #[serde(rename = "dayOfMonth")]
        day_of_month: DayOfMonth,
        time: String,
    },
}

impl Schedule {
    pub fn kind(&self) -> Periodicity {
        match self {
            Schedule::Manual => Periodicity::Manual,
            Schedule::Daily { .. } => Periodicity::Daily,
            Schedule::Weekly { .. } => Periodicity::Weekly,
            Schedule::Monthly { .. } => Periodicity::Monthly,
        }
    }
}

/// A company push template (spec §1.1). Id `<ULID>:<companyId>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushTemplate {
    #[serde(rename = "_id")]
    pub template_id: String,
    pub company_id: String,
    pub template_key: String,
    pub title: String,
    pub text: String,
    pub periodicity: Periodicity,
    pub suggested_times: Vec<Schedule>,
    pub enabled: bool,
    pub created_by: String,
    pub updated_by: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A push job (spec §1.2): one message, sent on a schedule or by hand, to one user's agent.
/// Id `<ULID>:<consumerUserId>` (a direct key of the user's partition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushJob {
    #[serde(rename = "_id")]
    pub job_id: String,
    pub company_id: String,
    pub consumer_user_id: String,
    pub agent_key: Option<String>,
    pub source_template_id: Option<String>,
    pub title: String,
    pub text: String,
    pub periodicity: Periodicity,
    pub timezone: String,
    pub schedule: Schedule,
    pub enabled: bool,
    pub next_run_at: Option<Millis>,
    pub last_run_at: Option<Millis>,
    pub last_run_key: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What became of one push attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchStatus {
    /// The message was enqueued (`enqueuedMessageId`).
    Enqueued,
    /// No message: the slot was missed by more than the staleness cut-off (`error` says by how much).
    Skipped,
    /// No message: `error` says why (no agent, a refused enqueue, a zone that no longer resolves).
    Failed,
}

/// One push attempt (spec §1.3), for the audit and the stats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushDispatch {
    #[serde(rename = "_id")]
    pub dispatch_id: String,
    pub job_id: String,
    pub consumer_user_id: String,
    /// The agent the attempt was for (absent when none could be resolved).
    pub agent_key: Option<String>,
    pub run_key: String,
    /// `scheduled` (a slot), `manual` (a trigger).
    pub mode: String,
    /// The slot for scheduled runs, the trigger time for manual ones.
    pub scheduled_for: Millis,
    pub enqueued_message_id: Option<String>,
    pub status: DispatchStatus,
    pub error: Option<String>,
    pub created_at: Millis,
}

/// A company broadcast (spec §1.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Broadcast {
    #[serde(rename = "_id")]
    pub broadcast_id: String,
    pub company_id: String,
    pub idempotency_key: String,
    pub title: String,
    pub text: String,
    pub target: String,
    pub requested_by: String,
    pub requested_at: Millis,
    /// `running` until every target has a dispatch row, then `done` or `failed`.
    pub status: String,
    pub total_targets: u32,
    pub enqueued_count: u32,
    pub failed_count: u32,
    pub completed_at: Option<Millis>,
}
