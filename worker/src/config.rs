//! The worker's configuration: environment variables (what a spawner sets), each overridable
//! by a flag. Numbers are validated (a bad one is a usage error, never a busy loop).

use crate::rules::{Millis, Timing};
use std::path::PathBuf;

pub const USAGE: &str = "\
agent-worker: the reference worker of agent-factory

USAGE: agent-worker [--url URL] [--engine echo|CMD] [--data-dir DIR] [--conversation ID] [--agent KEY]
                    [--poll-ms N] [--fast-poll-ms N] [--fast-window-ms N] [--control-ms N]
                    [--heartbeat-ms N] [--engine-timeout-ms N] [--grace-ms N] [--idle-ms N]

Every flag has an environment variable (the flag wins):
  --url              AGENT_FACTORY_URL            backend base URL (required)
                     AGENT_FACTORY_BOOTSTRAP_CODE single-use code exchanged for the token at boot
                     AGENT_FACTORY_WORKER_TOKEN   or the token itself (a self-hosted worker)
  --engine           AGENT_ENGINE                 `echo` (built in, default) or a command run with
                                                  `sh -c`: the job's context as JSON on stdin, the
                                                  reply on stdout
  --engine-timeout-ms OPENCLAW_TIMEOUT_MS         engine time limit (default 120000); the engine's
                                                  process group is killed when it passes
  --data-dir         AGENT_FACTORY_DATA_DIR       the directory snapshotted and restored (default
                                                  AGENT_FACTORY_VOLUME_DIR, else the working dir)
  --conversation     OPENCLAW_CONVERSATION_ID     the conversation this worker serves (sticky)
  --agent            OPENCLAW_AGENT_KEY           its agent
                     WORKSPACE_ID                 default `default`
  --poll-ms          POLL_INTERVAL_MS             idle poll interval (default 2000)
  --fast-poll-ms     FAST_POLL_INTERVAL_MS        poll interval right after a job (default 250)
  --fast-window-ms   FAST_POLL_WINDOW_MS          how long after a job to poll fast (default 20000)
  --control-ms       CONTROL_INTERVAL_MS          idle liveness + control state (default 30000)
  --heartbeat-ms     HEARTBEAT_INTERVAL_MS        lease heartbeat while a job runs (default 10000)
  --idle-ms          WORKER_IDLE_TIMEOUT_MS       idle limit: the backend drains the worker then;
                                                  it stops on its own 60 s later (--idle-ms: exactly
                                                  then); default 1800000
  --grace-ms         SHUTDOWN_GRACE_MS            on SIGTERM: time to finish the job (default 20000)
                     HTTP_TIMEOUT_MS              per backend call (default 20000)
                     BACKEND_LOST_MS              give up after the backend is unreachable this
                                                  long (default 600000; 0 = never)
                     AGENT_FACTORY_EXIT_WITH_PARENT  1: exit when the parent process goes away

Exit codes: 0 stopped as asked; 1 could not start; 2 usage; 3 stopped but the snapshot failed;
4 token refused; 5 backend unreachable too long; 6 parent gone.
";

/// How long after the backend's idle deadline the worker stops on its own.
pub const IDLE_BACKSTOP_MS: Millis = 60_000;

/// The engine that turns a job into a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    Echo,
    Command(String),
}

/// How the worker gets its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    BootstrapCode(String),
    Token(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    pub credential: Credential,
    pub worker_id: Option<String>,
    pub workspace_id: String,
    pub conversation_id: Option<String>,
    pub agent_key: Option<String>,
    pub data_dir: PathBuf,
    pub engine: Engine,
    pub engine_timeout_ms: Millis,
    pub heartbeat_ms: Millis,
    pub grace_ms: Millis,
    pub http_timeout_ms: Millis,
    pub backend_lost_ms: Millis,
    pub exit_with_parent: bool,
    pub timing: Timing,
    pub skills: SkillsConfig,
}

/// The global skills at boot (`SKILLS_BOOTSTRAP_MODE`, `..._REQUIRED`, `SKILLS_RELEASE_CHANNEL`,
/// `OPENCLAW_SKILLS_DIR`).
#[derive(Debug, Clone)]
pub struct SkillsConfig {
    /// `SKILLS_BOOTSTRAP_MODE` = `db_manifest` (default) fetches the manifest; `off` does not.
    pub enabled: bool,
    pub required: bool,
    pub channel: String,
    pub dir: PathBuf,
}

fn num(name: &str, v: &str) -> Result<Millis, String> {
    v.trim().parse::<Millis>().ok().filter(|n| *n >= 0).ok_or_else(|| format!("{name} takes a number of ms, not '{v}'"))
}

fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

/// Parse flags (`args` without the program name) over the environment (`env`).
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let mut flags: std::collections::BTreeMap<&str, String> = Default::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let key = match a.as_str() {
            "--url"
            | "--engine"
            | "--engine-timeout-ms"
            | "--data-dir"
            | "--conversation"
            | "--agent"
            | "--poll-ms"
            | "--fast-poll-ms"
            | "--fast-window-ms"
            | "--control-ms"
            | "--heartbeat-ms"
            | "--idle-ms"
            | "--grace-ms" => a.as_str(),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument '{other}'\n\n{USAGE}")),
        };
        let v = it.next().ok_or_else(|| format!("{key} needs a value"))?;
        flags.insert(key, v.clone());
    }
    let pick = |flag: &str, var: &str| flags.get(flag).cloned().or_else(|| env(var));
    let ms = |flag: &str, var: &str, default: Millis| -> Result<Millis, String> {
        match pick(flag, var) {
            Some(v) => num(var, &v),
            None => Ok(default),
        }
    };
    let url = pick("--url", "AGENT_FACTORY_URL").ok_or("AGENT_FACTORY_URL (or --url) is required")?;
    let url = url.trim_end_matches('/').to_string();
    let credential = match (env("AGENT_FACTORY_WORKER_TOKEN"), env("AGENT_FACTORY_BOOTSTRAP_CODE")) {
        (Some(t), _) => Credential::Token(t),
        (None, Some(c)) => Credential::BootstrapCode(c),
        (None, None) => return Err("AGENT_FACTORY_BOOTSTRAP_CODE or AGENT_FACTORY_WORKER_TOKEN is required".into()),
    };
    let engine = match pick("--engine", "AGENT_ENGINE") {
        None => Engine::Echo,
        Some(e) if e.trim() == "echo" => Engine::Echo,
        Some(e) => Engine::Command(e),
    };
    let data_dir = flags
        .get("--data-dir")
        .cloned()
        .or_else(|| env("AGENT_FACTORY_DATA_DIR"))
        .or_else(|| env("AGENT_FACTORY_VOLUME_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let timing = Timing {
        fast_poll_ms: ms("--fast-poll-ms", "FAST_POLL_INTERVAL_MS", 250)?.max(10),
        fast_window_ms: ms("--fast-window-ms", "FAST_POLL_WINDOW_MS", 20_000)?,
        idle_poll_ms: ms("--poll-ms", "POLL_INTERVAL_MS", 2_000)?.max(50),
        // The backend drains an idle worker at WORKER_IDLE_TIMEOUT_MS (control state
        // `idle_timeout`, reconcile); the local limit is the backstop a minute later. `--idle-ms`
        // sets it exactly.
        idle_limit_ms: match flags.get("--idle-ms") {
            Some(v) => num("--idle-ms", v)?,
            None => ms("", "WORKER_IDLE_TIMEOUT_MS", 1_800_000)? + IDLE_BACKSTOP_MS,
        }
        .max(1_000),
        control_every_ms: ms("--control-ms", "CONTROL_INTERVAL_MS", 30_000)?.max(100),
    };
    let skills = SkillsConfig {
        enabled: match env("SKILLS_BOOTSTRAP_MODE").as_deref().map(str::trim) {
            None | Some("db_manifest") => true,
            Some("off") => false,
            Some(other) => return Err(format!("SKILLS_BOOTSTRAP_MODE is db_manifest or off, not '{other}'")),
        },
        required: env("SKILLS_BOOTSTRAP_REQUIRED").is_some_and(|v| truthy(&v)),
        channel: match env("SKILLS_RELEASE_CHANNEL").as_deref().map(str::trim) {
            None | Some("stable") => "stable".into(),
            Some("canary") => "canary".into(),
            Some(other) => return Err(format!("SKILLS_RELEASE_CHANNEL is stable or canary, not '{other}'")),
        },
        dir: env("OPENCLAW_SKILLS_DIR").map(PathBuf::from).unwrap_or_else(|| data_dir.join("workspace").join("skills")),
    };
    Ok(Config {
        url,
        credential,
        worker_id: env("WORKER_ID"),
        workspace_id: env("WORKSPACE_ID").unwrap_or_else(|| "default".into()),
        conversation_id: pick("--conversation", "OPENCLAW_CONVERSATION_ID"),
        agent_key: pick("--agent", "OPENCLAW_AGENT_KEY"),
        data_dir,
        engine,
        engine_timeout_ms: ms("--engine-timeout-ms", "OPENCLAW_TIMEOUT_MS", 120_000)?.max(100),
        heartbeat_ms: ms("--heartbeat-ms", "HEARTBEAT_INTERVAL_MS", 10_000)?.max(100),
        grace_ms: ms("--grace-ms", "SHUTDOWN_GRACE_MS", 20_000)?,
        http_timeout_ms: ms("", "HTTP_TIMEOUT_MS", 20_000)?.max(100),
        backend_lost_ms: ms("", "BACKEND_LOST_MS", 600_000)?,
        exit_with_parent: env("AGENT_FACTORY_EXIT_WITH_PARENT").is_some_and(|v| truthy(&v)),
        timing,
        skills,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn env_then_flags() {
        let e = env(&[
            ("AGENT_FACTORY_URL", "http://h:1/"),
            ("AGENT_FACTORY_BOOTSTRAP_CODE", "c"),
            ("POLL_INTERVAL_MS", "1500"),
            ("AGENT_FACTORY_VOLUME_DIR", "/v"),
            ("OPENCLAW_CONVERSATION_ID", "conv"),
            ("AGENT_FACTORY_EXIT_WITH_PARENT", "yes"),
        ]);
        let c = parse(&[], &e).unwrap();
        assert_eq!(c.url, "http://h:1");
        assert_eq!(c.credential, Credential::BootstrapCode("c".into()));
        assert_eq!(c.timing.idle_poll_ms, 1_500);
        assert_eq!(c.data_dir, PathBuf::from("/v"));
        assert_eq!(c.engine, Engine::Echo);
        assert_eq!(c.conversation_id.as_deref(), Some("conv"));
        assert!(c.exit_with_parent);
        let args: Vec<String> = ["--poll-ms", "700", "--engine", "python3 bot.py", "--data-dir", "/d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = parse(&args, &e).unwrap();
        assert_eq!((c.timing.idle_poll_ms, c.data_dir), (700, PathBuf::from("/d")));
        assert_eq!(c.engine, Engine::Command("python3 bot.py".into()));
    }

    #[test]
    fn refusals() {
        assert!(parse(&[], &env(&[])).unwrap_err().contains("AGENT_FACTORY_URL"));
        assert!(parse(&[], &env(&[("AGENT_FACTORY_URL", "u")])).unwrap_err().contains("BOOTSTRAP_CODE"));
        let e = env(&[("AGENT_FACTORY_URL", "u"), ("AGENT_FACTORY_WORKER_TOKEN", "t"), ("POLL_INTERVAL_MS", "soon")]);
        assert!(parse(&[], &e).unwrap_err().contains("POLL_INTERVAL_MS"), "a non-number is refused, not a busy loop");
        let e = env(&[("AGENT_FACTORY_URL", "u"), ("AGENT_FACTORY_WORKER_TOKEN", "t")]);
        assert!(parse(&["--nope".into()], &e).unwrap_err().contains("unknown argument"));
        assert!(parse(&["--poll-ms".into()], &e).unwrap_err().contains("needs a value"));
    }
}
