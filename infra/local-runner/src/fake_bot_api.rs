//! A local stand-in for Telegram's Bot API, served by the runner itself under
//! `/fake-telegram/bot<token>/<method>` (no extra port): the runner's Telegram adapter points at
//! it when `TELEGRAM_API_BASE` is not set, so the whole pipeline runs offline. It knows any
//! token of Telegram's shape (`<bot id>:<secret>`), keeps each bot's webhook, answers `getMe`,
//! `setWebhook`, `getWebhookInfo`, `deleteWebhook`, `sendChatAction`, and prints every message
//! the bot sends (`sendMessage`, `sendAudio`, `sendVoice`); `GET /fake-telegram/sent` lists them.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The path prefix the runner serves it under.
pub(crate) const PREFIX: &str = "/fake-telegram";

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Sent {
    pub(crate) bot_id: i64,
    pub(crate) chat_id: String,
    pub(crate) method: String,
    pub(crate) text: String,
    pub(crate) at_ms: i64,
}

#[derive(Debug, Default)]
struct Inner {
    /// token -> (webhook url, secret).
    webhooks: HashMap<String, (String, String)>,
    sent: Vec<Sent>,
    calls: HashMap<String, u64>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct FakeBotApi {
    inner: Arc<Mutex<Inner>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"ok": true, "result": result})).into_response()
}

fn err(status: u16, desc: &str) -> Response {
    let st = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    (st, axum::Json(json!({"ok": false, "error_code": status, "description": desc}))).into_response()
}

/// A bot id from a token of Telegram's shape (`<digits>:<secret>`).
fn bot_id(token: &str) -> Option<i64> {
    let (id, secret) = token.split_once(':')?;
    (!secret.is_empty()).then_some(())?;
    id.parse().ok()
}

impl FakeBotApi {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the bot sent, in order.
    pub(crate) fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// The secret of the webhook set for `token`.
    pub(crate) fn webhook_secret(&self, token: &str) -> Option<String> {
        self.lock().webhooks.get(token).map(|(_, s)| s.clone())
    }

    /// Bot API calls per method so far.
    pub(crate) fn calls(&self) -> HashMap<String, u64> {
        self.lock().calls.clone()
    }
}

/// `GET /fake-telegram/sent`.
pub(crate) async fn sent(State(f): State<FakeBotApi>) -> Response {
    axum::Json(json!({"sent": f.sent(), "calls": f.calls()})).into_response()
}

/// `/fake-telegram/<bot<token>>/<method>` (Telegram takes GET and POST alike).
pub(crate) async fn serve(
    State(f): State<FakeBotApi>,
    Path((bot, method)): Path<(String, String)>,
    _m: Method,
    body: Bytes,
) -> Response {
    let Some(token) = bot.strip_prefix("bot") else { return err(404, "Not Found") };
    let Some(id) = bot_id(token) else { return err(401, "Unauthorized") };
    let args: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let mut s = f.lock();
    *s.calls.entry(method.clone()).or_default() += 1;
    match method.as_str() {
        "getMe" => {
            ok(json!({"id": id, "is_bot": true, "first_name": "Local demo bot", "username": format!("local_{id}_bot")}))
        }
        "setWebhook" => {
            let url = args["url"].as_str().unwrap_or_default().to_string();
            let secret = args["secret_token"].as_str().unwrap_or_default().to_string();
            s.webhooks.insert(token.to_string(), (url, secret));
            ok(json!(true))
        }
        "deleteWebhook" => {
            s.webhooks.remove(token);
            ok(json!(true))
        }
        "getWebhookInfo" => {
            let url = s.webhooks.get(token).map(|(u, _)| u.clone()).unwrap_or_default();
            ok(json!({"url": url, "has_custom_certificate": false, "pending_update_count": 0}))
        }
        "sendChatAction" => ok(json!(true)),
        "sendMessage" | "sendAudio" | "sendVoice" => {
            let chat = match &args["chat_id"] {
                Value::String(c) => c.clone(),
                other => other.to_string(),
            };
            let text = args["text"].as_str().or_else(|| args["caption"].as_str()).unwrap_or("(media)").to_string();
            {
                use std::io::Write;
                let _ = writeln!(std::io::stdout(), "telegram (fake Bot API): bot {id} -> chat {chat}: {text:?}");
            }
            s.sent.push(Sent {
                bot_id: id,
                chat_id: chat.clone(),
                method: method.clone(),
                text: text.clone(),
                at_ms: now_ms(),
            });
            let n = s.sent.len();
            ok(json!({"message_id": n, "date": now_ms() / 1000, "chat": {"id": chat, "type": "private"}, "text": text}))
        }
        "getFile" => err(400, "Bad Request: the local fake Bot API has no files"),
        _ => err(404, "Not Found: method not found"),
    }
}
