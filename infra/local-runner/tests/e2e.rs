//! End to end through the local runner binary with its embedded DynamoDB (dynoxide): the AWS
//! SDK's Lambda client invokes `enqueue` and `admin`'s ops; a worker speaks HTTP to `/worker/*`
//! with the token the runner minted, and uploads/downloads snapshots through `/blobs/*`.

use aws_sdk_lambda::primitives::Blob;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "e2e/worker.rs"]
mod worker;

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
        // These tests play the worker themselves (or pass --worker-command); the reference
        // worker's runs are in `worker_e2e`.
        .args(if args.contains(&"--worker-command") { &[][..] } else { &["--no-workers"][..] })
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
    // The producer's ops are `enqueue`'s, the end user's `api`'s (trusted-backend mode), the
    // operator's `admin`'s.
    let op = payload["op"].as_str().unwrap_or_default();
    let function = if enqueue::op_names().contains(&op) {
        "enqueue"
    } else if api::op_names().contains(&op) {
        "api"
    } else {
        "admin"
    };
    let out = c.invoke().function_name(function).payload(Blob::new(payload.to_string())).send().await.expect("invoke");
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

/// Runs the runner expecting it to refuse to start: its exit status and stderr.
fn start_refused(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-runner"))
        .args(["--port", "0", "--sweep-secs", "0"])
        .args(args)
        .env_remove("DYNAMODB_ENDPOINT")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start local-runner");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            return (st.code(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "still running after 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_second_runner_is_refused_the_data_dir_the_first_holds() {
    let dir = std::env::temp_dir().join(format!("af-runner-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().to_string();
    let first = start(&[], &["--data-dir", &d]);
    let c = lambda(&first.base).await;
    let (err, _) =
        invoke(&c, json!({"op": "importSecret", "args": {"secretRef": "fly.apiToken", "plaintextValue": "first"}}))
            .await;
    assert_eq!(err, None);

    let (code, stderr) = start_refused(&["--data-dir", &d]);
    assert_eq!(code, Some(1), "the second runner must not start: {stderr}");
    assert!(stderr.contains("in use by another local-runner"), "{stderr}");

    // The first runner still serves, and what it acknowledged is kept.
    let (err, _) =
        invoke(&c, json!({"op": "importSecret", "args": {"secretRef": "fly.other", "plaintextValue": "second"}})).await;
    assert_eq!(err, None);
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = start(&[], &["--data-dir", &d]);
    let c = lambda(&again.base).await;
    let (_, status) =
        invoke(&c, json!({"op": "secretStatus", "args": {"secretRefs": ["fly.apiToken", "fly.other"]}})).await;
    assert_eq!(
        (status[0]["hasActive"].clone(), status[1]["hasActive"].clone()),
        (json!(true), json!(true)),
        "{status}"
    );
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a raw TCP client gets after sending `sent` and then nothing: the bytes the runner
/// answered before it closed the connection, or `None` if it still held it open after 5 s.
fn raw_exchange(base: &str, sent: &[u8]) -> Option<String> {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(sent).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).into_owned());
            }
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn slow_request_headers_and_bodies_are_cut_off() {
    let r = start(&[], &["--read-timeout-ms", "500"]);
    let t = std::time::Instant::now();
    // Nothing at all, then headers that never end: the connection is closed.
    assert!(raw_exchange(&r.base, b"").is_some(), "an idle connection is held open");
    let partial = b"POST /2015-03-31/functions/enqueue/invocations HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n";
    assert!(raw_exchange(&r.base, partial).is_some(), "a request with unfinished headers is held open");
    // Full headers, a body that stops short: 408 with the JSON error body, then closed.
    let short = b"POST /2015-03-31/functions/enqueue/invocations HTTP/1.1\r\nHost: x\r\n\
        Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"op\":";
    let got = raw_exchange(&r.base, short).expect("a request with an unfinished body is held open");
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains(r#""code":"RequestTimeout""#), "{got}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // Nothing ran, and the runner still serves.
    let (_, stats) = invoke(&lambda(&r.base).await, json!({"op": "queueStats"})).await;
    assert_eq!(stats["queuedReady"], 0);
}

async fn queued_ready(c: &aws_sdk_lambda::Client) -> i64 {
    invoke(c, json!({"op": "queueStats"})).await.1["queuedReady"].as_i64().unwrap()
}

#[tokio::test]
async fn invoke_honours_invocation_types_and_qualified_names() {
    use aws_sdk_lambda::types::InvocationType;
    let r = start(&[], &[]);
    let c = lambda(&r.base).await;
    invoke(
        &c,
        json!({"op": "configureAgent", "args": {"agentKey": "bot", "version": "1", "secretsRef": [], "enabled": true}}),
    )
    .await;
    let msg = |conv: &str| {
        Blob::new(
            json!({"op": "enqueue", "args": {"conversationId": conv, "agentKey": "bot",
                "payload": {"provider": "telegram", "providerUserId": "1", "messageText": "x"}}})
            .to_string(),
        )
    };
    // DryRun: 204, nothing runs.
    let out = c
        .invoke()
        .function_name("enqueue")
        .invocation_type(InvocationType::DryRun)
        .payload(msg("dry"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status_code(), 204);
    // Event: 202 at once, the function runs in the background.
    let out = c
        .invoke()
        .function_name("enqueue")
        .invocation_type(InvocationType::Event)
        .payload(msg("ev"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status_code(), 202);
    let mut n = 0;
    for _ in 0..100 {
        n = queued_ready(&c).await;
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(n, 1, "the Event invocation ran once and the DryRun did not run");

    // Qualified names and ARNs, as code written against AWS passes them.
    for (i, name) in [
        "enqueue:$LATEST",
        "arn:aws:lambda:us-east-1:123456789012:function:enqueue",
        "arn:aws:lambda:eu-west-1:123456789012:function:enqueue:$LATEST",
        "123456789012:function:enqueue",
    ]
    .into_iter()
    .enumerate()
    {
        let out = c.invoke().function_name(name).payload(msg(&format!("q{i}"))).send().await.expect(name);
        assert_eq!((out.status_code(), out.function_error()), (200, None), "{name}");
    }
    let out = c.invoke().function_name("enqueue").qualifier("$LATEST").payload(msg("q-param")).send().await.unwrap();
    assert_eq!(out.status_code(), 200);
    assert_eq!(queued_ready(&c).await, 6);
    // Versions other than $LATEST do not exist locally; neither does another function.
    for name in ["enqueue:7", "arn:aws:lambda:us-east-1:123456789012:function:nope", "nope:$LATEST"] {
        let e = c.invoke().function_name(name).payload(msg("no")).send().await.unwrap_err();
        assert!(e.into_service_error().is_resource_not_found_exception(), "{name}");
    }
    assert_eq!(queued_ready(&c).await, 6, "a refused invocation runs nothing");
}

#[tokio::test]
async fn every_runner_http_error_is_a_json_error_body() {
    let r = start(&[], &["--worker", "w"]);
    let http = reqwest::Client::new();
    let check = |resp: reqwest::Response, status: u16, code: &'static str| async move {
        let st = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({st}): {text}"));
        assert_eq!((st, v["error"]["code"].as_str()), (status, Some(code)), "{text}");
        assert!(v["error"]["message"].is_string(), "{text}");
    };
    check(http.get(format!("{}/nope", r.base)).send().await.unwrap(), 404, "NotFound").await;
    check(http.delete(format!("{}/worker/claim", r.base)).send().await.unwrap(), 405, "MethodNotAllowed").await;
    check(http.post(format!("{}/health", r.base)).send().await.unwrap(), 405, "MethodNotAllowed").await;
    // Above the body limit (6 MiB): 413 as soon as the headers say so, and for a chunked body
    // once it passes the limit.
    for path in ["/2015-03-31/functions/enqueue/invocations", "/worker/claim"] {
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 7340032\r\n\r\n");
        let got = raw_exchange(&r.base, head.as_bytes()).expect("answered");
        assert!(got.starts_with("HTTP/1.1 413"), "{got}");
        assert!(got.contains(r#"{"error":{"code":"PayloadTooLarge","message":"#), "{got}");
    }
    // A chunked body (no length up front) is cut off once it passes the limit.
    let got = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(r.base.trim_start_matches("http://")).unwrap();
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(
                b"POST /2015-03-31/functions/enqueue/invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            let chunk = [b"100000\r\n".as_slice(), &vec![b' '; 0x100000], b"\r\n"].concat();
            for _ in 0..8 {
                if w.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = vec![0u8; 4096];
        let n = s.read(&mut got).unwrap_or(0);
        String::from_utf8_lossy(&got[..n]).into_owned()
    };
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    // The Lambda path's own errors carry the same body next to Lambda's.
    let nf = http.post(format!("{}/2015-03-31/functions/nope/invocations", r.base)).body("{}").send().await.unwrap();
    assert_eq!(nf.headers()["x-amzn-errortype"], "ResourceNotFoundException");
    check(nf, 404, "ResourceNotFoundException").await;
}

/// The sockets a process listens on (Linux: `/proc`).
fn listening_sockets(pid: u32) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_string_lossy().strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(3) == Some(&"0A") && cols.get(9).is_some_and(|i| inodes.contains(*i))
        })
        .count()
}

#[tokio::test]
async fn the_embedded_dynamodb_listens_on_no_port() {
    let r = start(&[], &["--worker", "w"]);
    // Only the runner's own HTTP port: no DynamoDB endpoint another process could use.
    assert_eq!(listening_sockets(r.child.id()), 1);
    let (st, _) = worker(&reqwest::Client::new(), &r, "claim", json!({})).await;
    assert_eq!(st, 200, "the store works through the in-process connection");
}

/// Figures, not a check: enqueue latency through the runner's Invoke path at 0, 1,000 and
/// 4,000 queued, and `queueStats` at 4,000. `cargo test -p local-runner --test e2e --
/// --ignored --nocapture enqueue_latency`.
#[tokio::test]
#[ignore]
async fn enqueue_latency_by_queue_depth() {
    let r = start(&[], &["--sweep-secs", "0"]);
    let c = lambda(&r.base).await;
    invoke(
        &c,
        json!({"op": "configureAgent", "args": {"agentKey": "bot", "version": "1", "secretsRef": [], "enabled": true}}),
    )
    .await;
    let mut queued = 0usize;
    let sample = 200usize;
    for target in [0usize, 1_000, 4_000] {
        while queued < target {
            let (err, v) = invoke(
                &c,
                json!({"op": "enqueue", "args": {"conversationId": format!("fill-{}", queued % 400), "agentKey": "bot",
                    "payload": {"provider": "telegram", "providerUserId": "1", "messageText": "x"}}}),
            )
            .await;
            assert_eq!(err, None, "{v}");
            queued += 1;
        }
        let mut ms = Vec::new();
        for i in 0..sample {
            let t = std::time::Instant::now();
            invoke(
                &c,
                json!({"op": "enqueue", "args": {"conversationId": format!("s-{target}-{i}"), "agentKey": "bot",
                    "payload": {"provider": "telegram", "providerUserId": "1", "messageText": "x"}}}),
            )
            .await;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        queued += sample;
        ms.sort_by(f64::total_cmp);
        let mean = ms.iter().sum::<f64>() / sample as f64;
        println!("enqueue at {target:>5} queued: median {:.2} ms, mean {mean:.2} ms ({sample} calls)", ms[sample / 2]);
    }
    let mut ms = Vec::new();
    let mut stats = Value::Null;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        stats = invoke(&c, json!({"op": "queueStats"})).await.1;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    println!("queueStats at {queued} queued: median {:.1} ms of 5 ({stats})", ms[2]);
}

/// A tiny worker in shell: exchanges its bootstrap code for a token, claims its conversation's
/// message, completes it, then idles.
const SHELL_WORKER: &str = r#"
T=$(curl -s -X POST "$AGENT_FACTORY_URL/worker/bootstrap" -d "{\"code\":\"$AGENT_FACTORY_BOOTSTRAP_CODE\"}" | sed 's/.*"token":"\([^"]*\)".*/\1/')
J=$(curl -s -H "Authorization: Bearer $T" "$AGENT_FACTORY_URL/worker/claim" -d "{\"conversationId\":\"$OPENCLAW_CONVERSATION_ID\"}")
M=$(echo "$J" | sed 's/.*"messageId":"\([^"]*\)".*/\1/')
L=$(echo "$J" | sed 's/.*"leaseId":"\([^"]*\)".*/\1/')
curl -s -H "Authorization: Bearer $T" "$AGENT_FACTORY_URL/worker/complete" -d "{\"messageId\":\"$M\",\"leaseId\":\"$L\"}" > completed.json
exec sleep 60
"#;

#[tokio::test]
async fn reconcile_starts_a_local_worker_process_that_does_the_work() {
    let r = start(&[("DEPLOYMENT_ID", "e2e")], &["--worker-command", SHELL_WORKER, "--reconcile-secs", "1"]);
    let c = lambda(&r.base).await;
    let (err, _) = invoke(
        &c,
        json!({"op": "configureAgent", "args": {"agentKey": "bot", "version": "1", "secretsRef": [], "enabled": true}}),
    )
    .await;
    assert_eq!(err, None);
    let (err, enq) = invoke(
        &c,
        json!({"op": "enqueue", "args": {"conversationId": "tg:bot:7", "agentKey": "bot",
            "payload": {"provider": "telegram", "providerUserId": "7", "messageText": "hi"}}}),
    )
    .await;
    assert_eq!(err, None, "{enq}");
    let mut done = false;
    for _ in 0..100 {
        let items =
            invoke(&c, json!({"op": "listQueueItemsForConversation", "args": {"conversationId": "tg:bot:7"}})).await.1;
        if items[0]["status"] == "done" {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(done, "the worker process did not complete the message");
    let out = c
        .invoke()
        .function_name("reconcile")
        .payload(Blob::new(json!({"op": "listWorkers"}).to_string()))
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
    let ws = body["workers"].as_array().unwrap();
    assert_eq!(ws.len(), 1, "{body}");
    assert_eq!(
        (ws[0]["provider"].as_str(), ws[0]["assignedConversationId"].as_str()),
        (Some("process"), Some("tg:bot:7"))
    );
    assert!(ws[0]["machineId"].is_string() && ws[0]["volumeId"].is_string(), "{body}");
}

/// The runner hosts `cleanup`: its timer runs the lease sweep through it (an expired lease comes
/// back to the queue with nobody calling), and it answers the Invoke path; `enqueue` no longer
/// serves the sweeps.
#[tokio::test]
async fn the_cleanup_function_runs_the_sweeps_on_the_runner_timer() {
    let r = start(&[("LEASE_MS", "1000")], &["--worker", "local-1"]);
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
    let (st, job) = worker(&http, &r, "claim", json!({})).await;
    assert_eq!((st, job["messageId"].clone()), (200, enq["messageId"].clone()));
    assert_eq!(queued_ready(&c).await, 0);
    // The lease (1 s) runs out; the 1 s timer invokes cleanup's releaseExpiredLeases.
    let mut back = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if queued_ready(&c).await == 1 {
            back = true;
            break;
        }
    }
    assert!(back, "the timer's lease sweep requeued the message");
    let call = |op: &'static str, function: &'static str| {
        let c = c.clone();
        async move {
            let out = c
                .invoke()
                .function_name(function)
                .payload(Blob::new(json!({"op": op, "args": {}}).to_string()))
                .send()
                .await
                .expect("invoke");
            let body: Value = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
            (out.function_error().map(str::to_string), body)
        }
    };
    let (err, swept) = call("expireStorage", "cleanup").await;
    assert_eq!(err, None, "{swept}");
    assert!(swept.get("snapshotsExpired").is_some(), "{swept}");
    let (err, body) = call("expireStorage", "enqueue").await;
    assert_eq!((err.as_deref(), body["errorType"].as_str()), (Some("Unhandled"), Some("ValidationError")));
    assert!(body["errorMessage"].as_str().unwrap().contains("unknown op"), "enqueue no longer serves it: {body}");
    // runFlyCleanup with no Fly app configured: a precise refusal, no Fly call.
    let (err, body) = call("runFlyCleanup", "cleanup").await;
    assert_eq!((err.as_deref(), body["errorType"].as_str()), (Some("Unhandled"), Some("ValidationError")));
    assert!(body["errorMessage"].as_str().unwrap().contains("Fly app name"), "{body}");
}

/// Telegram through the runner: the onboarding ops over Lambda Invoke, updates posted to
/// `/telegram/webhook` (processed by the runner's background task), a forged secret refused; then
/// the accept latency of 200 text updates (printed: p50/p99).
#[tokio::test]
async fn telegram_updates_through_the_runner() {
    use integration_tests::fake_telegram::FakeTelegram;
    let fake = FakeTelegram::start().await;
    let token = "7001:runnerTokenOfTheLocalBot";
    fake.add_bot(token, 7001, "runner_bot");
    let r = start(&[("TELEGRAM_API_BASE", fake.base.as_str())], &[]);
    let c = lambda(&r.base).await;
    let ok = |(e, v): (Option<String>, Value)| {
        assert!(e.is_none(), "{v}");
        v
    };
    ok(invoke(
        &c,
        json!({"op": "configureAgent", "args": {"agentKey": "a", "version": "1", "secretsRef": [], "enabled": true}}),
    )
    .await);
    ok(invoke(&c, json!({"op": "importTelegramTokenForAgent", "args": {"agentKey": "a", "plaintextValue": token}}))
        .await);
    let w = ok(invoke(&c, json!({"op": "configureTelegramWebhook", "args": {"agentKey": "a"}})).await);
    assert_eq!(w["webhookUrl"], format!("{}/telegram/webhook", r.base));
    let secret = fake.webhook(token).unwrap().secret_token;
    let code = ok(
        invoke(&c, json!({"op": "createPairingCode", "args": {"consumerUserId": "u1", "agentKey": "a"}})).await
    )["code"]
        .as_str()
        .unwrap()
        .to_string();
    let http = reqwest::Client::new();
    let url = format!("{}/telegram/webhook", r.base);
    let update = |id: i64, text: &str| json!({"update_id": id, "message": {"message_id": id, "chat": {"id": 42, "type": "private"}, "from": {"id": 42}, "text": text}});
    let send = |secret: String, body: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http.post(&url).header("X-Telegram-Bot-Api-Secret-Token", secret).json(&body).send().await.unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(send("af_v1_7001".into(), update(1, "forged")).await, 401);
    assert_eq!(send(secret.clone(), update(2, &format!("/start {code}"))).await, 200);
    let mut bound = Value::Null;
    for _ in 0..100 {
        bound = ok(invoke(&c, json!({"op": "getUserAgentBinding", "args": {"consumerUserId": "u1"}})).await);
        if !bound.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bound["telegramUserId"], "42", "the background task paired the user");

    let n = 200;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = std::time::Instant::now();
        assert_eq!(send(secret.clone(), update(100 + i as i64, "hi")).await, 200);
        lat.push(t.elapsed());
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    eprintln!(
        "webhook accept through the runner: {n} updates, p50 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
    let mut count = 0;
    for _ in 0..200 {
        let items = ok(invoke(
            &c,
            json!({"op": "listQueueItemsForConversation", "args": {"conversationId": "user-agent:a:u1", "limit": 500}}),
        )
        .await);
        count = items.as_array().unwrap().len();
        if count == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count, n, "every accepted update was processed and enqueued once");
}

/// `--telegram-token`: the runner long-polls getUpdates (after deleting the webhook) into the
/// ingress pipeline; a worker answers through `/worker/reply` and the answer reaches the chat.
// Multi-threaded: the fake Bot API must answer the runner's getMe while `start` blocks on its
// banner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_token_mode_polls_updates_and_replies_reach_the_chat() {
    use integration_tests::fake_telegram::{FakeTelegram, Webhook};
    let fake = FakeTelegram::start().await;
    let token = "7005:pollingTokenOfTheLocalBot";
    fake.add_bot(token, 7005, "polled_bot");
    fake.state.lock().unwrap().bots.get_mut(token).unwrap().webhook =
        Some(Webhook { url: "https://somewhere.example/hook".into(), ..Default::default() });
    let r = start(&[("TELEGRAM_API_BASE", fake.base.as_str())], &["--worker", "w1", "--telegram-token", token]);
    assert!(fake.webhook(token).is_none(), "the webhook was deleted before polling");
    let c = lambda(&r.base).await;
    for payload in [
        json!({"op": "configureAgent", "args": {"agentKey": "a", "version": "1", "secretsRef": [], "enabled": true}}),
        json!({"op": "importTelegramTokenForAgent", "args": {"agentKey": "a", "plaintextValue": token}}),
    ] {
        let (e, v) = invoke(&c, payload).await;
        assert!(e.is_none(), "{v}");
    }
    let t0 = std::time::Instant::now();
    fake.push_update(
        token,
        json!({"update_id": 900, "message": {"message_id": 9, "chat": {"id": 42, "type": "private"}, "from": {"id": 42}, "text": "from my phone"}}),
    );
    let http = reqwest::Client::new();
    let mut job = Value::Null;
    for _ in 0..200 {
        let (st, j) = worker(&http, &r, "claim", json!({})).await;
        assert_eq!(st, 200, "{j}");
        if !j.is_null() {
            job = j;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("polled update to claimable job: {:?}", t0.elapsed());
    assert_eq!(job["payload"]["messageText"], "from my phone", "{job}");
    let (st, b) = worker(
        &http,
        &r,
        "reply",
        json!({"messageId": job["messageId"], "leaseId": job["leaseId"], "part": 0, "text": "hello phone"}),
    )
    .await;
    assert_eq!((st, &b["status"]), (200, &json!("sent")), "{b}");
    let out = fake.outbox();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0]["bot_id"].as_i64(), out[0]["chat_id"].as_str()), (Some(7005), Some("42")));
    assert_eq!(fake.pending_updates(token), 0, "the offset confirmed the update");
}

/// Scheduled pushes on the runner: with the sweep timer off (`--sweep-secs 0`), a daily job's
/// in-process timer (the runner's stand-in for EventBridge Scheduler) fires at its slot and sends
/// the job's text once; the `push-dispatch` function is hosted (its sweep answers).
#[tokio::test]
async fn a_push_job_timer_fires_at_its_slot_on_the_runner() {
    let r = start(&[], &["--sweep-secs", "0"]);
    let c = lambda(&r.base).await;
    let ok = |(err, body): (Option<String>, Value)| {
        assert_eq!(err, None, "{body}");
        body
    };
    ok(invoke(
        &c,
        json!({"op": "configureAgent", "args": {"agentKey": "b", "version": "1", "secretsRef": [], "enabled": true}}),
    )
    .await);
    ok(invoke(
        &c,
        json!({"op": "bindUserAgent", "args": {"consumerUserId": "u1", "agentKey": "b", "source": "manual"}}),
    )
    .await);
    // The next whole minute (UTC), at least 5 s away.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let slot = ((now + 5_000) / 60_000 + 1) * 60_000;
    let mins = slot.rem_euclid(86_400_000) / 60_000;
    let hm = format!("{:02}:{:02}", mins / 60, mins % 60);
    let job = ok(invoke(
        &c,
        json!({"op": "createPushJobCustom", "args": {"companyId": "acme", "consumerUserId": "u1",
        "title": "t", "text": "timer push", "periodicity": "daily", "timezone": "UTC",
        "schedule": {"kind": "daily", "time": hm}}}),
    )
    .await);
    assert_eq!(job["nextRunAt"], json!(slot));
    let items = |c: aws_sdk_lambda::Client| async move {
        let (_, v) =
            invoke(&c, json!({"op": "listQueueItemsForConversation", "args": {"conversationId": "user-agent:b:u1"}}))
                .await;
        v.as_array().cloned().unwrap_or_default()
    };
    assert!(items(c.clone()).await.is_empty(), "nothing before the slot");
    let deadline = slot + 20_000;
    let mut sent = Vec::new();
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 <= deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sent = items(c.clone()).await;
        if !sent.is_empty() {
            break;
        }
    }
    assert_eq!(sent.len(), 1, "the timer sent the slot once");
    assert_eq!(sent[0]["payload"]["messageText"], "timer push");
    assert_eq!(sent[0]["payload"]["metadata"]["pushMode"], "scheduled");
    let fired = sent[0]["createdAt"].as_i64().or(sent[0]["_creationTime"].as_i64()).unwrap();
    assert!(fired >= slot && fired < slot + 5_000, "fired {} ms after its slot", fired - slot);
    eprintln!("push timer: the message was enqueued {} ms after its slot", fired - slot);
    let out = c
        .invoke()
        .function_name("push-dispatch")
        .payload(Blob::new(json!({"op": "dispatchDuePushJobs", "args": {}}).to_string()))
        .send()
        .await
        .expect("invoke");
    let body: Value = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
    assert_eq!((out.function_error(), body["enqueued"].as_i64()), (None, Some(0)), "{body}");
}
