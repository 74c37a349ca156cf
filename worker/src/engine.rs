//! The engine: turns a job into a reply. Built in: `echo`. External: a command run with
//! `sh -c` in its own process group, in the data dir, the job's context as JSON on stdin, the
//! reply on stdout (read to the end: partial lines are fine), stderr kept for the error text.
//! On the time limit, or when the job is given up (lease lost, shutdown grace over), the whole
//! process group is killed: no turn keeps running behind the worker's back (spec §15.6).

use crate::config::Engine;
use crate::rules;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// Exited unsuccessfully (or could not start).
    Crashed(String),
    /// Ran past the time limit; killed.
    TimedOut(Duration),
    /// Printed nothing.
    Empty,
    /// Stopped by the worker (lease lost, shutdown).
    Cancelled,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Crashed(m) => write!(f, "engine failed: {m}"),
            EngineError::TimedOut(d) => write!(f, "engine timed out after {} ms (killed)", d.as_millis()),
            EngineError::Empty => write!(f, "engine produced empty output"),
            EngineError::Cancelled => write!(f, "engine cancelled"),
        }
    }
}

/// Run one turn. `cancel` resolving stops (and kills) the engine.
pub async fn run(
    engine: &Engine,
    input: &Value,
    cwd: &Path,
    timeout: Duration,
    cancel: impl std::future::Future<Output = ()>,
) -> Result<String, EngineError> {
    match engine {
        Engine::Echo => {
            let text = input.pointer("/payload/messageText").and_then(Value::as_str).unwrap_or("");
            // The echo engine keeps a journal in the data dir, so snapshots carry something.
            let journal = cwd.join("workspace").join("echo-journal.txt");
            if let Some(dir) = journal.parent() {
                let _ = tokio::fs::create_dir_all(dir).await;
            }
            let line = format!("{}\n", text.replace('\n', " "));
            if let Ok(mut f) = tokio::fs::OpenOptions::new().create(true).append(true).open(&journal).await {
                let _ = f.write_all(line.as_bytes()).await;
            }
            Ok(rules::echo_reply(text))
        }
        Engine::Command(cmd) => run_command(cmd, input, cwd, timeout, cancel).await,
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

async fn run_command(
    cmd: &str,
    input: &Value,
    cwd: &Path,
    timeout: Duration,
    cancel: impl std::future::Future<Output = ()>,
) -> Result<String, EngineError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| EngineError::Crashed(format!("could not start `{cmd}`: {e}")))?;
    let pid = child.id();
    let body = serde_json::to_vec(input).unwrap_or_default();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let io = async move {
        // An engine that never reads stdin must not block the worker: write in the background.
        let feed = async {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            }
            drop(stdin);
        };
        let read_out = async {
            let mut v = Vec::new();
            if let Some(o) = stdout.as_mut() {
                let _ = o.read_to_end(&mut v).await;
            }
            v
        };
        let read_err = async {
            let mut v = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.take(64 * 1024).read_to_end(&mut v).await;
            }
            v
        };
        let ((), out, err) = tokio::join!(feed, read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    tokio::select! {
        (status, out, err) = io => {
            let status = status.map_err(|e| EngineError::Crashed(e.to_string()))?;
            // Whatever the engine left behind in its group goes with it.
            kill_group(pid);
            if !status.success() {
                let err = String::from_utf8_lossy(&err);
                let tail: String = err.trim().chars().rev().take(500).collect::<Vec<_>>().into_iter().rev().collect();
                return Err(EngineError::Crashed(format!("exit {}: {tail}", status.code().map_or("signal".to_string(), |c| c.to_string()))));
            }
            rules::reply_text(&String::from_utf8_lossy(&out)).ok_or(EngineError::Empty)
        }
        _ = tokio::time::sleep(timeout) => {
            kill_group(pid);
            Err(EngineError::TimedOut(timeout))
        }
        _ = cancel => {
            kill_group(pid);
            Err(EngineError::Cancelled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("afw-engine-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    }

    fn input() -> Value {
        json!({"payload": {"messageText": "hello"}})
    }

    #[tokio::test]
    async fn echo_and_commands() {
        let d = dir();
        let never = std::future::pending::<()>;
        let t = Duration::from_secs(10);
        assert_eq!(run(&Engine::Echo, &input(), &d, t, never()).await.unwrap(), "echo: hello");
        assert!(d.join("workspace/echo-journal.txt").exists());
        // The context arrives on stdin; a partial last line is the reply.
        let c = Engine::Command("tr a-z A-Z | head -c 200; printf ' (partial'".into());
        let out = run(&c, &input(), &d, t, never()).await.unwrap();
        assert!(out.contains("\"HELLO\"") && out.ends_with("(partial"), "{out}");
        let crash = Engine::Command("echo oops >&2; exit 3".into());
        assert_eq!(run(&crash, &input(), &d, t, never()).await, Err(EngineError::Crashed("exit 3: oops".into())));
        let empty = Engine::Command("cat > /dev/null".into());
        assert_eq!(run(&empty, &input(), &d, t, never()).await, Err(EngineError::Empty));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_slow_engine_is_killed_with_its_children() {
        let d = dir();
        // The engine starts a grandchild that would outlive a plain kill of `sh`.
        let c = Engine::Command("sleep 30 & echo $! > grandchild.pid; wait".into());
        let t0 = std::time::Instant::now();
        let r = run(&c, &json!({}), &d, Duration::from_millis(300), std::future::pending()).await;
        assert_eq!(r, Err(EngineError::TimedOut(Duration::from_millis(300))));
        assert!(t0.elapsed() < Duration::from_secs(5));
        let pid = std::fs::read_to_string(d.join("grandchild.pid")).unwrap().trim().to_string();
        let mut gone = false;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for its (killed) parent's reaper.
            if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "the engine's grandchild {pid} still runs");
        // Cancelled by the worker: killed at once.
        let c = Engine::Command("sleep 30".into());
        let r = run(&c, &json!({}), &d, Duration::from_secs(30), tokio::time::sleep(Duration::from_millis(100))).await;
        assert_eq!(r, Err(EngineError::Cancelled));
        let _ = std::fs::remove_dir_all(&d);
    }
}
