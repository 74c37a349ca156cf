//! The worker protocol: `POST /worker/<op>` with JSON bodies (architecture §3), independent of
//! the HTTP framework so the `claim` Lambda and the local runner share it.
//!
//! Every route is one entry of [`ROUTES`]: how it authenticates ([`Auth`]), whether an empty
//! body is allowed, whether its argument type takes the caller's `workerId`, and its body.

mod routes;

use crate::BoxFut;
use crate::app::App;
use crate::error::{AppError, AppResult};
use crate::workers::auth::{Authenticator, Claimed, Principal};
use crate::workers::model::WorkerItem;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use routes::ROUTES;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How a route authenticates its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The token, trusted for `WORKER_AUTH_CACHE_MS` once verified (writes re-check it in
    /// their own conditional writes).
    Token,
    /// The token checked against a fresh read of the worker row, which the route gets.
    Row,
    /// The token's worker only; the route checks the token on the worker row it reads together
    /// with its data (hydration: one BatchGetItem), never from the cache.
    Deferred,
    /// No token: the body carries a single-use credential the route checks itself (the
    /// bootstrap code a spawned worker exchanges for its token).
    Code,
}

/// Who called, as far as the route's [`Auth`] mode established it.
#[derive(Debug)]
pub enum Caller {
    Verified(Principal),
    WithRow(Principal, Box<WorkerItem>),
    Unverified(Claimed),
    /// No token was presented (`Auth::Code` routes).
    Anonymous,
}

impl Caller {
    /// The verified caller.
    pub fn principal(&self) -> AppResult<&Principal> {
        match self {
            Caller::Verified(p) | Caller::WithRow(p, _) => Ok(p),
            Caller::Unverified(_) | Caller::Anonymous => Err(AppError::internal("route needs a verified caller")),
        }
    }

    /// The verified caller and its freshly read worker row.
    pub fn with_row(self) -> AppResult<(Principal, WorkerItem)> {
        match self {
            Caller::WithRow(p, w) => Ok((p, *w)),
            _ => Err(AppError::internal("route needs the worker row")),
        }
    }

    /// The caller as the token names it, to be verified by the route.
    pub fn unverified(self) -> AppResult<Claimed> {
        match self {
            Caller::Unverified(c) => Ok(c),
            _ => Err(AppError::internal("route verifies its caller itself")),
        }
    }

    fn worker_id(&self) -> &str {
        match self {
            Caller::Verified(p) | Caller::WithRow(p, _) => &p.worker_id,
            Caller::Unverified(c) => c.worker_id(),
            Caller::Anonymous => "",
        }
    }
}

/// The body of one route: its typed arguments are parsed from the checked JSON body.
pub type RouteFn = for<'a> fn(&'a App, Caller, Value) -> BoxFut<'a, AppResult<Value>>;

/// One `/worker/<op>` route.
#[derive(Debug)]
pub struct Route {
    pub op: &'static str,
    pub auth: Auth,
    /// Whether the route may be called with an empty body (it then gets `{}`).
    pub empty_body_ok: bool,
    /// Whether the route's argument type carries the caller's `workerId` (the token's worker
    /// is put there); every other route's body loses the key once checked.
    pub takes_worker_id: bool,
    pub run: RouteFn,
}

/// Declare one route: `route!("op", Auth::Token, empty_ok, takes_worker_id, |app, who, a: Args| expr)`.
macro_rules! route {
    ($op:literal, $auth:expr, $empty:expr, $wid:expr, |$app:ident, $who:ident, $a:ident : $T:ty| $body:expr) => {
        $crate::worker_api::Route {
            op: $op,
            auth: $auth,
            empty_body_ok: $empty,
            takes_worker_id: $wid,
            run: {
                fn run<'a>(
                    $app: &'a $crate::app::App,
                    $who: $crate::worker_api::Caller,
                    body: ::serde_json::Value,
                ) -> $crate::BoxFut<'a, $crate::AppResult<::serde_json::Value>> {
                    ::std::boxed::Box::pin(async move {
                        let $a: $T = $crate::worker_api::typed($op, body)?;
                        $crate::envelope::to_json($body)
                    })
                }
                run
            },
        }
    };
}
pub(crate) use route;

/// A response: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerResponse {
    pub status: u16,
    pub body: Value,
}

impl WorkerResponse {
    fn ok(body: Value) -> Self {
        Self { status: 200, body }
    }
    pub fn error(e: &AppError) -> Self {
        Self { status: e.code().http_status(), body: e.to_body() }
    }
}

/// The JSON body of `/worker/<op>`, checked: an object (or `{}` for an empty body where the route
/// allows it). A `workerId` in the body (older workers send one) must be the token's worker,
/// else 403; it is never trusted: routes that take one get the token's worker, the others never
/// see the key.
fn checked_body(r: &Route, body: &[u8], worker_id: &str) -> AppResult<Value> {
    let op = r.op;
    let mut v: Value = if body.is_empty() && r.empty_body_ok {
        json!({})
    } else if body.is_empty() {
        return Err(AppError::validation(format!("POST /worker/{op} needs a JSON object body")));
    } else {
        serde_json::from_slice(body).map_err(|e| AppError::validation(format!("malformed JSON: {e}")))?
    };
    let Some(obj) = v.as_object_mut() else {
        return Err(AppError::validation("the body must be a JSON object"));
    };
    match obj.remove("workerId") {
        Some(Value::String(w)) if w != worker_id => {
            return Err(AppError::Forbidden(format!(
                "workerId '{}' in the body is not the worker of this token",
                crate::ids::truncate(&w, 60)
            )));
        }
        Some(w) if !w.is_string() => return Err(AppError::validation("workerId must be a string")),
        _ => {}
    }
    if r.takes_worker_id {
        obj.insert("workerId".into(), Value::String(worker_id.to_string()));
    }
    Ok(v)
}

/// A checked body as the route's argument type, with a precise error.
pub fn typed<T: DeserializeOwned>(op: &str, v: Value) -> AppResult<T> {
    serde_json::from_value(v).map_err(|e| AppError::validation(format!("invalid body for /worker/{op}: {e}")))
}

/// One worker call, as any HTTP front end sees it.
#[derive(Debug, Clone, Copy)]
pub struct WorkerRequest<'a> {
    pub method: &'a str,
    /// The request path, e.g. `/worker/claim`.
    pub path: &'a str,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

/// Handle one request; every outcome is logged once, here.
pub async fn handle(app: &App, req: WorkerRequest<'_>) -> WorkerResponse {
    let path = req.path;
    match dispatch(app, req).await {
        Ok(v) => {
            worker_metrics(app, &req, &v);
            WorkerResponse::ok(v)
        }
        Err(e) => {
            e.log(path);
            WorkerResponse::error(&e)
        }
    }
}

/// The EMF metric line of a successful call (claims, completes with their tokens, failures).
fn worker_metrics(app: &App, req: &WorkerRequest<'_>, v: &Value) {
    let op = req.path.strip_prefix("/worker/").unwrap_or_default();
    let usage = (op == "complete")
        .then(|| serde_json::from_slice::<Value>(req.body).ok())
        .flatten()
        .and_then(|b| Some((b["usage"]["inputTokens"].as_u64()?, b["usage"]["outputTokens"].as_u64()?)));
    crate::metrics::worker_route(app.now(), op, v, usage);
}

/// The route a path names.
pub fn find_route(path: &str) -> AppResult<&'static Route> {
    let op = path
        .strip_prefix("/worker/")
        .filter(|o| !o.is_empty() && !o.contains('/'))
        .ok_or_else(|| AppError::not_found(format!("no route for {}", crate::ids::truncate(path, 80))))?;
    ROUTES.iter().find(|r| r.op == op).ok_or_else(|| {
        AppError::not_found(format!(
            "unknown worker op '{}'; known: {}",
            crate::ids::truncate(op, 40),
            ROUTES.iter().map(|r| r.op).collect::<Vec<_>>().join(", ")
        ))
    })
}

async fn dispatch(app: &App, req: WorkerRequest<'_>) -> AppResult<Value> {
    let WorkerRequest { method, path, authorization, body } = req;
    let r = find_route(path)?;
    if method != "POST" {
        return Err(AppError::MethodNotAllowed(format!(
            "/worker/{} takes POST, not {}",
            r.op,
            crate::ids::truncate(method, 16)
        )));
    }
    let who = match r.auth {
        Auth::Token => Caller::Verified(app.auth.authenticate(&app.store, authorization).await?),
        Auth::Row => {
            let (p, row) = app.auth.authenticate_row(&app.store, authorization).await?;
            Caller::WithRow(p, Box::new(row))
        }
        Auth::Deferred => Caller::Unverified(Authenticator::claimed(authorization)?),
        Auth::Code => Caller::Anonymous,
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(AppError::PayloadTooLarge(format!("body is {} bytes; the limit is {MAX_BODY_BYTES}", body.len())));
    }
    let v = checked_body(r, body, who.worker_id())?;
    (r.run)(app, who, v).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{ClaimArgs, ConversationArgs};

    fn parse<T: DeserializeOwned>(op: &str, body: &[u8], worker_id: &str) -> AppResult<T> {
        let r = find_route(&format!("/worker/{op}"))?;
        typed(op, checked_body(r, body, worker_id)?)
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoArgs {}

    #[test]
    fn a_body_worker_id_is_checked_then_replaced_or_dropped() {
        let a: ClaimArgs = parse("claim", br#"{"workerId":"w1"}"#, "w1").unwrap();
        assert_eq!(a.worker_id, "w1");
        let a: ClaimArgs = parse("claim", b"{}", "w1").unwrap();
        assert_eq!(a.worker_id, "w1", "the token's worker, whatever the body says");
        let e = parse::<ClaimArgs>("claim", br#"{"workerId":"w2"}"#, "w1").unwrap_err();
        assert_eq!(e.code().as_str(), "Forbidden");
        assert_eq!(
            parse::<ClaimArgs>("claim", br#"{"workerId":5}"#, "w1").unwrap_err().code().as_str(),
            "ValidationError"
        );
        let c: ConversationArgs = parse("has-queued", br#"{"workerId":"w1","conversationId":"c"}"#, "w1").unwrap();
        assert_eq!(c.conversation_id, "c", "ops without a workerId field never see the key");
    }

    #[test]
    fn empty_bodies_only_where_allowed() {
        assert!(parse::<NoArgs>("control-state", b"", "w").is_ok());
        assert!(parse::<ClaimArgs>("claim", b"", "w").is_err());
        assert!(parse::<NoArgs>("control-state", b"[1]", "w").is_err());
        assert!(parse::<NoArgs>("control-state", br#"{"verbose":true}"#, "w").is_err());
    }

    #[test]
    fn every_route_is_unique_and_found() {
        for r in ROUTES {
            assert_eq!(find_route(&format!("/worker/{}", r.op)).unwrap().op, r.op);
            assert_eq!(ROUTES.iter().filter(|x| x.op == r.op).count(), 1, "{} twice", r.op);
        }
        assert_eq!(find_route("/worker/nope").unwrap_err().code().as_str(), "NotFound");
        assert_eq!(find_route("/other").unwrap_err().code().as_str(), "NotFound");
    }
}
