//! The `api` function's envelope: `{"op", "args", "userToken"?}`, the caller resolved once, and
//! the user ops run with a [`UserCtx`] (the identity is a parameter, never read from the body by
//! an op).

use super::model::ConsumerUserId;
use crate::app::App;
use crate::envelope::OpTable;
use crate::error::{AppError, AppResult};
use serde::Deserialize;
use serde_json::Value;

/// What a user-scoped op runs with: the backend, and the end user the call acts for.
pub struct UserCtx {
    pub app: App,
    pub user: ConsumerUserId,
}

/// The `api` invocation payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiEnvelope {
    pub op: String,
    #[serde(default)]
    pub args: Option<Value>,
    /// An HS256 user token (required when the deployment configures `USER_TOKEN_SECRET_REF`).
    #[serde(default)]
    pub user_token: Option<String>,
}

/// The end user of a call. With user-token keys configured (an HS256 secret, a JWKS URL, or
/// both): the verified token's `sub` only
/// (an `args.consumerUserId` naming anyone else is refused); without: `args.consumerUserId`
/// (trusted-backend mode). Either way `consumerUserId` is taken out of the args, so no op reads
/// it from there.
pub async fn resolve_user(app: &App, token: Option<&str>, args: &mut Option<Value>) -> AppResult<ConsumerUserId> {
    let policy = &app.store.policy.access;
    let named = match args.as_mut().and_then(Value::as_object_mut).and_then(|a| a.remove("consumerUserId")) {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(AppError::validation("consumerUserId must be a string")),
    };
    if policy.verifies_tokens() {
        let Some(token) = token else {
            return Err(AppError::Unauthorized(
                "this deployment takes the user from a user token: pass 'userToken' with the call".into(),
            ));
        };
        let parsed = super::token::parse(token)?;
        let hs256 = match (&policy.user_token_secret_ref, parsed.alg.as_str()) {
            (Some(secret_ref), "HS256") => Some(app.secrets.get(secret_ref).await?.ok_or_else(|| {
                AppError::internal(format!("the user-token key '{secret_ref}' is not in the secret store"))
            })?),
            _ => None,
        };
        let jwks = match parsed.alg.as_str() {
            "RS256" | "ES256" => app.jwks.keys(app.now(), parsed.kid.as_deref()).await?,
            _ => None,
        };
        let keys =
            super::token::VerifyKeys { hs256: hs256.as_ref().map(|k| k.expose().as_bytes()), jwks: jwks.as_deref() };
        let user = super::token::verify_parsed(&parsed, &keys, policy, app.now())?;
        if named.is_some_and(|n| n != user.as_str()) {
            return Err(AppError::Forbidden(
                "consumerUserId in the arguments is not the user of the token; omit it".into(),
            ));
        }
        return Ok(user);
    }
    if token.is_some() {
        return Err(AppError::validation(
            "userToken given, but this deployment verifies no user tokens (neither USER_TOKEN_SECRET_REF \
             nor USER_TOKEN_JWKS_URL is set): it trusts its caller and takes args.consumerUserId",
        ));
    }
    let Some(named) = named else {
        return Err(AppError::validation("args.consumerUserId is required (trusted-backend mode)"));
    };
    ConsumerUserId::parse(&named)
}

/// Parse an `api` payload, resolve the user, run the op; unknown ops are refused before any
/// authentication. Logged once, at the edge.
pub async fn handle(app: &App, tables: &[&OpTable<UserCtx>], payload: Value) -> AppResult<Value> {
    let r = async {
        if !payload.is_object() {
            return Err(AppError::validation(
                "the payload must be a JSON object {\"op\": ..., \"args\": {...}, \"userToken\"?: ...}",
            ));
        }
        let env: ApiEnvelope =
            serde_json::from_value(payload).map_err(|e| AppError::validation(format!("invalid envelope: {e}")))?;
        let op = env.op.clone();
        if !crate::envelope::op_names(tables).contains(&op.as_str()) {
            return Err(AppError::validation(format!(
                "unknown op '{}'; this function serves: {}",
                crate::ids::truncate(&op, 60),
                crate::envelope::op_names(tables).join(", ")
            )));
        }
        let mut args = env.args;
        let user = resolve_user(app, env.user_token.as_deref(), &mut args).await?;
        let ctx = UserCtx { app: app.clone(), user };
        crate::envelope::dispatch(&ctx, tables, crate::envelope::Envelope { op, args }).await
    }
    .await;
    if let Err(e) = &r {
        e.log("api");
    }
    r
}
