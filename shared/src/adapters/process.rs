//! The `process` provider: each worker "machine" is a child process of this process (the local
//! runner), started with a configured command (`sh -c <command>`) and the spawn env; a volume
//! is a directory under the data dir (the child's working directory, also in
//! `AGENT_FACTORY_VOLUME_DIR`). So the whole system runs on one machine.
//!
//! Machines live as long as this process: children are killed when it exits (they are tracked
//! in memory only), and their rows are then retired by the next cycle as "machine missing".

use crate::BoxFut;
use crate::reconcile::provider::{
    Machine, MachineSpec, MachineState, ProviderError, ProviderResult, Volume, VolumeSpec, WorkerProvider,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

struct Proc {
    machine: Machine,
    spec: MachineSpec,
    child: Option<Child>,
}

#[derive(Default)]
struct State {
    procs: BTreeMap<String, Proc>,
    volumes: BTreeMap<String, Volume>,
    next: u64,
}

/// Runs workers as local child processes.
pub struct ProcessProvider {
    app: String,
    command: String,
    root: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for ProcessProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessProvider").field("app", &self.app).field("root", &self.root).finish_non_exhaustive()
    }
}

fn fatal(m: impl Into<String>) -> ProviderError {
    ProviderError::Fatal { status: 400, message: m.into() }
}

fn not_found(what: &str) -> ProviderError {
    ProviderError::NotFound { what: what.to_string() }
}

impl ProcessProvider {
    /// `command` runs through `sh -c`; volumes go under `<root>/volumes/`.
    pub fn new(app: &str, command: &str, root: &Path) -> Self {
        Self { app: app.into(), command: command.into(), root: root.to_path_buf(), state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    fn spawn(&self, spec: &MachineSpec, vols: &BTreeMap<String, Volume>) -> ProviderResult<Child> {
        if self.command.trim().is_empty() {
            return Err(fatal("no worker command configured for the process provider"));
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&self.command).envs(&spec.env).stdin(Stdio::null());
        // Its machines live as long as this process: a worker that outlives it (this process
        // killed hard) stops on its own (the reference worker watches its parent).
        cmd.env("AGENT_FACTORY_EXIT_WITH_PARENT", "1");
        if let Some((vid, mount)) = &spec.mount {
            let v = vols.get(vid).ok_or_else(|| not_found(vid))?;
            let dir = self.volume_dir(&v.name);
            cmd.current_dir(&dir).env("AGENT_FACTORY_VOLUME_DIR", &dir);
            // Paths under the machine's mount path (`/data/workspace/skills`, ...) point into
            // this process's volume directory: there is no mount here.
            let mount = mount.trim_end_matches('/');
            for (k, val) in &spec.env {
                if let Some(rest) = val.strip_prefix(mount).filter(|r| r.is_empty() || r.starts_with('/')) {
                    cmd.env(k, format!("{}{rest}", dir.display()));
                }
            }
        }
        cmd.spawn().map_err(|e| ProviderError::Retryable {
            status: None,
            retry_after: None,
            message: format!("starting the worker process: {e}"),
        })
    }
}

/// Refresh a process's state from its child: exited means stopped.
fn poll(p: &mut Proc) {
    if let Some(c) = p.child.as_mut()
        && !matches!(c.try_wait(), Ok(None))
    {
        p.child = None;
    }
    if p.child.is_none() && p.machine.state != MachineState::Gone {
        p.machine.state = MachineState::Stopped;
        p.machine.raw_state = "stopped".into();
    }
}

fn kill(p: &mut Proc) {
    if let Some(mut c) = p.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for ProcessProvider {
    fn drop(&mut self) {
        let mut s = self.lock();
        for p in s.procs.values_mut() {
            kill(p);
        }
    }
}

impl WorkerProvider for ProcessProvider {
    fn kind(&self) -> &'static str {
        "process"
    }
    fn app(&self) -> &str {
        &self.app
    }

    fn list_machines(&self) -> BoxFut<'_, ProviderResult<Vec<Machine>>> {
        Box::pin(async move {
            let mut s = self.lock();
            Ok(s.procs
                .values_mut()
                .map(|p| {
                    poll(p);
                    p.machine.clone()
                })
                .collect())
        })
    }

    fn get_machine<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<Machine>> {
        Box::pin(async move {
            let mut s = self.lock();
            let p = s.procs.get_mut(id).ok_or_else(|| not_found(id))?;
            poll(p);
            Ok(p.machine.clone())
        })
    }

    fn create_machine<'a>(&'a self, spec: &'a MachineSpec) -> BoxFut<'a, ProviderResult<Machine>> {
        Box::pin(async move {
            let mut s = self.lock();
            if let Some(p) = s.procs.values().find(|p| p.machine.name == spec.name) {
                return Ok(p.machine.clone());
            }
            let child = self.spawn(spec, &s.volumes)?;
            s.next += 1;
            let id = format!("p{:06}", s.next);
            let machine = Machine {
                id: id.clone(),
                name: spec.name.clone(),
                region: "local".into(),
                image: String::new(),
                state: MachineState::Active,
                raw_state: "started".into(),
                metadata: spec.metadata.clone(),
                volume_ids: spec.mount.iter().map(|(v, _)| v.clone()).collect(),
            };
            if let Some((vid, _)) = &spec.mount
                && let Some(v) = s.volumes.get_mut(vid)
            {
                v.attached_machine = Some(id.clone());
            }
            s.procs.insert(id, Proc { machine: machine.clone(), spec: spec.clone(), child: Some(child) });
            Ok(machine)
        })
    }

    fn start_machine<'a>(&'a self, id: &'a str, env: &'a BTreeMap<String, String>) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(async move {
            let mut s = self.lock();
            let vols = s.volumes.clone();
            let p = s.procs.get_mut(id).ok_or_else(|| not_found(id))?;
            poll(p);
            if p.child.is_some() {
                return Ok(());
            }
            p.spec.env = env.clone();
            p.child = Some(self.spawn(&p.spec, &vols)?);
            p.machine.state = MachineState::Active;
            p.machine.raw_state = "started".into();
            Ok(())
        })
    }

    fn stop_machine<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(async move {
            let mut s = self.lock();
            let p = s.procs.get_mut(id).ok_or_else(|| not_found(id))?;
            kill(p);
            poll(p);
            Ok(())
        })
    }

    fn destroy_machine<'a>(&'a self, id: &'a str, _force: bool) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(async move {
            let mut s = self.lock();
            let mut p = s.procs.remove(id).ok_or_else(|| not_found(id))?;
            kill(&mut p);
            for v in s.volumes.values_mut() {
                if v.attached_machine.as_deref() == Some(id) {
                    v.attached_machine = None;
                }
            }
            Ok(())
        })
    }

    fn list_volumes(&self) -> BoxFut<'_, ProviderResult<Vec<Volume>>> {
        Box::pin(async move { Ok(self.lock().volumes.values().cloned().collect()) })
    }

    fn create_volume<'a>(&'a self, spec: &'a VolumeSpec) -> BoxFut<'a, ProviderResult<Volume>> {
        Box::pin(async move {
            let mut s = self.lock();
            if let Some(v) = s.volumes.values().find(|v| v.name == spec.name) {
                return Ok(v.clone());
            }
            if spec.name.is_empty() || !spec.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(fatal("volume names are [A-Za-z0-9_]"));
            }
            std::fs::create_dir_all(self.volume_dir(&spec.name)).map_err(|e| ProviderError::Retryable {
                status: None,
                retry_after: None,
                message: format!("creating the volume directory: {e}"),
            })?;
            s.next += 1;
            let v = Volume {
                id: format!("vol{:06}", s.next),
                name: spec.name.clone(),
                region: "local".into(),
                attached_machine: None,
                metadata: spec.metadata.clone(),
            };
            s.volumes.insert(v.id.clone(), v.clone());
            Ok(v)
        })
    }

    fn delete_volume<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(async move {
            let mut s = self.lock();
            let v = s.volumes.get(id).ok_or_else(|| not_found(id))?;
            if let Some(m) = &v.attached_machine {
                return Err(ProviderError::Retryable {
                    status: Some(412),
                    retry_after: None,
                    message: format!("volume attached to {m}"),
                });
            }
            let dir = self.volume_dir(&v.name);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ProviderError::Retryable {
                        status: None,
                        retry_after: None,
                        message: format!("deleting the volume directory: {e}"),
                    });
                }
            }
            s.volumes.remove(id);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, vol: Option<String>) -> MachineSpec {
        MachineSpec {
            name: name.into(),
            region: String::new(),
            image: String::new(),
            env: BTreeMap::from([("WORKER_ID".to_string(), name.to_string())]),
            mount: vol.map(|v| (v, "/data".to_string())),
            metadata: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn runs_stops_and_destroys_child_processes_with_their_volume_dirs() {
        let root = std::env::temp_dir().join(format!("af-proc-{:016x}", crate::ids::random_u128() as u64));
        // The worker writes its id into its volume, then sleeps (or exits when told to).
        let p = ProcessProvider::new("local", "echo $WORKER_ID > id.txt; exec sleep 30", &root);
        let v = p
            .create_volume(&VolumeSpec {
                name: "v_w1".into(),
                region: String::new(),
                size_gb: 1,
                metadata: BTreeMap::new(),
            })
            .await
            .unwrap();
        let m = p.create_machine(&spec("w1", Some(v.id.clone()))).await.unwrap();
        assert_eq!(p.create_machine(&spec("w1", Some(v.id.clone()))).await.unwrap().id, m.id, "idempotent by name");
        assert_eq!(p.list_machines().await.unwrap()[0].state, MachineState::Active);
        for _ in 0..50 {
            if root.join("volumes/v_w1/id.txt").exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(std::fs::read_to_string(root.join("volumes/v_w1/id.txt")).unwrap().trim(), "w1");
        assert!(p.delete_volume(&v.id).await.unwrap_err().is_retryable(), "attached");
        p.stop_machine(&m.id).await.unwrap();
        assert_eq!(p.get_machine(&m.id).await.unwrap().state, MachineState::Stopped);
        p.destroy_machine(&m.id, false).await.unwrap();
        assert!(p.destroy_machine(&m.id, false).await.unwrap_err().is_not_found());
        p.delete_volume(&v.id).await.unwrap();
        assert!(!root.join("volumes/v_w1").exists());
        // A process that exits on its own is listed as stopped.
        let q = ProcessProvider::new("local", "exit 0", &root);
        let m = q.create_machine(&spec("w2", None)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(q.get_machine(&m.id).await.unwrap().state, MachineState::Stopped);
        let _ = std::fs::remove_dir_all(&root);
    }
}
