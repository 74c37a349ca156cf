//! End to end through the local runner binary with its embedded DynamoDB (dynoxide): the AWS
//! SDK's Lambda client invokes `enqueue`; a worker speaks HTTP to `/worker/*`.

use aws_sdk_lambda::primitives::Blob;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "e2e-worker-token-123456";

struct Runner {
    child: Child,
    base: String,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra_env: &[(&str, &str)], args: &[&str]) -> Runner {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_local-runner"));
    cmd.args(["--port", "0", "--sweep-secs", "1"])
        .args(args)
        .env_remove("DYNAMODB_ENDPOINT")
        .env("WORKER_AUTH_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start local-runner");
    // The guard exists before anything can fail, so a failed start never leaks the process.
    let mut r = Runner { child, base: String::new() };
    let mut lines = BufReader::new(r.child.stdout.take().unwrap()).lines();
    let first = lines.next().map(|l| l.unwrap_or_default()).unwrap_or_default();
    let base = first.rsplit(' ').next().unwrap_or_default().trim().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "the runner did not start: '{first}'");
    std::thread::spawn(move || for _ in lines {});
    r.base = base;
    r
}

async fn lambda(base: &str) -> aws_sdk_lambda::Client {
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new("local", "local", None, None, "static"))
        .endpoint_url(base)
        .load()
        .await;
    aws_sdk_lambda::Client::new(&cfg)
}

async fn invoke(c: &aws_sdk_lambda::Client, payload: Value) -> (Option<String>, Value) {
    let out = c.invoke().function_name("enqueue").payload(Blob::new(payload.to_string())).send().await.expect("invoke");
    let body: Value = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
    (out.function_error().map(str::to_string), body)
}

async fn worker(http: &reqwest::Client, base: &str, op: &str, body: Value) -> (u16, Value) {
    let r = http.post(format!("{base}/worker/{op}")).bearer_auth(TOKEN).json(&body).send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap())
}

#[tokio::test]
async fn a_message_goes_through_the_runner_end_to_end() {
    let r = start(&[], &[]);
    let c = lambda(&r.base).await;
    let http = reqwest::Client::new();

    let (err, _) = invoke(
        &c,
        json!({"op": "configureAgent", "args": {"agentKey": "bot", "version": "1", "secretsRef": [], "enabled": true}}),
    )
    .await;
    assert_eq!(err, None);
    let (err, enq) = invoke(
        &c,
        json!({"op": "enqueue", "args": {"conversationId": "tg:bot:1", "agentKey": "bot",
            "payload": {"provider": "telegram", "providerUserId": "1", "messageText": "ping"}}}),
    )
    .await;
    assert_eq!(err, None, "{enq}");
    let (st, job) = worker(&http, &r.base, "claim", json!({"workerId": "local-1"})).await;
    assert_eq!(st, 200);
    assert_eq!(
        (job["messageId"].clone(), job["payload"]["messageText"].clone()),
        (enq["messageId"].clone(), json!("ping"))
    );
    let lease = json!({"workerId": "local-1", "messageId": job["messageId"], "leaseId": job["leaseId"]});
    assert_eq!(worker(&http, &r.base, "complete", lease.clone()).await, (200, json!({"ok": true})));
    let (_, stats) = invoke(&c, json!({"op": "queueStats"})).await;
    assert_eq!(
        stats,
        json!({"queuedReady": 0, "queuedScheduled": 0, "processing": 0, "processingExpired": 0, "deadLetter": 0})
    );

    // A function error comes back the way Lambda reports one.
    let (err, body) = invoke(&c, json!({"op": "enqueue", "args": {"conversationId": "x"}})).await;
    assert_eq!(err.as_deref(), Some("Unhandled"));
    assert_eq!(body["errorType"], "ValidationError");
    assert!(body["errorMessage"].as_str().unwrap().contains("missing field"), "{body}");
    // An unknown function is a service error, as on AWS.
    let e = c.invoke().function_name("nope").payload(Blob::new("{}")).send().await.unwrap_err();
    assert!(e.into_service_error().is_resource_not_found_exception());
    // Worker routes check the token.
    let st =
        http.post(format!("{}/worker/claim", r.base)).json(&json!({"workerId": "w"})).send().await.unwrap().status();
    assert_eq!(st, 401);
}

#[tokio::test]
async fn the_runner_keeps_its_data_in_a_data_dir() {
    let dir = std::env::temp_dir().join(format!("af-runner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().to_string();
    let id = {
        let r = start(&[], &["--data-dir", &d]);
        let c = lambda(&r.base).await;
        invoke(&c, json!({"op": "configureAgent", "args": {"agentKey": "bot", "version": "1", "secretsRef": [], "enabled": true}})).await;
        let (_, enq) = invoke(
            &c,
            json!({"op": "enqueue", "args": {"conversationId": "keep", "agentKey": "bot",
                "payload": {"provider": "telegram", "providerUserId": "1", "messageText": "kept"}}}),
        )
        .await;
        enq["messageId"].as_str().unwrap().to_string()
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = start(&[], &["--data-dir", &d]);
    let (st, job) = worker(&reqwest::Client::new(), &r.base, "claim", json!({"workerId": "w"})).await;
    assert_eq!((st, job["messageId"].as_str()), (200, Some(id.as_str())), "the message survived a restart");
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}
