//! Snapshot rules (pure): who may use a conversation's snapshots, finalize guards, object checks,
//! which snapshot a restore takes.

use super::model::{SnapshotItem, SnapshotReason, SnapshotStatus};
use crate::blob::ObjectInfo;
use crate::clock::Millis;
use crate::conversations::model::ConversationItem;
use crate::error::{AppError, AppResult};
use crate::ids;
use crate::workers::model::{WorkerItem, WorkerStatus};

/// A worker may prepare, finalize or restore snapshots only of a conversation it serves: the one
/// it is assigned to (by a claim, or by `upsertWorkerState`), or one whose live lock it holds.
/// An unassigned worker has no conversation's workspace to read or to overwrite.
pub fn check_worker_scope(w: &WorkerItem, conv: Option<&ConversationItem>, cid: &str, now: Millis) -> AppResult<()> {
    if w.assigned_conversation_id.as_deref() == Some(cid) {
        return Ok(());
    }
    if conv.is_some_and(|c| {
        c.conversation_id == cid
            && c.lock_worker_id.as_deref() == Some(w.worker_id.as_str())
            && c.lock_until.is_some_and(|u| u > now)
    }) {
        return Ok(());
    }
    Err(AppError::Forbidden(match &w.assigned_conversation_id {
        Some(c) => format!(
            "worker '{}' serves conversation '{}', not '{}'",
            w.worker_id,
            ids::truncate(c, 80),
            ids::truncate(cid, 80)
        ),
        None => format!(
            "worker '{}' serves no conversation: only a worker assigned to conversation '{}' (by a claim or \
             upsertWorkerState) or holding its lease may use its snapshots",
            w.worker_id,
            ids::truncate(cid, 80)
        ),
    }))
}

pub fn validate_sha256(v: &str) -> AppResult<()> {
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(AppError::validation("sha256 must be 64 lowercase hex digits"))
    }
}

/// Whether finalize may proceed (before the object is read).
pub fn check_finalize(snap: &SnapshotItem, worker_id: &str, now: Millis) -> AppResult<()> {
    if snap.worker_id != worker_id {
        return Err(AppError::Forbidden(format!("snapshot {} was prepared by another worker", snap.snapshot_id)));
    }
    if snap.status != SnapshotStatus::Uploading {
        return Err(AppError::conflict(format!(
            "snapshot {} is {}; only an uploading snapshot can be finalized or failed",
            snap.snapshot_id,
            snap.status.as_str()
        )));
    }
    if snap.upload_expires_at <= now {
        return Err(AppError::conflict(format!(
            "the upload window of snapshot {} closed at {}",
            snap.snapshot_id, snap.upload_expires_at
        )));
    }
    Ok(())
}

/// The stored object must be what the worker says it uploaded.
pub fn check_object(
    declared_sha: &str,
    declared_size: u64,
    announced: Option<u64>,
    actual: Option<&ObjectInfo>,
) -> AppResult<()> {
    let Some(o) = actual else {
        return Err(AppError::validation("no object was uploaded for this snapshot"));
    };
    if let Some(a) = announced.filter(|a| *a != declared_size) {
        return Err(AppError::validation(format!(
            "sizeBytes {declared_size} differs from the {a} announced at prepare"
        )));
    }
    if o.size != declared_size {
        return Err(AppError::validation(format!(
            "size mismatch: the stored object has {} bytes, sizeBytes says {declared_size}",
            o.size
        )));
    }
    if o.sha256 != declared_sha {
        return Err(AppError::validation(format!(
            "sha256 mismatch: the stored object hashes to {}, the worker claims {declared_sha}",
            o.sha256
        )));
    }
    Ok(())
}

/// The worker's next status after finalizing `snap`: a draining worker moves to stopping only
/// for a drain/signal snapshot of the conversation it serves (W12).
pub fn status_after_finalize(w: &WorkerItem, snap: &SnapshotItem) -> Option<WorkerStatus> {
    let own = w.assigned_conversation_id.as_deref().is_none_or(|c| c == snap.conversation_id);
    (w.status == WorkerStatus::Draining && own && snap.reason != SnapshotReason::Manual)
        .then_some(WorkerStatus::Stopping)
}

/// The newest good snapshot for (workspace, agent) among `items` (newest first).
pub fn pick_restore<'a>(items: &'a [SnapshotItem], ws: &str, agent: &str, now: Millis) -> Option<&'a SnapshotItem> {
    items.iter().find(|i| {
        i.status == SnapshotStatus::Ready
            && i.workspace_id == ws
            && i.agent_key == agent
            && i.expires_at > now
            && i.sha256.is_some()
    })
}

/// A `limit` argument: `default` when absent, else it must be in `1..=max` (refused, not clamped).
pub fn limit_in(name: &str, v: Option<i64>, default: i32, max: i32) -> AppResult<i32> {
    match v {
        None => Ok(default),
        Some(l) if (1..=i64::from(max)).contains(&l) => Ok(l as i32),
        Some(l) => Err(AppError::validation(format!("{name} must be 1 to {max}, got {l}"))),
    }
}

/// The conversation of a (consumer user, agent) pair (identity spec §2).
pub fn user_agent_conversation(consumer_user_id: &str, agent_key: &str) -> String {
    format!("user-agent:{agent_key}:{consumer_user_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(status: SnapshotStatus, ws: &str, created: Millis) -> SnapshotItem {
        SnapshotItem {
            pk: "C#c".into(),
            sk: format!("S#{created}"),
            snapshot_id: format!("{created}:c"),
            workspace_id: ws.into(),
            agent_key: "bot".into(),
            worker_id: "w1".into(),
            conversation_id: "c".into(),
            reason: SnapshotReason::Signal,
            format_version: 1,
            object_key: "snapshots/x.tar.gz".into(),
            status,
            sha256: (status == SnapshotStatus::Ready).then(|| "a".repeat(64)),
            size_bytes: None,
            declared_size_bytes: None,
            error: None,
            created_at: created,
            completed_at: None,
            expires_at: created + 1_000,
            upload_expires_at: created + 100,
            expiry_kind: None,
            expiry_at: None,
            ttl: None,
        }
    }

    #[test]
    fn restore_skips_newer_bad_snapshots() {
        let items = vec![
            snap(SnapshotStatus::Uploading, "default", 30),
            snap(SnapshotStatus::Failed, "default", 20),
            snap(SnapshotStatus::Ready, "other", 15),
            snap(SnapshotStatus::Ready, "default", 10),
            snap(SnapshotStatus::Ready, "default", 5),
        ];
        assert_eq!(pick_restore(&items, "default", "bot", 50).map(|s| s.created_at), Some(10));
        assert_eq!(pick_restore(&items, "default", "bot", 1_010).map(|s| s.created_at), None, "expired");
        assert_eq!(pick_restore(&items, "default", "other-agent", 50), None);
    }

    #[test]
    fn finalize_guards() {
        let up = snap(SnapshotStatus::Uploading, "default", 10);
        assert!(check_finalize(&up, "w1", 50).is_ok());
        assert_eq!(check_finalize(&up, "w2", 50).unwrap_err().code().as_str(), "Forbidden");
        assert_eq!(check_finalize(&up, "w1", 110).unwrap_err().code().as_str(), "Conflict", "window closed");
        for st in [SnapshotStatus::Ready, SnapshotStatus::Failed, SnapshotStatus::Expired] {
            assert_eq!(check_finalize(&snap(st, "default", 10), "w1", 50).unwrap_err().code().as_str(), "Conflict");
        }
        let obj = ObjectInfo { size: 3, sha256: "b".repeat(64) };
        assert!(check_object(&"b".repeat(64), 3, None, Some(&obj)).is_ok());
        assert!(check_object(&"b".repeat(64), 3, Some(3), Some(&obj)).is_ok());
        assert!(check_object(&"b".repeat(64), 3, Some(4), Some(&obj)).unwrap_err().to_string().contains("announced"));
        assert!(
            check_object(&"c".repeat(64), 3, None, Some(&obj)).unwrap_err().to_string().contains("sha256 mismatch")
        );
        assert!(check_object(&"b".repeat(64), 4, None, Some(&obj)).unwrap_err().to_string().contains("size mismatch"));
        assert!(check_object(&"b".repeat(64), 3, None, None).unwrap_err().to_string().contains("no object"));
        assert!(validate_sha256(&"B".repeat(64)).is_err());
        assert!(validate_sha256("abc").is_err());
    }

    #[test]
    fn only_a_final_snapshot_of_its_own_conversation_stops_a_draining_worker() {
        use crate::workers::{model::UpsertWorkerArgs, rules::apply_upsert};
        let mut w = apply_upsert(None, &UpsertWorkerArgs::status("w1", "fly", WorkerStatus::Draining), 1).unwrap();
        let s = snap(SnapshotStatus::Uploading, "default", 10);
        assert_eq!(status_after_finalize(&w, &s), Some(WorkerStatus::Stopping), "no assignment: its own");
        w.assigned_conversation_id = Some("other".into());
        assert_eq!(status_after_finalize(&w, &s), None, "another conversation's snapshot");
        w.assigned_conversation_id = Some("c".into());
        let mut manual = s.clone();
        manual.reason = SnapshotReason::Manual;
        assert_eq!(status_after_finalize(&w, &manual), None, "manual snapshots do not stop it");
        w.status = WorkerStatus::Active;
        assert_eq!(status_after_finalize(&w, &s), None);
        assert!(check_worker_scope(&w, None, "c", 0).is_ok());
        assert_eq!(check_worker_scope(&w, None, "d", 0).unwrap_err().code().as_str(), "Forbidden");
        // Unassigned: only the holder of the conversation's live lock.
        w.assigned_conversation_id = None;
        assert_eq!(check_worker_scope(&w, None, "c", 0).unwrap_err().code().as_str(), "Forbidden");
        let conv = crate::conversations::model::ConversationItem {
            conversation_id: "c".into(),
            lock_worker_id: Some("w1".into()),
            lock_until: Some(100),
            ..serde_json::from_value(serde_json::json!({
                "pk": "C#c", "sk": "CONV", "openKey": "!CONV", "conversationId": "c", "agentKey": "bot",
                "createdAt": 0, "openCount": 1, "readyShard": "r0"
            }))
            .unwrap()
        };
        assert!(check_worker_scope(&w, Some(&conv), "c", 99).is_ok());
        assert_eq!(check_worker_scope(&w, Some(&conv), "c", 100).unwrap_err().code().as_str(), "Forbidden", "expired");
        assert!(check_worker_scope(&w, Some(&conv), "d", 99).is_err(), "another conversation's lock");
    }
}
