//! An in-memory `WorkerProvider` with state and fault injection, for reconcile tests: machines
//! and volumes as state; faults: an outage (every call 503), 429 bursts with `Retry-After`,
//! failures of one kind of call, a machine vanishing, a machine stuck in `stopping`.

use shared::BoxFut;
use shared::reconcile::provider::{
    Machine, MachineSpec, MachineState, ProviderError, ProviderResult, Volume, VolumeSpec, WorkerProvider,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct FakeState {
    pub machines: BTreeMap<String, Machine>,
    /// The env each machine was created or last started with.
    pub envs: HashMap<String, BTreeMap<String, String>>,
    pub volumes: BTreeMap<String, Volume>,
    /// Machines that never leave `stopping` and refuse a non-forced destroy.
    pub stuck: HashSet<String>,
    /// Calls by name.
    pub calls: HashMap<&'static str, u32>,
    /// Failures to inject per call name (remaining count, error).
    pub fail: HashMap<&'static str, (u32, ProviderError)>,
    next_id: u32,
}

#[derive(Debug, Clone, Default)]
pub struct FakeProvider {
    pub state: Arc<Mutex<FakeState>>,
    /// Every call answers 503 while set.
    pub outage: Arc<AtomicBool>,
    /// The next N calls answer 429 with `Retry-After: 1`.
    pub rate_limited: Arc<AtomicU32>,
    pub kind: &'static str,
}

pub fn unavailable(status: u16) -> ProviderError {
    ProviderError::Retryable {
        status: Some(status),
        retry_after: (status == 429).then(|| Duration::from_secs(1)),
        message: format!("fake {status}"),
    }
}

impl FakeProvider {
    pub fn new() -> Self {
        Self { kind: "fly", ..Self::default() }
    }

    fn enter(&self, name: &'static str) -> ProviderResult<std::sync::MutexGuard<'_, FakeState>> {
        let mut s = self.state.lock().unwrap();
        *s.calls.entry(name).or_default() += 1;
        if self.outage.load(Ordering::SeqCst) {
            return Err(unavailable(503));
        }
        if self.rate_limited.load(Ordering::SeqCst) > 0 {
            self.rate_limited.fetch_sub(1, Ordering::SeqCst);
            return Err(unavailable(429));
        }
        if let Some((n, e)) = s.fail.get_mut(name)
            && *n > 0
        {
            *n -= 1;
            return Err(e.clone());
        }
        Ok(s)
    }

    /// Fail the next `n` calls named `name` with `e`.
    pub fn fail_next(&self, name: &'static str, n: u32, e: ProviderError) {
        self.state.lock().unwrap().fail.insert(name, (n, e));
    }

    /// Add a machine directly (an orphan, a foreign machine).
    pub fn put_machine(&self, m: Machine) {
        self.state.lock().unwrap().machines.insert(m.id.clone(), m);
    }

    /// The machine disappears (destroyed behind our back).
    pub fn vanish(&self, id: &str) {
        self.state.lock().unwrap().machines.remove(id);
    }

    /// The machine's process exits (Fly: `stopped`).
    pub fn exit(&self, id: &str) {
        if let Some(m) = self.state.lock().unwrap().machines.get_mut(id) {
            m.state = MachineState::Stopped;
        }
    }

    pub fn stick_in_stopping(&self, id: &str) {
        let mut s = self.state.lock().unwrap();
        s.stuck.insert(id.to_string());
        if let Some(m) = s.machines.get_mut(id) {
            m.state = MachineState::Stopping;
        }
    }

    /// Machines not gone.
    pub fn alive(&self) -> Vec<Machine> {
        self.state.lock().unwrap().machines.values().filter(|m| m.state != MachineState::Gone).cloned().collect()
    }

    pub fn volumes(&self) -> Vec<Volume> {
        self.state.lock().unwrap().volumes.values().cloned().collect()
    }

    pub fn env_of(&self, id: &str) -> BTreeMap<String, String> {
        self.state.lock().unwrap().envs.get(id).cloned().unwrap_or_default()
    }

    pub fn calls(&self, name: &str) -> u32 {
        self.state.lock().unwrap().calls.get(name).copied().unwrap_or(0)
    }
}

fn not_found(what: &str) -> ProviderError {
    ProviderError::NotFound { what: what.to_string() }
}

impl WorkerProvider for FakeProvider {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn app(&self) -> &str {
        "app"
    }

    fn list_machines(&self) -> BoxFut<'_, ProviderResult<Vec<Machine>>> {
        Box::pin(async move { Ok(self.enter("list_machines")?.machines.values().cloned().collect()) })
    }

    fn get_machine<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<Machine>> {
        Box::pin(async move { self.enter("get_machine")?.machines.get(id).cloned().ok_or_else(|| not_found(id)) })
    }

    fn create_machine<'a>(&'a self, spec: &'a MachineSpec) -> BoxFut<'a, ProviderResult<Machine>> {
        Box::pin(async move {
            let mut s = self.enter("create_machine")?;
            if let Some(m) = s.machines.values().find(|m| m.name == spec.name) {
                return Ok(m.clone());
            }
            s.next_id += 1;
            let id = format!("m{:04}", s.next_id);
            let m = Machine {
                id: id.clone(),
                name: spec.name.clone(),
                region: spec.region.clone(),
                image: spec.image.clone(),
                state: MachineState::Active,
                raw_state: "started".into(),
                metadata: spec.metadata.clone(),
                volume_ids: spec.mount.iter().map(|(v, _)| v.clone()).collect(),
            };
            s.envs.insert(id.clone(), spec.env.clone());
            s.machines.insert(id, m.clone());
            Ok(m)
        })
    }

    fn start_machine<'a>(&'a self, id: &'a str, env: &'a BTreeMap<String, String>) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(async move {
            let mut s = self.enter("start_machine")?;
            let m = s.machines.get_mut(id).ok_or_else(|| not_found(id))?;
            m.state = MachineState::Active;
            s.envs.insert(id.to_string(), env.clone());
            Ok(())
        })
    }

    fn stop_machine<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(async move {
            let mut s = self.enter("stop_machine")?;
            let stuck = s.stuck.contains(id);
            let m = s.machines.get_mut(id).ok_or_else(|| not_found(id))?;
            m.state = if stuck { MachineState::Stopping } else { MachineState::Stopped };
            Ok(())
        })
    }

    fn destroy_machine<'a>(&'a self, id: &'a str, force: bool) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(async move {
            let mut s = self.enter("destroy_machine")?;
            let m = s.machines.get(id).ok_or_else(|| not_found(id))?;
            if !force && m.state != MachineState::Stopped {
                return Err(ProviderError::Retryable {
                    status: Some(412),
                    retry_after: None,
                    message: "machine not stopped".into(),
                });
            }
            s.machines.remove(id);
            for v in s.volumes.values_mut() {
                if v.attached_machine.as_deref() == Some(id) {
                    v.attached_machine = None;
                }
            }
            Ok(())
        })
    }

    fn list_volumes(&self) -> BoxFut<'_, ProviderResult<Vec<Volume>>> {
        Box::pin(async move { Ok(self.enter("list_volumes")?.volumes.values().cloned().collect()) })
    }

    fn create_volume<'a>(&'a self, spec: &'a VolumeSpec) -> BoxFut<'a, ProviderResult<Volume>> {
        Box::pin(async move {
            let mut s = self.enter("create_volume")?;
            if let Some(v) = s.volumes.values().find(|v| v.name == spec.name && v.region == spec.region) {
                return Ok(v.clone());
            }
            s.next_id += 1;
            let v = Volume {
                id: format!("vol{:04}", s.next_id),
                name: spec.name.clone(),
                region: spec.region.clone(),
                attached_machine: None,
                metadata: spec.metadata.clone(),
            };
            s.volumes.insert(v.id.clone(), v.clone());
            Ok(v)
        })
    }

    fn delete_volume<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(async move {
            let mut s = self.enter("delete_volume")?;
            s.volumes.remove(id).map(|_| ()).ok_or_else(|| not_found(id))
        })
    }
}
