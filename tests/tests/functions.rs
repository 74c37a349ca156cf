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
    let r = enqueue::handle(
        &a.app,
        json!({"op": "configureAgent", "args": {"agentKey": "support-bot", "version": "3", "secretsRef": ["telegram.botToken.support-bot"], "enabled": true}}),
    )
    .await
    .unwrap();
    assert_eq!(r["agentKey"], "support-bot");
    let ev: Value = serde_json::from_str(&fixture("invoke-enqueue.json")).unwrap();
    let first = enqueue::handle(&a.app, ev.clone()).await.unwrap();
    let id = first["messageId"].as_str().unwrap().to_string();
    assert!(id.ends_with(":telegram:support-bot:5550001"), "{id}");
    assert_eq!(first["deduplicated"], false);
    let again = enqueue::handle(&a.app, ev).await.unwrap();
    assert_eq!((again["messageId"].as_str(), again["deduplicated"].as_bool()), (Some(id.as_str()), Some(true)));
    let stats = enqueue::handle(&a.app, json!({"op": "queueStats"})).await.unwrap();
    assert_eq!(stats["queuedReady"], 1);
    let rows = enqueue::handle(
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
        let err = enqueue::handle(&a.app, payload.clone()).await.unwrap_err();
        let d = enqueue::diagnostic(err);
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
        (call(&a, "GET", "/worker/claim", Some(TOKEN), json!({})).await, 400, "ValidationError", "takes POST"),
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

/// Issue 7 §3: `queueStats` reads at most 1,000 index entries per figure, whatever the depth;
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
    let stats = enqueue::handle(&a.app, json!({"op": "queueStats"})).await.unwrap();
    assert_eq!(
        (stats["queuedReady"].as_u64(), stats["queuedScheduled"].as_u64(), stats["capped"].as_bool()),
        (Some(1_000), Some(1), Some(true)),
        "{stats}"
    );
    assert!(a.e.counter.total() <= 6, "one bounded Query per figure, got {}", a.e.counter.total());
}
