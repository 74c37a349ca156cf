//! The backend over HTTP: `POST <url>/worker/<op>` with the bearer token, JSON in and out, and
//! the presigned blob URLs. Every answer is classified by [`crate::rules::classify`]; the
//! client counts its requests per op (printed at exit: requests per message).

use crate::rules::{Answer, classify};
use crate::wire::ErrorEnvelope;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// A failed call: its classification and what to log.
#[derive(Debug, Clone)]
pub struct CallError {
    pub answer: Answer,
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "HTTP {s}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

pub type CallResult<T> = Result<T, CallError>;

#[derive(Debug)]
pub struct Backend {
    http: reqwest::Client,
    base: String,
    token: Mutex<Option<String>>,
    counts: Mutex<BTreeMap<String, u64>>,
}

fn transport(e: reqwest::Error) -> CallError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    CallError { answer: Answer::Transient, status: None, message: format!("{what}: {}", e.without_url()) }
}

impl Backend {
    pub fn new(base: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self { http, base: base.to_string(), token: Mutex::new(None), counts: Mutex::new(BTreeMap::new()) })
    }

    pub fn set_token(&self, t: String) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }

    fn count(&self, op: &str) {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(op.to_string()).or_default() += 1;
    }

    /// Requests made so far, per op (`blob-put`, `blob-get` for the presigned URLs).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One worker call.
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(&self, op: &str, body: &B) -> CallResult<T> {
        self.count(op);
        let mut req = self.http.post(format!("{}/worker/{op}", self.base)).json(body);
        if let Some(t) = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| CallError {
                answer: Answer::Refused,
                status: Some(status),
                message: format!("unexpected answer to /worker/{op}: {e}"),
            });
        }
        let env: ErrorEnvelope = serde_json::from_slice(&bytes).unwrap_or_default();
        let e = env.error;
        let answer = classify(Some(status), e.code.as_deref(), e.reason.as_deref(), e.retry_after_ms);
        let message = format!(
            "/worker/{op}: {}{}",
            e.code.as_deref().unwrap_or("error"),
            e.message.map(|m| format!(": {m}")).unwrap_or_default()
        );
        Err(CallError { answer, status: Some(status), message })
    }

    /// `PUT` (or the given method) of `bytes` to a presigned URL with its signed headers.
    pub async fn upload(
        &self,
        method: &str,
        url: &str,
        headers: &BTreeMap<String, String>,
        bytes: Vec<u8>,
    ) -> CallResult<()> {
        self.count("blob-put");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::PUT);
        let mut req = self.http.request(m, url).timeout(Duration::from_secs(600)).body(bytes);
        for (k, v) in headers {
            if !k.eq_ignore_ascii_case("content-length") {
                req = req.header(k, v);
            }
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(CallError {
            answer: classify(Some(status), None, None, None),
            status: Some(status),
            message: format!("snapshot upload refused: {}", body.chars().take(300).collect::<String>()),
        })
    }

    /// `GET` a presigned URL.
    pub async fn download(&self, url: &str) -> CallResult<Vec<u8>> {
        self.count("blob-get");
        let resp = self.http.get(url).timeout(Duration::from_secs(600)).send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(CallError {
                answer: classify(Some(status), None, None, None),
                status: Some(status),
                message: "snapshot download refused".into(),
            });
        }
        Ok(resp.bytes().await.map_err(transport)?.to_vec())
    }
}
