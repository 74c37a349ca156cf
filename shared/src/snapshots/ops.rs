//! Worker workspace snapshots (spec §10) with the guards the original lacks (W12, W13):
//! finalize only from `uploading` and only by the worker that prepared it; the stored object's
//! size and SHA-256 are checked against what the worker claims; uploads time out; restore returns
//! the newest *good* snapshot; expiry deletes the object. Plus the storage sweep that also
//! expires media.
//!
//! Items live in the queue table under their conversation (`pk = C#<conversationId>`,
//! `sk = S#<ULID>`), so listing a conversation's snapshots newest first is one Query; the
//! snapshot id is `<ULID>:<conversationId>`, a direct key. Deadlines are in the sparse `expiry`
//! index (`snapshot_upload` while uploading, `snapshot` while ready).

use super::model::*;
use super::rules::{
    check_finalize, check_object, check_worker_scope, limit_in, pick_restore, status_after_finalize,
    user_agent_conversation, validate_sha256,
};
use crate::adapters::dynamo::snapshots::{FinalizeWrite, snapshot_sk};
use crate::adapters::dynamo::{Store, keys};
use crate::app::App;
use crate::blob::snapshot_key;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::ids;
use crate::queue::rules;
use crate::workers::auth::Principal;
use crate::workers::model::WorkerItem;

/// The scope check, reading the conversation only when the assignment alone does not decide.
async fn check_scope(store: &Store, w: &WorkerItem, cid: &str) -> AppResult<()> {
    if w.assigned_conversation_id.as_deref() == Some(cid) {
        return Ok(());
    }
    let conv = store.get_conversation(cid).await?;
    check_worker_scope(w, conv.as_ref(), cid, store.now())
}

/// `prepareDataSnapshotUpload`.
pub async fn prepare(app: &App, p: &Principal, w: &WorkerItem, a: &PrepareArgs) -> AppResult<PrepareResult> {
    rules::validate_workspace_id(&a.workspace_id)?;
    rules::validate_agent_key(&a.agent_key)?;
    rules::validate_conversation_id(&a.conversation_id)?;
    let store = &app.store;
    let pol = &store.policy;
    match a.size_bytes {
        Some(0) => return Err(AppError::validation("sizeBytes must be at least 1")),
        Some(sz) if sz > pol.snapshots.max_bytes => {
            return Err(AppError::PayloadTooLarge(format!(
                "sizeBytes {sz} is over the snapshot limit of {} bytes",
                pol.snapshots.max_bytes
            )));
        }
        _ => {}
    }
    let conv = store.get_conversation(&a.conversation_id).await?;
    check_worker_scope(w, conv.as_ref(), &a.conversation_id, store.now())?;
    let conv =
        conv.ok_or_else(|| AppError::not_found(format!("conversation '{}' does not exist", a.conversation_id)))?;
    if conv.agent_key != a.agent_key {
        return Err(AppError::validation(format!(
            "conversation '{}' belongs to agent '{}', not '{}'",
            a.conversation_id, conv.agent_key, a.agent_key
        )));
    }
    let now = store.now();
    let ulid = ids::ulid(now);
    let upload_until = now + pol.snapshots.upload_timeout_ms;
    let item = SnapshotItem {
        pk: keys::conversation_pk(&a.conversation_id),
        sk: snapshot_sk(&ulid),
        snapshot_id: format!("{ulid}:{}", a.conversation_id),
        workspace_id: a.workspace_id.clone(),
        agent_key: a.agent_key.clone(),
        worker_id: p.worker_id.clone(),
        conversation_id: a.conversation_id.clone(),
        reason: a.reason,
        format_version: FORMAT_VERSION,
        object_key: snapshot_key(&ulid),
        status: SnapshotStatus::Uploading,
        sha256: None,
        size_bytes: None,
        declared_size_bytes: a.size_bytes,
        error: None,
        created_at: now,
        completed_at: None,
        expires_at: now + pol.snapshots.retention_ms,
        upload_expires_at: upload_until,
        expiry_kind: Some("snapshot_upload".into()),
        expiry_at: Some(upload_until),
        ttl: None,
    };
    // Sign the URL first: a failure there leaves nothing behind.
    let put = app.blobs.presign_put(&item.object_key, "application/gzip", a.size_bytes, upload_until).await?;
    store.put_snapshot(&item).await?;
    Ok(PrepareResult { snapshot_id: item.snapshot_id, upload: put.into(), expires_at: item.expires_at })
}

/// `finalizeDataSnapshotUpload`: verify the object, then one TransactWriteItems (snapshot ready +
/// worker row: lastSnapshotId, and draining -> stopping for its final snapshot).
/// `w` is the caller's worker row as authenticated; a lost race on it is read again.
pub async fn finalize(app: &App, p: &Principal, w: WorkerItem, a: &FinalizeArgs) -> AppResult<FinalizeResult> {
    validate_sha256(&a.sha256)?;
    let store = &app.store;
    let snap = store.get_snapshot(&a.snapshot_id).await?;
    check_finalize(&snap, &p.worker_id, store.now())?;
    check_scope(store, &w, &snap.conversation_id).await?;
    let actual = app.blobs.digest(&snap.object_key).await?;
    check_object(&a.sha256, a.size_bytes, snap.declared_size_bytes, actual.as_ref())?;
    let mut w = w;
    for attempt in 0..5 {
        let now = store.now();
        if attempt > 0 {
            let row = store.get_worker(&p.worker_id).await?;
            w = crate::workers::auth::check_row(row.as_ref(), &p.token_hash)?.clone();
        }
        let next = status_after_finalize(&w, &snap);
        let expires_at = now + store.policy.snapshots.retention_ms;
        match store.finalize_snapshot(p, &w, &snap, &a.sha256, a.size_bytes, next, now, expires_at).await? {
            FinalizeWrite::Done => {
                // A drained worker leaving the pool lets go of its conversation.
                if next == Some(crate::workers::model::WorkerStatus::Stopping)
                    && let Some(cid) = w.assigned_conversation_id.as_deref()
                {
                    store.release_conversation_owner(&p.worker_id, cid).await?;
                }
                return Ok(FinalizeResult {
                    snapshot_id: snap.snapshot_id.clone(),
                    status: SnapshotStatus::Ready,
                    expires_at,
                    worker_status: Some(next.unwrap_or(w.status)),
                });
            }
            FinalizeWrite::SnapshotChanged => {
                return Err(AppError::conflict(format!(
                    "snapshot {} changed during finalize (already finalized or failed)",
                    snap.snapshot_id
                )));
            }
            FinalizeWrite::WorkerChanged => continue, // status or token changed: read the row again
        }
    }
    Err(AppError::conflict("finalize: the worker row keeps changing; try again"))
}

/// `failDataSnapshotUpload`: only from uploading, only by its worker. The object (if any) is deleted.
pub async fn fail(app: &App, p: &Principal, a: &FailSnapshotArgs) -> AppResult<SnapshotView> {
    if a.error.trim().is_empty() {
        return Err(AppError::validation("error must not be blank"));
    }
    let store = &app.store;
    let snap = store.get_snapshot(&a.snapshot_id).await?;
    if snap.worker_id != p.worker_id {
        return Err(AppError::Forbidden(format!("snapshot {} was prepared by another worker", snap.snapshot_id)));
    }
    let now = store.now();
    let Some(after) = store.mark_snapshot_failed(&snap, &rules::bounded_error(&a.error), now).await? else {
        return Err(AppError::conflict(format!(
            "snapshot {} is {}; only an uploading snapshot can be failed",
            snap.snapshot_id,
            snap.status.as_str()
        )));
    };
    app.blobs.delete(&snap.object_key).await?;
    view(app, &after, now).await
}

/// `getLatestDataSnapshotForRestore`: the newest ready, unexpired snapshot of the tuple (not just
/// the newest row: a failed or unfinished later one does not hide a good earlier one).
pub async fn restore(app: &App, w: &WorkerItem, a: &RestoreArgs) -> AppResult<Option<RestoreResult>> {
    rules::validate_workspace_id(&a.workspace_id)?;
    rules::validate_agent_key(&a.agent_key)?;
    rules::validate_conversation_id(&a.conversation_id)?;
    let store = &app.store;
    check_scope(store, w, &a.conversation_id).await?;
    let now = store.now();
    let items = store.list_snapshots(&a.conversation_id, 100).await?;
    let Some(best) = pick_restore(&items, &a.workspace_id, &a.agent_key, now) else { return Ok(None) };
    let until = now + store.policy.media.download_url_ttl_ms;
    Ok(Some(RestoreResult {
        snapshot_id: best.snapshot_id.clone(),
        download_url: app.blobs.presign_get(&best.object_key, until).await?,
        download_expires_at: until,
        sha256: best.sha256.clone(),
        size_bytes: best.size_bytes,
        created_at: best.created_at,
        reason: best.reason,
    }))
}

async fn view(app: &App, i: &SnapshotItem, now: Millis) -> AppResult<SnapshotView> {
    let download_url = if i.status == SnapshotStatus::Ready && i.expires_at > now {
        Some(app.blobs.presign_get(&i.object_key, now + app.store.policy.media.download_url_ttl_ms).await?)
    } else {
        None
    };
    Ok(SnapshotView {
        snapshot_id: i.snapshot_id.clone(),
        conversation_id: i.conversation_id.clone(),
        workspace_id: i.workspace_id.clone(),
        agent_key: i.agent_key.clone(),
        worker_id: i.worker_id.clone(),
        reason: i.reason,
        status: i.status,
        created_at: i.created_at,
        completed_at: i.completed_at,
        expires_at: i.expires_at,
        size_bytes: i.size_bytes,
        sha256: i.sha256.clone(),
        error: i.error.clone(),
        download_url,
    })
}

/// `listSnapshotsForConversation`: newest first; limit default 50, 1 to 200.
pub async fn list_for_conversation(app: &App, a: &ListSnapshotsArgs) -> AppResult<Vec<SnapshotView>> {
    rules::validate_conversation_id(&a.conversation_id)?;
    let limit = limit_in("limit", a.limit, 50, 200)?;
    let now = app.now();
    let mut out = Vec::new();
    for i in app.store.list_snapshots(&a.conversation_id, limit).await? {
        out.push(view(app, &i, now).await?);
    }
    Ok(out)
}

/// `listSnapshotsForUserAgent`: the snapshots of `user`'s conversation with the agent.
pub async fn list_for_user_agent(
    app: &App,
    user: &crate::access::model::ConsumerUserId,
    a: &UserAgentSnapshotsArgs,
) -> AppResult<Vec<SnapshotView>> {
    rules::validate_agent_key(&a.agent_key)?;
    let cid = user_agent_conversation(user.as_str(), &a.agent_key);
    list_for_conversation(app, &ListSnapshotsArgs { conversation_id: cid, limit: a.limit }).await
}

/// The storage sweep (cleanup function, local runner timer, `expireOldDataSnapshots` op): up to
/// `limit` of each kind — ready snapshots past retention (object deleted, row `expired`), uploads
/// past their window (row `failed`, any partial object deleted), media past retention (object
/// deleted, attachment marked `expired` in its row and in the message payload).
pub async fn sweep(app: &App, limit: Option<i64>) -> AppResult<SweepResult> {
    let limit = limit_in("limit", limit, 100, 1000)?;
    let store = &app.store;
    let now = store.now();
    let mut res = SweepResult::default();
    for snap in store.due_expiries::<SnapshotItem>("snapshot", now, limit).await? {
        app.blobs.delete(&snap.object_key).await?;
        if store.expire_snapshot(&snap, now).await? {
            res.snapshots_expired += 1;
        }
    }
    for snap in store.due_expiries::<SnapshotItem>("snapshot_upload", now, limit).await? {
        if store.mark_snapshot_failed(&snap, "upload timed out", now).await?.is_some() {
            app.blobs.delete(&snap.object_key).await?;
            res.uploads_timed_out += 1;
        }
    }
    for row in store.due_expiries::<crate::media::model::AttachmentItem>("media", now, limit).await? {
        if crate::media::ops::expire_attachment(app, row, now).await? {
            res.media_expired += 1;
        }
    }
    Ok(res)
}

/// The snapshot ops for operators (the `admin` function).
pub const TABLE: crate::envelope::OpTable<App> = crate::envelope::OpTable {
    domain: "snapshots",
    ops: &[crate::op!(App, "listSnapshotsForConversation", |app, a: ListSnapshotsArgs| list_for_conversation(app, &a)
        .await?)],
};

/// The storage sweep (snapshots, timed-out uploads, media; deletes their objects), served by the
/// `cleanup` function.
pub const SWEEPS: crate::envelope::OpTable<App> = crate::envelope::OpTable {
    domain: "storage-sweeps",
    ops: &[
        crate::op!(App, "expireStorage", |app, a: crate::queue::ReleaseArgs| sweep(app, a.limit).await?),
        crate::op!(App, "expireOldDataSnapshots", |app, a: crate::queue::ReleaseArgs| sweep(app, a.limit).await?),
    ],
};

/// The snapshot ops that act for one end user (the `api` function): the user is the caller's.
pub const USER_TABLE: crate::envelope::OpTable<crate::access::ops::UserCtx> = crate::envelope::OpTable {
    domain: "snapshots",
    ops: &[
        crate::op!(crate::access::ops::UserCtx, "listSnapshotsForUserAgent", |c, a: UserAgentSnapshotsArgs| {
            list_for_user_agent(&c.app, &c.user, &a).await?
        }),
        crate::op!(crate::access::ops::UserCtx, "getLatestSnapshotForUserAgent", |c, a: UserAgentSnapshotsArgs| {
            let a = UserAgentSnapshotsArgs { limit: Some(1), ..a };
            list_for_user_agent(&c.app, &c.user, &a).await?.into_iter().next()
        }),
    ],
};
