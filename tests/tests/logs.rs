//! Secrets and worker tokens never reach the logs, results, errors or `Debug` output. TRACE logs
//! are captured with a thread-local subscriber; these tests live in a binary of their own, where
//! every test installs one, so no thread without a subscriber races them for tracing's callsite
//! cache.

use integration_tests::*;
use serde_json::json;
use shared::adapters::secrets_file::FileSecretBackend;

use shared::secrets::{MAX_VALUE_BYTES, SecretBackend, Secrets};
use std::sync::Arc;

#[tokio::test(flavor = "current_thread")]
async fn neither_worker_tokens_nor_secrets_reach_the_logs() {
    const BOT_TOKEN: &str = "7001:AAE-known-secret-value-for-the-leak-test";
    let a = app_env().await;
    let e = &a.e;
    let token = a.mint("w1").await;
    #[allow(non_snake_case)]
    let TOKEN = token.as_str();
    seed_agent(&e.store, "bot", true).await;
    let (buf, _guard) = capture_logs();
    let imported = invoke(
        &a.app,
        json!({"op": "importSecret", "args": {"secretRef": "telegram.botToken.bot", "plaintextValue": BOT_TOKEN}}),
    )
    .await
    .unwrap();
    assert!(!imported.to_string().contains(BOT_TOKEN));
    e.store.enqueue(enq("c1", "bot", "hello")).await.unwrap();
    let (_, job) = a.call("POST", "/worker/claim", Some(TOKEN), json!({"workerId": "w1"})).await;
    a.call("POST", "/worker/claim", Some(&format!("{TOKEN}x")), json!({"workerId": "w1"})).await;
    a.call("POST", "/worker/teleport", Some(TOKEN), json!({})).await;
    let other = a.mint("w2").await;
    let (st, _) = a.call("POST", "/worker/hydration", Some(&other), json!({"messageId": job["messageId"]})).await;
    assert_eq!(st, 403);
    let (st, bundle) = a.call("POST", "/worker/hydration", Some(TOKEN), json!({"messageId": job["messageId"]})).await;
    assert_eq!((st, bundle["telegramBotToken"].as_str()), (200, Some(BOT_TOKEN)), "the holder gets the token");
    let status = invoke(&a.app, json!({"op": "getSecretsStatus", "args": {"agentKey": "bot"}})).await.unwrap();
    assert!(!status.to_string().contains(BOT_TOKEN));
    invoke(&a.app, json!({"op": "deleteSecret", "args": {"secretRef": "telegram.botToken.bot"}})).await.unwrap();
    let logs = buf.text();
    assert!(logs.contains("malformed worker token"), "the refusal is logged: {logs}");
    assert!(logs.contains("is not leased to worker"), "the hydration refusal is logged: {logs}");
    assert!(!logs.contains(TOKEN) && !logs.contains(&other), "a worker token leaked into the logs");
    assert!(!logs.contains(BOT_TOKEN), "the bot token leaked into the logs");
    assert!(!format!("{:?}", a.app).contains(BOT_TOKEN), "nor into Debug output");
}

async fn op(e: &TestEnv, s: &Secrets, name: &str, args: serde_json::Value) -> shared::AppResult<serde_json::Value> {
    integration_tests::secret_op(&e.store, s, name, args).await
}

const SECRET: &str = "sk-live-NEVER-LOG-ME-0123456789";

/// Import, read, rotate, refuse, delete — all with TRACE logs captured; the value appears in
/// no log line, no result, no error and no `Debug` output.
async fn never_leaks(backend: Arc<dyn SecretBackend>, sdk: bool) {
    let e = env().await;
    let (buf, _guard) = capture_logs();
    let s = Secrets::new(backend, Arc::new(e.clock.clone()), 60_000);
    let mut seen = String::new();

    let r = op(&e, &s, "importSecret", json!({"secretRef": "leak.test", "plaintextValue": SECRET})).await.unwrap();
    seen.push_str(&r.to_string());
    let got = s.get("leak.test").await.unwrap().unwrap();
    assert_eq!(got.expose(), SECRET);
    seen.push_str(&format!("{got:?} {s:?} {:?}", s.backend()));
    seen.push_str(&format!("{:?}", s.first_active(&["leak.test".to_string()]).await.unwrap()));
    seen.push_str(&format!("{:?}", s.backend().info("leak.test").await.unwrap()));
    let r = op(&e, &s, "secretStatus", json!({"secretRefs": ["leak.test"]})).await.unwrap();
    seen.push_str(&r.to_string());
    // Refusals that carry the value somewhere in their input.
    for bad in [
        json!({"secretRef": "bad ref", "plaintextValue": SECRET}),
        json!({"secretRef": "leak.test", "plaintextValue": SECRET, "unknown": 1}),
        json!({"secretRef": "leak.test", "plaintextValue": format!("{SECRET}{}", "x".repeat(MAX_VALUE_BYTES))}),
        json!({"secretRef": "leak.test", "plaintextValue": [SECRET]}),
        json!({"secretRef": "leak.test", "plaintextValue": {"v": SECRET}}),
    ] {
        let err = op(&e, &s, "importSecret", bad).await.unwrap_err();
        seen.push_str(&format!("{err} {err:?} {}", err.to_body()));
    }
    let r = op(&e, &s, "importSecret", json!({"secretRef": "leak.test", "plaintextValue": format!("{SECRET}-2")}))
        .await
        .unwrap();
    seen.push_str(&r.to_string());
    let r = op(&e, &s, "deleteSecret", json!({"secretRef": "leak.test"})).await.unwrap();
    seen.push_str(&r.to_string());
    assert_eq!(s.get("leak.test").await.unwrap(), None);

    let logs = buf.text();
    assert!(logs.contains("secret imported") && logs.contains("secret deactivated"), "logs were captured: {logs}");
    if sdk {
        // The SDK's own TRACE logs were captured too (calls without a value are not silenced),
        // so the absence below means something.
        assert!(logs.contains("DescribeSecret") || logs.contains("transmitting request"), "SDK logs captured");
    }
    assert!(!logs.contains(SECRET), "the value leaked into the logs");
    assert!(!seen.contains(SECRET), "the value leaked into results, errors or Debug output: {seen}");
    assert!(seen.contains("SecretValue(<redacted>)"), "{seen}");
    drop(_guard);
    e.drop_tables().await;
}

#[tokio::test(flavor = "current_thread")]
async fn values_never_leak_from_the_file_backend() {
    never_leaks(Arc::new(FileSecretBackend::memory()), false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn values_never_leak_from_secrets_manager() {
    never_leaks(Arc::new(moto_secrets().await), true).await;
}

/// The Fly adapter logs its retries, never its API token (which it sends as a bearer token).
#[tokio::test(flavor = "current_thread")]
async fn the_fly_token_never_reaches_the_logs() {
    use integration_tests::fake_fly::{FakeFly, Fault};
    use shared::reconcile::provider::WorkerProvider;
    const FLY_TOKEN: &str = "fly-test-token-SENTINEL-0451";
    let (buf, _guard) = capture_logs();
    let fake = FakeFly::start(&["app1"]).await;
    let settings = shared::adapters::fly::FlySettings {
        api_base: fake.url.clone(),
        deployment_id: "dep-a".into(),
        app_name: None,
        options: Default::default(),
    };
    let p = shared::adapters::fly::FlyProvider::new(&settings, "app1", shared::secrets::SecretValue::new(FLY_TOKEN))
        .unwrap();
    fake.fault(Fault::status("GET", "/machines", 503, 1).retry_after("0"));
    p.list_machines().await.unwrap();
    let e = p.get_machine("nope").await.unwrap_err();
    let text = buf.text();
    assert!(text.contains("fly: retrying"), "the retry is logged: {text}");
    assert!(!text.contains(FLY_TOKEN), "{text}");
    assert!(!format!("{p:?} {e} {e:?}").contains(FLY_TOKEN));
    assert!(fake.requests().iter().all(|r| r.authorization.as_deref() == Some(&format!("Bearer {FLY_TOKEN}"))));
}

/// Replies through the backend use the bot token on every call: it shows in no log line, answer
/// or stored item, whatever happens at Telegram (sent, 429, refused, unreachable, lost answer).
#[tokio::test(flavor = "current_thread")]
async fn the_bot_token_of_replies_never_reaches_the_logs() {
    use integration_tests::fake_telegram::{FakeTelegram, Fault};
    const BOT_TOKEN: &str = "7001:AAE-reply-token-for-the-leak-test";
    let a = app_env().await;
    a.e.clock.set(shared::Clock::now_ms(&shared::SystemClock));
    let fake = FakeTelegram::start().await;
    fake.add_bot(BOT_TOKEN, 7001, "leak_bot");
    let app = a.app.clone().with_telegram(fake.api(), None);
    seed_agent(&a.e.store, "bot", true).await;
    let (buf, _guard) = capture_logs();
    invoke(
        &app,
        json!({"op": "importTelegramTokenForAgent", "args": {"agentKey": "bot", "plaintextValue": BOT_TOKEN}}),
    )
    .await
    .unwrap();
    a.e.store.enqueue(enq("c1", "bot", "hello")).await.unwrap();
    let token = a.mint("w1").await;
    let post = |op: &'static str, body: serde_json::Value| {
        let (app, token) = (app.clone(), token.clone());
        async move {
            parts(claim::handle(&app, apigw("POST", &format!("/worker/{op}"), Some(&token), &body.to_string())).await)
        }
    };
    let (_, job) = post("claim", json!({})).await;
    let body =
        |part: u32| json!({"messageId": job["messageId"], "leaseId": job["leaseId"], "part": part, "text": "hi"});
    let mut answers = Vec::new();
    answers.push(post("reply", body(0)).await);
    answers.push(post("reply", body(0)).await);
    fake.fault("sendMessage", Fault::RetryAfter(1));
    answers.push(post("reply", body(1)).await);
    fake.fault("sendMessage", Fault::Status(502));
    answers.push(post("reply", body(2)).await);
    fake.fault("sendMessage", Fault::LoseAnswer(std::time::Duration::from_millis(1_200)));
    answers.push(post("reply", body(3)).await);
    answers.push(post("typing", json!({"messageId": job["messageId"], "leaseId": "stale"})).await);
    answers.push(post("typing", json!({"messageId": job["messageId"], "leaseId": job["leaseId"]})).await);
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, vec![200, 200, 429, 502, 200, 409, 200], "{answers:?}");
    for (_, b) in &answers {
        assert!(!b.to_string().contains(BOT_TOKEN), "the bot token in an answer: {b}");
    }
    let logs = buf.text();
    assert!(logs.contains("RateLimited") && logs.contains("ProviderError"), "the refusals are logged: {logs}");
    assert!(!logs.contains(BOT_TOKEN) && !logs.contains("AAE-reply-token"), "the bot token leaked into the logs");
    assert!(!dump(&a.e.store, &a.e.store.tables.queue).await.join("\n").contains(BOT_TOKEN), "nor into an item");
}

/// The EMF metric lines of worker calls (`shared::metrics`): each is one valid EMF JSON object
/// (namespace, timestamp, dimension properties, numeric metrics) on its own line.
#[tokio::test(flavor = "current_thread")]
async fn worker_calls_log_valid_emf_metric_lines() {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    let token = a.mint("w1").await;
    a.e.store.enqueue(enq("user-agent:bot:u1", "bot", "one")).await.unwrap();
    let mut dead = enq("c-dead", "bot", "two");
    dead.max_attempts = Some(1);
    a.e.store.enqueue(dead).await.unwrap();
    let (buf, _guard) = capture_logs();
    let (_, job) = a.call("POST", "/worker/claim", Some(&token), json!({"conversationId": "user-agent:bot:u1"})).await;
    let usage = json!({"inputTokens": 12, "outputTokens": 5});
    let body = json!({"messageId": job["messageId"], "leaseId": job["leaseId"], "usage": usage});
    assert_eq!(a.call("POST", "/worker/complete", Some(&token), body).await.0, 200);
    let t2 = a.mint("w2").await;
    let (_, job) = a.call("POST", "/worker/claim", Some(&t2), json!({"conversationId": "c-dead"})).await;
    let body = json!({"messageId": job["messageId"], "leaseId": job["leaseId"], "errorMessage": "boom"});
    let (st, r) = a.call("POST", "/worker/fail", Some(&t2), body).await;
    assert_eq!((st, r["deadLettered"].as_bool()), (200, Some(true)), "{r}");
    a.call("POST", "/worker/claim", Some(&token), json!({})).await;
    shared::metrics::queue_gauges(T0, 3, 1, 2, 1_500);
    shared::metrics::reply_sent(T0, "sent");
    shared::metrics::push_dispatch(T0, "enqueued");

    let lines: Vec<serde_json::Value> = buf
        .text()
        .lines()
        .filter(|l| l.contains("\"_aws\""))
        .map(|l| {
            serde_json::from_str(&l[l.find("{\"").unwrap_or_else(|| panic!("{l}"))..])
                .expect("an EMF line is one JSON object")
        })
        .collect();
    for v in &lines {
        let aws = &v["_aws"];
        assert!(aws["Timestamp"].is_i64(), "{v}");
        let d = &aws["CloudWatchMetrics"][0];
        assert_eq!(d["Namespace"], "AgentFactory");
        for k in d["Dimensions"][0].as_array().unwrap() {
            assert!(v[k.as_str().unwrap()].is_string(), "{v}");
        }
        for m in d["Metrics"].as_array().unwrap() {
            assert!(v[m["Name"].as_str().unwrap()].is_number(), "{v}");
        }
    }
    let find = |name: &str| lines.iter().find(|v| v.get(name).is_some()).unwrap_or_else(|| panic!("no {name} line"));
    assert_eq!(find("Claims")["Operation"], "claim");
    assert_eq!(find("Completes")["InputTokens"], 12.0);
    assert_eq!(find("Failures")["DeadLetters"], 1.0);
    assert_eq!(find("EmptyClaims")["EmptyClaims"], 1.0);
    assert_eq!(find("OldestReadyAgeMs")["QueueDepth"], 3.0);
    assert_eq!(find("Replies")["Outcome"], "sent");
    assert_eq!(find("PushDispatches")["PushDispatches"], 1.0);
}
