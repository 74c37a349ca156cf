//! The whole system with the real binaries on loopback: the runner (reconcile with the process
//! provider) starts the reference worker (`agent-worker`); Telegram is the fake Bot API of the
//! tests crate. A Telegram update goes in at `/telegram/webhook`, the reply comes out at the
//! fake Bot API. Then the fault cases, and (ignored) the latency figures.

use super::{invoke, lambda};
use integration_tests::fake_telegram::FakeTelegram;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "7001:workerEndToEndTokenOfTheBot";
const BOT: i64 = 7001;

/// A runner whose reconcile starts reference workers; its stdout (the workers' lines too) is kept.
struct System {
    child: Child,
    base: String,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    fake: FakeTelegram,
    secret: String,
    c: aws_sdk_lambda::Client,
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl System {
    async fn start(env: &[(&str, &str)], args: &[&str]) -> System {
        let fake = FakeTelegram::start().await;
        fake.add_bot(TOKEN, BOT, "e2e_worker_bot");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_local-runner"));
        cmd.args(["--port", "0", "--sweep-secs", "1", "--reconcile-secs", "1"])
            .args(args)
            .env_remove("DYNAMODB_ENDPOINT")
            .env("RUST_LOG", "warn")
            .env("DEPLOYMENT_ID", "e2e")
            .env("TELEGRAM_API_BASE", &fake.base)
            // The workers inherit these: quick control checks and polls.
            .env("CONTROL_INTERVAL_MS", "300")
            .env("POLL_INTERVAL_MS", "300")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start local-runner");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().map(|l| l.unwrap_or_default()).unwrap_or_default();
        let base = first.rsplit(' ').next().unwrap_or_default().trim().to_string();
        if !base.starts_with("http://127.0.0.1:") {
            let _ = child.kill();
            panic!("the runner did not start: '{first}'");
        }
        let kept = Arc::new(Mutex::new(Vec::new()));
        let k = kept.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                println!("{l}");
                k.lock().unwrap().push((Instant::now(), l));
            }
        });
        let c = lambda(&base).await;
        let mut s = System { child, base, lines: kept, fake, secret: String::new(), c };
        s.ok(json!({"op": "configureAgent", "args": {"agentKey": "a", "version": "1", "secretsRef": [], "enabled": true}}))
            .await;
        s.ok(json!({"op": "importTelegramTokenForAgent", "args": {"agentKey": "a", "plaintextValue": TOKEN}})).await;
        s.ok(json!({"op": "configureTelegramWebhook", "args": {"agentKey": "a"}})).await;
        s.secret = s.fake.webhook(TOKEN).expect("webhook set").secret_token;
        s
    }

    async fn ok(&self, payload: Value) -> Value {
        let (err, v) = invoke(&self.c, payload).await;
        assert!(err.is_none(), "{v}");
        v
    }

    async fn reconcile(&self, payload: Value) -> Value {
        let out = self
            .c
            .invoke()
            .function_name("reconcile")
            .payload(aws_sdk_lambda::primitives::Blob::new(payload.to_string()))
            .send()
            .await
            .expect("invoke reconcile");
        assert!(out.function_error().is_none());
        serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap()
    }

    /// A text message from `chat` to the bot through the webhook.
    async fn send(&self, update_id: i64, chat: i64, text: &str) {
        let body = json!({"update_id": update_id, "message": {"message_id": update_id, "date": 0,
            "chat": {"id": chat, "type": "private"}, "from": {"id": chat, "is_bot": false, "first_name": "T"}, "text": text}});
        let r = reqwest::Client::new()
            .post(format!("{}/telegram/webhook", self.base))
            .header("X-Telegram-Bot-Api-Secret-Token", &self.secret)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }

    fn texts(&self) -> Vec<String> {
        self.fake.sent().into_iter().map(|(_, _, t)| t).collect()
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().iter().map(|(_, l)| l.clone()).collect()
    }

    fn has_line(&self, needle: &str) -> bool {
        self.lines().iter().any(|l| l.contains(needle))
    }

    /// The pid of the worker that printed `claimed <…>` for a job, from its `started` line.
    fn pid_of_worker_that(&self, needle: &str) -> Option<u32> {
        let lines = self.lines();
        let line = lines.iter().find(|l| l.contains(needle))?;
        let id = line.strip_prefix("agent-worker ")?.split(':').next()?.to_string();
        let started = lines.iter().find(|l| l.starts_with(&format!("agent-worker {id}: started (pid ")))?;
        started.split("(pid ").nth(1)?.split(',').next()?.trim().parse().ok()
    }

    async fn item(&self, conv: &str) -> Value {
        let items = self.ok(json!({"op": "listQueueItemsForConversation", "args": {"conversationId": conv}})).await;
        items.as_array().and_then(|a| a.first()).cloned().unwrap_or(Value::Null)
    }

    async fn workers(&self, status: &str) -> Vec<Value> {
        self.reconcile(json!({"op": "listWorkers", "args": {"status": status}})).await["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn snapshots(&self, conv: &str) -> Vec<Value> {
        let v = self.ok(json!({"op": "listSnapshotsForConversation", "args": {"conversationId": conv}})).await;
        v.as_array().cloned().or_else(|| v["snapshots"].as_array().cloned()).unwrap_or_default()
    }
}

fn conv(chat: i64) -> String {
    format!("telegram:{BOT}:{chat}")
}

/// Wait until `f` holds (checked every 100 ms), or fail with `what`.
async fn until<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// The echo reply out exactly once, the message done, the worker drained (its idle deadline),
/// snapshotted and stopped.
#[tokio::test]
async fn a_telegram_update_is_answered_once_by_a_spawned_worker_that_drains_snapshots_and_stops() {
    // The default STALE_AFTER_MS (7 min): the stopped worker lets go of the conversation, so the
    // next message's new worker takes it at once.
    let s = System::start(&[("WORKER_IDLE_TIMEOUT_MS", "3000")], &[]).await;
    s.send(1, 42, "ping").await;
    until(60, "the echo reply at the fake Bot API", || async { !s.texts().is_empty() }).await;
    until(30, "the message done", || async { s.item(&conv(42)).await["status"] == "done" }).await;
    until(60, "the worker stopped", || async { !s.workers("stopped").await.is_empty() }).await;
    let snaps = s.snapshots(&conv(42)).await;
    assert!(snaps.iter().any(|x| x["status"] == "ready"), "a ready snapshot: {snaps:?}");
    until(10, "the worker's exit line", || async { s.has_line("stopped: exit 0") }).await;
    assert_eq!(s.texts(), vec!["echo: ping".to_string()], "exactly one reply");
    assert_eq!(s.fake.sent()[0].1, "42");
    let history = s.item(&conv(42)).await;
    assert_eq!(history["attempts"], 0, "answered on the first attempt: {history}");
    // The next message: a new worker on a fresh volume restores the snapshot first.
    s.send(2, 42, "pong").await;
    until(60, "the second reply", || async { s.texts().len() == 2 }).await;
    assert_eq!(s.texts()[1], "echo: pong");
    let restored = s.lines().into_iter().find(|l| l.contains(": restored snapshot ")).expect("the new worker restored");
    let id = restored.strip_prefix("agent-worker ").unwrap().split(':').next().unwrap().to_string();
    let started = s.lines().into_iter().find(|l| l.starts_with(&format!("agent-worker {id}: started"))).unwrap();
    let dir = started.split("data dir ").nth(1).unwrap().trim_end_matches(')').to_string();
    let journal = std::fs::read_to_string(format!("{dir}/workspace/echo-journal.txt")).unwrap();
    assert_eq!(journal, "ping\npong\n", "the first worker's journal came back with the snapshot");
}

/// An engine that crashes fails the job (retried, then dead-lettered) and sends nothing; an
/// engine past its time limit is killed and fails the job the same way.
#[tokio::test]
async fn engine_crash_and_engine_timeout_fail_the_job_and_send_nothing() {
    let engine = r#"x=$(cat); case "$x" in *crash-me*) echo "engine exploded" >&2; exit 7;; *slow-me*) sleep 30;; *) echo "fine";; esac"#;
    let s = System::start(&[("MAX_ATTEMPTS", "2"), ("OPENCLAW_TIMEOUT_MS", "700")], &["--engine", engine]).await;
    s.reconcile(json!({"op": "setScalingPolicy", "args": {"policy": {"maxWorkers": 4}, "expectedVersion": 0}})).await;
    s.send(1, 51, "crash-me").await;
    s.send(2, 52, "slow-me").await;
    until(60, "both messages dead-lettered", || async {
        s.item(&conv(51)).await["status"] == "dead_letter" && s.item(&conv(52)).await["status"] == "dead_letter"
    })
    .await;
    let crashed = s.item(&conv(51)).await;
    assert!(crashed["lastError"].as_str().unwrap().contains("exit 7: engine exploded"), "{crashed}");
    let slow = s.item(&conv(52)).await;
    assert!(slow["lastError"].as_str().unwrap().contains("timed out after 700 ms"), "{slow}");
    assert_eq!(slow["attempts"], 2);
    assert!(s.texts().is_empty(), "nothing was sent: {:?}", s.texts());
}

/// A worker killed mid-job (SIGKILL): its lease runs out, a new worker answers, once.
#[tokio::test]
async fn a_worker_killed_mid_job_is_replaced_and_the_message_answered_once() {
    let engine = r#"cat > /dev/null; sleep 2; echo "answered""#;
    let s = System::start(&[("LEASE_MS", "3000")], &["--engine", engine]).await;
    s.reconcile(json!({"op": "setScalingPolicy", "args": {"policy": {"maxWorkers": 2, "missingMachineGraceMs": 10000}, "expectedVersion": 0}}))
        .await;
    s.send(1, 61, "hello").await;
    until(60, "a worker claimed the message", || async { s.has_line(": claimed ") }).await;
    let pid = s.pid_of_worker_that(": claimed ").expect("the claiming worker's pid");
    kill(pid, "-KILL");
    until(90, "the reply", || async { !s.texts().is_empty() }).await;
    until(30, "the message done", || async { s.item(&conv(61)).await["status"] == "done" }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.texts(), vec!["answered".to_string()], "answered exactly once");
    let completed: Vec<String> = s.lines().into_iter().filter(|l| l.contains(": completed ")).collect();
    assert_eq!(completed.len(), 1, "{completed:?}");
    let killed = s.pid_of_worker_that(": completed ").expect("the completing worker");
    assert_ne!(killed, pid, "a new worker process answered");
}

/// The lease runs out while the engine works (heartbeats slower than the lease): the heartbeat's
/// 409 stops the job, the engine is killed and the old run sends nothing; the retry answers.
#[tokio::test]
async fn a_lost_lease_stops_the_job_and_the_old_run_never_replies() {
    let engine =
        r#"cat > /dev/null; if [ -f seen ]; then echo "second run"; else touch seen; sleep 8; echo "first run"; fi"#;
    let s = System::start(&[("LEASE_MS", "1500"), ("HEARTBEAT_INTERVAL_MS", "4000")], &["--engine", engine]).await;
    s.send(1, 71, "hello").await;
    until(60, "the heartbeat saw the lease lost", || async { s.has_line("lease lost") }).await;
    until(60, "the reply", || async { !s.texts().is_empty() }).await;
    until(30, "the message done", || async { s.item(&conv(71)).await["status"] == "done" }).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(s.texts(), vec!["second run".to_string()], "the first run never replied");
    assert!(s.has_line("no reply sent"), "{:?}", s.lines());
}

/// SIGTERM during a job: the job finishes within the grace period (one reply), then the
/// snapshot (reason `signal`), then exit 0.
#[tokio::test]
async fn sigterm_during_a_job_finishes_it_then_snapshots_and_exits() {
    let engine = r#"cat > /dev/null; sleep 2; echo "finished after SIGTERM""#;
    let s = System::start(&[("SHUTDOWN_GRACE_MS", "15000")], &["--engine", engine]).await;
    s.send(1, 81, "hello").await;
    until(60, "a worker claimed the message", || async { s.has_line(": claimed ") }).await;
    let pid = s.pid_of_worker_that(": claimed ").expect("pid");
    kill(pid, "-TERM");
    until(30, "the worker's exit", || async { s.has_line(": stopped: exit") }).await;
    assert!(s.has_line("stopped: exit 0"), "{:?}", s.lines());
    assert_eq!(s.texts(), vec!["finished after SIGTERM".to_string()]);
    assert_eq!(s.item(&conv(81)).await["status"], "done");
    let snaps = s.snapshots(&conv(81)).await;
    assert!(snaps.iter().any(|x| x["status"] == "ready" && x["reason"] == "signal"), "{snaps:?}");
}

/// The snapshot upload fails (the blob store refuses the write): the worker reports it with
/// `snapshot-fail` and exits 3.
#[tokio::test]
async fn a_failed_snapshot_upload_is_reported_and_the_worker_exits_3() {
    let dir = std::env::temp_dir().join(format!("af-worker-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().to_string();
    let s = System::start(&[("WORKER_IDLE_TIMEOUT_MS", "4000")], &["--data-dir", &d]).await;
    s.send(1, 91, "ping").await;
    until(60, "the reply", || async { !s.texts().is_empty() }).await;
    // The blob store's directory becomes a file: every upload fails.
    std::fs::remove_dir_all(dir.join("blobs")).unwrap();
    std::fs::write(dir.join("blobs"), b"not a directory").unwrap();
    until(60, "the worker's exit", || async { s.has_line(": stopped: exit") }).await;
    assert!(s.has_line("SNAPSHOT FAILED: upload"), "{:?}", s.lines());
    assert!(s.has_line("stopped: exit 3"), "{:?}", s.lines());
    let snaps = s.snapshots(&conv(91)).await;
    assert!(snaps.iter().any(|x| x["status"] == "failed"), "{snaps:?}");
    assert!(!snaps.iter().any(|x| x["status"] == "ready"), "{snaps:?}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Figures, not a check: webhook-to-reply latency over 50 messages to one sticky worker (echo
/// engine), enqueue-to-claim latency inside the fast-poll window and after it, requests per
/// message. `cargo test -p local-runner --test e2e -- --ignored --nocapture worker_latency`.
#[tokio::test]
#[ignore]
async fn worker_latency_figures() {
    let s = System::start(
        &[("FAST_POLL_WINDOW_MS", "3000"), ("POLL_INTERVAL_MS", "2000"), ("CONTROL_INTERVAL_MS", "30000")],
        &[],
    )
    .await;
    // Warm-up: the worker is spawned and has answered once.
    s.send(1, 42, "warm-up").await;
    until(60, "the first reply", || async { s.texts().len() == 1 }).await;
    let n = 50;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let before = s.texts().len();
        let t = Instant::now();
        s.send(100 + i as i64, 42, &format!("m{i}")).await;
        while s.texts().len() == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (p50, p95) = (pct(&mut lat, 0.50), pct(&mut lat, 0.95));
    println!("FIGURE webhook-to-reply, {n} messages, sticky worker, echo engine: p50 {p50:.0} ms, p95 {p95:.0} ms");
    // Enqueue-to-claim: enqueue through the Invoke path, the claim seen on the worker's output.
    let claim = |window: &'static str, wait: Duration| {
        let s = &s;
        async move {
            let mut v = Vec::new();
            for i in 0..8 {
                tokio::time::sleep(wait).await;
                let t = Instant::now();
                let r = s
                    .ok(json!({"op": "enqueue", "args": {"conversationId": conv(42), "agentKey": "a",
                        "payload": {"provider": "telegram", "providerUserId": "42", "messageText": format!("{window}{i}")}}}))
                    .await;
                let id = r["messageId"].as_str().unwrap().to_string();
                loop {
                    let seen = s
                        .lines
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|(_, l)| l.contains(&format!("claimed {id}")))
                        .map(|(at, _)| *at);
                    if let Some(at) = seen {
                        v.push(at.duration_since(t).as_secs_f64() * 1000.0);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            v
        }
    };
    let mut fast = claim("fast", Duration::from_millis(500)).await;
    let mut idle = claim("idle", Duration::from_millis(3500)).await;
    println!(
        "FIGURE enqueue-to-claim: within the fast-poll window (250 ms polls) p50 {:.0} ms, max {:.0} ms; after it (2 s polls) p50 {:.0} ms, max {:.0} ms",
        pct(&mut fast, 0.5),
        pct(&mut fast, 1.0),
        pct(&mut idle, 0.5),
        pct(&mut idle, 1.0)
    );
    // Requests: the worker's own count at exit (SIGTERM), per message handled.
    let pid = s.pid_of_worker_that(": claimed ").expect("pid");
    kill(pid, "-TERM");
    until(30, "the worker's exit", || async { s.has_line(": stopped: exit") }).await;
    let line = s.lines().into_iter().find(|l| l.contains("stopped: exit")).unwrap();
    let counts: Vec<(String, f64)> = line
        .split("requests: ")
        .nth(1)
        .unwrap_or("")
        .trim_end_matches(')')
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0.0))))
        .collect();
    let msgs = (1 + n + 16) as f64;
    let per_job: f64 = counts
        .iter()
        .filter(|(k, _)| {
            ["hydration", "typing", "reply", "append-messages", "complete", "heartbeat"].contains(&k.as_str())
        })
        .map(|(_, v)| v / msgs)
        .sum();
    let all: f64 = counts.iter().map(|(_, v)| v).sum();
    println!(
        "FIGURE requests per message: {per_job:.2} job calls by the worker (+1 claim that finds it) + 1 webhook + Telegram sendChatAction and sendMessage by the backend; all worker requests incl. idle polls: {all} for {msgs} messages ({:.1}/message); {line}",
        all / msgs
    );
}

/// The one command: with no Telegram configured, the runner seeds the demo bot on its own fake
/// Bot API and prints a curl command; that command, pasted as is, gets the echo reply printed.
/// `--demo` does it all itself, narrates each step and exits 0.
#[tokio::test]
async fn the_printed_curl_command_works_and_the_demo_narrates_every_step() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-runner"))
        .args(["--port", "0", "--reconcile-secs", "1"])
        .env_remove("DYNAMODB_ENDPOINT")
        .env_remove("TELEGRAM_API_BASE")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start local-runner");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut curl = None;
    for l in lines.by_ref().map_while(Result::ok) {
        if let Some(c) = l.trim().strip_prefix("curl -s ") {
            curl = Some(format!("curl -s {c}"));
            break;
        }
    }
    let curl = curl.expect("the runner printed a curl command");
    let out = Command::new("sh").arg("-c").arg(&curl).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), r#"{"ok":true}"#);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut replied = false;
    while Instant::now() < deadline && !replied {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            replied = l.contains(r#"telegram (fake Bot API): bot 1000001 -> chat 42: "echo: hello""#);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(replied, "the fake Bot API printed the echo reply");

    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_local-runner"))
        .args(["--port", "0", "--demo"])
        .env_remove("DYNAMODB_ENDPOINT")
        .env_remove("TELEGRAM_API_BASE")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for step in [
        "accepted by POST /telegram/webhook",
        "] enqueued ",
        "] reconcile spawned worker afw-",
        "] claimed by afw-",
        r#"] replied "echo: hello from the demo""#,
        "] completed",
        " idle",
        " drained",
        "] snapshot ",
        " stopped",
        "demo finished",
    ] {
        assert!(text.contains(step), "no '{step}' in:\n{text}");
    }
    assert!(t.elapsed() < Duration::from_secs(60), "the demo took {:?}", t.elapsed());
}

/// Telegram answers the reply with 429 `retry_after`: the backend passes the wait back (429
/// `retryAfterMs`), the worker waits and sends the same part again: one message at Telegram.
#[tokio::test]
async fn a_rate_limited_reply_is_retried_after_the_wait_and_arrives_once() {
    use integration_tests::fake_telegram::Fault;
    let s = System::start(&[], &[]).await;
    s.fake.fault("sendMessage", Fault::RetryAfter(1));
    let t = Instant::now();
    s.send(1, 44, "later").await;
    until(60, "the reply", || async { !s.texts().is_empty() }).await;
    until(30, "the message done", || async { s.item(&conv(44)).await["status"] == "done" }).await;
    assert!(s.has_line("reply rate limited: waiting"), "{:?}", s.lines());
    assert!(t.elapsed() >= Duration::from_secs(1), "the worker waited the retry_after");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.texts(), vec!["echo: later".to_string()], "one message at Telegram");
    assert_eq!(s.fake.calls("sendMessage"), 2, "the refused call and the one that went through");
}

/// SIGTERM with a job that outlasts the grace period: the engine is killed, the job failed (its
/// lease released at once, not left to expire), the snapshot taken, exit 0; a new worker answers.
#[tokio::test]
async fn sigterm_past_the_grace_period_abandons_the_job_and_a_new_worker_answers() {
    let engine = r#"cat > /dev/null; if [ -f seen ]; then echo "answered by the next worker"; else touch seen; sleep 30; echo "too late"; fi"#;
    let s = System::start(&[("SHUTDOWN_GRACE_MS", "500"), ("STALE_AFTER_MS", "2000")], &["--engine", engine]).await;
    s.send(1, 45, "hello").await;
    until(60, "a worker claimed the message", || async { s.has_line(": claimed ") }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = s.pid_of_worker_that(": claimed ").expect("pid");
    let t = Instant::now();
    kill(pid, "-TERM");
    until(30, "the worker's exit", || async { s.has_line(": stopped: exit") }).await;
    assert!(t.elapsed() < Duration::from_secs(10), "stopped within the grace period: {:?}", t.elapsed());
    assert!(s.has_line("abandoned: the worker is shutting down"), "{:?}", s.lines());
    assert!(s.has_line("stopped: exit 0"), "{:?}", s.lines());
    until(90, "the next worker's reply", || async { !s.texts().is_empty() }).await;
    until(30, "the message done", || async { s.item(&conv(45)).await["status"] == "done" }).await;
    assert_eq!(s.texts(), vec!["answered by the next worker".to_string()]);
    assert_eq!(s.item(&conv(45)).await["attempts"], 1, "the abandoned run counted as an attempt");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out
}

/// A global skill deployed through `admin` is materialized by the next worker at boot, before it
/// claims: the bundle's files and the marker in `<volume>/workspace/skills/<dir>/`, the lockfile
/// naming the manifest version; the worker then answers as usual.
#[tokio::test]
async fn a_deployed_global_skill_is_materialized_by_the_worker_before_it_claims() {
    let dir = std::env::temp_dir().join(format!("af-skills-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().to_string();
    let s = System::start(&[], &["--data-dir", &d]).await;
    let file = |path: &str, content: &str| {
        use sha2::{Digest, Sha256};
        json!({"path": path, "content": content, "sha256": hex::encode(Sha256::digest(content.as_bytes()))})
    };
    let deployed = s
        .ok(json!({"op": "deployGlobalSkill", "args": {"slug": "weather", "version": "1.0.0",
            "files": [file("SKILL.md", "# Weather\n"), file("scripts/index.mjs", "export default () => 'sunny';\n")]}}))
        .await;
    assert_eq!(deployed["slug"], "weather", "{deployed}");
    s.send(1, 93, "ping").await;
    until(60, "the reply", || async { !s.texts().is_empty() }).await;
    assert!(s.has_line("skills: "), "{:?}", s.lines());
    let files = files_under(&dir.join("workers").join("volumes"));
    let find = |suffix: &str| files.iter().find(|p| p.to_string_lossy().ends_with(suffix)).cloned();
    let entry = find("workspace/skills/weather/scripts/index.mjs").unwrap_or_else(|| panic!("{files:?}"));
    assert_eq!(std::fs::read_to_string(entry).unwrap(), "export default () => 'sunny';\n");
    assert!(find("workspace/skills/weather/.af-global-skill.json").is_some(), "the marker");
    let lock = find("workspace/skills/.skills.lock.json").expect("the lockfile");
    let lock: Value = serde_json::from_slice(&std::fs::read(lock).unwrap()).unwrap();
    assert_eq!(lock["skills"], json!(["weather"]));
    let line = s.lines().into_iter().find(|l| l.contains("skills: ")).unwrap();
    assert!(line.contains("materialized"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
