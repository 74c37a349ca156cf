//! Request bodies the worker sends and the views of the answers it reads, where `shared`'s
//! protocol types only go the backend's way (argument types that only deserialize, results
//! that only serialize). The tests hold each one against `shared`'s own type, so a change of
//! the wire on either side fails here.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use shared::protocol::worker::{
    AppendResult, ClaimedJob, FailResult, HeartbeatResult, HistoryRole, Payload, ReplyArgs, ReplyResult, ReplyStatus,
    TypingArgs,
};

#[derive(Debug, Serialize)]
pub struct BootstrapReq<'a> {
    pub code: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapView {
    pub worker_id: String,
    pub token: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimReq<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HydrationReq<'a> {
    pub message_id: &'a str,
    pub lease_id: &'a str,
    pub workspace_id: &'a str,
}

/// The parts of the hydration bundle the worker reads itself; the whole bundle (minus its
/// secrets) goes to the engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HydrationView {
    pub message_id: String,
    pub conversation_id: String,
    pub agent_key: String,
    pub payload: Payload,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseReq<'a> {
    pub message_id: &'a str,
    pub lease_id: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailReq<'a> {
    pub message_id: &'a str,
    pub lease_id: &'a str,
    pub error_message: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Turn<'a> {
    pub role: HistoryRole,
    pub content: &'a str,
    pub at: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendReq<'a> {
    pub conversation_id: &'a str,
    pub workspace_id: &'a str,
    pub messages: Vec<Turn<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationReq<'a> {
    pub conversation_id: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HasQueuedView {
    pub has_queued: bool,
}

/// `control-state` / `worker-heartbeat`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlView {
    pub should_stop: bool,
    pub action: String,
    #[serde(default)]
    pub reasons: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotTuple<'a> {
    pub workspace_id: &'a str,
    pub agent_key: &'a str,
    pub conversation_id: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareReq<'a> {
    pub workspace_id: &'a str,
    pub agent_key: &'a str,
    pub conversation_id: &'a str,
    pub reason: &'a str,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareView {
    pub snapshot_id: String,
    pub upload_url: String,
    pub upload_method: String,
    #[serde(default)]
    pub upload_headers: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalizeReq<'a> {
    pub snapshot_id: &'a str,
    pub sha256: &'a str,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalizeView {
    pub status: String,
    #[serde(default)]
    pub worker_status: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotFailReq<'a> {
    pub snapshot_id: &'a str,
    pub error: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreView {
    pub snapshot_id: String,
    pub download_url: String,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

/// An error body: `{"error": {"code", "message", "reason"?, "retryAfterMs"?}}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorView {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorEnvelope {
    #[serde(default)]
    pub error: ErrorView,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use shared::hydration::model::{ConversationState, HydrationArgs, HydrationBundle, ProfileView};
    use shared::queue::{AppendArgs, ClaimArgs, ConversationArgs, FailArgs, LeaseArgs};
    use shared::snapshots::model as snap;

    /// The body as the backend's route gets it (it puts the token's `workerId` in where the
    /// argument type takes one).
    fn with_worker(v: Value) -> Value {
        let mut v = v;
        v["workerId"] = json!("w1");
        v
    }

    fn to<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v} does not parse: {e}"))
    }

    #[test]
    fn requests_parse_as_the_backends_argument_types() {
        let v = serde_json::to_value(ClaimReq { conversation_id: Some("c") }).unwrap();
        assert_eq!(to::<ClaimArgs>(with_worker(v)).conversation_id.as_deref(), Some("c"));
        let v = serde_json::to_value(ClaimReq { conversation_id: None }).unwrap();
        assert_eq!(v, json!({}));
        let v = serde_json::to_value(HydrationReq { message_id: "m", lease_id: "l", workspace_id: "default" }).unwrap();
        assert_eq!(to::<HydrationArgs>(v).lease_id.as_deref(), Some("l"));
        let v = serde_json::to_value(LeaseReq { message_id: "m", lease_id: "l" }).unwrap();
        assert_eq!(to::<LeaseArgs>(with_worker(v)).lease_id, "l");
        let v = serde_json::to_value(FailReq { message_id: "m", lease_id: "l", error_message: "boom" }).unwrap();
        assert_eq!(to::<FailArgs>(with_worker(v)).error_message, "boom");
        let v = serde_json::to_value(AppendReq {
            conversation_id: "c",
            workspace_id: "default",
            messages: vec![
                Turn { role: HistoryRole::User, content: "hi", at: 1 },
                Turn { role: HistoryRole::Assistant, content: "echo: hi", at: 2 },
            ],
        })
        .unwrap();
        assert_eq!(to::<AppendArgs>(v).messages.len(), 2);
        let v = serde_json::to_value(ConversationReq { conversation_id: "c" }).unwrap();
        assert_eq!(to::<ConversationArgs>(v).conversation_id, "c");
        let v = serde_json::to_value(PrepareReq {
            workspace_id: "default",
            agent_key: "a",
            conversation_id: "c",
            reason: "drain",
            size_bytes: 10,
        })
        .unwrap();
        assert_eq!(to::<snap::PrepareArgs>(v).reason, snap::SnapshotReason::Drain);
        for r in ["signal", "manual"] {
            let v = serde_json::to_value(PrepareReq {
                workspace_id: "w",
                agent_key: "a",
                conversation_id: "c",
                reason: r,
                size_bytes: 1,
            })
            .unwrap();
            to::<snap::PrepareArgs>(v);
        }
        let v = serde_json::to_value(FinalizeReq { snapshot_id: "s", sha256: "ab", size_bytes: 3 }).unwrap();
        assert_eq!(to::<snap::FinalizeArgs>(v).size_bytes, 3);
        let v = serde_json::to_value(SnapshotFailReq { snapshot_id: "s", error: "e" }).unwrap();
        assert_eq!(to::<snap::FailSnapshotArgs>(v).error, "e");
        let v =
            serde_json::to_value(SnapshotTuple { workspace_id: "w", agent_key: "a", conversation_id: "c" }).unwrap();
        assert_eq!(to::<snap::RestoreArgs>(v).conversation_id, "c");
        let v = serde_json::to_value(BootstrapReq { code: "x" }).unwrap();
        assert_eq!(to::<shared::reconcile::model::BootstrapArgs>(v).code, "x");
    }

    #[test]
    fn the_backends_answers_parse_as_the_views() {
        let m = shared::workers::model::MintedToken {
            worker_id: "w1".into(),
            token: "afw1.x.y".into(),
            issued_at: 1,
            status: shared::workers::model::WorkerStatus::Active,
        };
        let b: BootstrapView = to(serde_json::to_value(&m).unwrap());
        assert_eq!((b.worker_id.as_str(), b.token.as_str()), ("w1", "afw1.x.y"));

        let cs = shared::workers::model::ControlState {
            should_stop: true,
            action: "drain",
            reasons: vec!["idle_timeout".into()],
            status: None,
            load: 0,
            heartbeat_at: None,
            stale_at: None,
            idle_deadline: None,
            now: 1,
        };
        let c: ControlView = to(serde_json::to_value(&cs).unwrap());
        assert_eq!((c.should_stop, c.action.as_str()), (true, "drain"));

        let payload = Payload {
            provider: "telegram".into(),
            provider_user_id: "42".into(),
            message_text: "hi".into(),
            external_message_id: None,
            raw_update_json: None,
            metadata: None,
            attachments: None,
        };
        let h = HydrationBundle {
            message_id: "m".into(),
            conversation_id: "c".into(),
            agent_key: "a".into(),
            workspace_id: "default".into(),
            lease_id: "l".into(),
            lease_expires_at: 1,
            attempts: 0,
            payload: payload.clone(),
            conversation_state: ConversationState {
                context_history: vec![],
                pending_tool_calls: vec![],
                history_mode: "delta",
                history_truncated: false,
            },
            profile: ProfileView { agent_key: "a".into(), version: "1".into(), enabled: true, bot_identity: None },
            telegram_bot_token: Some("secret".into()),
            bridge_runtime_config: None,
        };
        let v: HydrationView = to(serde_json::to_value(&h).unwrap());
        assert_eq!((v.message_id.as_str(), v.payload.message_text.as_str()), ("m", "hi"));

        let p = snap::PrepareResult {
            snapshot_id: "s".into(),
            upload: shared::blob::UploadTarget {
                upload_url: "http://u".into(),
                upload_method: "PUT",
                upload_headers: [("content-type".to_string(), "application/gzip".to_string())].into(),
                upload_expires_at: 5,
            },
            expires_at: 9,
        };
        let pv: PrepareView = to(serde_json::to_value(&p).unwrap());
        assert_eq!((pv.upload_method.as_str(), pv.upload_headers.len()), ("PUT", 1));

        let f = snap::FinalizeResult {
            snapshot_id: "s".into(),
            status: snap::SnapshotStatus::Ready,
            expires_at: 1,
            worker_status: Some(shared::workers::model::WorkerStatus::Stopping),
        };
        let fv: FinalizeView = to(serde_json::to_value(&f).unwrap());
        assert_eq!((fv.status.as_str(), fv.worker_status.as_deref()), ("ready", Some("stopping")));

        let r = snap::RestoreResult {
            snapshot_id: "s".into(),
            download_url: "http://d".into(),
            download_expires_at: 1,
            sha256: Some("ab".into()),
            size_bytes: Some(2),
            created_at: 1,
            reason: snap::SnapshotReason::Drain,
        };
        let rv: RestoreView = to(serde_json::to_value(&r).unwrap());
        assert_eq!(rv.sha256.as_deref(), Some("ab"));

        let e: ErrorEnvelope = to(json!({"error": {"code": "Conflict", "message": "x", "reason": "lease_expired"}}));
        assert_eq!(e.error.reason.as_deref(), Some("lease_expired"));
        let e: ErrorEnvelope = to(json!({"error": {"code": "RateLimited", "message": "x", "retryAfterMs": 1500}}));
        assert_eq!(e.error.retry_after_ms, Some(1500));
    }
}
