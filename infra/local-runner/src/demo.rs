//! The one-command system: the default worker command (the reference worker next to this
//! binary), the seeded demo agent and bot with the ready-to-paste webhook call, and `--demo`,
//! which posts that call itself and narrates the pipeline until the worker has stopped.

use crate::fake_bot_api::FakeBotApi;
use serde_json::{Value, json};
use shared::app::App;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const DEMO_AGENT: &str = "demo";
/// The demo bot's token (the fake Bot API takes any token of Telegram's shape).
pub(crate) const DEMO_TOKEN: &str = "1000001:local-demo-bot-token";
pub(crate) const DEMO_BOT_ID: &str = "1000001";
pub(crate) const DEMO_CHAT: i64 = 42;

/// The worker binary's name.
const WORKER_BIN: &str = "agent-worker";

/// `agent-worker` next to this binary (`target/<profile>/`, also from `target/<profile>/deps/`
/// where test binaries live).
pub(crate) fn worker_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating this binary: {e}"))?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let candidates = [dir.join(WORKER_BIN), dir.parent().map(|p| p.join(WORKER_BIN)).unwrap_or_default()];
    let find = || candidates.iter().find(|p| p.is_file()).cloned();
    // Started by cargo (`cargo run`, `cargo test`): build it (a no-op when it is up to date),
    // so the worker is never older than the sources.
    if let Some(cargo) = std::env::var_os("CARGO") {
        let release = dir.components().any(|c| c.as_os_str() == "release");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-q", "-p", "worker", "--bin", WORKER_BIN]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.stdout(std::process::Stdio::null()).status().map_err(|e| format!("running cargo: {e}"))?;
        if !st.success() {
            return Err(format!("cargo build -p worker failed ({st})"));
        }
    }
    find().ok_or_else(|| {
        format!(
            "{WORKER_BIN} is not next to {} (build it with `cargo build -p worker`, or pass --worker-command / --no-workers)",
            exe.display()
        )
    })
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `exec <agent-worker> [--engine CMD]`, with quicker control checks for the demo.
pub(crate) fn default_worker_command(engine: Option<&str>, demo: bool) -> Result<String, String> {
    let bin = worker_binary()?;
    let mut cmd = format!("exec {}", quote(&bin.to_string_lossy()));
    if let Some(e) = engine {
        cmd.push_str(&format!(" --engine {}", quote(e)));
    }
    if demo {
        cmd.push_str(" --control-ms 500");
    }
    Ok(cmd)
}

async fn call(app: &Arc<App>, function: &str, payload: Value) -> Result<Value, String> {
    let Some((_, h)) = crate::FUNCTIONS.iter().find(|(n, _)| *n == function) else {
        return Err(format!("no function {function}"));
    };
    h(app.clone(), payload).await.map_err(|(t, m)| format!("{t}: {m}"))
}

/// What the seeding left for the webhook call.
#[derive(Debug, Clone)]
pub(crate) struct Seeded {
    pub(crate) secret: String,
}

/// The demo agent, its bot (on the fake Bot API) and the bot's webhook to this runner.
pub(crate) async fn seed(app: &Arc<App>, fake: &FakeBotApi) -> Result<Seeded, String> {
    let agent = json!({"op": "configureAgent", "args": {"agentKey": DEMO_AGENT, "version": "1", "secretsRef": [], "enabled": true}});
    if let Err(e) = call(app, "admin", agent).await {
        // A data dir seeded before keeps its agent.
        tracing::debug!(error = %e, "demo agent not (re)configured");
    }
    call(
        app,
        "admin",
        json!({"op": "importTelegramTokenForAgent", "args": {"agentKey": DEMO_AGENT, "plaintextValue": DEMO_TOKEN}}),
    )
    .await
    .map_err(|e| format!("seeding the demo bot: {e}"))?;
    call(app, "admin", json!({"op": "configureTelegramWebhook", "args": {"agentKey": DEMO_AGENT}}))
        .await
        .map_err(|e| format!("setting the demo bot's webhook: {e}"))?;
    let secret = fake.webhook_secret(DEMO_TOKEN).ok_or("the demo bot's webhook secret was not set")?;
    Ok(Seeded { secret })
}

/// A Telegram update from the demo chat.
pub(crate) fn update(update_id: i64, text: &str) -> Value {
    json!({"update_id": update_id, "message": {"message_id": update_id, "date": 0,
        "chat": {"id": DEMO_CHAT, "type": "private"},
        "from": {"id": DEMO_CHAT, "is_bot": false, "first_name": "Ada"}, "text": text}})
}

/// The ready-to-paste command that posts an update to the local webhook.
pub(crate) fn curl_command(base: &str, secret: &str, update_id: i64) -> String {
    format!(
        "curl -s {base}/telegram/webhook -H 'X-Telegram-Bot-Api-Secret-Token: {secret}' -H 'Content-Type: application/json' -d '{}'",
        update(update_id, "hello")
    )
}

pub(crate) fn conversation_id() -> String {
    format!("telegram:{DEMO_BOT_ID}:{DEMO_CHAT}")
}

async fn workers(app: &Arc<App>) -> Vec<Value> {
    let mut all = Vec::new();
    for st in ["active", "draining", "stopping", "stopped"] {
        if let Ok(v) = call(app, "reconcile", json!({"op": "listWorkers", "args": {"status": st}})).await {
            all.extend(v["workers"].as_array().cloned().unwrap_or_default());
        }
    }
    all
}

/// `--demo`: post one update, narrate every step, return the exit code (0: all happened).
pub(crate) async fn narrate(app: Arc<App>, base: String, fake: FakeBotApi, secret: String) -> i32 {
    let t0 = Instant::now();
    let step = |msg: String| {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "demo [{:>5.1} s] {msg}", t0.elapsed().as_secs_f64());
    };
    let conv = conversation_id();
    let update_id =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs() as i64);
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/telegram/webhook"))
        .header("X-Telegram-Bot-Api-Secret-Token", &secret)
        .json(&update(update_id, "hello from the demo"))
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => {
            step(format!("update {update_id} accepted by POST /telegram/webhook (HTTP {})", r.status().as_u16()))
        }
        Ok(r) => {
            step(format!("the webhook refused the update: HTTP {}", r.status().as_u16()));
            return 1;
        }
        Err(e) => {
            step(format!("the webhook could not be reached: {e}"));
            return 1;
        }
    }
    let steps = ["enqueued", "spawned", "claimed", "replied", "completed", "idle", "drained", "snapshot", "stopped"];
    let mut done = 0usize;
    let mut worker_id = String::new();
    let deadline = t0 + Duration::from_secs(90);
    while done < steps.len() {
        if Instant::now() > deadline {
            step(format!("timed out waiting for: {}", steps[done]));
            return 1;
        }
        let items =
            call(&app, "admin", json!({"op": "listQueueItemsForConversation", "args": {"conversationId": conv}}))
                .await
                .unwrap_or(Value::Null);
        let item = items.as_array().and_then(|a| a.first()).cloned().unwrap_or(Value::Null);
        let ws = workers(&app).await;
        let w = ws.iter().find(|w| w["assignedConversationId"] == conv.as_str() || w["workerId"] == worker_id.as_str());
        let sent = fake.sent();
        let status = item["status"].as_str().unwrap_or("");
        let wstatus = w.and_then(|w| w["status"].as_str()).unwrap_or("");
        let reached = match steps[done] {
            "enqueued" => (!item.is_null()).then(|| {
                format!(
                    "enqueued {} in conversation {conv}",
                    item["messageId"].as_str().or(item["_id"].as_str()).unwrap_or("?")
                )
            }),
            "spawned" => w.map(|w| {
                worker_id = w["workerId"].as_str().unwrap_or_default().to_string();
                format!("reconcile spawned worker {worker_id}")
            }),
            "claimed" => matches!(status, "processing" | "done").then(|| format!("claimed by {worker_id}")),
            "replied" => sent
                .last()
                .map(|s| format!("replied {:?} (the fake Bot API got {} to chat {})", s.text, s.method, s.chat_id)),
            "completed" => (status == "done").then(|| "completed: the message is done".to_string()),
            "idle" => (w.is_some_and(|w| w["load"].as_i64() == Some(0))).then(|| format!("worker {worker_id} idle")),
            "drained" => matches!(wstatus, "draining" | "stopping" | "stopped")
                .then(|| format!("worker {worker_id} drained (idle timeout)")),
            "snapshot" => {
                let snaps = call(
                    &app,
                    "admin",
                    json!({"op": "listSnapshotsForConversation", "args": {"conversationId": conv}}),
                )
                .await
                .unwrap_or(Value::Null);
                let list =
                    snaps.as_array().cloned().or_else(|| snaps["snapshots"].as_array().cloned()).unwrap_or_default();
                list.iter().find(|s| s["status"] == "ready").map(|s| {
                    format!(
                        "snapshot {} ready ({} bytes, reason {})",
                        s["snapshotId"].as_str().unwrap_or("?"),
                        s["sizeBytes"],
                        s["reason"].as_str().unwrap_or("?")
                    )
                })
            }
            "stopped" => (wstatus == "stopped").then(|| format!("worker {worker_id} stopped")),
            _ => None,
        };
        match reached {
            Some(msg) => {
                step(msg);
                done += 1;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    step(format!("demo finished: one message through the whole system in {:.1} s", t0.elapsed().as_secs_f64()));
    0
}
