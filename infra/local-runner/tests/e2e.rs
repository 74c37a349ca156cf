//! End to end through the local runner binary with its embedded DynamoDB (dynoxide): the AWS
//! SDK's Lambda client invokes `enqueue` and the admin ops; a worker speaks HTTP to `/worker/*`
//! with the token the runner minted, and uploads/downloads snapshots through `/blobs/*`.

use aws_sdk_lambda::primitives::Blob;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Runner {
    child: Child,
    base: String,
    /// Tokens of the `--worker` ids, in order.
    tokens: Vec<String>,
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
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start local-runner");
    // The guard exists before anything can fail, so a failed start never leaks the process.
    let mut r = Runner { child, base: String::new(), tokens: Vec::new() };
    let mut lines = BufReader::new(r.child.stdout.take().unwrap()).lines();
    let first = lines.next().map(|l| l.unwrap_or_default()).unwrap_or_default();
    let base = first.rsplit(' ').next().unwrap_or_default().trim().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "the runner did not start: '{first}'");
    let wanted = args.iter().filter(|a| **a == "--worker").count();
    while r.tokens.len() < wanted {
        let line = lines.next().expect("banner line").unwrap_or_default();
        if let Some((_, tok)) = line.split_once(": token ") {
            r.tokens.push(tok.trim().to_string());
        }
    }
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

async fn worker(http: &reqwest::Client, r: &Runner, op: &str, body: Value) -> (u16, Value) {
    let base = &r.base;
    let r = http.post(format!("{base}/worker/{op}")).bearer_auth(&r.tokens[0]).json(&body).send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap())
}

#[tokio::test]
async fn a_message_goes_through_the_runner_end_to_end() {
    let r = start(&[], &["--worker", "local-1"]);
    let c = lambda(&r.base).await;
    let http = reqwest::Client::new();

    let (err, _) = invoke(
        &c,
        json!({"op": "configureAgent", "args": {"agentKey": "bot", "version": "1", "secretsRef": ["telegram.botToken.bot"], "enabled": true}}),
    )
    .await;
    assert_eq!(err, None);
    let (err, imported) = invoke(
        &c,
        json!({"op": "importSecret", "args": {"secretRef": "telegram.botToken.bot", "plaintextValue": "123:e2e-bot-token"}}),
    )
    .await;
    assert_eq!(err, None, "{imported}");
    assert!(!imported.to_string().contains("e2e-bot-token"), "import never echoes the value");
    let (err, enq) = invoke(
        &c,
        json!({"op": "enqueue", "args": {"conversationId": "tg:bot:1", "agentKey": "bot",
            "payload": {"provider": "telegram", "providerUserId": "1", "messageText": "ping"}}}),
    )
    .await;
    assert_eq!(err, None, "{enq}");
    let (st, job) = worker(&http, &r, "claim", json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(
        (job["messageId"].clone(), job["payload"]["messageText"].clone()),
        (enq["messageId"].clone(), json!("ping"))
    );
    let (st, bundle) = worker(&http, &r, "hydration", json!({"messageId": job["messageId"]})).await;
    assert_eq!((st, bundle["telegramBotToken"].as_str()), (200, Some("123:e2e-bot-token")), "{bundle}");
    let (st, alive) = worker(&http, &r, "worker-heartbeat", json!({})).await;
    assert_eq!((st, alive["action"].as_str(), alive["load"].as_i64()), (200, Some("continue"), Some(1)), "{alive}");
    // A snapshot through the runner's blob route, with real HTTP.
    let tuple = json!({"workspaceId": "default", "agentKey": "bot", "conversationId": "tg:bot:1"});
    let mut prep = tuple.clone();
    prep["reason"] = json!("manual");
    let (st, p) = worker(&http, &r, "snapshot-prepare", prep).await;
    assert_eq!(st, 200, "{p}");
    let archive = b"a workspace archive".to_vec();
    let mut put = http.put(p["uploadUrl"].as_str().unwrap()).body(archive.clone());
    for (k, v) in p["uploadHeaders"].as_object().unwrap() {
        if !k.eq_ignore_ascii_case("content-length") {
            put = put.header(k, v.as_str().unwrap());
        }
    }
    let up = put.send().await.unwrap();
    assert_eq!(up.status().as_u16(), 200, "{:?}", up.text().await);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&archive))
    };
    let (st, fin) = worker(
        &http,
        &r,
        "snapshot-finalize",
        json!({"snapshotId": p["snapshotId"], "sha256": sha, "sizeBytes": archive.len()}),
    )
    .await;
    assert_eq!((st, fin["status"].as_str()), (200, Some("ready")), "{fin}");
    let (_, restore) = worker(&http, &r, "snapshot-restore", tuple).await;
    let got = http.get(restore["downloadUrl"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), archive.as_slice());
    let lease = json!({"messageId": job["messageId"], "leaseId": job["leaseId"]});
    assert_eq!(worker(&http, &r, "complete", lease.clone()).await, (200, json!({"ok": true})));
    let (_, stats) = invoke(&c, json!({"op": "queueStats"})).await;
    assert_eq!(
        stats,
        json!({"queuedReady": 0, "queuedScheduled": 0, "processing": 0, "processingExpired": 0, "deadLetter": 0, "capped": false})
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
    let (id, token) = {
        let r = start(&[], &["--data-dir", &d, "--worker", "w"]);
        let c = lambda(&r.base).await;
        invoke(&c, json!({"op": "configureAgent", "args": {"agentKey": "bot", "version": "1", "secretsRef": [], "enabled": true}})).await;
        let (_, enq) = invoke(
            &c,
            json!({"op": "enqueue", "args": {"conversationId": "keep", "agentKey": "bot",
                "payload": {"provider": "telegram", "providerUserId": "1", "messageText": "kept"}}}),
        )
        .await;
        invoke(&c, json!({"op": "importSecret", "args": {"secretRef": "fly.apiToken", "plaintextValue": "fly-kept"}}))
            .await;
        (enq["messageId"].as_str().unwrap().to_string(), r.tokens[0].clone())
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut r = start(&[], &["--data-dir", &d]);
    r.tokens.push(token);
    let (st, job) = worker(&reqwest::Client::new(), &r, "claim", json!({})).await;
    assert_eq!((st, job["messageId"].as_str()), (200, Some(id.as_str())), "the message and token survived a restart");
    let c = lambda(&r.base).await;
    let (_, status) = invoke(&c, json!({"op": "secretStatus", "args": {"secretRefs": ["fly.apiToken"]}})).await;
    assert_eq!(status[0]["hasActive"], true, "the secret survived a restart: {status}");
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}
