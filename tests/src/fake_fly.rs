//! A fake Fly Machines API for tests: apps, machines and volumes as state, the machine
//! lifecycle (create → started, stop → stopped, wait, destroy), metadata, and fault injection
//! (status codes with `Retry-After`, slow responses, a machine that vanishes, one stuck in
//! `stopping`). It records every request it gets (method, path, Authorization header, time).
//!
//! Lean on purpose: one fallback handler parses method and path by hand.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct FakeMachine {
    pub id: String,
    pub app: String,
    pub name: String,
    pub region: String,
    pub state: String,
    pub config: Value,
    /// `stop` leaves it in `stopping`; `wait` times out (408); a plain DELETE is refused (412).
    pub stuck_stopping: bool,
}

#[derive(Debug, Clone)]
pub struct FakeVolume {
    pub id: String,
    pub app: String,
    pub name: String,
    pub region: String,
    pub size_gb: u64,
    pub attached_machine_id: Option<String>,
    pub metadata: Value,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub authorization: Option<String>,
    pub at: Instant,
}

/// A fault: requests whose method is `method` and whose path contains `path_contains` get it,
/// `times` times. With `act`, the request still takes effect (before the delay and the status):
/// "it happened, but the answer was lost or late".
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: &'static str,
    pub path_contains: String,
    /// `None`: the normal answer (after `delay`).
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    pub body: String,
    pub delay: Duration,
    pub times: u32,
    pub act: bool,
    /// Match the path (with query) exactly instead of by fragment.
    pub exact: bool,
    /// Let this many matching requests through before the fault applies.
    pub after: u32,
    /// Remove this machine just before the request is served (it vanished meanwhile).
    pub vanish: Option<String>,
}

impl Fault {
    pub fn status(method: &'static str, path_contains: &str, status: u16, times: u32) -> Self {
        Self {
            method,
            path_contains: path_contains.to_string(),
            status: Some(status),
            retry_after: None,
            body: format!("{{\"error\":\"injected {status}\"}}"),
            delay: Duration::ZERO,
            times,
            act: false,
            exact: false,
            after: 0,
            vanish: None,
        }
    }
    /// The machine `id` disappears when the first request matching `method` and `path_contains`
    /// arrives; the request is then served normally (so it sees the machine gone).
    pub fn vanish(method: &'static str, path_contains: &str, id: &str) -> Self {
        Self { status: None, vanish: Some(id.to_string()), ..Self::status(method, path_contains, 200, 1) }
    }
    pub fn slow(method: &'static str, path_contains: &str, delay: Duration, act: bool) -> Self {
        Self { status: None, delay, act, ..Self::status(method, path_contains, 200, 1) }
    }
    pub fn retry_after(mut self, secs: &str) -> Self {
        self.retry_after = Some(secs.to_string());
        self
    }
    pub fn exact(mut self) -> Self {
        self.exact = true;
        self
    }
    pub fn after(mut self, n: u32) -> Self {
        self.after = n;
        self
    }
    fn matches(&self, method: &str, full: &str) -> bool {
        self.times > 0
            && self.method == method
            && if self.exact { full == self.path_contains } else { full.contains(&self.path_contains) }
    }
    pub fn body(mut self, b: &str) -> Self {
        self.body = b.to_string();
        self
    }
}

#[derive(Debug, Default)]
pub struct FlyState {
    pub apps: Vec<String>,
    pub machines: BTreeMap<String, FakeMachine>,
    pub volumes: BTreeMap<String, FakeVolume>,
    pub requests: Vec<Recorded>,
    pub faults: Vec<Fault>,
    next: u64,
}

impl FlyState {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{:06}", self.next)
    }
}

/// A running fake; dropped with the test's runtime.
#[derive(Clone)]
pub struct FakeFly {
    pub url: String,
    pub state: Arc<Mutex<FlyState>>,
}

impl FakeFly {
    /// Start on a free port with the given apps.
    pub async fn start(apps: &[&str]) -> Self {
        let state = Arc::new(Mutex::new(FlyState {
            apps: apps.iter().map(|a| a.to_string()).collect(),
            ..FlyState::default()
        }));
        let router = axum::Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake fly");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, state }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, FlyState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn fault(&self, f: Fault) {
        self.lock().faults.push(f);
    }

    /// A machine put straight into the state (as if made by someone else), with its metadata.
    pub fn seed_machine(&self, app: &str, name: &str, state: &str, metadata: Value) -> String {
        let mut s = self.lock();
        let id = s.id("m");
        let m = FakeMachine {
            id: id.clone(),
            app: app.into(),
            name: name.into(),
            region: "ams".into(),
            state: state.into(),
            config: json!({"image": "img", "metadata": metadata}),
            stuck_stopping: false,
        };
        s.machines.insert(id.clone(), m);
        id
    }

    pub fn seed_volume(&self, app: &str, name: &str, attached: Option<&str>, metadata: Value) -> String {
        let mut s = self.lock();
        let id = s.id("vol_");
        let v = FakeVolume {
            id: id.clone(),
            app: app.into(),
            name: name.into(),
            region: "ams".into(),
            size_gb: 1,
            attached_machine_id: attached.map(str::to_string),
            metadata,
        };
        if let Some(m) = attached.and_then(|m| s.machines.get_mut(m)) {
            m.config["mounts"] = json!([{"volume": id, "path": "/data"}]);
        }
        s.volumes.insert(id.clone(), v);
        id
    }

    pub fn set_stuck(&self, id: &str) {
        if let Some(m) = self.lock().machines.get_mut(id) {
            m.stuck_stopping = true;
        }
    }

    /// The machine disappears (as if destroyed behind our back).
    pub fn vanish(&self, id: &str) {
        self.lock().machines.remove(id);
    }

    pub fn machine(&self, id: &str) -> Option<FakeMachine> {
        self.lock().machines.get(id).cloned()
    }

    pub fn machine_ids(&self) -> Vec<String> {
        self.lock().machines.keys().cloned().collect()
    }

    pub fn volume_ids(&self) -> Vec<String> {
        self.lock().volumes.keys().cloned().collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Requests matching method and a path fragment.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.lock().requests.iter().filter(|r| r.method == method && r.path.contains(path_contains)).count()
    }

    /// Requests that changed something (POST, DELETE).
    pub fn writes(&self) -> usize {
        self.lock().requests.iter().filter(|r| r.method != "GET").count()
    }
}

fn machine_json(m: &FakeMachine) -> Value {
    json!({"id": m.id, "name": m.name, "state": m.state, "region": m.region, "instance_id": "i1", "config": m.config})
}

fn volume_json(v: &FakeVolume) -> Value {
    json!({"id": v.id, "name": v.name, "region": v.region, "state": "created", "size_gb": v.size_gb,
        "attached_machine_id": v.attached_machine_id, "metadata": v.metadata})
}

fn reply(status: u16, body: Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert("content-type", "application/json".parse().expect("header"));
    r
}

fn err(status: u16, msg: &str) -> (u16, Value) {
    (status, json!({"error": msg}))
}

async fn handle(State(state): State<Arc<Mutex<FlyState>>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let full = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };

    let (fault, wait_stuck, answer) = {
        let mut s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.requests.push(Recorded {
            method: method.to_string(),
            path: full.clone(),
            authorization: auth.clone(),
            at: Instant::now(),
        });
        let fault = s.faults.iter_mut().find(|f| f.matches(method.as_str(), &full)).and_then(|f| {
            if f.after > 0 {
                f.after -= 1;
                return None;
            }
            f.times -= 1;
            Some(f.clone())
        });
        if let Some(id) = fault.as_ref().and_then(|f| f.vanish.as_ref()) {
            s.machines.remove(id);
        }
        let act = fault.as_ref().is_none_or(|f| f.act || f.status.is_none());
        let mut wait_stuck = false;
        let answer = if auth.as_deref().is_none_or(|a| !a.starts_with("Bearer ") || a.len() <= 7) {
            err(401, "unauthorized")
        } else if act {
            route(&mut s, &method, &path, &query, body, &mut wait_stuck)
        } else {
            (0, Value::Null)
        };
        (fault, wait_stuck, answer)
    };
    if wait_stuck {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(f) = fault {
        tokio::time::sleep(f.delay).await;
        if let Some(st) = f.status {
            let mut r = reply(st, serde_json::from_str(&f.body).unwrap_or(json!({"error": f.body})));
            if let Some(ra) = f.retry_after {
                r.headers_mut().insert("retry-after", ra.parse().expect("header"));
            }
            return r;
        }
    }
    reply(answer.0, answer.1).into_response()
}

/// The API itself, on the locked state.
fn route(
    s: &mut FlyState,
    method: &Method,
    path: &str,
    query: &str,
    body: Value,
    wait_stuck: &mut bool,
) -> (u16, Value) {
    let parts: Vec<&str> = path.trim_start_matches("/v1").trim_matches('/').split('/').collect();
    let ["apps", app, rest @ ..] = parts.as_slice() else { return err(404, "no such route") };
    let app = app.to_string();
    if !s.apps.contains(&app) {
        return err(404, "app not found");
    }
    match (method.as_str(), rest) {
        ("GET", []) => (200, json!({"name": app})),
        ("GET", ["machines"]) => {
            (200, Value::Array(s.machines.values().filter(|m| m.app == app).map(machine_json).collect()))
        }
        ("POST", ["machines"]) => {
            let name = body["name"].as_str().unwrap_or_default().to_string();
            if s.machines.values().any(|m| m.app == app && m.name == name && !name.is_empty()) {
                return err(409, "a machine with this name already exists");
            }
            let id = s.id("m");
            let config = body["config"].clone();
            for mount in config["mounts"].as_array().cloned().unwrap_or_default() {
                if let Some(v) = mount["volume"].as_str().and_then(|v| s.volumes.get_mut(v)) {
                    v.attached_machine_id = Some(id.clone());
                }
            }
            let m = FakeMachine {
                id: id.clone(),
                app,
                name,
                region: body["region"].as_str().unwrap_or("ams").to_string(),
                state: "started".into(),
                config,
                stuck_stopping: false,
            };
            let out = machine_json(&m);
            s.machines.insert(id, m);
            (200, out)
        }
        (_, ["machines", id, more @ ..]) => {
            let id = id.to_string();
            let Some(m) = s.machines.get_mut(&id).filter(|m| m.app == app) else {
                return err(404, "machine not found");
            };
            match (method.as_str(), more) {
                ("GET", []) => (200, machine_json(m)),
                ("POST", []) => {
                    if body["config"].is_object() {
                        m.config = body["config"].clone();
                    }
                    if body["skip_launch"] != json!(true) {
                        m.state = "started".into();
                    }
                    (200, machine_json(m))
                }
                ("POST", ["stop"]) => {
                    m.state = if m.stuck_stopping { "stopping" } else { "stopped" }.into();
                    (200, json!({"ok": true}))
                }
                ("POST", ["start"]) => {
                    m.state = "started".into();
                    (200, json!({"previous_state": "stopped"}))
                }
                ("GET", ["wait"]) => {
                    let want = query.split('&').find_map(|kv| kv.strip_prefix("state=")).unwrap_or("started");
                    if m.state == want {
                        (200, json!({"ok": true}))
                    } else {
                        *wait_stuck = true;
                        err(408, "deadline exceeded waiting for machine state")
                    }
                }
                ("DELETE", []) => {
                    let force = query.split('&').any(|kv| kv == "force=true");
                    if !force && m.state != "stopped" {
                        return err(412, "failed_precondition: machine still active, stop it or use force=true");
                    }
                    s.machines.remove(&id);
                    for v in s.volumes.values_mut().filter(|v| v.attached_machine_id.as_deref() == Some(id.as_str())) {
                        v.attached_machine_id = None;
                    }
                    (200, json!({"ok": true}))
                }
                _ => err(404, "no such route"),
            }
        }
        ("GET", ["volumes"]) => {
            (200, Value::Array(s.volumes.values().filter(|v| v.app == app).map(volume_json).collect()))
        }
        ("POST", ["volumes"]) => {
            let id = s.id("vol_");
            let v = FakeVolume {
                id: id.clone(),
                app,
                name: body["name"].as_str().unwrap_or_default().to_string(),
                region: body["region"].as_str().unwrap_or_default().to_string(),
                size_gb: body["size_gb"].as_u64().unwrap_or(1),
                attached_machine_id: None,
                metadata: body["metadata"].clone(),
            };
            let out = volume_json(&v);
            s.volumes.insert(id, v);
            (200, out)
        }
        ("DELETE", ["volumes", id]) => match s.volumes.get(*id).filter(|v| v.app == app) {
            None => err(404, "volume not found"),
            Some(v) if v.attached_machine_id.is_some() => err(412, "volume is attached to a machine"),
            Some(_) => {
                s.volumes.remove(*id);
                (200, json!({"ok": true}))
            }
        },
        _ => err(404, "no such route"),
    }
}
