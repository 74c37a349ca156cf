//! The worker protocol through the `claim` function's handler (API Gateway v2 events), with
//! per-worker tokens, on DynamoDB Local, an in-memory secret store and a directory blob store:
//! hydration, lease-holder-only access, media, metadata, snapshots, control state, the idle
//! heartbeat, the storage sweep, and refusals that change nothing.

use integration_tests::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::agents::model::ConfigureAgentArgs;
use shared::queue::EnqueueArgs;
use shared::queue::model::{Attachment, AttachmentKind, AttachmentStatus};
use shared::workers::model::UpsertWorkerArgs;
use shared::workers::model::WorkerStatus;

fn err(v: &Value) -> (&str, &str) {
    (v["error"]["code"].as_str().unwrap_or("-"), v["error"]["message"].as_str().unwrap_or("-"))
}

async fn agent(a: &AppEnv, bridge: Option<Value>) {
    let mut args = json!({
        "agentKey": "bot", "version": "7", "enabled": true, "botIdentity": "7001",
        "secretsRef": ["fly.apiToken", "telegram.botToken.bot", "telegram.botToken"],
    });
    if let Some(b) = bridge {
        args["bridgeConfig"] = b;
    }
    a.e.store.configure_agent(serde_json::from_value::<ConfigureAgentArgs>(args).unwrap()).await.unwrap();
}

fn with_attachment(cid: &str, storage_id: &str, expires_at: i64) -> EnqueueArgs {
    let mut m = enq(cid, "bot", "look at this");
    m.payload.attachments = Some(vec![Attachment {
        kind: AttachmentKind::Photo,
        status: AttachmentStatus::Ready,
        storage_id: storage_id.into(),
        telegram_file_id: "AgAD-file".into(),
        file_name: None,
        mime_type: Some("image/jpeg".into()),
        size_bytes: Some(5),
        expires_at,
        download_url: Some("https://evil.example/not-stored".into()),
    }]);
    m
}

/// Claim through the API and return the job.
async fn claim(a: &AppEnv, token: &str, body: Value) -> Value {
    let (st, job) = a.post("claim", token, body).await;
    assert_eq!(st, 200, "{job}");
    assert!(job.is_object(), "expected a job, got {job}");
    job
}

#[tokio::test]
async fn hydration_is_complete_and_only_for_the_lease_holder() {
    let a = app_env().await;
    agent(&a, Some(json!({"enabled": true, "serviceId": "", "serviceKeySecretRef": "custom.serviceKey"}))).await;
    let w1 = a.mint("w1").await;
    let w2 = a.mint("w2").await;
    // Secrets: the per-agent token wins over the global one (list order); the bridge fills gaps.
    a.secret("telegram.botToken.bot", "123:per-agent").await;
    a.secret("telegram.botToken", "999:global").await;
    a.secret("agent-bridge.serviceKey", "global-service-key").await;
    a.secret("agent-bridge.baseUrl.bot", "https://bridge.bot.example").await;
    a.secret("agent-bridge.serviceId", "ignored-because-profile-has-one").await;
    a.secret("agent-bridge.appKey", "app-global").await;
    // An inbound photo, already stored.
    use shared::blob::BlobBackend;
    a.blobs.put("media/mPHOTO1", b"photo".to_vec(), "image/jpeg").await.unwrap();
    a.e.store.enqueue(with_attachment("c1", "mPHOTO1", T0 + 86_400_000)).await.unwrap();
    // History from an earlier turn, appended in workspace "default".
    a.e.store
        .append_messages(
            serde_json::from_value(json!({"conversationId": "c1", "messages": [
                {"role": "user", "content": "earlier question"}, {"role": "assistant", "content": "earlier answer"}
            ]}))
            .unwrap(),
        )
        .await
        .unwrap();

    let job = claim(&a, &w1, json!({})).await;
    assert!(job["payload"]["attachments"][0].get("downloadUrl").is_none(), "claim returns the stored payload");
    let before = snapshot(&a.e).await;
    // Anyone but the holder: 403, and nothing is read or written.
    let (st, body) = a.post("hydration", &w2, json!({"messageId": job["messageId"]})).await;
    assert_eq!((st, err(&body).0), (403, "Forbidden"), "{body}");
    assert!(!body.to_string().contains("per-agent"));
    let (st, body) =
        a.post("hydration", &w1, json!({"messageId": job["messageId"], "leaseId": "someone-elses-lease"})).await;
    assert_eq!(st, 403, "{body}");
    let (st, body) = a.post("hydration", &w1, json!({"messageId": job["messageId"], "workerId": "w2"})).await;
    assert_eq!((st, err(&body).0), (403, "Forbidden"), "a body workerId is never trusted");
    assert_eq!(snapshot(&a.e).await, before);

    a.e.counter.reset();
    let (st, b) = a
        .post(
            "hydration",
            &w1,
            json!({"messageId": job["messageId"], "leaseId": job["leaseId"], "workspaceId": "default"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        a.e.counter.by_operation(),
        [("BatchGetItem".to_string(), 1), ("GetItem".to_string(), 1), ("Query".to_string(), 1)].into_iter().collect(),
        "hydration: worker row + message + conversation in one batch, then the profile and the history"
    );
    assert_eq!(b["conversationId"], "c1");
    assert_eq!(b["telegramBotToken"], "123:per-agent");
    assert_eq!(b["profile"], json!({"agentKey": "bot", "version": "7", "enabled": true, "botIdentity": "7001"}));
    assert_eq!(
        b["bridgeRuntimeConfig"],
        json!({
            "serviceKey": "global-service-key",
            "serviceKeySecretRef": "agent-bridge.serviceKey",
            "baseUrl": "https://bridge.bot.example",
            "appBaseUrlMapJson": null,
            "serviceId": "",
            "appKey": "app-global",
            "botIdentity": "7001",
        }),
        "profile fields win (an empty serviceId is present), secrets fill gaps, per agent before global"
    );
    let hist = &b["conversationState"];
    assert_eq!(hist["historyMode"], "delta");
    assert_eq!(hist["contextHistory"].as_array().unwrap().len(), 2);
    assert_eq!(hist["contextHistory"][0]["content"], "earlier question");
    assert_eq!(hist["pendingToolCalls"], json!([]));
    // A fresh download URL for the ready attachment, which really downloads the photo.
    let url = b["payload"]["attachments"][0]["downloadUrl"].as_str().expect("download URL").to_string();
    assert!(!url.contains("evil.example"), "caller-supplied URLs are never stored");
    assert_eq!(a.blob("GET", &url, None, vec![]).await, (200, b"photo".to_vec()));
    // Another workspace: the cache key differs, so the (bounded) full history.
    let (_, other) = a.post("hydration", &w1, json!({"messageId": job["messageId"], "workspaceId": "ws2"})).await;
    assert_eq!(other["conversationState"]["historyMode"], "full");

    // The holder appends its turn; anyone else may not.
    let turn = json!({"conversationId": "c1", "workspaceId": "default", "messages": [
        {"role": "user", "content": "look at this"}, {"role": "assistant", "content": "nice photo"}]});
    let before = snapshot(&a.e).await;
    let (st, body) = a.post("append-messages", &w2, turn.clone()).await;
    assert_eq!((st, err(&body).0), (403, "Forbidden"), "{body}");
    assert_eq!(snapshot(&a.e).await, before);
    let (st, ok) = a.post("append-messages", &w1, turn).await;
    assert_eq!((st, ok["messageCount"].as_u64()), (200, Some(2)), "{ok}");

    // Metadata: merged for the holder, protected keys refused, others refused.
    let (st, m) = a
        .post("message-metadata", &w1, json!({"messageId": job["messageId"], "metadata": {"replyMessageId": "42"}}))
        .await;
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["metadata"]["replyMessageId"], "42");
    assert_eq!(m["metadata"]["providerUserId"], "user-1");
    let before = snapshot(&a.e).await;
    let (st, body) = a
        .post("message-metadata", &w1, json!({"messageId": job["messageId"], "metadata": {"providerUserId": "x"}}))
        .await;
    assert_eq!((st, err(&body).0), (400, "ValidationError"), "{body}");
    let (st, _) = a.post("message-metadata", &w2, json!({"messageId": job["messageId"], "metadata": {"k": "v"}})).await;
    assert_eq!(st, 403);
    assert_eq!(snapshot(&a.e).await, before);

    // Outbound media: size-checked upload URL, upload, then a download URL for it.
    let (st, big) = a
        .post(
            "media-upload-url",
            &w1,
            json!({"messageId": job["messageId"], "sizeBytes": 21 * 1024 * 1024, "mimeType": "audio/mpeg"}),
        )
        .await;
    assert_eq!((st, err(&big).0), (413, "PayloadTooLarge"), "{big}");
    assert!(err(&big).1.contains("20 MB"));
    let (st, up) = a
        .post(
            "media-upload-url",
            &w1,
            json!({"messageId": job["messageId"], "sizeBytes": 5, "mimeType": "audio/mpeg", "fileName": "reply.mp3", "kind": "audio"}),
        )
        .await;
    assert_eq!(st, 200, "{up}");
    let put_url = up["uploadUrl"].as_str().unwrap();
    assert_eq!(a.blob("PUT", put_url, Some("audio/mpeg"), b"12345".to_vec()).await.0, 200);
    let (st, got) =
        a.post("media-url", &w1, json!({"messageId": job["messageId"], "storageId": up["storageId"]})).await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(a.blob("GET", got["url"].as_str().unwrap(), None, vec![]).await, (200, b"12345".to_vec()));
    let (st, _) = a.post("media-url", &w2, json!({"messageId": job["messageId"], "storageId": "mPHOTO1"})).await;
    assert_eq!(st, 403, "blob access only for the job the worker holds");
    let (st, nf) = a.post("media-url", &w1, json!({"messageId": job["messageId"], "storageId": "mOTHER"})).await;
    assert_eq!((st, err(&nf).0), (404, "NotFound"), "{nf}");

    // Complete; afterwards nobody gets the bundle.
    let lease = json!({"messageId": job["messageId"], "leaseId": job["leaseId"]});
    assert_eq!(a.post("complete", &w1, lease).await.0, 200);
    let (st, _) = a.post("hydration", &w1, json!({"messageId": job["messageId"]})).await;
    assert_eq!(st, 403);
}

#[tokio::test]
async fn tokens_bind_the_worker_and_stop_working_when_revoked_replaced_or_stopped() {
    let a = app_env().await;
    agent(&a, None).await;
    a.e.store.enqueue(enq("c1", "bot", "one")).await.unwrap();
    let t1 = a.mint("w1").await;
    let before = snapshot(&a.e).await;
    // Forged: a well-formed token for w1 that was never minted.
    let forged = {
        let real = t1.clone();
        let (head, _) = real.rsplit_once('.').unwrap();
        format!("{head}.{}", "0".repeat(64))
    };
    for (tok, why) in [
        (Some("not-a-token"), "malformed worker token"),
        (Some(forged.as_str()), "revoked or replaced"),
        (None, "missing bearer token"),
    ] {
        let (st, body) = a.call("POST", "/worker/claim", tok, json!({})).await;
        assert_eq!((st, err(&body).0), (401, "Unauthorized"), "{body}");
        assert!(err(&body).1.contains(why), "{body}");
    }
    // A token minted for an unknown worker id (row deleted behind our back).
    let ghost = a.mint("ghost").await;
    a.e.store
        .client
        .delete_item()
        .table_name(&a.e.tables.workers)
        .key("workerId", shared::adapters::dynamo::s("ghost"))
        .send()
        .await
        .unwrap();
    let before_ghost = snapshot(&a.e).await;
    let (st, body) = a.post("claim", &ghost, json!({})).await;
    assert_eq!((st, err(&body).1.contains("unknown worker")), (401, true), "{body}");
    assert_eq!(snapshot(&a.e).await, before_ghost, "an unknown worker is never auto-registered");
    let _ = before;

    // The claim takes its worker from the token.
    let job = claim(&a, &t1, json!({})).await;
    let row = a.e.store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!((row.load, row.assigned_conversation_id.as_deref()), (1, Some("c1")));
    // Re-minting replaces the token: the old one stops at once, writes included.
    let t1b = a.mint("w1").await;
    let lease = json!({"messageId": job["messageId"], "leaseId": job["leaseId"]});
    let before = snapshot(&a.e).await;
    let (st, body) = a.post("heartbeat", &t1, lease.clone()).await;
    assert_eq!((st, err(&body).0), (401, "Unauthorized"), "{body}");
    assert_eq!(snapshot(&a.e).await, before);
    assert_eq!(a.post("heartbeat", &t1b, lease.clone()).await.0, 200);
    // Revoked.
    let r = invoke(&a.app, json!({"op": "revokeWorkerToken", "args": {"workerId": "w1"}})).await.unwrap();
    assert_eq!(r["revoked"], true);
    let before = snapshot(&a.e).await;
    let (st, _) = a.post("complete", &t1b, lease.clone()).await;
    assert_eq!(st, 401);
    assert_eq!(snapshot(&a.e).await, before, "the revoked worker's complete changed nothing");
    // A stopped worker's token stops working (and it cannot be minted again).
    let t3 = a.mint("w3").await;
    for st in [WorkerStatus::Draining, WorkerStatus::Stopping, WorkerStatus::Stopped] {
        a.e.store.upsert_worker_state(&UpsertWorkerArgs::status("w3", "fly", st)).await.unwrap();
    }
    let (st, body) = a.post("control-state", &t3, json!({})).await;
    assert_eq!((st, err(&body).0), (401, "Unauthorized"), "{body}");
    let e = invoke(&a.app, json!({"op": "mintWorkerToken", "args": {"workerId": "w3"}})).await.unwrap_err();
    assert_eq!(e.code().as_str(), "Conflict");
    // The minted token is shown once and never stored.
    let minted = invoke(&a.app, json!({"op": "mintWorkerToken", "args": {"workerId": "w4"}})).await.unwrap();
    let tok = minted["token"].as_str().unwrap();
    assert!(!snapshot(&a.e).await.iter().any(|i| i.contains(tok)), "only a hash is stored");
    let shown = invoke(&a.app, json!({"op": "getWorker", "args": {"workerId": "w4"}})).await.unwrap();
    assert!(shown.get("tokenHash").is_none(), "{shown}");
    let upserted = invoke(
        &a.app,
        json!({"op": "upsertWorkerState", "args": {"workerId": "w4", "provider": "fly", "status": "active", "load": 0}}),
    )
    .await
    .unwrap();
    assert_eq!(upserted["workerId"], "w4");
    assert!(upserted.get("tokenHash").is_none(), "{upserted}");
    assert!(a.e.store.get_worker("w4").await.unwrap().unwrap().token_hash.is_some(), "an upsert keeps the token");
}

#[tokio::test]
async fn cached_tokens_still_fail_writes_at_once_after_revocation() {
    let a = app_env_with(integration_tests::test_policies()).await; // 10 s auth cache
    agent(&a, None).await;
    a.e.store.enqueue(enq("c1", "bot", "one")).await.unwrap();
    let t = a.mint("w1").await;
    let job = claim(&a, &t, json!({})).await;
    // Revoked by another process: this process still trusts the token for reads ...
    a.e.store.revoke_worker_token("w1").await.unwrap();
    let (st, _) = a.post("has-queued", &t, json!({"conversationId": "c1"})).await;
    assert_eq!(st, 200, "reads trust the cache for WORKER_AUTH_CACHE_MS");
    // ... but every write re-checks the token inside its transaction.
    let before = snapshot(&a.e).await;
    let (st, body) = a.post("complete", &t, json!({"messageId": job["messageId"], "leaseId": job["leaseId"]})).await;
    assert_eq!((st, err(&body).0), (401, "Unauthorized"), "{body}");
    // ... and hydration (it hands out secrets) never uses the cache, nor do the snapshot calls
    // that read the worker row anyway (a restore URL opens the workspace archive).
    let (st, _) = a.post("hydration", &t, json!({"messageId": job["messageId"]})).await;
    assert_eq!(st, 401);
    let tuple = json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "c1"});
    assert_eq!(a.post("snapshot-restore", &t, tuple.clone()).await.0, 401);
    let mut prep = tuple;
    prep["reason"] = json!("manual");
    assert_eq!(a.post("snapshot-prepare", &t, prep).await.0, 401);
    assert_eq!(snapshot(&a.e).await, before);
    a.e.clock.advance(10_000);
    assert_eq!(a.post("has-queued", &t, json!({"conversationId": "c1"})).await.0, 401, "cache expired");
}

#[tokio::test]
async fn late_calls_after_lease_expiry_are_refused_and_change_nothing() {
    let a = app_env().await;
    agent(&a, None).await;
    a.e.store.enqueue(enq("c1", "bot", "one")).await.unwrap();
    let t = a.mint("w1").await;
    let job = claim(&a, &t, json!({})).await;
    a.e.clock.advance(360_000);
    let before = snapshot(&a.e).await;
    let lease = json!({"messageId": job["messageId"], "leaseId": job["leaseId"]});
    for (op, body) in [
        ("heartbeat", lease.clone()),
        ("complete", lease.clone()),
        ("fail", json!({"messageId": job["messageId"], "leaseId": job["leaseId"], "errorMessage": "x"})),
        ("hydration", json!({"messageId": job["messageId"]})),
        ("message-metadata", json!({"messageId": job["messageId"], "metadata": {"a": "b"}})),
        ("media-upload-url", json!({"messageId": job["messageId"], "sizeBytes": 1, "mimeType": "text/plain"})),
        ("append-messages", json!({"conversationId": "c1", "messages": [{"role": "user", "content": "late"}]})),
    ] {
        let (st, v) = a.post(op, &t, body).await;
        assert_eq!((st, v["error"]["reason"].as_str()), (409, Some("lease_expired")), "{op}: {v}");
    }
    assert_eq!(snapshot(&a.e).await, before, "late calls changed nothing");
}

#[tokio::test]
async fn snapshots_are_verified_guarded_and_restored_from_the_newest_good_one() {
    let a = app_env().await;
    agent(&a, None).await;
    a.e.store.enqueue(enq("c1", "bot", "one")).await.unwrap();
    a.e.store.enqueue(enq("c2", "bot", "two")).await.unwrap();
    let t = a.mint("w1").await;
    let other = a.mint("w2").await;
    claim(&a, &t, json!({"conversationId": "c1"})).await;
    let tuple = json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "c1"});
    let (st, none) = a.post("snapshot-restore", &t, tuple.clone()).await;
    assert_eq!((st, none), (200, Value::Null));
    // Scope: a worker snapshots only the conversation it serves.
    let (st, body) = a
        .post(
            "snapshot-prepare",
            &t,
            json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "c2", "reason": "manual"}),
        )
        .await;
    assert_eq!((st, err(&body).0), (403, "Forbidden"), "{body}");

    let archive = b"tar.gz bytes of the workspace".to_vec();
    let sha = hex::encode(Sha256::digest(&archive));
    let mut prep = tuple.clone();
    prep["reason"] = json!("signal");
    let (st, p1) = a.post("snapshot-prepare", &t, prep.clone()).await;
    assert_eq!(st, 200, "{p1}");
    assert_eq!(p1["uploadMethod"], "PUT");
    let id1 = p1["snapshotId"].clone();
    // Finalize before any upload, or with a wrong checksum or size: refused, nothing changes.
    let before = snapshot(&a.e).await;
    let fin = |sha: &str, size: usize| json!({"snapshotId": id1, "sha256": sha, "sizeBytes": size});
    let (st, body) = a.post("snapshot-finalize", &t, fin(&sha, archive.len())).await;
    assert_eq!((st, err(&body).1.contains("no object")), (400, true), "{body}");
    let ct = p1["uploadHeaders"]["content-type"]
        .as_str()
        .or(p1["uploadHeaders"]["Content-Type"].as_str())
        .unwrap_or("application/gzip")
        .to_string();
    assert_eq!(a.blob("PUT", p1["uploadUrl"].as_str().unwrap(), Some(&ct), archive.clone()).await.0, 200);
    let (st, body) = a.post("snapshot-finalize", &t, fin(&"0".repeat(64), archive.len())).await;
    assert_eq!((st, err(&body).1.contains("sha256 mismatch")), (400, true), "{body}");
    let (st, body) = a.post("snapshot-finalize", &t, fin(&sha, archive.len() + 1)).await;
    assert_eq!((st, err(&body).1.contains("size mismatch")), (400, true), "{body}");
    let (st, body) = a.post("snapshot-finalize", &other, fin(&sha, archive.len())).await;
    assert_eq!((st, err(&body).0), (403, "Forbidden"), "only its worker finalizes: {body}");
    let (st, _) = a.post("snapshot-finalize", &t, fin("NOT-HEX", archive.len())).await;
    assert_eq!(st, 400);
    assert_eq!(snapshot(&a.e).await, before, "refused finalizes changed nothing");

    // The worker is draining (the scheduler decided): its final snapshot moves it to stopping.
    a.e.store
        .upsert_worker_state(&UpsertWorkerArgs {
            load: 1,
            ..UpsertWorkerArgs::status("w1", "fly", WorkerStatus::Draining)
        })
        .await
        .unwrap();
    let (st, done) = a.post("snapshot-finalize", &t, fin(&sha, archive.len())).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!((done["status"].as_str(), done["workerStatus"].as_str()), (Some("ready"), Some("stopping")));
    let w = a.e.store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!(w.last_snapshot_id.as_deref(), id1.as_str());
    // Only from uploading: finalize again or fail a ready snapshot is a conflict.
    let (st, body) = a.post("snapshot-finalize", &t, fin(&sha, archive.len())).await;
    assert_eq!((st, err(&body).0), (409, "Conflict"), "{body}");
    let (st, _) = a.post("snapshot-fail", &t, json!({"snapshotId": id1, "error": "late"})).await;
    assert_eq!(st, 409);

    // A newer snapshot that fails does not hide the good one.
    a.e.clock.advance(1_000);
    let (_, p2) = a.post("snapshot-prepare", &t, prep.clone()).await;
    let (st, failed) = a.post("snapshot-fail", &t, json!({"snapshotId": p2["snapshotId"], "error": "disk full"})).await;
    assert_eq!((st, failed["status"].as_str()), (200, Some("failed")), "{failed}");
    a.e.clock.advance(1_000);
    let (_, _p3) = a.post("snapshot-prepare", &t, prep.clone()).await; // still uploading
    let (st, r) = a.post("snapshot-restore", &t, tuple.clone()).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["snapshotId"], id1, "the newest good snapshot, not the newest row");
    assert_eq!(r["sha256"], sha.as_str());
    assert_eq!(a.blob("GET", r["downloadUrl"].as_str().unwrap(), None, vec![]).await, (200, archive.clone()));
    let list =
        invoke(&a.app, json!({"op": "listSnapshotsForConversation", "args": {"conversationId": "c1"}})).await.unwrap();
    let statuses: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["uploading", "failed", "ready"], "newest first");
    assert!(list[0]["downloadUrl"].is_null() && list[2]["downloadUrl"].is_string());

    // The sweep: the upload window closes (1 h), then retention ends (7 days): objects deleted.
    a.e.clock.advance(3_600_000);
    let r = a.cleanup(json!({"op": "expireStorage", "args": {}})).await.unwrap();
    assert_eq!(r["uploadsTimedOut"], 1, "{r}");
    a.e.clock.advance(7 * 86_400_000);
    let r = a.cleanup(json!({"op": "expireOldDataSnapshots", "args": {"limit": 10}})).await.unwrap();
    assert_eq!(r["snapshotsExpired"], 1, "{r}");
    use shared::blob::BlobBackend;
    assert_eq!(
        a.blobs.size(&format!("snapshots/{}.tar.gz", id1.as_str().unwrap().split(':').next().unwrap())).await.unwrap(),
        None
    );
    let (_, gone) = a.post("snapshot-restore", &t, tuple).await;
    assert_eq!(gone, Value::Null, "nothing good is left");
}

#[tokio::test]
async fn control_state_gives_reasons_and_the_idle_heartbeat_keeps_a_worker_alive() {
    let a = app_env().await;
    let t = a.mint("w1").await;
    let (st, cs) = a.post("control-state", &t, json!({})).await;
    assert_eq!(st, 200, "{cs}");
    assert_eq!((cs["shouldStop"].as_bool(), cs["action"].as_str()), (Some(false), Some("continue")));
    assert_eq!(cs["idleDeadline"], T0 + 1_800_000);
    // Without any call for 7 minutes the heartbeat is stale ...
    a.e.clock.advance(420_000);
    let (_, cs) = a.post("control-state", &t, json!({})).await;
    assert_eq!(cs["reasons"], json!(["stale_heartbeat"]));
    assert_eq!(cs["action"], "drain");
    // ... the idle heartbeat proves it alive, and keeps it alive until the idle timeout.
    let (st, hb) = a.post("worker-heartbeat", &t, json!({})).await;
    assert_eq!((st, hb["shouldStop"].as_bool()), (200, Some(false)), "{hb}");
    for _ in 0..4 {
        a.e.clock.advance(300_000);
        let (_, hb) = a.post("worker-heartbeat", &t, json!({})).await;
        assert_eq!(hb["shouldStop"], false, "{hb}");
    }
    a.e.clock.set(T0 + 1_800_000);
    let (_, hb) = a.post("worker-heartbeat", &t, json!({})).await;
    assert_eq!((hb["reasons"].clone(), hb["action"].as_str()), (json!(["idle_timeout"]), Some("drain")));
    // Draining: the reason says so, and the worker still reaches the API to snapshot.
    a.e.store.upsert_worker_state(&UpsertWorkerArgs::status("w1", "fly", WorkerStatus::Draining)).await.unwrap();
    let (_, cs) = a.post("control-state", &t, json!({})).await;
    assert_eq!(cs["reasons"], json!(["status_draining", "idle_timeout"]));
    let via_op = invoke(&a.app, json!({"op": "getWorkerControlState", "args": {"workerId": "nobody"}})).await.unwrap();
    assert_eq!((via_op["reasons"].clone(), via_op["action"].as_str()), (json!(["missing_worker"]), Some("exit")));
}

#[tokio::test]
async fn media_expires_with_its_blob_and_the_payload_copy() {
    let a = app_env().await;
    agent(&a, None).await;
    use shared::blob::BlobBackend;
    a.blobs.put("media/mPHOTO9", b"photo".to_vec(), "image/jpeg").await.unwrap();
    let mut first = with_attachment("c9", "mPHOTO9", T0 + 604_800_000);
    first.payload.external_message_id = Some("tg-901".into());
    let r = a.e.store.enqueue(first.clone()).await.unwrap();
    // A provider retry of the same message (same attachments) is deduplicated, not a conflict.
    let again = a.e.store.enqueue(first).await.unwrap();
    assert_eq!((again.message_id.as_str(), again.deduplicated), (r.message_id.as_str(), true));
    // Another message reusing the storage id is refused.
    let before_reuse = snapshot(&a.e).await;
    let reuse = a.e.store.enqueue(with_attachment("c9", "mPHOTO9", T0 + 1)).await.unwrap_err();
    assert_eq!(code(&reuse), "Conflict", "{reuse}");
    assert_eq!(snapshot(&a.e).await, before_reuse);
    // Before retention ends the sweep leaves it alone.
    let swept = a.cleanup(json!({"op": "expireStorage"})).await.unwrap();
    assert_eq!(swept["mediaExpired"], 0);
    a.e.clock.advance(604_800_000);
    let swept = a.cleanup(json!({"op": "expireStorage"})).await.unwrap();
    assert_eq!(swept["mediaExpired"], 1, "{swept}");
    assert_eq!(a.blobs.size("media/mPHOTO9").await.unwrap(), None, "the blob is deleted");
    let m = a.e.store.get_message(&r.message_id).await.unwrap().unwrap();
    assert_eq!(m.payload.attachments.unwrap()[0].status, AttachmentStatus::Expired);
    // An expired attachment gets no URL at hydration.
    let t = a.mint("w1").await;
    let job = claim(&a, &t, json!({})).await;
    let (_, b) = a.post("hydration", &t, json!({"messageId": job["messageId"]})).await;
    assert!(b["payload"]["attachments"][0].get("downloadUrl").is_none(), "{b}");
    // Enqueue refuses media over Telegram's 20 MB ceiling and more than 10 attachments.
    let mut big = with_attachment("c10", "mBIG", T0 + 1);
    big.payload.attachments.as_mut().unwrap()[0].size_bytes = Some(20 * 1024 * 1024 + 1);
    let before = snapshot(&a.e).await;
    assert_eq!(code(&a.e.store.enqueue(big).await.unwrap_err()), "PayloadTooLarge");
    let mut many = with_attachment("c10", "mA", T0 + 1);
    let one = many.payload.attachments.as_ref().unwrap()[0].clone();
    many.payload.attachments =
        Some((0..11).map(|i| Attachment { storage_id: format!("m{i}"), ..one.clone() }).collect());
    assert_eq!(code(&a.e.store.enqueue(many).await.unwrap_err()), "ValidationError");
    assert_eq!(snapshot(&a.e).await, before);
}

#[tokio::test]
async fn bad_input_on_every_new_route_is_precise_and_changes_nothing() {
    let a = app_env().await;
    agent(&a, None).await;
    a.e.store.enqueue(enq("c1", "bot", "one")).await.unwrap();
    let t = a.mint("w1").await;
    let job = claim(&a, &t, json!({})).await;
    let before = snapshot(&a.e).await;
    let mid = job["messageId"].clone();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("hydration", json!({}), 400, "missing field `messageId`"),
        ("hydration", json!({"messageId": "nope"}), 400, "is not a message id"),
        ("hydration", json!({"messageId": mid, "nowMs": 1}), 400, "unknown field `nowMs`"),
        ("hydration", json!({"messageId": "01J00000000000000000000000:c1"}), 404, "does not exist"),
        (
            "snapshot-prepare",
            json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "c1"}),
            400,
            "missing field `reason`",
        ),
        (
            "snapshot-prepare",
            json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "c1", "reason": "boredom"}),
            400,
            "unknown variant `boredom`",
        ),
        (
            "snapshot-prepare",
            json!({"workspaceId": "default", "agentKey": "other", "conversationId": "c1", "reason": "manual"}),
            400,
            "belongs to agent 'bot'",
        ),
        (
            "snapshot-prepare",
            json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "c1", "reason": "manual", "sizeBytes": 0}),
            400,
            "at least 1",
        ),
        (
            "snapshot-finalize",
            json!({"snapshotId": "x", "sha256": "0".repeat(64), "sizeBytes": 1}),
            400,
            "not a snapshot id",
        ),
        (
            "snapshot-finalize",
            json!({"snapshotId": "01J00000000000000000000000:c1", "sha256": "0".repeat(64), "sizeBytes": 1}),
            404,
            "does not exist",
        ),
        (
            "snapshot-fail",
            json!({"snapshotId": "01J00000000000000000000000:c1", "error": " "}),
            400,
            "must not be blank",
        ),
        (
            "snapshot-restore",
            json!({"workspaceId": "default", "agentKey": "bot"}),
            400,
            "missing field `conversationId`",
        ),
        ("media-upload-url", json!({"messageId": mid, "sizeBytes": 10, "mimeType": "nonsense"}), 400, "mimeType"),
        (
            "media-upload-url",
            json!({"messageId": mid, "sizeBytes": -1, "mimeType": "text/plain"}),
            400,
            "invalid value",
        ),
        ("media-url", json!({"messageId": mid, "storageId": "../etc/passwd"}), 400, "storageId"),
        ("message-metadata", json!({"messageId": mid, "metadata": {}}), 400, "1 to 50 keys"),
        ("message-metadata", json!({"messageId": mid, "metadata": {"k": "v".repeat(5000)}}), 400, "at most 4096"),
        ("control-state", json!({"verbose": true}), 400, "unknown field `verbose`"),
        (
            "append-messages",
            json!({"conversationId": "c1", "messages": [{"role": "user", "content": "x".repeat(70_000)}]}),
            413,
            "longer than",
        ),
    ];
    for (op, body, status, text) in cases {
        let (st, v) = a.post(op, &t, body.clone()).await;
        assert_eq!(st, status, "{op} {body}: {v}");
        assert!(err(&v).1.contains(text), "{op}: '{}' should say '{text}'", err(&v).1);
    }
    assert_eq!(snapshot(&a.e).await, before, "refused calls changed nothing");
}

/// The deployed wiring (`App::from_config`: DynamoDB, Secrets Manager, S3) on DynamoDB Local and
/// moto_server, on the system clock: import a bot token, run a job with hydration, and a
/// snapshot whose archive really goes to S3 through the presigned URL and is verified there.
#[tokio::test]
async fn the_deployed_wiring_runs_a_job_and_a_snapshot_on_moto() {
    let moto = moto_endpoint();
    let ddb = endpoint();
    let id = format!("{:016x}", shared::ids::random_u128() as u64);
    let bucket = format!("af-{id}");
    let vars = [
        ("TABLE_PREFIX", format!("w{id}-")),
        ("DYNAMODB_ENDPOINT", ddb),
        ("SECRETSMANAGER_ENDPOINT", moto.clone()),
        ("S3_ENDPOINT", moto.clone()),
        ("BLOB_BUCKET", bucket.clone()),
        ("SECRETS_PREFIX", format!("t{id}/")),
    ];
    let cfg = shared::Config::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
    let app = shared::app::App::from_config(&cfg, std::sync::Arc::new(shared::SystemClock)).await.unwrap();
    app.store.create_tables().await.unwrap();
    shared::adapters::s3::S3Blobs::connect(&bucket, Some(&moto)).await.ensure_bucket().await.unwrap();
    let run = |v: Value| {
        let app = app.clone();
        async move { invoke(&app, v).await }
    };
    run(json!({"op": "configureAgent", "args": {"agentKey": "bot", "version": "1", "secretsRef": ["telegram.botToken.bot"], "enabled": true}}))
        .await
        .unwrap();
    run(json!({"op": "importSecret", "args": {"secretRef": "telegram.botToken.bot", "plaintextValue": "42:from-secrets-manager"}}))
        .await
        .unwrap();
    run(json!({"op": "enqueue", "args": {"conversationId": "c1", "agentKey": "bot",
        "payload": {"provider": "telegram", "providerUserId": "7", "messageText": "hi"}}}))
    .await
    .unwrap();
    let token = run(json!({"op": "mintWorkerToken", "args": {"workerId": "fly-1", "provider": "fly"}})).await.unwrap()
        ["token"]
        .as_str()
        .unwrap()
        .to_string();
    let post = |op: &str, body: Value| {
        let req = apigw("POST", &format!("/worker/{op}"), Some(&token), &body.to_string());
        let app = app.clone();
        async move { parts(claim::handle(&app, req).await) }
    };
    let (st, job) = post("claim", json!({})).await;
    assert_eq!(st, 200, "{job}");
    let (st, b) = post("hydration", json!({"messageId": job["messageId"]})).await;
    assert_eq!((st, b["telegramBotToken"].as_str()), (200, Some("42:from-secrets-manager")), "{b}");
    // Snapshot: PUT the archive to S3 (moto) through the presigned URL, finalize (S3 digest), restore.
    let tuple = json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "c1"});
    let mut prep = tuple.clone();
    prep["reason"] = json!("signal");
    let archive = vec![7u8; 70_000];
    prep["sizeBytes"] = json!(archive.len());
    let (st, p) = post("snapshot-prepare", prep).await;
    assert_eq!(st, 200, "{p}");
    let http = reqwest::Client::new();
    let mut put = http.put(p["uploadUrl"].as_str().unwrap()).body(archive.clone());
    for (k, v) in p["uploadHeaders"].as_object().unwrap() {
        if !k.eq_ignore_ascii_case("content-length") {
            put = put.header(k, v.as_str().unwrap());
        }
    }
    assert!(put.send().await.unwrap().status().is_success());
    let sha = hex::encode(Sha256::digest(&archive));
    let (st, bad) = post(
        "snapshot-finalize",
        json!({"snapshotId": p["snapshotId"], "sha256": "0".repeat(64), "sizeBytes": archive.len()}),
    )
    .await;
    assert_eq!((st, err(&bad).1.contains("sha256 mismatch")), (400, true), "{bad}");
    let (st, fin) =
        post("snapshot-finalize", json!({"snapshotId": p["snapshotId"], "sha256": sha, "sizeBytes": archive.len()}))
            .await;
    assert_eq!((st, fin["status"].as_str()), (200, Some("ready")), "{fin}");
    let (_, r) = post("snapshot-restore", tuple).await;
    let got = http.get(r["downloadUrl"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&got)), sha);
    let (st, _) = post("complete", json!({"messageId": job["messageId"], "leaseId": job["leaseId"]})).await;
    assert_eq!(st, 200);
    for t in [&cfg.tables.queue, &cfg.tables.workers, &cfg.tables.control] {
        let _ = app.store.client.delete_table().table_name(t).send().await;
    }
}

/// Finalize and fail racing on one snapshot, with real concurrency on DynamoDB Local: exactly one
/// call wins, and the row agrees with the winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_finalize_and_fail_have_exactly_one_winner() {
    let a = std::sync::Arc::new(app_env().await);
    agent(&a, None).await;
    a.e.store.enqueue(enq("c1", "bot", "one")).await.unwrap();
    let t = a.mint("w1").await;
    claim(&a, &t, json!({"conversationId": "c1"})).await;
    for round in 0..3 {
        let (st, p) = a
            .post(
                "snapshot-prepare",
                &t,
                json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "c1", "reason": "signal"}),
            )
            .await;
        assert_eq!(st, 200, "{p}");
        let archive = format!("archive of round {round}").into_bytes();
        let ct = p["uploadHeaders"]["Content-Type"].as_str().unwrap_or("application/gzip").to_string();
        assert_eq!(a.blob("PUT", p["uploadUrl"].as_str().unwrap(), Some(&ct), archive.clone()).await.0, 200);
        let sha = hex::encode(Sha256::digest(&archive));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (a, t, id, sha, len) = (a.clone(), t.clone(), p["snapshotId"].clone(), sha.clone(), archive.len());
            tasks.push(tokio::spawn(async move {
                let (op, body) = if i % 2 == 0 {
                    ("snapshot-finalize", json!({"snapshotId": id, "sha256": sha, "sizeBytes": len}))
                } else {
                    ("snapshot-fail", json!({"snapshotId": id, "error": format!("racer {i}")}))
                };
                let (st, v) = a.post(op, &t, body).await;
                (op, st, v)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (op, st, v) = task.await.unwrap();
            match st {
                200 => winners.push(op),
                409 => assert_eq!(err(&v).0, "Conflict"),
                // A fail that won already deleted the object this finalize went to read.
                400 if op == "snapshot-finalize" && err(&v).1.contains("no object") => {}
                other => panic!("{op}: unexpected {other}: {v}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one winner, got {winners:?}");
        let list =
            invoke(&a.app, json!({"op": "listSnapshotsForConversation", "args": {"conversationId": "c1", "limit": 1}}))
                .await
                .unwrap();
        let want = if winners[0] == "snapshot-finalize" { "ready" } else { "failed" };
        assert_eq!(list[0]["status"], want, "round {round}: the row agrees with the winner");
    }
}

/// Issue 7 §2.6: a replaced token, or a stopped worker's, fails every write at once, though this
/// process still trusts it in its authentication cache; `media-url` (it hands out a URL) too.
#[tokio::test]
async fn token_changes_take_effect_at_once_for_every_write_despite_the_cache() {
    let a = app_env_with(integration_tests::test_policies()).await; // 10 s auth cache
    agent(&a, None).await;
    use shared::blob::BlobBackend;
    a.blobs.put("media/mIN1", b"photo".to_vec(), "image/jpeg").await.unwrap();
    a.e.store.enqueue(with_attachment("c1", "mIN1", T0 + 86_400_000)).await.unwrap();
    let old = a.mint("w1").await;
    let job = claim(&a, &old, json!({})).await;
    // Warm the cache with the old token.
    assert_eq!(a.post("has-queued", &old, json!({"conversationId": "c1"})).await.0, 200);
    let new = a.mint("w1").await;
    let mid = job["messageId"].clone();
    let calls = [
        ("append-messages", json!({"conversationId": "c1", "messages": [{"role": "user", "content": "x"}]})),
        ("message-metadata", json!({"messageId": mid, "metadata": {"k": "v"}})),
        ("media-upload-url", json!({"messageId": mid, "sizeBytes": 3, "mimeType": "text/plain"})),
        ("media-url", json!({"messageId": mid, "storageId": "mIN1"})),
    ];
    let before = snapshot(&a.e).await;
    for (op, body) in &calls {
        let (st, v) = a.post(op, &old, body.clone()).await;
        assert_eq!((st, err(&v).0), (401, "Unauthorized"), "{op} with the replaced token: {v}");
        assert!(err(&v).1.contains("revoked or replaced"), "{op}: {v}");
    }
    assert_eq!(snapshot(&a.e).await, before, "the replaced token wrote nothing");
    // The new token works.
    for (op, body) in &calls {
        let (st, v) = a.post(op, &new, body.clone()).await;
        assert_eq!(st, 200, "{op} with the new token: {v}");
    }
    // Stopped (by reconcile, in another process): the token fails at once and says why.
    a.post("complete", &new, json!({"messageId": mid, "leaseId": job["leaseId"]})).await;
    a.e.store.enqueue(enq("c1", "bot", "two")).await.unwrap();
    let job2 = claim(&a, &new, json!({"conversationId": "c1"})).await;
    for st in [WorkerStatus::Draining, WorkerStatus::Stopping, WorkerStatus::Stopped] {
        a.e.store.upsert_worker_state(&UpsertWorkerArgs::status("w1", "fly", st)).await.unwrap();
    }
    let mid2 = job2["messageId"].clone();
    let before = snapshot(&a.e).await;
    for (op, body) in [
        ("append-messages", json!({"conversationId": "c1", "messages": [{"role": "user", "content": "x"}]})),
        ("message-metadata", json!({"messageId": mid2, "metadata": {"k": "w"}})),
        ("media-upload-url", json!({"messageId": mid2, "sizeBytes": 3, "mimeType": "text/plain"})),
        ("media-url", json!({"messageId": mid2, "storageId": "mIN1"})),
    ] {
        let (st, v) = a.post(op, &new, body).await;
        assert_eq!((st, err(&v).0), (401, "Unauthorized"), "{op} of a stopped worker: {v}");
        assert!(err(&v).1.contains("stopped"), "{op}: {v}");
    }
    assert_eq!(snapshot(&a.e).await, before, "the stopped worker wrote nothing");
}

/// Issue 7 §2.7: a storage id belongs to the conversation it was first stored for; another
/// conversation's message cannot reference (then download, or expire) it.
#[tokio::test]
async fn attachments_cannot_cross_conversations() {
    let a = app_env().await;
    agent(&a, None).await;
    use shared::blob::BlobBackend;
    a.blobs.put("media/mP", b"private photo of P".to_vec(), "image/jpeg").await.unwrap();
    a.e.store.enqueue(with_attachment("p", "mP", T0 + 86_400_000)).await.unwrap();
    // Q references P's media, with a past expiry (so the sweep would delete the blob): refused.
    let before = snapshot(&a.e).await;
    let e = a.e.store.enqueue(with_attachment("q", "mP", T0 - 1)).await.unwrap_err();
    assert_eq!(code(&e), "Conflict", "{e}");
    assert!(e.to_string().contains("another conversation"), "{e}");
    let e = a.e.store.enqueue(with_attachment("q", "mP", T0 + 86_400_000)).await.unwrap_err();
    assert_eq!(code(&e), "Conflict", "{e}");
    assert_eq!(snapshot(&a.e).await, before, "nothing written for Q");
    // The sweep leaves P's blob alone; P's worker still downloads it.
    let r = a.cleanup(json!({"op": "expireStorage", "args": {}})).await.unwrap();
    assert_eq!(r["mediaExpired"], 0, "{r}");
    assert_eq!(a.blobs.size("media/mP").await.unwrap(), Some(18));
    // The same conversation may reference it again only as before (one row per storage id).
    let e = a.e.store.enqueue(with_attachment("p", "mP", T0 + 86_400_000)).await.unwrap_err();
    assert_eq!(code(&e), "Conflict", "{e}");
    // Two identical attachments in one message: a validation error, nothing written.
    let mut twice = with_attachment("r", "mR", T0 + 86_400_000);
    let att = twice.payload.attachments.as_ref().unwrap()[0].clone();
    twice.payload.attachments.as_mut().unwrap().push(att);
    let before = snapshot(&a.e).await;
    let e = a.e.store.enqueue(twice).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError", "{e}");
    assert!(e.to_string().contains("appears twice"), "{e}");
    assert_eq!(snapshot(&a.e).await, before);
    // A worker's upload belongs to its conversation too.
    let t = a.mint("w1").await;
    let job = claim(&a, &t, json!({"conversationId": "p"})).await;
    let (st, up) = a
        .post("media-upload-url", &t, json!({"messageId": job["messageId"], "sizeBytes": 3, "mimeType": "text/plain"}))
        .await;
    assert_eq!(st, 200, "{up}");
    let sid = up["storageId"].as_str().unwrap();
    let before = snapshot(&a.e).await;
    let e = a.e.store.enqueue(with_attachment("q", sid, T0 + 86_400_000)).await.unwrap_err();
    assert_eq!(code(&e), "Conflict", "{e}");
    assert_eq!(snapshot(&a.e).await, before);
}

/// Issue 7 §2.8: only a worker serving a conversation (assigned to it, or holding its lease)
/// prepares, finalizes or restores its snapshots.
#[tokio::test]
async fn snapshots_are_scoped_to_the_callers_conversation() {
    let a = app_env().await;
    agent(&a, None).await;
    a.e.store.enqueue(enq("c1", "bot", "one")).await.unwrap();
    let owner = a.mint("w1").await;
    let job = claim(&a, &owner, json!({"conversationId": "c1"})).await;
    let tuple = json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "c1"});
    let mut prep = tuple.clone();
    prep["reason"] = json!("signal");
    let archive = b"the workspace of c1".to_vec();
    let sha = hex::encode(Sha256::digest(&archive));
    let (st, p) = a.post("snapshot-prepare", &owner, prep.clone()).await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(a.blob("PUT", p["uploadUrl"].as_str().unwrap(), Some("application/gzip"), archive.clone()).await.0, 200);
    let fin = json!({"snapshotId": p["snapshotId"], "sha256": sha, "sizeBytes": archive.len()});
    assert_eq!(a.post("snapshot-finalize", &owner, fin).await.0, 200);

    // A fresh, unassigned worker: no restore (download), no prepare (publish).
    let intruder = a.mint("intruder").await;
    let before = snapshot(&a.e).await;
    let (st, v) = a.post("snapshot-restore", &intruder, tuple.clone()).await;
    assert_eq!((st, err(&v).0), (403, "Forbidden"), "{v}");
    assert!(v.get("downloadUrl").is_none());
    let (st, v) = a.post("snapshot-prepare", &intruder, prep.clone()).await;
    assert_eq!((st, err(&v).0), (403, "Forbidden"), "{v}");
    assert_eq!(snapshot(&a.e).await, before, "nothing written");

    // A worker moved to another conversation cannot finalize what it prepared for this one.
    let (_, p2) = a.post("snapshot-prepare", &owner, prep.clone()).await;
    assert_eq!(
        a.blob("PUT", p2["uploadUrl"].as_str().unwrap(), Some("application/gzip"), archive.clone()).await.0,
        200
    );
    let (st, _) = a.post("complete", &owner, json!({"messageId": job["messageId"], "leaseId": job["leaseId"]})).await;
    assert_eq!(st, 200, "the lease is gone: only the assignment could grant the right");
    let moved: UpsertWorkerArgs =
        serde_json::from_value(json!({"workerId": "w1", "provider": "fly", "status": "active",
        "load": 0, "assignment": {"conversationId": "c2", "agentKey": "bot", "leaseId": "spawn:w1"}}))
        .unwrap();
    a.e.store.upsert_worker_state(&moved).await.unwrap();
    let before = snapshot(&a.e).await;
    let fin2 = json!({"snapshotId": p2["snapshotId"], "sha256": sha, "sizeBytes": archive.len()});
    let (st, v) = a.post("snapshot-finalize", &owner, fin2).await;
    assert_eq!((st, err(&v).0), (403, "Forbidden"), "{v}");
    assert_eq!(snapshot(&a.e).await, before);

    // A self-hosted worker gets the right the way reconcile's machines do: assigned by
    // upsertWorkerState (or by claiming the conversation's message).
    let helper = a.mint("helper").await;
    let assign: UpsertWorkerArgs = serde_json::from_value(json!({"workerId": "helper", "provider": "self-hosted",
        "status": "active", "load": 0, "assignment": {"conversationId": "c1", "agentKey": "bot", "leaseId": "manual"}}))
    .unwrap();
    a.e.store.upsert_worker_state(&assign).await.unwrap();
    let (st, r) = a.post("snapshot-restore", &helper, tuple).await;
    assert_eq!((st, &r["snapshotId"]), (200, &p["snapshotId"]), "{r}");
}
