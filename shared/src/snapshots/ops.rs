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

use crate::adapters::dynamo::{Ex, Item, Store, from_item, key, n, s, schema, to_item};
use crate::adapters::sdk_error;
use crate::app::App;
use crate::blob::{UploadTarget, snapshot_key};
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::ids::{self, MessageRef};
use crate::queue::rules;
use crate::workers::auth::Principal;
use crate::workers::model::{WorkerItem, WorkerStatus};
use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: u32 = 1;
const TOMBSTONE_RETENTION_MS: Millis = 30 * 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotReason {
    Drain,
    Signal,
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotStatus {
    Uploading,
    Ready,
    Failed,
    Expired,
}

impl SnapshotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotStatus::Uploading => "uploading",
            SnapshotStatus::Ready => "ready",
            SnapshotStatus::Failed => "failed",
            SnapshotStatus::Expired => "expired",
        }
    }
}

/// A snapshot row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotItem {
    pub pk: String,
    pub sk: String,
    pub snapshot_id: String,
    pub workspace_id: String,
    pub agent_key: String,
    pub worker_id: String,
    pub conversation_id: String,
    pub reason: SnapshotReason,
    pub format_version: u32,
    pub object_key: String,
    /// Stored under `snapStatus`: `status` belongs to messages (and their `byStatus` index).
    #[serde(rename = "snapStatus")]
    pub status: SnapshotStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The size announced at prepare (then signed into the upload URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Millis>,
    /// Until when a ready snapshot is kept (set again at finalize: completion + retention).
    pub expires_at: Millis,
    /// Until when the upload may happen.
    pub upload_expires_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

fn snapshot_sk(ulid: &str) -> String {
    format!("S#{ulid}")
}

// ------------------------------------------------------------------------------ wire types

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrepareArgs {
    pub workspace_id: String,
    pub agent_key: String,
    pub conversation_id: String,
    pub reason: SnapshotReason,
    /// When given, the upload must be exactly this many bytes (the length is signed).
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareResult {
    pub snapshot_id: String,
    #[serde(flatten)]
    pub upload: UploadTarget,
    pub expires_at: Millis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinalizeArgs {
    pub snapshot_id: String,
    /// Lowercase hex SHA-256 of the uploaded bytes.
    pub sha256: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalizeResult {
    pub snapshot_id: String,
    pub status: SnapshotStatus,
    pub expires_at: Millis,
    /// The worker's status afterwards (a draining worker whose final snapshot this is: stopping).
    pub worker_status: Option<WorkerStatus>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailSnapshotArgs {
    pub snapshot_id: String,
    pub error: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreArgs {
    pub workspace_id: String,
    pub agent_key: String,
    pub conversation_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    pub snapshot_id: String,
    pub download_url: String,
    pub download_expires_at: Millis,
    pub sha256: Option<String>,
    pub size_bytes: Option<u64>,
    pub created_at: Millis,
    pub reason: SnapshotReason,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListSnapshotsArgs {
    pub conversation_id: String,
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserAgentSnapshotsArgs {
    pub consumer_user_id: String,
    pub agent_key: String,
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    pub snapshot_id: String,
    pub conversation_id: String,
    pub workspace_id: String,
    pub agent_key: String,
    pub worker_id: String,
    pub reason: SnapshotReason,
    pub status: SnapshotStatus,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
    pub expires_at: Millis,
    pub size_bytes: Option<u64>,
    pub sha256: Option<String>,
    pub error: Option<String>,
    /// Only for a ready, unexpired snapshot.
    pub download_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepResult {
    pub snapshots_expired: u32,
    pub uploads_timed_out: u32,
    pub media_expired: u32,
}

// ------------------------------------------------------------------------------ pure rules

/// A worker may prepare, finalize or restore snapshots only of a conversation it serves: the one
/// it is assigned to (by a claim, or by `upsertWorkerState`), or one whose live lock it holds.
/// An unassigned worker has no conversation's workspace to read or to overwrite.
pub fn check_worker_scope(
    w: &WorkerItem,
    conv: Option<&crate::conversations::model::ConversationItem>,
    cid: &str,
    now: Millis,
) -> AppResult<()> {
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

/// The scope check, reading the conversation only when the assignment alone does not decide.
async fn check_scope(store: &Store, w: &WorkerItem, cid: &str) -> AppResult<()> {
    if w.assigned_conversation_id.as_deref() == Some(cid) {
        return Ok(());
    }
    let conv = store.get_conversation(cid).await?;
    check_worker_scope(w, conv.as_ref(), cid, store.now())
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
    actual: Option<&crate::blob::ObjectInfo>,
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

// ------------------------------------------------------------------------------ operations

async fn get_snapshot(store: &Store, id: &str) -> AppResult<(MessageRef, SnapshotItem)> {
    let r = MessageRef::parse(id)
        .map_err(|_| AppError::validation(format!("snapshotId '{}' is not a snapshot id", ids::truncate(id, 80))))?;
    let item = store
        .get(&store.tables.queue, key(rules::conversation_pk(&r.conversation_id), snapshot_sk(&r.ulid)))
        .await?
        .ok_or_else(|| AppError::not_found(format!("snapshot {id} does not exist")))?;
    Ok((r, from_item(item)?))
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
        pk: rules::conversation_pk(&a.conversation_id),
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
    store
        .client
        .put_item()
        .table_name(&store.tables.queue)
        .set_item(Some(to_item(&item)?))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await
        .map_err(|e| sdk_error("PutItem snapshot", e))?;
    Ok(PrepareResult { snapshot_id: item.snapshot_id, upload: put.into(), expires_at: item.expires_at })
}

/// `finalizeDataSnapshotUpload`: verify the object, then one TransactWriteItems (snapshot ready +
/// worker row: lastSnapshotId, and draining -> stopping for its final snapshot).
/// `w` is the caller's worker row as authenticated; a lost race on it is read again.
pub async fn finalize(app: &App, p: &Principal, w: WorkerItem, a: &FinalizeArgs) -> AppResult<FinalizeResult> {
    validate_sha256(&a.sha256)?;
    let store = &app.store;
    let (_, snap) = get_snapshot(store, &a.snapshot_id).await?;
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
        let ex = Ex::new()
            .name("#ss", "snapStatus")
            .name("#st", "status")
            .val(":uploading", s("uploading"))
            .val(":ready", s("ready"))
            .val(":w", s(&p.worker_id))
            .val(":sha", s(&a.sha256))
            .val(":size", n(a.size_bytes))
            .val(":now", n(now))
            .val(":exp", n(expires_at))
            .val(":kind", s("snapshot"))
            .val(":sid", s(&snap.snapshot_id))
            .val(":seen", s(w.status.as_str()))
            .val(":th", s(&p.token_hash))
            .val(":stopping", s("stopping"));
        let snap_update = crate::adapters::dynamo::queue::tx_update(
            &store.tables.queue,
            key(&snap.pk, &snap.sk),
            "SET #ss = :ready, sha256 = :sha, sizeBytes = :size, completedAt = :now, expiresAt = :exp, \
             expiryKind = :kind, expiryAt = :exp",
            Some("#ss = :uploading AND workerId = :w"),
            &ex,
        );
        let worker_update = match next {
            Some(_) => {
                "SET lastSnapshotId = :sid, #st = :stopping, stoppedAt = if_not_exists(stoppedAt, :now), heartbeatAt = :now"
            }
            None => "SET lastSnapshotId = :sid",
        };
        let worker_item = crate::adapters::dynamo::queue::tx_update(
            &store.tables.workers,
            Item::from([("workerId".to_string(), s(&p.worker_id))]),
            worker_update,
            Some("#st = :seen AND tokenHash = :th"),
            &ex,
        );
        match store.transact(vec![snap_update, worker_item]).await {
            Ok(()) => {
                return Ok(FinalizeResult {
                    snapshot_id: snap.snapshot_id.clone(),
                    status: SnapshotStatus::Ready,
                    expires_at,
                    worker_status: Some(next.unwrap_or(w.status)),
                });
            }
            Err(crate::adapters::dynamo::TxError::Cancelled(r)) => {
                if r.first().is_some_and(crate::adapters::dynamo::Reason::failed_condition) {
                    return Err(AppError::conflict(format!(
                        "snapshot {} changed during finalize (already finalized or failed)",
                        snap.snapshot_id
                    )));
                }
                continue; // the worker row changed (status or token): read it again
            }
            Err(e) => return Err(e.into_app("finalize snapshot")),
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
    let (_, snap) = get_snapshot(store, &a.snapshot_id).await?;
    if snap.worker_id != p.worker_id {
        return Err(AppError::Forbidden(format!("snapshot {} was prepared by another worker", snap.snapshot_id)));
    }
    let now = store.now();
    let Some(after) = mark_failed(store, &snap, &rules::bounded_error(&a.error), now).await? else {
        return Err(AppError::conflict(format!(
            "snapshot {} is {}; only an uploading snapshot can be failed",
            snap.snapshot_id,
            snap.status.as_str()
        )));
    };
    app.blobs.delete(&snap.object_key).await?;
    view(app, &after, now).await
}

/// `uploading -> failed`; the row afterwards, or `None` when it was no longer uploading.
async fn mark_failed(store: &Store, snap: &SnapshotItem, error: &str, now: Millis) -> AppResult<Option<SnapshotItem>> {
    let r = store
        .client
        .update_item()
        .table_name(&store.tables.queue)
        .set_key(Some(key(&snap.pk, &snap.sk)))
        .update_expression("SET #ss = :failed, #err = :e, completedAt = :now, #ttl = :ttl REMOVE expiryKind, expiryAt")
        .condition_expression("#ss = :uploading")
        .expression_attribute_names("#ss", "snapStatus")
        .expression_attribute_names("#err", "error")
        .expression_attribute_names("#ttl", "ttl")
        .expression_attribute_values(":failed", s("failed"))
        .expression_attribute_values(":uploading", s("uploading"))
        .expression_attribute_values(":e", s(error))
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":ttl", n(rules::ttl_seconds(now + TOMBSTONE_RETENTION_MS)))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
        .send()
        .await;
    crate::adapters::dynamo::applied(r, "UpdateItem snapshot")?
        .map(|o| from_item(o.attributes.unwrap_or_default()))
        .transpose()
}

/// Snapshots of a conversation, newest first (`limit` rows read).
async fn query_conversation(store: &Store, cid: &str, limit: i32) -> AppResult<Vec<SnapshotItem>> {
    let out = store
        .client
        .query()
        .table_name(&store.tables.queue)
        .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
        .expression_attribute_values(":pk", s(rules::conversation_pk(cid)))
        .expression_attribute_values(":p", s("S#"))
        .scan_index_forward(false)
        .limit(limit)
        .send()
        .await
        .map_err(|e| sdk_error("Query snapshots", e))?;
    out.items.unwrap_or_default().into_iter().map(from_item).collect()
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
    let items = query_conversation(store, &a.conversation_id, 100).await?;
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

/// A `limit` argument: `default` when absent, else it must be in `1..=max` (refused, not clamped).
fn limit_in(name: &str, v: Option<i64>, default: i32, max: i32) -> AppResult<i32> {
    match v {
        None => Ok(default),
        Some(l) if (1..=i64::from(max)).contains(&l) => Ok(l as i32),
        Some(l) => Err(AppError::validation(format!("{name} must be 1 to {max}, got {l}"))),
    }
}

/// `listSnapshotsForConversation`: newest first; limit default 50, 1 to 200.
pub async fn list_for_conversation(app: &App, a: &ListSnapshotsArgs) -> AppResult<Vec<SnapshotView>> {
    rules::validate_conversation_id(&a.conversation_id)?;
    let limit = limit_in("limit", a.limit, 50, 200)?;
    let now = app.now();
    let mut out = Vec::new();
    for i in query_conversation(&app.store, &a.conversation_id, limit).await? {
        out.push(view(app, &i, now).await?);
    }
    Ok(out)
}

/// The conversation of a (consumer user, agent) pair (identity spec §2).
pub fn user_agent_conversation(consumer_user_id: &str, agent_key: &str) -> String {
    format!("user-agent:{agent_key}:{consumer_user_id}")
}

/// `listSnapshotsForUserAgent`.
pub async fn list_for_user_agent(app: &App, a: &UserAgentSnapshotsArgs) -> AppResult<Vec<SnapshotView>> {
    rules::validate_agent_key(&a.agent_key)?;
    if a.consumer_user_id.trim().is_empty() || a.consumer_user_id.len() > 256 {
        return Err(AppError::validation("consumerUserId must be 1 to 256 characters"));
    }
    let cid = user_agent_conversation(&a.consumer_user_id, &a.agent_key);
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
    for kind in ["snapshot", "snapshot_upload", "media"] {
        let out = store
            .client
            .query()
            .table_name(&store.tables.queue)
            .index_name(schema::IDX_EXPIRY)
            .key_condition_expression("expiryKind = :k AND expiryAt <= :now")
            .expression_attribute_values(":k", s(kind))
            .expression_attribute_values(":now", n(now))
            .limit(limit)
            .send()
            .await
            .map_err(|e| sdk_error("Query expiry", e))?;
        for k in out.items.unwrap_or_default() {
            let (Some(pk), Some(sk)) = (k.get("pk").cloned(), k.get("sk").cloned()) else { continue };
            let Some(item) = store.get(&store.tables.queue, Item::from([("pk".into(), pk), ("sk".into(), sk)])).await?
            else {
                continue;
            };
            match kind {
                "snapshot" => {
                    let snap: SnapshotItem = from_item(item)?;
                    app.blobs.delete(&snap.object_key).await?;
                    if expire_snapshot(store, &snap, now).await? {
                        res.snapshots_expired += 1;
                    }
                }
                "snapshot_upload" => {
                    let snap: SnapshotItem = from_item(item)?;
                    if mark_failed(store, &snap, "upload timed out", now).await?.is_some() {
                        app.blobs.delete(&snap.object_key).await?;
                        res.uploads_timed_out += 1;
                    }
                }
                _ => {
                    if crate::media::ops::expire_attachment(app, item, now).await? {
                        res.media_expired += 1;
                    }
                }
            }
        }
    }
    Ok(res)
}

async fn expire_snapshot(store: &Store, snap: &SnapshotItem, now: Millis) -> AppResult<bool> {
    let r = store
        .client
        .update_item()
        .table_name(&store.tables.queue)
        .set_key(Some(key(&snap.pk, &snap.sk)))
        .update_expression("SET #ss = :expired, #ttl = :ttl REMOVE expiryKind, expiryAt")
        .condition_expression("#ss = :ready AND expiresAt <= :now")
        .expression_attribute_names("#ss", "snapStatus")
        .expression_attribute_names("#ttl", "ttl")
        .expression_attribute_values(":expired", s("expired"))
        .expression_attribute_values(":ready", s("ready"))
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":ttl", n(rules::ttl_seconds(now + TOMBSTONE_RETENTION_MS)))
        .send()
        .await;
    Ok(crate::adapters::dynamo::applied(r, "UpdateItem snapshot")?.is_some())
}

/// The snapshot and storage ops served through the op envelope.
pub const TABLE: crate::envelope::OpTable<App> = crate::envelope::OpTable {
    domain: "snapshots",
    ops: &[
        crate::op!(App, "listSnapshotsForConversation", |app, a: ListSnapshotsArgs| list_for_conversation(app, &a)
            .await?),
        crate::op!(App, "listSnapshotsForUserAgent", |app, a: UserAgentSnapshotsArgs| list_for_user_agent(app, &a)
            .await?),
        crate::op!(App, "getLatestSnapshotForUserAgent", |app, a: UserAgentSnapshotsArgs| {
            let a = UserAgentSnapshotsArgs { limit: Some(1), ..a };
            list_for_user_agent(app, &a).await?.into_iter().next()
        }),
        crate::op!(App, "expireStorage", |app, a: crate::queue::ReleaseArgs| sweep(app, a.limit).await?),
        crate::op!(App, "expireOldDataSnapshots", |app, a: crate::queue::ReleaseArgs| sweep(app, a.limit).await?),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::ObjectInfo;

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
