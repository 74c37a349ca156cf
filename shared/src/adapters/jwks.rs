//! The JSON Web Key Set of end users' tokens (`USER_TOKEN_JWKS_URL`), fetched over HTTPS and
//! cached: fresh for 10 minutes; a token naming a `kid` the cached set lacks (the provider rotated
//! its keys) refetches at once, at most every 30 s; a failed fetch keeps serving the last good set.

use crate::access::token::JwkSet;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

const FRESH_MS: Millis = 600_000;
const REFETCH_MIN_MS: Millis = 30_000;
const MAX_BYTES: usize = 256 * 1024;

#[derive(Default)]
struct State {
    set: Option<(Millis, Arc<JwkSet>)>,
    last_fetch: Option<Millis>,
}

pub struct JwksCache {
    url: Option<String>,
    http: Option<reqwest::Client>,
    state: Mutex<State>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache").field("url", &self.url).finish_non_exhaustive()
    }
}

impl JwksCache {
    pub fn new(url: Option<String>) -> Self {
        let http = url.as_ref().and_then(|_| reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok());
        Self { url, http, state: Mutex::new(State::default()) }
    }

    /// The key set (`None` when no URL is configured), fetched when stale or when it lacks `kid`.
    pub async fn keys(&self, now: Millis, kid: Option<&str>) -> AppResult<Option<Arc<JwkSet>>> {
        let Some(url) = &self.url else { return Ok(None) };
        let (cached, may_fetch) = {
            let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let cached = st.set.clone();
            let fresh = cached.as_ref().is_some_and(|(at, _)| now - at < FRESH_MS);
            let has_kid = |s: &JwkSet| kid.is_none_or(|k| s.keys.iter().any(|j| j.kid.as_deref() == Some(k)));
            if fresh && cached.as_ref().is_some_and(|(_, s)| has_kid(s)) {
                return Ok(cached.map(|(_, s)| s));
            }
            (cached, st.last_fetch.is_none_or(|t| now - t >= REFETCH_MIN_MS || now < t))
        };
        if !may_fetch {
            return Ok(cached.map(|(_, s)| s));
        }
        self.state.lock().unwrap_or_else(PoisonError::into_inner).last_fetch = Some(now);
        match self.fetch(url).await {
            Ok(set) => {
                let set = Arc::new(set);
                self.state.lock().unwrap_or_else(PoisonError::into_inner).set = Some((now, set.clone()));
                Ok(Some(set))
            }
            Err(e) => match cached {
                Some((_, s)) => {
                    tracing::warn!(error = %e, "user-token key set refetch failed; using the last good one");
                    Ok(Some(s))
                }
                None => Err(e),
            },
        }
    }

    async fn fetch(&self, url: &str) -> AppResult<JwkSet> {
        let unavailable = |why: String| AppError::Provider(format!("the user-token key set is unavailable: {why}"));
        let http = self.http.as_ref().ok_or_else(|| unavailable("no HTTP client".into()))?;
        let resp = http.get(url).send().await.map_err(|e| unavailable(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("HTTP {}", resp.status().as_u16())));
        }
        let body = resp.bytes().await.map_err(|e| unavailable(e.without_url().to_string()))?;
        if body.len() > MAX_BYTES {
            return Err(unavailable(format!("more than {MAX_BYTES} bytes")));
        }
        serde_json::from_slice(&body).map_err(|e| unavailable(format!("not a JWK set: {e}")))
    }
}
