//! The worker's life: boot, the loop of claims, one job at a time, and the way out.
//!
//! Fixes of the original's weak points (worker-runtime spec §15) made here:
//! - a lost lease (heartbeat `409`/`403`) stops the job at once: the engine is killed and no
//!   reply, history or completion follows (§15.1);
//! - a claimed job that cannot run (no hydration, wrong conversation) is failed, never left to
//!   expire (§15.2); a failed `complete` is retried, never turned into a `fail` (§15.3);
//! - the reply goes out (through `/worker/reply`, idempotent per part) before the history is
//!   appended (§15.4); the engine is killed on its time limit (§15.6);
//! - SIGTERM: the job in progress gets a grace period, then is abandoned (`fail`, so the lease
//!   is released at once) and the snapshot is taken (§15.7);
//! - the restore is checked and all-or-nothing, and only a fresh data dir is restored (§15.9);
//! - the idle worker proves it is alive with `worker-heartbeat`, and gives up when the backend
//!   stays unreachable (§15.11).

use crate::client::{Backend, CallError};
use crate::config::{Config, Credential};
use crate::rules::{self, Answer, Millis, SnapshotOutcome, StopReason};
use crate::snapshot;
use crate::wire::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

fn now_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// One line on stdout; a closed stdout (the parent stopped reading) must not stop the worker.
fn say(id: &str, msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "agent-worker {id}: {msg}");
}

fn ms(m: Millis) -> Duration {
    Duration::from_millis(m.max(0) as u64)
}

struct Worker {
    cfg: Config,
    be: Arc<Backend>,
    id: String,
    conversation: Option<String>,
    agent: Option<String>,
    /// Set by SIGTERM/SIGINT.
    shutdown: watch::Receiver<bool>,
    parent_gone: Arc<AtomicBool>,
    jobs: u64,
}

/// How a job ended, for the loop.
enum JobEnd {
    Done,
    TokenRefused,
}

impl Worker {
    fn say(&self, msg: &str) {
        say(&self.id, msg);
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sleep, but wake at once on a shutdown signal.
    async fn nap(&self, d: Millis) {
        let mut rx = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(ms(d)) => {}
            _ = rx.wait_for(|v| *v) => {}
        }
    }

    /// A call retried on transient failures (`tries` in all), waiting as the rules say; a 429
    /// waits what the backend asked for.
    async fn call_retry<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        body: &B,
        tries: u32,
    ) -> Result<T, CallError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.be.call::<B, T>(op, body).await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < tries && matches!(e.answer, Answer::Transient | Answer::RetryAfter(_)) => {
                    let wait = match e.answer {
                        Answer::RetryAfter(w) => w,
                        _ => rules::retry_wait(attempt, 5_000),
                    };
                    self.say(&format!("{op} failed ({e}); retrying in {wait} ms"));
                    tokio::time::sleep(ms(wait)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Boot, loop, snapshot: the process's exit code.
pub async fn run(cfg: Config) -> i32 {
    let be = match Backend::new(&cfg.url, ms(cfg.http_timeout_ms)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("agent-worker: {e}");
            return rules::EXIT_START_FAILED;
        }
    };
    // 1. The token.
    let id = match &cfg.credential {
        Credential::Token(t) => {
            be.set_token(t.clone());
            cfg.worker_id.clone().unwrap_or_else(|| "worker".into())
        }
        Credential::BootstrapCode(code) => {
            let mut got = None;
            for attempt in 1..=5u32 {
                match be.call::<_, BootstrapView>("bootstrap", &BootstrapReq { code }).await {
                    Ok(v) => {
                        got = Some(v);
                        break;
                    }
                    Err(e) if e.answer == Answer::Transient && attempt < 5 => {
                        eprintln!("agent-worker: bootstrap failed ({e}); retrying");
                        tokio::time::sleep(ms(rules::retry_wait(attempt + 1, 5_000))).await;
                    }
                    Err(e) if e.answer == Answer::Transient => {
                        eprintln!("agent-worker: the backend could not be reached at boot: {e}");
                        return rules::EXIT_START_FAILED;
                    }
                    Err(e) => {
                        eprintln!("agent-worker: the bootstrap code was not accepted: {e}");
                        return rules::EXIT_START_FAILED;
                    }
                }
            }
            let Some(v) = got else { return rules::EXIT_START_FAILED };
            be.set_token(v.token);
            v.worker_id
        }
    };
    let (tx, shutdown) = watch::channel(false);
    let mut w = Worker {
        conversation: cfg.conversation_id.clone(),
        agent: cfg.agent_key.clone(),
        cfg,
        be: Arc::new(be),
        id,
        shutdown,
        parent_gone: Arc::new(AtomicBool::new(false)),
        jobs: 0,
    };
    w.say(&format!(
        "started (pid {}, conversation {}, engine {}, data dir {})",
        std::process::id(),
        w.conversation.as_deref().unwrap_or("-"),
        match &w.cfg.engine {
            crate::config::Engine::Echo => "echo".to_string(),
            crate::config::Engine::Command(c) => format!("`{c}`"),
        },
        w.cfg.data_dir.display()
    ));
    watch_signals(tx.clone(), &w);
    if w.cfg.exit_with_parent {
        watch_parent(tx, w.parent_gone.clone());
    }
    // 2. The data dir: restored from the newest good snapshot when fresh.
    if let Err(e) = std::fs::create_dir_all(&w.cfg.data_dir) {
        eprintln!("agent-worker: creating the data dir {}: {e}", w.cfg.data_dir.display());
        return rules::EXIT_START_FAILED;
    }
    if let Some(code) = restore(&w).await {
        return code;
    }
    // 3. Global skills: the manifest checked whole, then materialized (skills.rs).
    if let Some(code) = materialize_skills(&w).await {
        return code;
    }
    // 4. The loop.
    let reason = main_loop(&mut w).await;
    w.say(&format!("leaving the loop: {} ({} jobs)", reason.as_str(), w.jobs));
    // 5. The snapshot on the way out.
    let outcome = match reason.snapshot_reason() {
        Some(r) => take_snapshot(&w, r).await,
        None => SnapshotOutcome::NotNeeded,
    };
    let counts: Vec<String> = w.be.counts().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let code = rules::exit_code(reason, outcome);
    w.say(&format!("stopped: exit {code} (requests: {})", counts.join(" ")));
    code
}

fn watch_signals(tx: watch::Sender<bool>, w: &Worker) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        w.say("cannot listen for signals");
        return;
    };
    let id = w.id.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        say(&id, "signal received: finishing within the grace period");
        let _ = tx.send(true);
    });
}

/// Exit when the process that started this worker (the local runner) is gone: the worker
/// would otherwise poll a dead backend.
fn watch_parent(tx: watch::Sender<bool>, gone: Arc<AtomicBool>) {
    let parent = std::os::unix::process::parent_id();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if std::os::unix::process::parent_id() != parent {
                gone.store(true, Ordering::SeqCst);
                let _ = tx.send(true);
                return;
            }
        }
    });
}

/// Fetch the global skills manifest and materialize it into the skills dir, unless the lockfile
/// already holds its version. A failure stops the boot when `SKILLS_BOOTSTRAP_REQUIRED`
/// (`Some(1)`), else the worker goes on with the skills on disk.
async fn materialize_skills(w: &Worker) -> Option<i32> {
    use shared::protocol::skills::SkillsManifest;
    let sk = &w.cfg.skills;
    if !sk.enabled {
        return None;
    }
    let args = serde_json::json!({"workspaceId": w.cfg.workspace_id, "releaseChannel": sk.channel});
    let result = match w.call_retry::<_, SkillsManifest>("skills-manifest", &args, 3).await {
        Err(e) => Err(format!("fetching the skills manifest: {e}")),
        Ok(m) if crate::skills::locked_version(&sk.dir).as_deref() == Some(m.manifest_version.as_str()) => {
            w.say(&format!("skills: {} up to date ({} skills)", m.manifest_version, m.skills.len()));
            return None;
        }
        Ok(m) => crate::skills::check(&m).and_then(|checked| {
            crate::skills::materialize(&sk.dir, &m, &checked, &w.id)
                .map_err(|e| format!("writing the skills into {}: {e}", sk.dir.display()))
                .map(|a| (m.manifest_version.clone(), a))
        }),
    };
    match result {
        Ok((version, a)) if a.written.is_empty() && a.removed.is_empty() && a.skipped.is_empty() => {
            w.say(&format!("skills: none deployed (manifest {})", &version[..version.len().min(12)]));
            None
        }
        Ok((version, a)) => {
            w.say(&format!(
                "skills: {version} materialized (written {:?}, removed {:?}, left to the operator {:?})",
                a.written, a.removed, a.skipped
            ));
            None
        }
        Err(e) if sk.required => {
            w.say(&format!("skills_bootstrap_required_failed: {e}"));
            Some(rules::EXIT_START_FAILED)
        }
        Err(e) => {
            w.say(&format!("skills: not materialized, going on with the skills on disk: {e}"));
            None
        }
    }
}

/// Restore the newest good snapshot into a fresh data dir. `Some(code)` = stop now.
async fn restore(w: &Worker) -> Option<i32> {
    let dir = &w.cfg.data_dir;
    if snapshot::is_used(dir) {
        w.say("data dir in use before: not restored");
        return None;
    }
    if let (Some(conv), Some(agent)) = (&w.conversation, &w.agent) {
        let tuple = SnapshotTuple { workspace_id: &w.cfg.workspace_id, agent_key: agent, conversation_id: conv };
        match w.call_retry::<_, Option<RestoreView>>("snapshot-restore", &tuple, 3).await {
            Ok(None) => w.say("no snapshot to restore"),
            Ok(Some(r)) => match w.be.download(&r.download_url).await {
                Ok(bytes) => {
                    let d = dir.clone();
                    let sha = r.sha256.clone();
                    let res = tokio::task::spawn_blocking(move || snapshot::restore(&d, &bytes, sha.as_deref())).await;
                    match res {
                        Ok(Ok(n)) => w.say(&format!("restored snapshot {} ({n} entries)", r.snapshot_id)),
                        Ok(Err(e)) => w.say(&format!("RESTORE FAILED for snapshot {}: {e}", r.snapshot_id)),
                        Err(e) => w.say(&format!("RESTORE FAILED: {e}")),
                    }
                }
                Err(e) => w.say(&format!("RESTORE FAILED: downloading snapshot {}: {e}", r.snapshot_id)),
            },
            Err(e) if e.answer == Answer::TokenRefused => {
                w.say(&format!("token refused at restore: {e}"));
                return Some(rules::exit_code(StopReason::TokenRefused, SnapshotOutcome::NotNeeded));
            }
            Err(e) => w.say(&format!("RESTORE FAILED: {e}")),
        }
    }
    if let Err(e) = snapshot::mark_used(dir, &w.id) {
        w.say(&format!("cannot write to the data dir: {e}"));
        return Some(rules::EXIT_START_FAILED);
    }
    None
}

async fn main_loop(w: &mut Worker) -> StopReason {
    let t = w.cfg.timing.clone();
    let mut last_activity = now_ms();
    let mut last_job_end: Option<Millis> = None;
    let mut last_control: Option<Millis> = None;
    let mut failing_since: Option<Millis> = None;
    let mut failures = 0u32;
    loop {
        if w.parent_gone.load(Ordering::SeqCst) {
            return StopReason::ParentGone;
        }
        if w.stopping() {
            return StopReason::Signal;
        }
        let now = now_ms();
        if rules::backend_lost(now, failing_since, w.cfg.backend_lost_ms) {
            return StopReason::BackendLost;
        }
        if rules::idle_expired(&t, now, last_activity) {
            // A queued message that is not due yet keeps a sticky worker (one call per limit).
            let queued = match &w.conversation {
                Some(c) => {
                    w.be.call::<_, HasQueuedView>("has-queued", &ConversationReq { conversation_id: c })
                        .await
                        .is_ok_and(|v| v.has_queued)
                }
                None => false,
            };
            if !queued {
                return StopReason::Idle;
            }
            last_activity = now;
        }
        let result: Result<(), CallError> = async {
            if rules::control_due(&t, now, last_control) {
                let c: ControlView = w.be.call("worker-heartbeat", &json!({})).await?;
                last_control = Some(now);
                if let Some(r) = rules::on_control(&c.action, c.should_stop) {
                    w.say(&format!("control state: {} ({})", c.action, c.reasons.join(", ")));
                    return Err(CallError { answer: Answer::Ok, status: None, message: r.as_str().into() });
                }
            }
            let job: Option<ClaimedJob> =
                w.be.call("claim", &ClaimReq { conversation_id: w.conversation.as_deref() }).await?;
            match job {
                Some(job) => {
                    last_activity = now_ms();
                    if let JobEnd::TokenRefused = run_job(w, job).await {
                        return Err(CallError {
                            answer: Answer::TokenRefused,
                            status: Some(401),
                            message: "token refused during a job".into(),
                        });
                    }
                    last_job_end = Some(now_ms());
                    last_activity = now_ms();
                }
                None => {
                    let d = rules::poll_delay(&t, now_ms(), last_job_end, last_activity);
                    w.nap(d).await;
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                failing_since = None;
                failures = 0;
            }
            // A stop decided by the control state.
            Err(e) if e.answer == Answer::Ok => {
                return match e.message.as_str() {
                    "exit" => StopReason::Exit,
                    _ => StopReason::Drain,
                };
            }
            Err(e) if e.answer == Answer::TokenRefused => {
                w.say(&format!("token refused: {e}"));
                return StopReason::TokenRefused;
            }
            Err(e) => {
                failures += 1;
                failing_since.get_or_insert(now_ms());
                let wait = rules::error_backoff(&t, failures);
                w.say(&format!("backend call failed ({e}); next try in {wait} ms"));
                w.nap(wait).await;
            }
        }
    }
}

/// The engine's input: the hydration bundle without its secrets, and who runs it.
fn engine_input(bundle: &Value, worker_id: &str) -> Value {
    let mut v = bundle.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("telegramBotToken");
        o.remove("bridgeRuntimeConfig");
        o.insert("workerId".into(), json!(worker_id));
    }
    v
}

async fn run_job(w: &mut Worker, job: ClaimedJob) -> JobEnd {
    w.jobs += 1;
    let mid = job.message_id.clone();
    let lease = job.lease_id.clone();
    w.say(&format!("claimed {mid} (conversation {}, attempt {})", job.conversation_id, job.attempts + 1));
    // Sticky: adopt the first job's conversation; another one is refused (and failed at once).
    match &w.conversation {
        None => {
            w.conversation = Some(job.conversation_id.clone());
            w.agent.get_or_insert(job.agent_key.clone());
        }
        Some(c) if *c != job.conversation_id => {
            let msg = format!("sticky_mismatch: this worker serves {c}, not {}", job.conversation_id);
            return fail_job(w, &mid, &lease, &msg).await;
        }
        Some(_) => {}
    }
    if w.agent.as_deref().is_some_and(|a| a != job.agent_key) {
        let msg = format!(
            "sticky_agent_mismatch: this worker runs {}, not {}",
            w.agent.as_deref().unwrap_or(""),
            job.agent_key
        );
        return fail_job(w, &mid, &lease, &msg).await;
    }
    // Hydration: a job without one is failed, never left to expire.
    let req = HydrationReq { message_id: &mid, lease_id: &lease, workspace_id: &w.cfg.workspace_id };
    let bundle: Value = match w.call_retry("hydration", &req, 3).await {
        Ok(v) => v,
        Err(e) => match e.answer {
            Answer::LeaseLost => {
                w.say(&format!("lease lost before hydration: {mid} abandoned ({e})"));
                return JobEnd::Done;
            }
            Answer::TokenRefused => return JobEnd::TokenRefused,
            _ => return fail_job(w, &mid, &lease, &format!("missing hydration bundle: {e}")).await,
        },
    };
    let text = match serde_json::from_value::<HydrationView>(bundle.clone()) {
        Ok(h) => h.payload.message_text,
        Err(e) => return fail_job(w, &mid, &lease, &format!("unreadable hydration bundle: {e}")).await,
    };
    // The typing indicator: best effort.
    let _ = w.be.call::<_, Value>("typing", &TypingArgs { message_id: mid.clone(), lease_id: lease.clone() }).await;
    // Heartbeats while the job runs; a lost lease flips `lost`.
    let (lost_tx, lost_rx) = watch::channel(false);
    let token_refused = Arc::new(AtomicBool::new(false));
    let hb = {
        let every = ms(w.cfg.heartbeat_ms);
        let (m, l) = (mid.clone(), lease.clone());
        let refused = token_refused.clone();
        let id = w.id.clone();
        let be = w.be.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let r = be.call::<_, HeartbeatResult>("heartbeat", &LeaseReq { message_id: &m, lease_id: &l }).await;
                match r {
                    Ok(_) => {}
                    Err(e) if matches!(e.answer, Answer::LeaseLost | Answer::TokenRefused) => {
                        say(&id, &format!("heartbeat: lease lost ({e}): stopping the job"));
                        refused.store(e.answer == Answer::TokenRefused, Ordering::SeqCst);
                        let _ = lost_tx.send(true);
                        return;
                    }
                    Err(e) => say(&id, &format!("heartbeat failed ({e}); the lease is long, going on")),
                }
            }
        })
    };
    let end = job_body(w, &mid, &lease, &bundle, &text, lost_rx.clone()).await;
    hb.abort();
    if token_refused.load(Ordering::SeqCst) {
        return JobEnd::TokenRefused;
    }
    end
}

/// Engine, reply, history, complete, with the lease watched throughout.
async fn job_body(
    w: &Worker,
    mid: &str,
    lease: &str,
    bundle: &Value,
    text: &str,
    lost: watch::Receiver<bool>,
) -> JobEnd {
    let is_lost = || *lost.borrow();
    let input = engine_input(bundle, &w.id);
    let grace = w.cfg.grace_ms;
    let cancel = {
        let mut lost = lost.clone();
        let mut shut = w.shutdown.clone();
        async move {
            tokio::select! {
                _ = lost.wait_for(|v| *v) => {}
                _ = async { let _ = shut.wait_for(|v| *v).await; tokio::time::sleep(ms(grace)).await } => {}
            }
        }
    };
    let out = crate::engine::run(&w.cfg.engine, &input, &w.cfg.data_dir, ms(w.cfg.engine_timeout_ms), cancel).await;
    if is_lost() {
        w.say(&format!("lease lost: {mid} abandoned, no reply sent"));
        return JobEnd::Done;
    }
    let reply = match out {
        Ok(r) => r,
        Err(crate::engine::EngineError::Cancelled) => {
            return fail_job(w, mid, lease, "abandoned: the worker is shutting down").await;
        }
        Err(e) => return fail_job(w, mid, lease, &e.to_string()).await,
    };
    // The reply, through the backend (idempotent per part: a retry never sends twice).
    let args = ReplyArgs {
        message_id: mid.to_string(),
        lease_id: lease.to_string(),
        part: 0,
        text: Some(reply.clone()),
        audio: None,
        reply_to_message_id: None,
        parse_mode: None,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        if is_lost() {
            w.say(&format!("lease lost: {mid} abandoned, no reply sent"));
            return JobEnd::Done;
        }
        match w.be.call::<_, ReplyResult>("reply", &args).await {
            Ok(r) => {
                let shown: String = reply.chars().take(80).collect();
                match r.status {
                    ReplyStatus::Sent => w.say(&format!("replied \"{shown}\" ({} message(s))", r.chunks)),
                    other => w.say(&format!("reply {other:?}: {}", r.error.unwrap_or_default())),
                }
                break;
            }
            Err(e) => match e.answer {
                Answer::LeaseLost => {
                    w.say(&format!("lease lost at reply: {mid} abandoned ({e})"));
                    return JobEnd::Done;
                }
                Answer::TokenRefused => return JobEnd::TokenRefused,
                _ if rules::reply_already_answered(&e.answer, e.status) => {
                    w.say(&format!("{mid} was answered by an earlier run ({e}): completing without a second reply"));
                    return complete_job(w, mid, lease).await;
                }
                Answer::RetryAfter(wait) if attempt < 6 => {
                    w.say(&format!("reply rate limited: waiting {wait} ms"));
                    tokio::time::sleep(ms(wait)).await;
                }
                Answer::Transient if attempt < 6 => {
                    let wait = rules::retry_wait(attempt, 5_000);
                    w.say(&format!("reply failed ({e}); retrying in {wait} ms"));
                    tokio::time::sleep(ms(wait)).await;
                }
                _ => return fail_job(w, mid, lease, &format!("reply not sent: {e}")).await,
            },
        }
    }
    // The turns, after the user saw the reply.
    let at = now_ms();
    let turns = AppendReq {
        conversation_id: bundle.get("conversationId").and_then(Value::as_str).unwrap_or_default(),
        workspace_id: &w.cfg.workspace_id,
        messages: vec![
            Turn { role: HistoryRole::User, content: text, at },
            Turn { role: HistoryRole::Assistant, content: &reply, at: at + 1 },
        ],
    };
    if let Err(e) = w.call_retry::<_, AppendResult>("append-messages", &turns, 3).await {
        w.say(&format!("history not appended ({e}); the reply was delivered, completing anyway"));
    }
    complete_job(w, mid, lease).await
}

/// Complete: retried, never turned into a fail (the reply is out).
async fn complete_job(w: &Worker, mid: &str, lease: &str) -> JobEnd {
    match w.call_retry::<_, Value>("complete", &LeaseReq { message_id: mid, lease_id: lease }, 5).await {
        Ok(_) => w.say(&format!("completed {mid}")),
        Err(e) if e.answer == Answer::TokenRefused => return JobEnd::TokenRefused,
        Err(e) => w.say(&format!("complete of {mid} refused ({e}); the reply was delivered once")),
    }
    JobEnd::Done
}

async fn fail_job(w: &Worker, mid: &str, lease: &str, error: &str) -> JobEnd {
    let error = rules::short_error(error);
    w.say(&format!("failing {mid}: {error}"));
    match w
        .call_retry::<_, FailResult>("fail", &FailReq { message_id: mid, lease_id: lease, error_message: &error }, 4)
        .await
    {
        Ok(r) => {
            w.say(&format!("failed {mid} (requeued {}, dead-lettered {})", r.requeued, r.dead_lettered));
            JobEnd::Done
        }
        Err(e) if e.answer == Answer::TokenRefused => JobEnd::TokenRefused,
        Err(e) => {
            w.say(&format!("fail of {mid} not recorded ({e}); the lease will expire"));
            JobEnd::Done
        }
    }
}

async fn take_snapshot(w: &Worker, reason: &str) -> SnapshotOutcome {
    let (Some(conv), Some(agent)) = (&w.conversation, &w.agent) else {
        w.say("no conversation served: nothing to snapshot");
        return SnapshotOutcome::NotNeeded;
    };
    let dir = w.cfg.data_dir.clone();
    let archive = match tokio::task::spawn_blocking(move || snapshot::archive(&dir)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            w.say(&format!("SNAPSHOT FAILED: archiving the data dir: {e}"));
            return SnapshotOutcome::Failed;
        }
        Err(e) => {
            w.say(&format!("SNAPSHOT FAILED: {e}"));
            return SnapshotOutcome::Failed;
        }
    };
    let req = PrepareReq {
        workspace_id: &w.cfg.workspace_id,
        agent_key: agent,
        conversation_id: conv,
        reason,
        size_bytes: archive.size,
    };
    let p: PrepareView = match w.call_retry("snapshot-prepare", &req, 3).await {
        Ok(p) => p,
        Err(e) => {
            w.say(&format!("SNAPSHOT FAILED: prepare: {e}"));
            return SnapshotOutcome::Failed;
        }
    };
    let size = archive.size;
    let sha = archive.sha256.clone();
    if let Err(e) = w.be.upload(&p.upload_method, &p.upload_url, &p.upload_headers, archive.bytes).await {
        return snapshot_failed(w, &p.snapshot_id, format!("upload: {e}")).await;
    }
    let fin = FinalizeReq { snapshot_id: &p.snapshot_id, sha256: &sha, size_bytes: size };
    match w.call_retry::<_, FinalizeView>("snapshot-finalize", &fin, 3).await {
        Ok(f) => {
            w.say(&format!(
                "snapshot {} {} ({size} bytes, sha256 {}…, reason {reason}; worker {})",
                p.snapshot_id,
                f.status,
                &sha[..12],
                f.worker_status.as_deref().unwrap_or("-")
            ));
            SnapshotOutcome::Saved
        }
        Err(e) => snapshot_failed(w, &p.snapshot_id, format!("finalize: {e}")).await,
    }
}

async fn snapshot_failed(w: &Worker, snapshot_id: &str, e: String) -> SnapshotOutcome {
    w.say(&format!("SNAPSHOT FAILED: {e}"));
    let req = SnapshotFailReq { snapshot_id, error: &rules::short_error(&e) };
    if let Err(e) = w.call_retry::<_, Value>("snapshot-fail", &req, 3).await {
        w.say(&format!("snapshot-fail not recorded: {e}"));
    }
    SnapshotOutcome::Failed
}
