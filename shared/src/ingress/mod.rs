//! Telegram ingress in two stages (architecture §3, spec §7.2 with W-1, W-4, W-6, W-7, W-10).
//!
//! - [`accept`] (the HTTP request): authenticate the secret header (lookup by its SHA-256, then a
//!   constant-time comparison with the secret kept in the secret store), deduplicate and persist
//!   the update in one conditional put, answer. Nothing on this path calls Telegram or S3.
//! - [`process`] (asynchronous: the queue table's stream on AWS, a background task in the local
//!   runner): pairing, routing, media download into the blob store, enqueue, optional replies.
//!   Business rejections are recorded on the update item; only transient failures are errors
//!   (the stream retries them; the enqueue is idempotent on the update).

use crate::adapters::dynamo::identity::Accepted;
use crate::app::App;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::identity::bots::hook_hash;
use crate::identity::model::BotRecord;
use crate::identity::pairing::{TelegramIds, consume_code, resolve_for_telegram};
use crate::identity::rules::{Guard, attempt_window};
use crate::queue::EnqueueArgs;
use crate::queue::model::{Attachment, AttachmentStatus, Payload};
use crate::secrets::SecretValue;
use crate::telegram::model::{Candidate, IncomingMessage};
use crate::telegram::rules::{self as tg, Route, Start};
use serde_json::{Value, json};

pub mod poll;

/// Largest update body accepted (Telegram's are a few KB).
pub const MAX_UPDATE_BYTES: usize = 100 * 1024;
/// Raw updates up to this size ride along in the payload as `rawUpdateJson`.
const MAX_RAW_IN_PAYLOAD: usize = 16 * 1024;

/// What the accept stage answers, and the update to process when it is new.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptOutcome {
    pub status: u16,
    pub body: Value,
    pub accepted: Option<(String, i64)>,
}

fn answer(status: u16, body: Value) -> AcceptOutcome {
    AcceptOutcome { status, body, accepted: None }
}

fn unauthorized() -> AcceptOutcome {
    answer(401, json!({"ok": false, "error": "missing or invalid telegram webhook secret token"}))
}

/// The accept stage. Errors (DynamoDB, the secret store) are real transient failures: 5xx, and
/// Telegram retries.
pub async fn accept(app: &App, secret_header: Option<&str>, body: &[u8]) -> AppResult<AcceptOutcome> {
    let Some(secret) = secret_header.map(str::trim).filter(|s| tg::is_secret_token_shaped(s)) else {
        return Ok(unauthorized());
    };
    let Some(hook) = app.store.get_hook(&hook_hash(secret)).await? else {
        return Ok(unauthorized());
    };
    if !secret_matches(app, &hook.secret_ref, secret).await? {
        return Ok(unauthorized());
    }
    if body.len() > MAX_UPDATE_BYTES {
        tracing::warn!(bot_identity = %hook.bot_identity, bytes = body.len(), "update too large: dropped");
        return Ok(answer(200, json!({"ok": true, "ignored": "too_large"})));
    }
    let update: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Ok(answer(400, json!({"ok": false, "error": format!("the body is not valid JSON: {e}")}))),
    };
    let Some(update_id) = update.get("update_id").and_then(Value::as_i64) else {
        return Ok(answer(
            400,
            json!({"ok": false, "error": "the body is not a Telegram update: no integer update_id"}),
        ));
    };
    let raw = String::from_utf8_lossy(body).into_owned();
    let keep_until = app.now() + app.store.policy.telegram.update_retention_ms;
    match app.store.accept_update(&hook.bot_identity, update_id, &hook.agent_key, &raw, keep_until).await? {
        Accepted::New => {
            Ok(AcceptOutcome { status: 200, body: json!({"ok": true}), accepted: Some((hook.bot_identity, update_id)) })
        }
        Accepted::Duplicate => Ok(answer(200, json!({"ok": true, "duplicate": true}))),
    }
}

/// Constant-time comparison with the stored secret; on a mismatch the cached value is dropped
/// and read once more (it may have just been rotated by another process).
async fn secret_matches(app: &App, secret_ref: &str, given: &str) -> AppResult<bool> {
    for fresh in [false, true] {
        if fresh {
            app.secrets.forget(secret_ref);
        }
        if let Some(v) = app.secrets.get(secret_ref).await?
            && tg::constant_time_eq(v.expose().as_bytes(), given.as_bytes())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What processing did with an update (also stored on the update item).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessOutcome {
    pub outcome: String,
    pub detail: String,
    pub message_id: Option<String>,
}

fn outcome(o: &str, detail: impl Into<String>) -> ProcessOutcome {
    ProcessOutcome { outcome: o.to_string(), detail: detail.into(), message_id: None }
}

/// The process stage for one accepted update. An `Err` is transient (retry); every business
/// outcome is recorded and returned.
pub async fn process(app: &App, bot: &str, update_id: i64) -> AppResult<ProcessOutcome> {
    let Some((raw, done)) = app.store.get_update(bot, update_id).await? else {
        return Ok(outcome("missing", "no such update (expired or never accepted)"));
    };
    if let Some(o) = done {
        return Ok(outcome(&o, "already processed"));
    }
    let out = run(app, bot, update_id, &raw).await?;
    app.store.record_update(bot, update_id, &out.outcome, &out.detail).await?;
    tracing::info!(bot_identity = bot, update_id, outcome = %out.outcome, "telegram update processed");
    Ok(out)
}

async fn run(app: &App, bot: &str, update_id: i64, raw: &str) -> AppResult<ProcessOutcome> {
    let update: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    let Some(m) = tg::parse_update(&update) else {
        return Ok(outcome("ignored", "not a message with a chat and a sender"));
    };
    let Some(rec) = app.store.get_bot(bot).await? else {
        return Ok(outcome("unknown_bot", "the bot has no agent any more"));
    };
    let pol = &app.store.policy.telegram;
    match tg::parse_start(m.text.as_deref()) {
        Start::Code(code) => return pair(app, &rec, &m, &code).await,
        Start::Invalid => {
            reply(app, &rec, &m, "bad_start").await;
            return Ok(outcome("bad_start", "missing or invalid pairing code in /start command"));
        }
        Start::NotStart => {}
    }
    let by_user = resolve_for_telegram(&app.store, bot, Some(&m.telegram_user_id), None, false).await?;
    let by_chat = if by_user.is_none() { chat_binding(app, bot, &m).await? } else { None };
    let route = tg::route(&m, bot, by_user, by_chat, Some(&rec.agent_key), pol.require_binding);
    let (agent_key, conversation_id) = match route {
        Route::Bound(t) => (t.agent_key, t.conversation_id),
        Route::Fallback { agent_key, conversation_id } => (agent_key, conversation_id),
        Route::NotLinked => {
            reply(app, &rec, &m, "not_linked").await;
            return Ok(outcome("not_linked", "no active binding for this Telegram user"));
        }
    };
    let (attachments, kept, skipped) = fetch_media(app, &rec, &m).await?;
    let Some(text) = tg::message_text(&m, &kept) else {
        let why =
            if skipped.is_empty() { "no text, caption or supported media".to_string() } else { skipped.join("; ") };
        return Ok(outcome("ignored", why));
    };
    let mut metadata = tg::metadata(bot, &m, &kept);
    if !skipped.is_empty() {
        metadata.insert("telegramSkippedMedia".into(), crate::ids::truncate(&skipped.join("; "), 250));
    }
    let args = EnqueueArgs {
        conversation_id,
        agent_key,
        payload: Payload {
            provider: "telegram".into(),
            provider_user_id: m.telegram_user_id.clone(),
            message_text: text,
            external_message_id: Some(tg::external_message_id(bot, update_id)),
            raw_update_json: (raw.len() <= MAX_RAW_IN_PAYLOAD).then(|| raw.to_string()),
            metadata: Some(metadata),
            attachments: (!attachments.is_empty()).then_some(attachments),
        },
        priority: None,
        scheduled_for: None,
        max_attempts: None,
    };
    match app.store.enqueue(args).await {
        Ok(r) => Ok(ProcessOutcome {
            outcome: if r.deduplicated { "duplicate".into() } else { "enqueued".into() },
            detail: String::new(),
            message_id: Some(r.message_id),
        }),
        Err(e) if is_transient(&e) => Err(e),
        Err(e) => Ok(outcome("enqueue_refused", e.to_string())),
    }
}

fn is_transient(e: &AppError) -> bool {
    matches!(e.code(), ErrorCode::Internal | ErrorCode::ProviderError)
}

/// A binding of this (bot, chat), for the routing rule to judge.
async fn chat_binding(app: &App, bot: &str, m: &IncomingMessage) -> AppResult<Option<tg::ChatBinding>> {
    let g = Guard::TgChat { bot: bot.into(), chat: m.telegram_chat_id.clone() };
    Ok(app.store.get_guard(&g).await?.filter(|b| b.flag.is_none()).map(|b| tg::ChatBinding {
        group_paired: b.group_paired,
        target: tg::BoundTarget {
            consumer_user_id: b.consumer_user_id,
            agent_key: b.agent_key,
            conversation_id: b.conversation_id,
        },
    }))
}

/// `/start <code>`: rate-limited per chat and per bot, then consumed (never enqueued). Nothing
/// about the consumer goes back to Telegram.
async fn pair(app: &App, rec: &BotRecord, m: &IncomingMessage, code: &str) -> AppResult<ProcessOutcome> {
    let pol = &app.store.policy.telegram;
    let (w, drop_at) = attempt_window(app.now(), pol.attempt_window_ms);
    let chat_id = format!("{}#{}", rec.bot_identity, m.telegram_chat_id);
    let allowed = app.store.count_attempt("chat", &chat_id, w, drop_at, pol.attempts_per_chat).await?
        && app.store.count_attempt("bot", &rec.bot_identity, w, drop_at, pol.attempts_per_bot).await?;
    if !allowed {
        reply(app, rec, m, "rate_limited").await;
        return Ok(outcome("rate_limited", "too many pairing attempts"));
    }
    let mut md = std::collections::BTreeMap::new();
    if let Some(u) = &m.telegram_username {
        md.insert("telegramUsername".to_string(), crate::ids::truncate(u, 64));
    }
    if let Some(d) = &m.display_name {
        md.insert("displayName".to_string(), crate::ids::truncate(d, 128));
    }
    let ids = TelegramIds {
        bot: rec.bot_identity.clone(),
        user: m.telegram_user_id.clone(),
        chat: m.telegram_chat_id.clone(),
        group: !m.is_private(),
        metadata: (!md.is_empty()).then_some(md),
    };
    match consume_code(app, code, &ids).await {
        Ok(v) => {
            reply(app, rec, m, "paired").await;
            Ok(outcome("paired", format!("agent {}", v.agent_key)))
        }
        Err(e) if is_transient(&e) => Err(e),
        Err(e) => {
            reply(app, rec, m, "invalid_code").await;
            Ok(outcome("pairing_failed", e.to_string()))
        }
    }
}

/// The receiving bot's token (W-7: never the resolved agent's).
async fn bot_token(app: &App, rec: &BotRecord) -> AppResult<Option<SecretValue>> {
    app.secrets.get(&rec.token_ref).await
}

async fn reply(app: &App, rec: &BotRecord, m: &IncomingMessage, what: &str) {
    if !app.store.policy.telegram.replies {
        return;
    }
    let Some(text) = tg::reply_text(what) else { return };
    match bot_token(app, rec).await {
        Ok(Some(t)) => {
            if let Err(e) = app.telegram.send_message(&t, &m.telegram_chat_id, text).await {
                tracing::warn!(error = %e, "telegram reply failed");
            }
        }
        Ok(None) => tracing::warn!(bot_identity = %rec.bot_identity, "no token to reply with"),
        Err(e) => tracing::warn!(error = %e, "reading the bot token failed"),
    }
}

/// Download the message's media with the receiving bot's token into the blob store, within the
/// limits: the attachments, the candidates kept, and why others were left out.
async fn fetch_media(
    app: &App,
    rec: &BotRecord,
    m: &IncomingMessage,
) -> AppResult<(Vec<Attachment>, Vec<Candidate>, Vec<String>)> {
    let (mut atts, mut kept, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    if m.candidates.is_empty() {
        return Ok((atts, kept, skipped));
    }
    let Some(token) = bot_token(app, rec).await? else {
        skipped.push("no bot token to download media".to_string());
        return Ok((atts, kept, skipped));
    };
    let retention = app
        .store
        .message_config()
        .await?
        .and_then(|c| c.telegram_attachment_retention_ms)
        .unwrap_or(app.store.policy.media.retention_ms);
    let expires_at = app.now() + retention;
    let max = app.store.policy.media.max_bytes.min(tg::MAX_FILE_BYTES);
    for (i, c) in m.candidates.iter().enumerate() {
        if let Some(why) = tg::precheck(c, i) {
            skipped.push(why);
            continue;
        }
        let file = match app.telegram.get_file(&token, &c.file_id).await {
            Ok(f) => f,
            Err(e) if is_transient(&e) => return Err(e),
            Err(e) => {
                skipped.push(format!("{}: {e}", tg::kind_name(c.kind)));
                continue;
            }
        };
        if file.file_size.is_some_and(|n| n > max) {
            skipped.push(format!("{} is larger than 20 MB", tg::kind_name(c.kind)));
            continue;
        }
        let d = match app.telegram.download(&token, &file.file_path, max).await {
            Ok(d) => d,
            Err(e) if e.code() == ErrorCode::PayloadTooLarge => {
                skipped.push(format!("{} is larger than 20 MB", tg::kind_name(c.kind)));
                continue;
            }
            Err(e) => return Err(e),
        };
        let mime = tg::resolve_mime(c, &file.file_path, d.content_type.as_deref());
        if !tg::mime_allowed(&mime) {
            skipped.push(format!("{} of type {mime} is not accepted", tg::kind_name(c.kind)));
            continue;
        }
        let storage_id = format!("tg{}", crate::ids::ulid(app.now()));
        let size = d.bytes.len() as u64;
        app.blobs.put(&crate::blob::media_key(&storage_id), d.bytes, &mime).await?;
        atts.push(Attachment {
            kind: c.kind,
            status: AttachmentStatus::Ready,
            storage_id,
            telegram_file_id: c.file_id.clone(),
            file_name: c.file_name.clone(),
            mime_type: Some(mime),
            size_bytes: Some(c.size_bytes.unwrap_or(size)),
            expires_at,
            download_url: None,
        });
        kept.push(c.clone());
    }
    Ok((atts, kept, skipped))
}
