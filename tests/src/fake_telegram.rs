//! A fake Telegram Bot API (axum on 127.0.0.1) with state and faults: bots by token, each bot's
//! webhook (URL, secret, allowed updates), files, and every message sent. Faults: the next call
//! of a method answers a status (5xx, 429 with `retry_after`) or is slow.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Webhook {
    pub url: String,
    pub secret_token: String,
    pub allowed_updates: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Bot {
    pub id: i64,
    pub username: String,
    pub webhook: Option<Webhook>,
}

#[derive(Debug, Clone)]
pub struct File {
    pub path: String,
    pub bytes: Vec<u8>,
    /// What getFile reports (may differ from the bytes, to test limits).
    pub declared_size: Option<u64>,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Fault {
    Status(u16),
    RetryAfter(i64),
    Slow(Duration),
    /// The call is carried out (a message is sent), then its answer comes after this long: a
    /// client with a shorter timeout loses it ("fail after sending").
    LoseAnswer(Duration),
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub bots: HashMap<String, Bot>,
    pub files: HashMap<String, File>,
    /// (bot id, chat id, text).
    pub sent: Vec<(i64, String, String)>,
    pub faults: HashMap<String, Vec<Fault>>,
    /// Calls per method (`file` for downloads), and every request path seen.
    pub calls: HashMap<String, u32>,
    pub paths: Vec<String>,
    /// Every message sent by sendMessage, sendAudio or sendVoice: the method and its arguments
    /// (with `bot_id` and the `message_id` it got).
    pub outbox: Vec<Value>,
    /// (bot id, chat id, action) of every sendChatAction.
    pub actions: Vec<(i64, String, String)>,
    /// Updates waiting for getUpdates, by bot token (confirmed ones are dropped).
    pub updates: HashMap<String, Vec<Value>>,
}

#[derive(Clone)]
pub struct FakeTelegram {
    pub state: Arc<Mutex<FakeState>>,
    pub base: String,
}

impl FakeTelegram {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = Router::new().fallback(serve).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake telegram");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { state, base }
    }

    pub fn add_bot(&self, token: &str, id: i64, username: &str) {
        self.state.lock().unwrap().bots.insert(token.into(), Bot { id, username: username.into(), webhook: None });
    }

    pub fn add_file(&self, file_id: &str, path: &str, bytes: Vec<u8>, declared_size: Option<u64>, ct: Option<&str>) {
        self.state.lock().unwrap().files.insert(
            file_id.into(),
            File { path: path.into(), bytes, declared_size, content_type: ct.map(str::to_string) },
        );
    }

    /// The next call of `method` fails or is slow (queued, one fault per call).
    pub fn fault(&self, method: &str, f: Fault) {
        self.state.lock().unwrap().faults.entry(method.into()).or_default().push(f);
    }

    pub fn webhook(&self, token: &str) -> Option<Webhook> {
        self.state.lock().unwrap().bots.get(token).and_then(|b| b.webhook.clone())
    }

    pub fn sent(&self) -> Vec<(i64, String, String)> {
        self.state.lock().unwrap().sent.clone()
    }

    /// An update for the bot of `token` to fetch with getUpdates.
    pub fn push_update(&self, token: &str, update: Value) {
        self.state.lock().unwrap().updates.entry(token.into()).or_default().push(update);
    }

    /// Updates not yet confirmed by a getUpdates with a higher offset.
    pub fn pending_updates(&self, token: &str) -> usize {
        self.state.lock().unwrap().updates.get(token).map_or(0, Vec::len)
    }

    pub fn outbox(&self) -> Vec<Value> {
        self.state.lock().unwrap().outbox.clone()
    }

    pub fn actions(&self) -> Vec<(i64, String, String)> {
        self.state.lock().unwrap().actions.clone()
    }

    pub fn calls(&self, method: &str) -> u32 {
        self.state.lock().unwrap().calls.get(method).copied().unwrap_or(0)
    }

    /// An adapter on this fake with short timeouts.
    pub fn api(&self) -> Arc<shared::adapters::telegram::HttpBotApi> {
        Arc::new(
            shared::adapters::telegram::HttpBotApi::new(&self.base)
                .expect("client")
                .with_timeouts(Duration::from_millis(500), Duration::from_secs(5)),
        )
    }
}

fn reply(status: u16, v: Value) -> Response {
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(v)).into_response()
}

fn ok(result: Value) -> Response {
    reply(200, json!({"ok": true, "result": result}))
}

fn err(status: u16, desc: &str) -> Response {
    reply(status, json!({"ok": false, "error_code": status, "description": desc}))
}

async fn serve(State(st): State<Arc<Mutex<FakeState>>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let body: Bytes = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    let args: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let (download, rest) = match path.strip_prefix("/file/bot") {
        Some(r) => (true, r),
        None => (false, path.strip_prefix("/bot").unwrap_or("")),
    };
    let Some((token, method)) = rest.split_once('/') else { return err(404, "Not Found") };
    let method_name = if download { "file".to_string() } else { method.to_string() };
    let fault = {
        let mut s = st.lock().unwrap();
        s.paths.push(path.clone());
        *s.calls.entry(method_name.clone()).or_default() += 1;
        s.faults.get_mut(&method_name).and_then(|v| if v.is_empty() { None } else { Some(v.remove(0)) })
    };
    match fault {
        Some(Fault::Status(c)) => return err(c, "Internal Server Error"),
        Some(Fault::RetryAfter(s)) => {
            return reply(
                429,
                json!({"ok": false, "error_code": 429, "description": "Too Many Requests", "parameters": {"retry_after": s}}),
            );
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        Some(Fault::LoseAnswer(d)) => {
            let r = answer(&st, download, token, method, &args);
            tokio::time::sleep(d).await;
            return r;
        }
        None => {}
    }
    if method == "getUpdates" {
        // Long polling: wait (a little) for an update when none is there.
        let until = tokio::time::Instant::now() + Duration::from_secs(args["timeout"].as_u64().unwrap_or(0).min(2));
        let offset = args["offset"].as_i64().unwrap_or(0);
        // Asking from `offset` confirms the updates before it.
        if let Some(q) = st.lock().unwrap().updates.get_mut(token) {
            q.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
        }
        let has = |s: &FakeState| {
            s.updates.get(token).is_some_and(|v| v.iter().any(|u| u["update_id"].as_i64().unwrap_or(0) >= offset))
        };
        while !has(&st.lock().unwrap()) && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    answer(&st, download, token, method, &args)
}

/// What the fake Bot API answers to one call (its state changed accordingly).
fn answer(st: &Arc<Mutex<FakeState>>, download: bool, token: &str, method: &str, args: &Value) -> Response {
    let mut s = st.lock().unwrap();
    let Some(bot) = s.bots.get(token).cloned() else { return err(401, "Unauthorized") };
    if download {
        let Some(f) = s.files.values().find(|f| f.path == method).cloned() else { return err(404, "Not Found") };
        let mut r = (StatusCode::OK, f.bytes).into_response();
        if let Some(ct) = f.content_type {
            r.headers_mut().insert("content-type", ct.parse().unwrap());
        }
        return r;
    }
    match method {
        "getMe" => ok(json!({"id": bot.id, "is_bot": true, "first_name": "Fake", "username": bot.username})),
        "setWebhook" => {
            let url = args["url"].as_str().unwrap_or("").to_string();
            if !url.is_empty() && !url.starts_with("https://") && !url.starts_with("http://127.0.0.1") {
                return err(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook");
            }
            let wh = Webhook {
                url,
                secret_token: args["secret_token"].as_str().unwrap_or("").to_string(),
                allowed_updates: args["allowed_updates"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                    .unwrap_or_default(),
            };
            s.bots.get_mut(token).unwrap().webhook = Some(wh);
            ok(json!(true))
        }
        "getWebhookInfo" => {
            let wh = bot.webhook.unwrap_or_default();
            ok(json!({"url": wh.url, "has_custom_certificate": false, "pending_update_count": 0,
                "allowed_updates": wh.allowed_updates}))
        }
        "getFile" => {
            let id = args["file_id"].as_str().unwrap_or("");
            match s.files.get(id) {
                Some(f) => {
                    let size = f.declared_size.unwrap_or(f.bytes.len() as u64);
                    if size > 20 * 1024 * 1024 {
                        return err(400, "Bad Request: file is too big");
                    }
                    ok(json!({"file_id": id, "file_size": size, "file_path": f.path}))
                }
                None => err(400, "Bad Request: invalid file_id"),
            }
        }
        "sendMessage" => {
            let chat = match &args["chat_id"] {
                Value::String(c) => c.clone(),
                other => other.to_string(),
            };
            let text = args["text"].as_str().unwrap_or("").to_string();
            if text.trim().is_empty() {
                return err(400, "Bad Request: message text is empty");
            }
            if text.encode_utf16().count() > 4096 {
                return err(400, "Bad Request: message is too long");
            }
            if args["parse_mode"] == "HTML"
                && let Err(e) = check_html(&text)
            {
                return err(400, &format!("Bad Request: can't parse entities: {e}"));
            }
            if chat == "403" {
                return err(403, "Forbidden: bot was blocked by the user");
            }
            s.sent.push((bot.id, chat.clone(), text.clone()));
            let id = s.sent.len();
            let mut rec = args.clone();
            rec["method"] = json!("sendMessage");
            rec["bot_id"] = json!(bot.id);
            rec["message_id"] = json!(id);
            s.outbox.push(rec);
            ok(json!({"message_id": id, "chat": {"id": chat}, "text": text}))
        }
        "sendAudio" | "sendVoice" => {
            let field = if method == "sendAudio" { "audio" } else { "voice" };
            if !args[field].as_str().is_some_and(|u| u.starts_with("http")) {
                return err(400, "Bad Request: wrong remote file identifier specified");
            }
            let id = 500_000 + s.outbox.len();
            let mut rec = args.clone();
            rec["method"] = json!(method);
            rec["bot_id"] = json!(bot.id);
            rec["message_id"] = json!(id);
            s.outbox.push(rec);
            ok(json!({"message_id": id}))
        }
        "deleteWebhook" => {
            s.bots.get_mut(token).unwrap().webhook = None;
            ok(json!(true))
        }
        "getUpdates" => {
            if bot.webhook.as_ref().is_some_and(|w| !w.url.is_empty()) {
                return err(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
                );
            }
            let offset = args["offset"].as_i64().unwrap_or(0);
            let q = s.updates.entry(token.to_string()).or_default();
            q.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            ok(json!(q.clone()))
        }
        "sendChatAction" => {
            let chat = match &args["chat_id"] {
                Value::String(c) => c.clone(),
                other => other.to_string(),
            };
            s.actions.push((bot.id, chat, args["action"].as_str().unwrap_or("").to_string()));
            ok(json!(true))
        }
        _ => err(404, "Not Found: method not found"),
    }
}

/// Telegram's HTML parse mode, as strict as Telegram: supported tags only, balanced, and `&` only
/// in entities.
pub fn check_html(t: &str) -> Result<(), String> {
    const TAGS: &[&str] = &[
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "tg-spoiler",
        "pre",
        "a",
        "span",
        "code",
        "blockquote",
        "tg-emoji",
    ];
    let mut stack: Vec<String> = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let rest = &t[i..];
        if rest.starts_with('<') {
            let end = rest.find('>').ok_or("unclosed start tag")?;
            let inner = &rest[1..end];
            if let Some(name) = inner.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("unmatched end tag {name}"));
                }
            } else {
                let name = inner.split_whitespace().next().unwrap_or("");
                if !TAGS.contains(&name) {
                    return Err(format!("unsupported start tag \"{name}\""));
                }
                stack.push(name.to_string());
            }
            i += end + 1;
        } else if rest.starts_with('&') {
            let end = rest.find(';').filter(|e| *e <= 10).ok_or("bad entity")?;
            let body = &rest[1..end];
            let ok = ["lt", "gt", "amp", "quot"].contains(&body) || body.starts_with('#');
            if !ok {
                return Err(format!("unsupported entity {body}"));
            }
            i += end + 1;
        } else if rest.starts_with('>') {
            return Err("stray >".into());
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    if let Some(n) = stack.pop() {
        return Err(format!("can't find end tag corresponding to start tag {n}"));
    }
    Ok(())
}
