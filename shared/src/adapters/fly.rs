//! The Fly Machines provider: [`WorkerProvider`] over the Machines API (spec §8) with reqwest.
//!
//! - Base URL from `FLY_API_BASE` (`Config::fly_api_base`); the app name is given at
//!   construction; the API token is read from the `fly.apiToken` secret through [`Secrets`]
//!   and kept as a [`SecretValue`] (never logged, never in an error message).
//! - Every request has a timeout ([`FlyOptions::request_timeout`]; `wait` calls get theirs on
//!   top of Fly's own wait time).
//! - Errors are classified by HTTP status only (`reconcile::fly_rules::classify_status`):
//!   404 → `NotFound`; 408/409/412/429, 5xx, timeouts and connection errors → retried here with
//!   jittered exponential backoff, honouring `Retry-After`, for a bounded number of attempts,
//!   then `Retryable`; anything else → `Fatal`.
//! - Creates are idempotent by deterministic name: an existing machine (volume) of that name is
//!   returned; after an ambiguous failure (timeout, 409, 5xx) the machine is looked up by name
//!   before the create is tried again, so a create that succeeded unseen is not repeated.
//! - Destroy: stop, wait for `stopped` (`GET /machines/{id}/wait?state=stopped`), delete; with
//!   `force`, `DELETE ?force=true` at once.
//! - Client-side token buckets per action kind (`fly_rules::RateLimits`).
//! - `DEPLOYMENT_TAG` is put on every machine and volume created, with the caller's spec
//!   metadata; machines also always carry `WORKER_TAG` (their name, the worker id, unless the
//!   spec gives it).

use crate::BoxFut;
use crate::error::{AppError, AppResult};
use crate::reconcile::fly_rules::{
    ActionKind, RateLimits, RetryPolicy, StatusClass, TokenBucket, classify_status, machine_state, parse_retry_after,
    retry_delay, volume_gone,
};
use crate::reconcile::provider::{
    DEPLOYMENT_TAG, Machine, MachineSpec, MachineState, ProviderError, ProviderResult, Volume, VolumeSpec, WORKER_TAG,
    WorkerProvider,
};
use crate::secrets::{SecretValue, Secrets};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The secret ref of the Fly API token.
pub const TOKEN_REF: &str = "fly.apiToken";

/// Tunables of the adapter (defaults fit a Lambda invocation of a few minutes).
#[derive(Debug, Clone, PartialEq)]
pub struct FlyOptions {
    /// Per-request timeout (connect + response).
    pub request_timeout: Duration,
    /// Seconds Fly is asked to wait for `stopped` in one wait call.
    pub wait_secs: u32,
    pub retry: RetryPolicy,
    pub limits: RateLimits,
}

impl Default for FlyOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(15),
            wait_secs: 30,
            retry: RetryPolicy::default(),
            limits: RateLimits::default(),
        }
    }
}

/// Where and how to reach Fly, without the token.
#[derive(Debug, Clone, PartialEq)]
pub struct FlySettings {
    /// `FLY_API_BASE`.
    pub api_base: String,
    /// This deployment's id (`DEPLOYMENT_ID`), tagged on everything created.
    pub deployment_id: String,
    /// The Fly app (`FLY_APP_NAME`), when configured; an op argument may name another.
    pub app_name: Option<String>,
    pub options: FlyOptions,
}

impl FlySettings {
    pub fn from_config(cfg: &crate::config::Config, app_name: Option<String>) -> Self {
        Self {
            api_base: cfg.fly_api_base.clone(),
            deployment_id: cfg.deployment_id.clone(),
            app_name: app_name.map(|a| a.trim().to_string()).filter(|a| !a.is_empty()),
            options: FlyOptions::default(),
        }
    }
}

/// Where the API token comes from: given once, or read from the secret store at each request
/// (cached by [`Secrets`]; a rotated `fly.apiToken` takes effect within its cache time).
enum FlyToken {
    Fixed(SecretValue),
    Store(Secrets),
}

/// A [`WorkerProvider`] bound to one Fly app.
pub struct FlyProvider {
    http: reqwest::Client,
    base: String,
    app: String,
    deployment: String,
    token: FlyToken,
    opts: FlyOptions,
    started: Instant,
    buckets: Mutex<HashMap<ActionKind, TokenBucket>>,
}

impl std::fmt::Debug for FlyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlyProvider").field("base", &self.base).field("app", &self.app).finish_non_exhaustive()
    }
}

impl FlyProvider {
    /// A provider with the token given (tests; [`FlyProvider::from_secrets`] is the usual way).
    pub fn new(settings: &FlySettings, app: &str, token: SecretValue) -> AppResult<Self> {
        Self::build(settings, app, FlyToken::Fixed(token))
    }

    /// A provider for `app` that reads the `fly.apiToken` secret when it calls Fly (the reconcile
    /// function's: its provider factory is built before any secret is read).
    pub fn with_secret_store(settings: &FlySettings, app: &str, secrets: Secrets) -> AppResult<Self> {
        Self::build(settings, app, FlyToken::Store(secrets))
    }

    fn build(settings: &FlySettings, app: &str, token: FlyToken) -> AppResult<Self> {
        let app = app.trim();
        if app.is_empty() || app.len() > 63 {
            return Err(AppError::validation("the Fly app name must be 1 to 63 characters"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(settings.options.request_timeout)
            .build()
            .map_err(|e| AppError::internal_from("building the Fly HTTP client", e))?;
        Ok(Self {
            http,
            base: settings.api_base.trim_end_matches('/').to_string(),
            app: app.to_string(),
            deployment: settings.deployment_id.clone(),
            token,
            opts: settings.options.clone(),
            started: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// A provider for `app`, its token read from the `fly.apiToken` secret.
    pub async fn from_secrets(settings: &FlySettings, app: &str, secrets: &Secrets) -> AppResult<Self> {
        let token = secrets.get(TOKEN_REF).await?.filter(|t| !t.expose().trim().is_empty()).ok_or_else(|| {
            AppError::validation(format!("Missing active '{TOKEN_REF}' secret. Import it before using Fly."))
        })?;
        Self::new(settings, app, SecretValue::new(token.expose().trim()))
    }

    fn path(&self, rest: &str) -> String {
        format!("/apps/{}{rest}", enc(&self.app))
    }

    /// Wait for a token of `kind`'s bucket.
    async fn pace(&self, kind: ActionKind) {
        let wait = {
            let now = self.started.elapsed().as_secs_f64() * 1000.0;
            let mut b = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (rate, burst) = self.opts.limits.for_kind(kind);
            b.entry(kind).or_insert_with(|| TokenBucket::new(rate, burst)).take(now)
        };
        if !wait.is_zero() {
            tracing::debug!(?kind, wait_ms = wait.as_millis() as u64, "fly: client-side rate limit");
            tokio::time::sleep(wait).await;
        }
    }

    /// One request, no retry: the body as JSON (`Null` when empty), or the classified error.
    async fn once(
        &self,
        kind: ActionKind,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> ProviderResult<Value> {
        self.pace(kind).await;
        let timeout = match kind {
            ActionKind::Wait => self.opts.request_timeout + Duration::from_secs(u64::from(self.opts.wait_secs)),
            _ => self.opts.request_timeout,
        };
        let token = match &self.token {
            FlyToken::Fixed(t) => t.clone(),
            FlyToken::Store(secrets) => match secrets.get(TOKEN_REF).await {
                Ok(Some(t)) if !t.expose().trim().is_empty() => SecretValue::new(t.expose().trim()),
                Ok(_) => {
                    return Err(ProviderError::Fatal {
                        status: 401,
                        message: format!("Missing active '{TOKEN_REF}' secret. Import it before using Fly."),
                    });
                }
                Err(e) => {
                    return Err(ProviderError::Retryable {
                        status: None,
                        retry_after: None,
                        message: format!("reading '{TOKEN_REF}': {}", e.code().as_str()),
                    });
                }
            },
        };
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token.expose())
            .header("Content-Type", "application/json")
            .timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let what = format!("Fly API {method} {path}");
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let why = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                tracing::info!(%method, path, why, "fly request failed");
                return Err(ProviderError::Retryable {
                    status: None,
                    retry_after: None,
                    message: format!("{what} {why}"),
                });
            }
        };
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                let why = if e.is_timeout() { "timed out reading the response" } else { "lost the response" };
                return Err(ProviderError::Retryable {
                    status: Some(status),
                    retry_after: None,
                    message: format!("{what} {why}"),
                });
            }
        };
        tracing::debug!(%method, path, status, "fly request");
        if (200..300).contains(&status) {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|_| ProviderError::Retryable {
                status: Some(status),
                retry_after: None,
                message: format!("{what}: the response is not JSON"),
            });
        }
        let message = format!("{what} failed ({status}): {}", crate::ids::truncate(text.trim(), 300));
        Err(match classify_status(status) {
            StatusClass::NotFound => ProviderError::NotFound { what: message },
            StatusClass::Retryable => ProviderError::Retryable { status: Some(status), retry_after, message },
            StatusClass::Fatal => ProviderError::Fatal { status, message },
        })
    }

    /// A request retried while it is `Retryable`, within the retry policy.
    async fn call(
        &self,
        kind: ActionKind,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> ProviderResult<Value> {
        let mut attempt = 1;
        loop {
            match self.once(kind, method.clone(), path, body).await {
                Err(ProviderError::Retryable { status, retry_after, message }) => {
                    match retry_delay(&self.opts.retry, attempt, retry_after, random_u32()) {
                        Some(d) => {
                            tracing::info!(%method, path, ?status, attempt, delay_ms = d.as_millis() as u64, "fly: retrying");
                            tokio::time::sleep(d).await;
                            attempt += 1;
                        }
                        None => return Err(ProviderError::Retryable { status, retry_after, message }),
                    }
                }
                other => return other,
            }
        }
    }

    async fn list_machines_raw(&self) -> ProviderResult<Vec<Value>> {
        let v = self.call(ActionKind::Read, reqwest::Method::GET, &self.path("/machines"), None).await?;
        listing(v, "machines")
    }

    async fn find_machine_by_name(&self, name: &str) -> ProviderResult<Option<Machine>> {
        Ok(self
            .list_machines_raw()
            .await?
            .iter()
            .map(machine_from)
            .find(|m| m.name == name && m.state != MachineState::Gone))
    }

    async fn list_volumes_all(&self) -> ProviderResult<Vec<Volume>> {
        let v = self.call(ActionKind::Read, reqwest::Method::GET, &self.path("/volumes"), None).await?;
        Ok(listing(v, "volumes")?
            .iter()
            .filter(|v| !volume_gone(v["state"].as_str().unwrap_or_default()))
            .map(volume_from)
            .collect())
    }

    /// Metadata of something created: the caller's, plus this deployment's tag.
    fn tagged(&self, meta: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut m = meta.clone();
        m.insert(DEPLOYMENT_TAG.to_string(), self.deployment.clone());
        m
    }

    async fn create_machine_impl(&self, spec: &MachineSpec) -> ProviderResult<Machine> {
        if let Some(m) = self.find_machine_by_name(&spec.name).await? {
            return Ok(m);
        }
        let mut machine_meta = self.tagged(&spec.metadata);
        machine_meta.entry(WORKER_TAG.to_string()).or_insert_with(|| spec.name.clone());
        let mut config = json!({
            "image": spec.image,
            "env": spec.env,
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 2048},
            "metadata": machine_meta,
            // A worker that exits is done: no restart by Fly, the machine is reconciled away.
            "restart": {"policy": "no"},
        });
        if let Some((vol, path)) = &spec.mount {
            config["mounts"] = json!([{"volume": vol, "path": path}]);
        }
        let body = json!({"name": spec.name, "region": spec.region, "config": config});
        let mut attempt = 1;
        loop {
            match self.once(ActionKind::Create, reqwest::Method::POST, &self.path("/machines"), Some(&body)).await {
                Ok(v) => {
                    let mut m = machine_from(&v);
                    if m.id.is_empty() {
                        // An answer without the machine: find it by name.
                        return self.find_machine_by_name(&spec.name).await?.ok_or_else(|| ProviderError::Retryable {
                            status: None,
                            retry_after: None,
                            message: "Fly API: the create answered no machine id".into(),
                        });
                    }
                    if m.region.is_empty() {
                        m.region = spec.region.clone();
                    }
                    return Ok(m);
                }
                Err(ProviderError::Retryable { status, retry_after, message }) => {
                    // The create may have happened: look before trying again.
                    let delay = retry_delay(&self.opts.retry, attempt, retry_after, random_u32());
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    if let Some(m) = self.find_machine_by_name(&spec.name).await? {
                        return Ok(m);
                    }
                    if delay.is_none() {
                        return Err(ProviderError::Retryable { status, retry_after, message });
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn create_volume_impl(&self, spec: &VolumeSpec) -> ProviderResult<Volume> {
        let find = |vols: Vec<Volume>| vols.into_iter().find(|v| v.name == spec.name && v.region == spec.region);
        if let Some(v) = find(self.list_volumes_all().await?) {
            // A 32-bit name hash can collide (W-P7): another worker's volume is never reused.
            let owner = |m: &BTreeMap<String, String>| m.get(WORKER_TAG).cloned();
            if let (Some(theirs), Some(ours)) = (owner(&v.metadata), owner(&spec.metadata))
                && theirs != ours
            {
                return Err(ProviderError::Fatal {
                    status: 409,
                    message: format!("volume name {} is taken by worker {theirs}'s volume {}", spec.name, v.id),
                });
            }
            return Ok(v);
        }
        let body = json!({
            "name": spec.name, "region": spec.region, "size_gb": spec.size_gb,
            "metadata": self.tagged(&spec.metadata),
        });
        let mut attempt = 1;
        loop {
            match self.once(ActionKind::Volume, reqwest::Method::POST, &self.path("/volumes"), Some(&body)).await {
                Ok(v) if v["id"].as_str().is_some_and(|i| !i.is_empty()) => return Ok(volume_from(&v)),
                Ok(_) => {
                    return find(self.list_volumes_all().await?).ok_or_else(|| ProviderError::Retryable {
                        status: None,
                        retry_after: None,
                        message: "Fly API: the volume create answered no volume id".into(),
                    });
                }
                Err(ProviderError::Retryable { status, retry_after, message }) => {
                    let delay = retry_delay(&self.opts.retry, attempt, retry_after, random_u32());
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    if let Some(v) = find(self.list_volumes_all().await?) {
                        return Ok(v);
                    }
                    if delay.is_none() {
                        return Err(ProviderError::Retryable { status, retry_after, message });
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_machine_impl(&self, id: &str, env: &BTreeMap<String, String>) -> ProviderResult<()> {
        let p = self.path(&format!("/machines/{}", enc(id)));
        let current = self.call(ActionKind::Read, reqwest::Method::GET, &p, None).await?;
        let mut config = current["config"].clone();
        if !config.is_object() {
            config = json!({});
        }
        config["env"] = json!(env);
        let body = json!({"config": config, "skip_launch": true});
        self.call(ActionKind::Start, reqwest::Method::POST, &p, Some(&body)).await?;
        self.call(ActionKind::Start, reqwest::Method::POST, &format!("{p}/start"), None).await?;
        Ok(())
    }

    async fn destroy_machine_impl(&self, id: &str, force: bool) -> ProviderResult<()> {
        let p = self.path(&format!("/machines/{}", enc(id)));
        if force {
            self.call(ActionKind::Destroy, reqwest::Method::DELETE, &format!("{p}?force=true"), None).await?;
            return Ok(());
        }
        let raw = self.call(ActionKind::Read, reqwest::Method::GET, &p, None).await?;
        let current = machine_from(&raw);
        match current.state {
            MachineState::Gone => {
                return Err(ProviderError::NotFound { what: format!("machine {id} is {}", current.raw_state) });
            }
            MachineState::Active => {
                self.call(ActionKind::Stop, reqwest::Method::POST, &format!("{p}/stop"), None).await?;
            }
            MachineState::Stopping | MachineState::Stopped => {}
        }
        if current.state != MachineState::Stopped {
            // The instance id pins the wait to this version of the machine (as flyctl does).
            let mut wait = format!("{p}/wait?state=stopped&timeout={}", self.opts.wait_secs);
            if let Some(iid) = raw["instance_id"].as_str().filter(|i| !i.is_empty()) {
                wait.push_str(&format!("&instance_id={}", enc(iid)));
            }
            // One wait (no retry): a machine that does not stop within Fly's wait is the
            // caller's to force, not a reason to hold the invocation for minutes.
            self.once(ActionKind::Wait, reqwest::Method::GET, &wait, None).await?;
        }
        self.call(ActionKind::Destroy, reqwest::Method::DELETE, &p, None).await?;
        Ok(())
    }
}

impl WorkerProvider for FlyProvider {
    fn kind(&self) -> &'static str {
        "fly"
    }
    fn app(&self) -> &str {
        &self.app
    }
    fn list_machines(&self) -> BoxFut<'_, ProviderResult<Vec<Machine>>> {
        Box::pin(async move { Ok(self.list_machines_raw().await?.iter().map(machine_from).collect()) })
    }
    fn get_machine<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<Machine>> {
        Box::pin(async move {
            let p = self.path(&format!("/machines/{}", enc(id)));
            Ok(machine_from(&self.call(ActionKind::Read, reqwest::Method::GET, &p, None).await?))
        })
    }
    fn create_machine<'a>(&'a self, spec: &'a MachineSpec) -> BoxFut<'a, ProviderResult<Machine>> {
        Box::pin(self.create_machine_impl(spec))
    }
    fn start_machine<'a>(&'a self, id: &'a str, env: &'a BTreeMap<String, String>) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(self.start_machine_impl(id, env))
    }
    fn stop_machine<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(async move {
            let p = self.path(&format!("/machines/{}/stop", enc(id)));
            self.call(ActionKind::Stop, reqwest::Method::POST, &p, None).await.map(|_| ())
        })
    }
    fn destroy_machine<'a>(&'a self, id: &'a str, force: bool) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(self.destroy_machine_impl(id, force))
    }
    fn list_volumes(&self) -> BoxFut<'_, ProviderResult<Vec<Volume>>> {
        Box::pin(self.list_volumes_all())
    }
    fn create_volume<'a>(&'a self, spec: &'a VolumeSpec) -> BoxFut<'a, ProviderResult<Volume>> {
        Box::pin(self.create_volume_impl(spec))
    }
    fn delete_volume<'a>(&'a self, id: &'a str) -> BoxFut<'a, ProviderResult<()>> {
        Box::pin(async move {
            let p = self.path(&format!("/volumes/{}", enc(id)));
            self.call(ActionKind::VolumeDelete, reqwest::Method::DELETE, &p, None).await.map(|_| ())
        })
    }
}

/// A listing's body: a JSON array, else nothing may be concluded (an unexpected shape must never
/// read as "there are none").
fn listing(v: Value, what: &str) -> ProviderResult<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(ProviderError::Retryable {
            status: None,
            retry_after: None,
            message: format!("Fly API: the {what} listing is not a JSON array"),
        }),
    }
}

/// A Fly machine object → [`Machine`].
fn machine_from(v: &Value) -> Machine {
    let s = |x: &Value| x.as_str().unwrap_or_default().to_string();
    let raw_state = s(&v["state"]);
    let config = &v["config"];
    let image = [&v["image_ref"]["repository"], &config["image"]]
        .into_iter()
        .find_map(|x| x.as_str().filter(|i| !i.is_empty()))
        .unwrap_or_default()
        .to_string();
    let metadata = config["metadata"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
        .unwrap_or_default();
    let mut volume_ids: Vec<String> = config["mounts"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["volume"].as_str().filter(|x| !x.is_empty()).map(str::to_string)).collect())
        .unwrap_or_default();
    volume_ids.dedup();
    Machine {
        id: s(&v["id"]),
        name: s(&v["name"]),
        region: s(&v["region"]),
        image,
        state: machine_state(&raw_state),
        raw_state,
        metadata,
        volume_ids,
    }
}

/// A Fly volume object → [`Volume`].
fn volume_from(v: &Value) -> Volume {
    let s = |x: &Value| x.as_str().unwrap_or_default().to_string();
    Volume {
        id: s(&v["id"]),
        name: s(&v["name"]),
        region: s(&v["region"]),
        attached_machine: v["attached_machine_id"].as_str().filter(|x| !x.is_empty()).map(str::to_string),
        metadata: v["metadata"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
            .unwrap_or_default(),
    }
}

/// URI-component encoding of a path segment.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_and_volumes_parse_from_fly_json() {
        let m = machine_from(&json!({
            "id": "m1", "name": "w1", "state": "stopping", "region": "ams",
            "config": {"image": "img:1", "metadata": {DEPLOYMENT_TAG: "d", "n": 5},
                "mounts": [{"volume": "vol_1", "path": "/data"}]}
        }));
        assert_eq!((m.id.as_str(), m.name.as_str(), m.state), ("m1", "w1", MachineState::Stopping));
        assert_eq!(m.image, "img:1");
        assert!(m.tagged_for("d") && !m.tagged_for("e"));
        assert_eq!(m.metadata.len(), 1, "non-string metadata is dropped");
        assert_eq!(m.volume_ids, vec!["vol_1"]);
        let v = volume_from(&json!({"id": "vol_1", "name": "n", "region": "ams", "attached_machine_id": null}));
        assert_eq!(v.attached_machine, None);
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
