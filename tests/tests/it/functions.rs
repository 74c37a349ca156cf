//! The `enqueue` and `claim` functions through their real entry points, with real event JSON:
//! Lambda op envelopes and API Gateway HTTP API (v2) events.

use integration_tests::*;
use serde_json::{Value, json};

async fn call(a: &AppEnv, method: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    a.call(method, path, token, body).await
}

#[tokio::test]
async fn enqueue_function_takes_the_op_envelope() {
    let a = app_env().await;
    let r = invoke(
        &a.app,
        json!({"op": "configureAgent", "args": {"agentKey": "support-bot", "version": "3", "secretsRef": ["telegram.botToken.support-bot"], "enabled": true}}),
    )
    .await
    .unwrap();
    assert_eq!(r["agentKey"], "support-bot");
    let ev: Value = serde_json::from_str(&fixture("invoke-enqueue.json")).unwrap();
    let first = invoke(&a.app, ev.clone()).await.unwrap();
    let id = first["messageId"].as_str().unwrap().to_string();
    assert!(id.ends_with(":telegram:support-bot:5550001"), "{id}");
    assert_eq!(first["deduplicated"], false);
    let again = invoke(&a.app, ev).await.unwrap();
    assert_eq!((again["messageId"].as_str(), again["deduplicated"].as_bool()), (Some(id.as_str()), Some(true)));
    let stats = invoke(&a.app, json!({"op": "queueStats"})).await.unwrap();
    assert_eq!(stats["queuedReady"], 1);
    let rows = invoke(
        &a.app,
        json!({"op": "listQueueItemsForConversation", "args": {"conversationId": "telegram:support-bot:5550001"}}),
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["payload"]["providerUserId"], "5550001");
    assert_eq!(rows[0]["payload"]["metadata"]["chatType"], "private");
    assert_eq!(rows[0]["priority"], 60.0);
}

#[tokio::test]
async fn enqueue_function_errors_are_precise_and_change_nothing() {
    let a = app_env().await;
    let e = &a.e;
    seed_agent(&e.store, "support-bot", true).await;
    let before = snapshot(e).await;
    let good = || serde_json::from_str::<Value>(&fixture("invoke-enqueue.json")).unwrap();
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!("enqueue"), "ValidationError", "the payload must be a JSON object"),
        (json!({"args": {}}), "ValidationError", "missing field `op`"),
        (json!({"op": "dropTables"}), "ValidationError", "unknown op 'dropTables'"),
        (json!({"op": "enqueue"}), "ValidationError", "missing field `conversationId`"),
        (json!({"op": "enqueue", "args": []}), "ValidationError", "must be a JSON object"),
        (
            {
                let mut v = good();
                v["args"]["nowMs"] = json!(1);
                v
            },
            "ValidationError",
            "unknown field `nowMs`",
        ),
        (
            {
                let mut v = good();
                v["args"]["providerConfig"] = json!({});
                v
            },
            "ValidationError",
            "unknown field `providerConfig`",
        ),
        (
            {
                let mut v = good();
                v["args"]["priority"] = json!("high");
                v
            },
            "ValidationError",
            "invalid type",
        ),
        (
            {
                let mut v = good();
                v["args"]["payload"].as_object_mut().unwrap().remove("messageText");
                v
            },
            "ValidationError",
            "missing field `messageText`",
        ),
        (
            {
                let mut v = good();
                v["args"]["agentKey"] = json!("ghost");
                v
            },
            "NotFound",
            "Agent profile 'ghost' not found or disabled",
        ),
        (
            {
                let mut v = good();
                v["args"]["scheduledFor"] = json!(-1);
                v
            },
            "ValidationError",
            "scheduledFor must not be negative",
        ),
        (
            {
                let mut v = good();
                v["args"]["payload"]["messageText"] = json!("x".repeat(300_000));
                v
            },
            "PayloadTooLarge",
            "the limit is",
        ),
        (
            json!({"op": "listJobsByStatus", "args": {"status": "lost"}}),
            "ValidationError",
            "status 'lost' is not one of",
        ),
        (json!({"op": "queueStats", "args": {"verbose": true}}), "ValidationError", "unknown field `verbose`"),
    ];
    for (payload, code, text) in cases {
        let err = invoke(&a.app, payload.clone()).await.unwrap_err();
        let d = lambda_runtime::Diagnostic::from(err);
        assert_eq!(d.error_type, code, "{payload}");
        assert!(d.error_message.contains(text), "{payload}: '{}' should say '{text}'", d.error_message);
    }
    assert_eq!(snapshot(e).await, before, "no refused invocation wrote anything");
}

#[tokio::test]
async fn worker_routes_through_api_gateway_events() {
    let a = app_env().await;
    let e = &a.e;
    let token = a.mint("worker-1").await;
    #[allow(non_snake_case)]
    let TOKEN = token.as_str();
    seed_agent(&e.store, "bot", true).await;
    e.store.enqueue(enq("c1", "bot", "hello")).await.unwrap();
    let (st, job) = call(&a, "POST", "/worker/claim", Some(TOKEN), json!({"workerId": "worker-1"})).await;
    assert_eq!(st, 200, "{job}");
    assert_eq!(job["conversationId"], "c1");
    let lease = json!({"workerId": "worker-1", "messageId": job["messageId"], "leaseId": job["leaseId"]});
    let (st, hb) = call(&a, "POST", "/worker/heartbeat", Some(TOKEN), lease.clone()).await;
    assert_eq!((st, hb["ok"].as_bool()), (200, Some(true)));
    let (st, hq) = call(&a, "POST", "/worker/has-queued", Some(TOKEN), json!({"conversationId": "c1"})).await;
    assert_eq!((st, hq["hasQueued"].as_bool()), (200, Some(false)));
    let (st, ap) = call(
        &a,
        "POST",
        "/worker/append-messages",
        Some(TOKEN),
        json!({"conversationId": "c1", "workspaceId": "default", "messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}),
    )
    .await;
    assert_eq!((st, ap["messageCount"].as_u64()), (200, Some(2)));
    let mut failing = lease.clone();
    failing["errorMessage"] = json!("model timeout");
    let (st, f) = call(&a, "POST", "/worker/fail", Some(TOKEN), failing).await;
    assert_eq!((st, f["requeued"].as_bool()), (200, Some(true)));
    e.clock.set(f["nextScheduledFor"].as_i64().unwrap());
    let (_, job2) =
        call(&a, "POST", "/worker/claim", Some(TOKEN), json!({"workerId": "worker-1", "conversationId": "c1"})).await;
    assert_eq!(job2["messageId"], job["messageId"]);
    assert_eq!(job2["attempts"], 1);
    let lease2 = json!({"workerId": "worker-1", "messageId": job2["messageId"], "leaseId": job2["leaseId"]});
    let (st, c) = call(&a, "POST", "/worker/complete", Some(TOKEN), lease2.clone()).await;
    assert_eq!((st, c), (200, json!({"ok": true})));
    // Completing twice: the lease is gone.
    let (st, again) = call(&a, "POST", "/worker/complete", Some(TOKEN), lease2).await;
    assert_eq!(
        (st, again["error"]["code"].as_str(), again["error"]["reason"].as_str()),
        (409, Some("Conflict"), Some("not_processing"))
    );
    // Nothing left: claim answers null.
    let (st, none) = call(&a, "POST", "/worker/claim", Some(TOKEN), json!({"workerId": "worker-1"})).await;
    assert_eq!((st, none), (200, Value::Null));
}

#[tokio::test]
async fn worker_route_refusals_are_precise_and_change_nothing() {
    let a = app_env().await;
    let e = &a.e;
    let token = a.mint("w1").await;
    #[allow(non_snake_case)]
    let TOKEN = token.as_str();
    seed_agent(&e.store, "bot", true).await;
    e.store.enqueue(enq("c1", "bot", "hello")).await.unwrap();
    let (_, job) = call(&a, "POST", "/worker/claim", Some(TOKEN), json!({"workerId": "w1"})).await;
    let lease = json!({"workerId": "w1", "messageId": job["messageId"], "leaseId": job["leaseId"]});
    let before = snapshot(e).await;
    let raw = |path: &str, token: Option<&str>, body: &str| {
        let req = apigw("POST", path, token, body);
        let app = a.app.clone();
        async move { parts(claim::handle(&app, req).await) }
    };
    let cases: Vec<((u16, Value), u16, &str, &str)> = vec![
        (raw("/worker/claim", None, r#"{"workerId":"w2"}"#).await, 401, "Unauthorized", "missing bearer token"),
        (
            raw("/worker/claim", Some("nope"), r#"{"workerId":"w2"}"#).await,
            401,
            "Unauthorized",
            "malformed worker token",
        ),
        (raw("/worker/teleport", Some(TOKEN), "{}").await, 404, "NotFound", "unknown worker op 'teleport'"),
        (raw("/worker/claim", Some(TOKEN), "{not json").await, 400, "ValidationError", "malformed JSON"),
        (raw("/worker/claim", Some(TOKEN), "").await, 400, "ValidationError", "needs a JSON object body"),
        (raw("/worker/claim", Some(TOKEN), "[1]").await, 400, "ValidationError", "must be a JSON object"),
        (raw("/worker/claim", Some(TOKEN), r#"{"conversationId":5}"#).await, 400, "ValidationError", "invalid type"),
        (raw("/worker/heartbeat", Some(TOKEN), "{}").await, 400, "ValidationError", "missing field `messageId`"),
        (
            raw("/worker/claim", Some(TOKEN), r#"{"workerId":"w1","nowMs":1}"#).await,
            400,
            "ValidationError",
            "unknown field `nowMs`",
        ),
        (
            raw("/worker/heartbeat", Some(TOKEN), r#"{"workerId":"w1","messageId":"bogus","leaseId":"x"}"#).await,
            400,
            "ValidationError",
            "is not a message id",
        ),
        (
            raw("/worker/claim", Some(TOKEN), &format!(r#"{{"workerId":"{}"}}"#, "w".repeat(2 * 1024 * 1024))).await,
            413,
            "PayloadTooLarge",
            "the limit is",
        ),
        (
            call(
                &a,
                "POST",
                "/worker/complete",
                Some(TOKEN),
                json!({"workerId": "w2", "messageId": job["messageId"], "leaseId": job["leaseId"]}),
            )
            .await,
            403,
            "Forbidden",
            "is not the worker of this token",
        ),
        // Issue 7 §2.9: a wrong method is 405 (was a 400 ValidationError).
        (call(&a, "GET", "/worker/claim", Some(TOKEN), json!({})).await, 405, "MethodNotAllowed", "takes POST"),
        (
            call(&a, "POST", "/worker/fail", Some(TOKEN), lease.clone()).await,
            400,
            "ValidationError",
            "missing field `errorMessage`",
        ),
        (
            call(
                &a,
                "POST",
                "/worker/append-messages",
                Some(TOKEN),
                json!({"conversationId": "c1", "messages": [{"role": "robot", "content": "x"}]}),
            )
            .await,
            400,
            "ValidationError",
            "unknown variant `robot`",
        ),
    ];
    for ((status, body), want_status, want_code, text) in cases {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"]["code"], want_code, "{body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(text), "'{msg}' should say '{text}'");
        assert!(!msg.contains(TOKEN));
    }
    assert_eq!(snapshot(e).await, before, "refused calls change nothing");
    // A late heartbeat after the lease ran out.
    e.clock.advance(360_000);
    let (st, late) = call(&a, "POST", "/worker/heartbeat", Some(TOKEN), lease).await;
    assert_eq!((st, late["error"]["reason"].as_str()), (409, Some("lease_expired")));
    assert_eq!(snapshot(e).await, before, "the late heartbeat changed nothing");
}

/// Every JSON value `v` becomes with one leaf replaced by an odd one: ids far beyond DynamoDB's
/// key limits (2,048-byte partition key, 1,024-byte sort key), empty, control characters,
/// multi-byte text; numbers negative or huge.
fn short(v: &Value) -> String {
    v.to_string().chars().take(300).collect()
}

fn one_leaf_mutations(v: &Value) -> Vec<Value> {
    let strings = [
        "x".repeat(3_000),
        "é".repeat(1_100),
        "🦀".repeat(600),
        String::new(),
        "a\u{0}b".to_string(),
        "c".repeat(1_025),
    ];
    let numbers = [json!(-1), json!(1_000_000_000_000_000i64), json!(-9_007_199_254_740_991i64)];
    let mut out = Vec::new();
    match v {
        Value::String(_) => out.extend(strings.iter().map(|s| json!(s))),
        Value::Number(_) => out.extend(numbers.iter().cloned()),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                for m in one_leaf_mutations(x) {
                    let mut c = a.clone();
                    c[i] = m;
                    out.push(Value::Array(c));
                }
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                for m in one_leaf_mutations(x) {
                    let mut c = o.clone();
                    c.insert(k.clone(), m);
                    out.push(Value::Object(c));
                }
            }
        }
        _ => {}
    }
    out
}

/// Issue 7 §2.9: no client input yields a 5xx or an `Internal` error, on any op of the envelope
/// or any worker route, and a refused call writes nothing.
#[tokio::test]
async fn odd_ids_and_strings_on_every_op_and_route_never_give_a_5xx_nor_write() {
    let a = app_env().await;
    let e = &a.e;
    // Real time: items written with a DynamoDB TTL (pairing codes) must not look long expired to
    // DynamoDB Local, whose TTL sweeper would delete them between two snapshots.
    e.clock.set(shared::Clock::now_ms(&shared::SystemClock));
    seed_agent(&e.store, "bot", true).await;
    e.store.enqueue(enq("c1", "bot", "hello")).await.unwrap();
    let token = a.mint("w1").await;
    let (_, job) = call(&a, "POST", "/worker/claim", Some(&token), json!({})).await;
    let (mid, lid) = (job["messageId"].clone(), job["leaseId"].clone());
    let snap_id = "01J00000000000000000000000:c1";
    let ops: Vec<(&str, Value)> = vec![
        (
            "enqueue",
            json!({"conversationId": "c2", "agentKey": "bot", "priority": 50, "scheduledFor": T0,
            "maxAttempts": 3, "payload": {"provider": "telegram", "providerUserId": "7", "messageText": "hi",
            "externalMessageId": "x1"}}),
        ),
        (
            "configureAgent",
            json!({"agentKey": "bot", "version": "1", "secretsRef": ["telegram.botToken.bot"],
            "enabled": true, "botIdentity": "7001", "bridgeConfig": {"enabled": true, "baseUrl": "https://b",
            "serviceId": "s", "appKey": "k", "serviceKeySecretRef": "r1", "appBaseUrlMapJsonSecretRef": "r2"}}),
        ),
        ("getAgentProfile", json!({"agentKey": "bot"})),
        ("queueStats", json!({})),
        ("listJobsByStatus", json!({"status": "queued", "limit": 10})),
        ("listQueueItemsForConversation", json!({"conversationId": "c1", "limit": 10})),
        ("hasQueuedJobsForConversation", json!({"conversationId": "c1"})),
        ("releaseStuckJobs", json!({"limit": 10})),
        ("releaseExpiredLeases", json!({"limit": 10})),
        ("redriveDeadLetters", json!({"conversationId": "c1", "messageIds": [snap_id]})),
        (
            "backfillStatusShards",
            json!({"limit": 10, "cursor": shared::paging::encode_table_key("backfillStatusShards", "C#c1", "M#1")}),
        ),
        (
            "upsertWorkerState",
            json!({"workerId": "wz", "provider": "fly", "status": "active", "load": 0,
            "machineId": "m", "appName": "a", "region": "r", "volumeId": "v", "scheduledShutdownAt": T0,
            "assignment": {"conversationId": "c9", "agentKey": "bot", "leaseId": "l"}}),
        ),
        ("getWorker", json!({"workerId": "w1"})),
        (
            "setMessageRuntimeConfig",
            json!({"messageConfig": {"systemPrompt": "p", "telegramAttachmentRetentionMs": 1000}}),
        ),
        ("messageRuntimeConfig", json!({})),
        (
            "appendConversationMessages",
            json!({"conversationId": "c1", "workspaceId": "default",
            "messages": [{"role": "user", "content": "x", "at": 5}]}),
        ),
        ("mintWorkerToken", json!({"workerId": "wm", "provider": "fly"})),
        ("revokeWorkerToken", json!({"workerId": "wm"})),
        ("getWorkerControlState", json!({"workerId": "w1"})),
        ("listSnapshotsForConversation", json!({"conversationId": "c1", "limit": 5})),
        ("listSnapshotsForUserAgent", json!({"consumerUserId": "u", "agentKey": "bot", "limit": 5})),
        ("getProviderOperationalReadiness", json!({})),
        ("getConversationViewForUserAgent", json!({"consumerUserId": "u", "agentKey": "bot", "limit": 5})),
        ("getUserAgentsOverview", json!({"consumerUserId": "u"})),
        ("listUserAgents", json!({"consumerUserId": "u", "includeDisabled": false})),
        ("getUserAgent", json!({"consumerUserId": "u", "agentKey": "bot"})),
        ("getActiveUserAgent", json!({"consumerUserId": "u"})),
        (
            "listQueueItemsForUserAgent",
            json!({"consumerUserId": "u", "agentKey": "bot", "statuses": ["queued"], "limit": 5}),
        ),
        (
            "sendMessageToUserAgent",
            json!({"consumerUserId": "u", "agentKey": "bot", "content": "hi", "metadata": {"k": "v"}}),
        ),
        ("getLatestSnapshotForUserAgent", json!({"consumerUserId": "u", "agentKey": "bot"})),
        ("expireOldDataSnapshots", json!({"limit": 5})),
        ("expireStorage", json!({"limit": 5})),
        (
            "runFlyCleanup",
            json!({"appName": "app1", "dryRun": true, "allMachinesInApp": false, "machineConcurrency": 2,
            "volumeConcurrency": 2}),
        ),
        ("importSecret", json!({"secretRef": "a.b", "plaintextValue": "v", "metadata": {"k": "v"}})),
        ("secretStatus", json!({"secretRefs": ["a.b"]})),
        ("getSecretsStatus", json!({"agentKey": "bot"})),
        ("deleteSecret", json!({"secretRef": "a.b"})),
        // Identity (issue 9). Telegram is never reached: the token sample is not token-shaped and
        // the agent's bot is not claimed, so every call stays on our side.
        (
            "importTelegramTokenForAgent",
            json!({"agentKey": "bot", "plaintextValue": "not-a-token", "metadata": {"k": "v"}}),
        ),
        ("configureTelegramWebhook", json!({"agentKey": "bot", "publicBaseUrl": "https://h.example"})),
        ("reconcileTelegramBotIdentityForAgent", json!({"agentKey": "bot"})),
        ("getWebhookReadiness", json!({"agentKey": "bot"})),
        ("createPairingCode", json!({"consumerUserId": "u", "agentKey": "bot", "ttlMs": 60000})),
        ("createUserAgentPairing", json!({"consumerUserId": "u", "agentKey": "bot", "ttlMs": 60000})),
        ("getPairingCodeStatus", json!({"consumerUserId": "u", "code": "ABCDEFGH23"})),
        ("getUserAgentPairingStatus", json!({"consumerUserId": "u", "agentKey": "bot"})),
        (
            "consumePairingCode",
            json!({"code": "ABCDEFGH23", "botIdentity": "7001", "telegramUserId": "1", "telegramChatId": "1"}),
        ),
        (
            "bindUserAgent",
            json!({"consumerUserId": "u", "agentKey": "bot", "botIdentity": "7001", "source": "manual",
            "telegramUserId": "1", "telegramChatId": "1", "metadata": {"displayName": "d"}}),
        ),
        ("resolveAgentForUser", json!({"consumerUserId": "u"})),
        ("resolveAgentForTelegram", json!({"botIdentity": "7001", "telegramUserId": "1", "telegramChatId": "1"})),
        ("getUserAgentBinding", json!({"consumerUserId": "u"})),
        ("getUserAgentOnboardingState", json!({"consumerUserId": "u", "agentKey": "bot"})),
        ("getTelegramAgentReadiness", json!({"consumerUserId": "u", "agentKey": "bot"})),
        ("getAgentOperationalReadiness", json!({"consumerUserId": "u", "agentKey": "bot"})),
        ("getRequiredSecretRefs", json!({"agentKey": "bot"})),
        (
            "softResetTelegramBindingsMissingBotIdentity",
            json!({"revokeActiveBindings": true, "expirePendingPairings": true}),
        ),
        ("revokeUserAgentBinding", json!({"consumerUserId": "u"})),
        // Message templates (admin) and sending one (api).
        (
            "createMessageTemplate",
            json!({"companyId": "acme", "title": "Hi", "text": "t", "tags": ["a"], "enabled": true,
            "actorUserId": "op"}),
        ),
        (
            "updateMessageTemplate",
            json!({"templateId": "01J00000000000000000000000:acme", "title": "T", "text": "x", "tags": ["b"],
            "enabled": false, "actorUserId": "op"}),
        ),
        ("getMessageTemplate", json!({"templateId": "01J00000000000000000000000:acme"})),
        ("deleteMessageTemplate", json!({"templateId": "01J00000000000000000000000:acme"})),
        ("listMessageTemplatesByCompany", json!({"companyId": "acme", "includeDisabled": true, "limit": 10})),
        (
            "sendMessageTemplateToUserAgent",
            json!({"consumerUserId": "u", "agentKey": "bot", "templateId": "01J00000000000000000000000:acme",
            "metadata": {"k": "v"}}),
        ),
        // Pushing (admin, and the user's "my agent" ops on api).
        (
            "createPushTemplate",
            json!({"companyId": "acme", "templateKey": "k", "title": "T", "text": "x", "periodicity": "weekly",
            "suggestedTimes": [{"kind": "weekly", "weekday": 1, "time": "09:00"}], "enabled": true, "actorUserId": "op"}),
        ),
        (
            "updatePushTemplate",
            json!({"templateId": "01J00000000000000000000000:acme", "title": "T", "text": "x", "periodicity": "monthly",
            "suggestedTimes": [{"kind": "monthly", "dayOfMonth": "last", "time": "09:00"}], "enabled": false,
            "actorUserId": "op"}),
        ),
        ("deletePushTemplate", json!({"templateId": "01J00000000000000000000000:acme"})),
        ("listPushTemplatesByCompany", json!({"companyId": "acme", "includeDisabled": true})),
        (
            "createPushJobFromTemplate",
            json!({"companyId": "acme", "consumerUserId": "u", "templateId": "01J00000000000000000000000:acme",
            "timezone": "UTC", "schedule": {"kind": "daily", "time": "09:00"}, "enabled": true}),
        ),
        (
            "createPushJobCustom",
            json!({"companyId": "acme", "consumerUserId": "u", "title": "t", "text": "x", "periodicity": "monthly",
            "timezone": "Europe/Rome", "schedule": {"kind": "monthly", "dayOfMonth": 31, "time": "09:00"}, "enabled": false}),
        ),
        (
            "updatePushJob",
            json!({"jobId": "01J00000000000000000000000:u", "title": "t", "text": "x", "periodicity": "daily",
            "timezone": "UTC", "schedule": {"kind": "daily", "time": "10:00"}, "enabled": true}),
        ),
        ("deletePushJob", json!({"jobId": "01J00000000000000000000000:u"})),
        ("setPushJobEnabled", json!({"jobId": "01J00000000000000000000000:u", "enabled": true})),
        ("getPushJob", json!({"jobId": "01J00000000000000000000000:u"})),
        ("listPushJobsForUser", json!({"consumerUserId": "u", "includeDisabled": true})),
        ("triggerPushJobNow", json!({"jobId": "01J00000000000000000000000:u", "idempotencyKey": "k1"})),
        ("listPushDispatchesByJob", json!({"jobId": "01J00000000000000000000000:u", "limit": 5})),
        ("dispatchDuePushJobs", json!({"limit": 5})),
        (
            "sendBroadcastToAllActiveAgents",
            json!({"companyId": "nobody", "title": "t", "text": "x", "requestedBy": "op", "idempotencyKey": "k1"}),
        ),
        ("getPushBroadcast", json!({"companyId": "acme", "idempotencyKey": "k1"})),
        ("listPushJobsForAgent", json!({"consumerUserId": "u", "agentKey": "bot", "includeDisabled": true})),
        (
            "createPushJobFromTemplateForAgent",
            json!({"consumerUserId": "u", "companyId": "acme", "agentKey": "bot",
            "templateId": "01J00000000000000000000000:acme", "timezone": "UTC",
            "schedule": {"kind": "daily", "time": "09:00"}, "enabled": true}),
        ),
        (
            "createPushJobCustomForAgent",
            json!({"consumerUserId": "u", "companyId": "acme", "agentKey": "bot", "title": "t", "text": "x",
            "periodicity": "daily", "timezone": "UTC", "schedule": {"kind": "daily", "time": "09:00"}, "enabled": true}),
        ),
        (
            "updatePushJobForAgent",
            json!({"consumerUserId": "u", "agentKey": "bot", "jobId": "01J00000000000000000000000:u", "title": "t",
            "text": "x", "periodicity": "daily", "timezone": "UTC", "schedule": {"kind": "daily", "time": "09:00"},
            "enabled": true}),
        ),
        (
            "triggerPushJobNowForAgent",
            json!({"consumerUserId": "u", "agentKey": "bot", "jobId": "01J00000000000000000000000:u",
            "idempotencyKey": "k2"}),
        ),
        ("listPushDispatchesForAgent", json!({"consumerUserId": "u", "agentKey": "bot", "limit": 5})),
        (
            "deployGlobalSkill",
            json!({"slug": "odd-skill", "version": "1.0.0", "displayName": "Odd", "description": "d",
            "files": [
                {"path": "SKILL.md", "content": "# Odd\n", "sha256": shared::skills::rules::sha256_hex(b"# Odd\n")},
                {"path": "scripts/index.mjs", "content": "", "sha256": shared::skills::rules::sha256_hex(b"")},
            ],
            "entryPoint": "default", "moduleFormat": "esm", "releaseChannel": "stable", "actor": "ops"}),
        ),
        ("listGlobalSkills", json!({"releaseChannel": "canary", "status": "active", "limit": 10})),
        ("setGlobalSkillStatus", json!({"slug": "odd-skill", "status": "active", "actor": "ops"})),
        ("deleteGlobalSkill", json!({"slug": "odd-skill"})),
        ("getWorkerGlobalSkillsManifest", json!({"workspaceId": "default", "releaseChannel": "stable"})),
        ("getAgentUsageStats", json!({"agentKey": "bot", "days": 7})),
        ("getUserAgentConversationStats", json!({"consumerUserId": "u", "agentKey": "bot"})),
        ("getUserAgentPushStats", json!({"consumerUserId": "u", "agentKey": "bot"})),
        ("getUserAgentUsageStats", json!({"consumerUserId": "u", "agentKey": "bot", "days": 7})),
    ];
    let covered: Vec<&str> = ops.iter().map(|(o, _)| *o).collect();
    for op in all_op_names() {
        assert!(covered.contains(&op), "op {op} has no sample here");
    }
    // The sweeps and the Fly cleanup are the cleanup function's (nothing answers at its Fly
    // address here, and no `fly.apiToken` is stored: runFlyCleanup is refused before any call).
    let env = &a;
    let invoke = |op: &str, args: Value| {
        let payload = json!({"op": op, "args": args});
        let cleanup_op = cleanup::op_names().contains(&op);
        async move {
            if cleanup_op { env.cleanup(payload).await } else { integration_tests::invoke(&env.app, payload).await }
        }
    };
    let mut calls = 0;
    for (op, sample) in &ops {
        for args in one_leaf_mutations(sample) {
            let before = snapshot(e).await;
            calls += 1;
            match invoke(op, args.clone()).await {
                Ok(_) => {}
                Err(err) => {
                    let (args, msg) = (short(&args), short(&json!(err.to_string())));
                    assert_ne!(code(&err), "Internal", "{op} {args}: {msg}");
                    assert!(err.code().http_status() < 500, "{op} {args}: {msg}");
                    assert!(snapshot(e).await == before, "refused {op} wrote: {args}");
                }
            }
        }
    }
    for name in ["x".repeat(3_000), String::new(), "a\u{0}".into()] {
        let err = integration_tests::invoke(&a.app, json!({"op": name, "args": {}})).await.unwrap_err();
        assert_eq!(code(&err), "ValidationError");
    }
    // Out-of-range limits of the snapshot ops are refused (the README gives their ranges).
    for (op, args) in [
        ("listSnapshotsForConversation", json!({"conversationId": "c1", "limit": 0})),
        ("listSnapshotsForConversation", json!({"conversationId": "c1", "limit": 201})),
        ("expireStorage", json!({"limit": 1001})),
        ("expireStorage", json!({"limit": -5})),
    ] {
        let err = invoke(op, args.clone()).await.unwrap_err();
        assert_eq!(code(&err), "ValidationError", "{op} {args}");
    }

    let routes: Vec<(&str, Value)> = vec![
        ("claim", json!({"conversationId": "c1", "workerId": "w1"})),
        ("heartbeat", json!({"messageId": mid, "leaseId": lid})),
        (
            "complete",
            json!({"messageId": mid, "leaseId": lid,
            "usage": {"inputTokens": 1, "outputTokens": 2, "model": "m", "costMicros": 3}}),
        ),
        (
            "append-messages",
            json!({"conversationId": "c1", "workspaceId": "default",
            "messages": [{"role": "user", "content": "x", "at": 5}]}),
        ),
        ("has-queued", json!({"conversationId": "c1"})),
        ("hydration", json!({"messageId": mid})),
        ("control-state", json!({})),
        ("worker-heartbeat", json!({})),
        (
            "snapshot-prepare",
            json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "c1",
            "reason": "manual", "sizeBytes": 10}),
        ),
        ("snapshot-finalize", json!({"snapshotId": snap_id, "sha256": "0".repeat(64), "sizeBytes": 1})),
        ("snapshot-fail", json!({"snapshotId": snap_id, "error": "x"})),
        ("snapshot-restore", json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "c1"})),
        (
            "media-upload-url",
            json!({"messageId": mid, "sizeBytes": 3, "mimeType": "text/plain",
            "fileName": "f.txt", "kind": "document"}),
        ),
        ("media-url", json!({"messageId": mid, "storageId": "mX"})),
        ("message-metadata", json!({"messageId": mid, "metadata": {"k": "v"}})),
        ("reply", json!({"messageId": mid, "leaseId": lid, "part": 0, "text": "hi"})),
        ("typing", json!({"messageId": mid, "leaseId": lid})),
        ("skills-manifest", json!({"workspaceId": "default", "releaseChannel": "canary"})),
        // Last: a long error message is accepted (bounded), and the job is then requeued.
        ("fail", json!({"messageId": mid, "leaseId": lid, "errorMessage": "x"})),
    ];
    let mut covered: Vec<&str> = routes.iter().map(|(o, _)| *o).collect();
    // `bootstrap` takes no token (its body is the credential): odd codes are refused with a
    // 4xx and write nothing.
    covered.push("bootstrap");
    let boot = json!({"code": format!("afb1.{}", "0".repeat(64))});
    for body in one_leaf_mutations(&boot).into_iter().chain([boot.clone(), json!({"code": "x".repeat(3_000)})]) {
        let before = snapshot(e).await;
        calls += 1;
        let (st, v) = call(&a, "POST", "/worker/bootstrap", None, body.clone()).await;
        assert!((400..500).contains(&st), "bootstrap {}: {st} {}", short(&body), short(&v));
        assert!(snapshot(e).await == before, "refused bootstrap wrote: {}", short(&body));
    }
    for op in shared::worker_api::ROUTES.iter().map(|r| r.op) {
        assert!(covered.contains(&op), "route {op} has no sample here");
    }
    let long_token = shared::workers::auth::new_token(&"w".repeat(3_000));
    let check = |op: &str, body: &Value, st: u16, v: &Value| {
        let (body, v) = (short(body), short(v));
        assert!(st < 500, "{op} {body}: {st} {v}");
        if st >= 400 {
            assert!(v.contains("\"code\""), "{op}: the JSON error body: {v}");
            assert!(!v.contains("Internal"), "{op} {body}: {v}");
        }
    };
    for (op, sample) in &routes {
        let path = format!("/worker/{op}");
        for body in one_leaf_mutations(sample).into_iter().chain([sample.clone()]) {
            let is_sample = body == *sample;
            let before = snapshot(e).await;
            calls += 1;
            if !is_sample {
                let (st, v) = call(&a, "POST", &path, Some(&token), body.clone()).await;
                check(op, &body, st, &v);
                if st >= 400 {
                    assert!(snapshot(e).await == before, "refused {op} wrote: {}", short(&body));
                }
            }
            // A token naming an impossible worker id: a ValidationError before any read.
            let (st, v) = call(&a, "POST", &path, Some(long_token.expose()), body.clone()).await;
            check(op, &body, st, &v);
            assert_eq!((st, v["error"]["code"].as_str()), (400, Some("ValidationError")), "{op}: {}", short(&v));
            assert!(!v.to_string().contains("DynamoDB") && !v.to_string().contains("Exception"), "{}", short(&v));
        }
        for method in ["GET", "PUT", "DELETE", "PATCH"] {
            let (st, v) = call(&a, method, &path, Some(&token), sample.clone()).await;
            assert_eq!((st, v["error"]["code"].as_str()), (405, Some("MethodNotAllowed")), "{method} {op}: {v}");
        }
    }
    for path in [format!("/worker/{}", "x".repeat(3_000)), "/worker/claim/extra".into(), "/nope".into()] {
        let (st, v) = call(&a, "POST", &path, Some(&token), json!({})).await;
        assert_eq!((st, v["error"]["code"].as_str()), (404, Some("NotFound")), "{}", short(&v));
    }
    assert!(calls > 500, "{calls} calls");
}

/// Issue 7 §2.10: concurrent `configureAgent` calls that set different optional fields keep both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_configure_agent_calls_keep_each_others_fields() {
    let a = std::sync::Arc::new(app_env().await);
    for round in 0..10 {
        let agent = format!("bot{round}");
        let base = json!({"agentKey": agent, "version": "1", "secretsRef": [], "enabled": true});
        invoke(&a.app, json!({"op": "configureAgent", "args": base})).await.unwrap();
        let mut with_identity = base.clone();
        with_identity["botIdentity"] = json!(format!("id-{round}"));
        let mut with_bridge = base.clone();
        with_bridge["bridgeConfig"] = json!({"enabled": false, "baseUrl": "https://bridge.example"});
        let (a1, a2) = (a.clone(), a.clone());
        let t1 =
            tokio::spawn(async move { invoke(&a1.app, json!({"op": "configureAgent", "args": with_identity})).await });
        let t2 =
            tokio::spawn(async move { invoke(&a2.app, json!({"op": "configureAgent", "args": with_bridge})).await });
        t1.await.unwrap().unwrap();
        t2.await.unwrap().unwrap();
        let p = a.e.store.get_agent(&agent).await.unwrap().unwrap();
        assert_eq!(p.bot_identity.as_deref(), Some(format!("id-{round}").as_str()), "round {round}: {p:?}");
        assert!(p.bridge_config.is_some(), "round {round}: {p:?}");
    }
}

/// Issue 7 §3: `queueStats` reads at most 1,000 index entries per figure (over all its status
/// shards), whatever the depth;
/// a figure at the bound says so (`capped`).
#[tokio::test]
async fn queue_stats_cost_is_bounded_in_depth() {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = a.e.store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..1_050).step_by(16) {
                store.enqueue(enq(&format!("c{}", i % 200), "bot", "x")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut later = enq("c-later", "bot", "x");
    later.scheduled_for = Some(T0 + 60_000);
    a.e.store.enqueue(later).await.unwrap();
    a.e.counter.reset();
    let stats = invoke(&a.app, json!({"op": "queueStats"})).await.unwrap();
    assert_eq!(
        (stats["queuedReady"].as_u64(), stats["queuedScheduled"].as_u64(), stats["capped"].as_bool()),
        (Some(1_000), Some(1), Some(true)),
        "{stats}"
    );
    // Per figure: one Query per status shard, then at most one more per shard that had more
    // than its share of the bound (issue 12: 32 shards a status) — the same at any depth.
    let per_figure = 2 * u64::from(shared::adapters::dynamo::keys::STATUS_SHARDS) + 1;
    assert!(a.e.counter.total() <= 4 * per_figure, "bounded Queries per figure, got {}", a.e.counter.total());
}
