//! The Telegram Bot API over HTTPS (reqwest, rustls): the [`BotApi`] port. The base URL comes from
//! `TELEGRAM_API_BASE` (tests point it at a fake). The bot token sits in every request URL, so no
//! error or log line here ever carries a URL or a reqwest error's text with its URL: errors name
//! the method and Telegram's status and description only.

use crate::BoxFut;
use crate::error::{AppError, AppResult};
use crate::secrets::SecretValue;
use crate::telegram::model::{BotInfo, Downloaded, FileInfo, OutgoingAudio, OutgoingText, SendFailure, WebhookInfo};
use crate::telegram::port::BotApi;
use serde_json::{Value, json};
use std::time::Duration;

/// Per-request timeouts: API calls, and file downloads (up to 20 MB).
pub const API_TIMEOUT: Duration = Duration::from_secs(10);
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct HttpBotApi {
    client: reqwest::Client,
    base: String,
    api_timeout: Duration,
    download_timeout: Duration,
}

impl HttpBotApi {
    pub fn new(base: &str) -> AppResult<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AppError::internal(format!("building the Telegram HTTP client: {}", e.without_url())))?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_string(),
            api_timeout: API_TIMEOUT,
            download_timeout: DOWNLOAD_TIMEOUT,
        })
    }

    /// Other per-request timeouts (tests).
    pub fn with_timeouts(mut self, api: Duration, download: Duration) -> Self {
        self.api_timeout = api;
        self.download_timeout = download;
        self
    }

    fn url(&self, token: &SecretValue, method: &str) -> String {
        format!("{}/bot{}/{method}", self.base, token.expose())
    }

    /// One Bot API call: `result` of `{"ok": true, "result": ...}`, or a redacted error.
    async fn call(&self, token: &SecretValue, method: &str, body: Value) -> AppResult<Value> {
        self.call_within(token, method, body, self.api_timeout).await
    }

    /// [`Self::call`] with its own timeout (long polling).
    async fn call_within(&self, token: &SecretValue, method: &str, body: Value, timeout: Duration) -> AppResult<Value> {
        let r = self.client.post(self.url(token, method)).timeout(timeout).json(&body).send().await;
        let resp = r.map_err(|e| transport(method, &e))?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) && v.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(v.get("result").cloned().unwrap_or(Value::Null));
        }
        Err(telegram_error(method, status, &v))
    }
}

impl HttpBotApi {
    /// One sending call, its failure classified by what the caller may do: no connection or a
    /// 5xx = not sent (retry), 429 = wait, another 4xx = refused, a lost answer = unknown.
    async fn send_call(&self, method: &str, req: reqwest::RequestBuilder) -> Result<Value, SendFailure> {
        let resp = match req.timeout(self.api_timeout).send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Err(SendFailure::NotSent(format!("Telegram {method} failed: could not connect")));
            }
            Err(e) => {
                let what = if e.is_timeout() { "timed out" } else { "lost its answer" };
                return Err(SendFailure::Unknown(format!(
                    "Telegram {method} {what}: the message may have been delivered"
                )));
            }
        };
        let status = resp.status().as_u16();
        let v: Option<Value> = match resp.bytes().await {
            Ok(b) => serde_json::from_slice(&b).ok(),
            Err(_) if (200..300).contains(&status) => {
                return Err(SendFailure::Unknown(format!(
                    "Telegram {method} answer was cut off: the message may have been delivered"
                )));
            }
            Err(_) => None,
        };
        let v = v.unwrap_or(Value::Null);
        if (200..300).contains(&status) && v.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(v.get("result").cloned().unwrap_or(Value::Null));
        }
        let desc = v
            .get("description")
            .and_then(Value::as_str)
            .map(|d| crate::ids::truncate(d, 200))
            .unwrap_or_else(|| "unknown error".to_string());
        Err(match status {
            429 => {
                let after = v.pointer("/parameters/retry_after").and_then(Value::as_u64).unwrap_or(1).max(1);
                SendFailure::RateLimited { retry_after_ms: after * 1000 }
            }
            200..=299 => SendFailure::Unknown(format!(
                "Telegram {method} gave an unreadable answer: the message may have been delivered"
            )),
            500.. => SendFailure::NotSent(format!("Telegram {method} failed: HTTP {status}: {desc}")),
            _ => SendFailure::Refused(format!("Telegram {method} refused: HTTP {status}: {desc}")),
        })
    }
}

fn message_id_of(method: &str, r: &Value) -> Result<i64, SendFailure> {
    r.get("message_id").and_then(Value::as_i64).ok_or_else(|| {
        SendFailure::Unknown(format!(
            "Telegram {method} answered without a message_id: the message may have been delivered"
        ))
    })
}

/// `reply_parameters` of a reply (sent even when the replied-to message is gone).
fn reply_parameters(reply_to: Option<i64>) -> Option<Value> {
    reply_to.map(|id| json!({"message_id": id, "allow_sending_without_reply": true}))
}

/// A transport error without its URL (which carries the token).
fn transport(method: &str, e: &reqwest::Error) -> AppError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    AppError::Provider(format!("Telegram {method} failed: {what}"))
}

/// Telegram's error as a stable error: a refused token (401, or 404 which Telegram answers for a
/// malformed one) on `getMe` is the caller's input; the rest are provider errors.
fn telegram_error(method: &str, status: u16, v: &Value) -> AppError {
    let desc = v
        .get("description")
        .and_then(Value::as_str)
        .map(|d| crate::ids::truncate(d, 200))
        .unwrap_or_else(|| "unknown error".to_string());
    match status {
        401 | 404 if method == "getMe" => AppError::validation(format!(
            "Telegram refused the bot token (HTTP {status}: {desc}); check the token from @BotFather"
        )),
        429 => {
            let after = v.pointer("/parameters/retry_after").and_then(Value::as_i64).unwrap_or(0);
            AppError::Provider(format!("Telegram {method} failed: rate limited (retry after {after} s)"))
        }
        _ => AppError::Provider(format!("Telegram {method} failed: HTTP {status}: {desc}")),
    }
}

fn opt_str(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

impl BotApi for HttpBotApi {
    fn get_me<'a>(&'a self, token: &'a SecretValue) -> BoxFut<'a, AppResult<BotInfo>> {
        Box::pin(async move {
            let r = self.call(token, "getMe", json!({})).await?;
            let id = match r.get("id") {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                _ => return Err(AppError::Provider("Telegram getMe did not return a bot id".into())),
            };
            Ok(BotInfo { bot_identity: id, telegram_username: opt_str(&r, "username") })
        })
    }

    fn set_webhook<'a>(
        &'a self,
        token: &'a SecretValue,
        url: &'a str,
        secret_token: &'a SecretValue,
        allowed_updates: &'a [&'a str],
    ) -> BoxFut<'a, AppResult<()>> {
        Box::pin(async move {
            let body = json!({"url": url, "secret_token": secret_token.expose(), "allowed_updates": allowed_updates});
            self.call(token, "setWebhook", body).await.map(|_| ())
        })
    }

    fn get_webhook_info<'a>(&'a self, token: &'a SecretValue) -> BoxFut<'a, AppResult<WebhookInfo>> {
        Box::pin(async move {
            let r = self.call(token, "getWebhookInfo", json!({})).await?;
            Ok(WebhookInfo {
                current_url: opt_str(&r, "url"),
                pending_update_count: r.get("pending_update_count").and_then(Value::as_u64).unwrap_or(0),
                last_error_message: opt_str(&r, "last_error_message"),
                last_error_date: r.get("last_error_date").and_then(Value::as_i64),
                allowed_updates: r
                    .get("allowed_updates")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                    .unwrap_or_default(),
            })
        })
    }

    fn get_file<'a>(&'a self, token: &'a SecretValue, file_id: &'a str) -> BoxFut<'a, AppResult<FileInfo>> {
        Box::pin(async move {
            let r = self.call(token, "getFile", json!({"file_id": file_id})).await?;
            let Some(file_path) = opt_str(&r, "file_path") else {
                return Err(AppError::Provider("Telegram getFile failed: missing file_path".into()));
            };
            Ok(FileInfo { file_path, file_size: r.get("file_size").and_then(Value::as_u64) })
        })
    }

    fn download<'a>(
        &'a self,
        token: &'a SecretValue,
        file_path: &'a str,
        max_bytes: u64,
    ) -> BoxFut<'a, AppResult<Downloaded>> {
        Box::pin(async move {
            if file_path.split('/').any(|p| p == "..") {
                return Err(AppError::Provider("Telegram file download failed: bad file_path".into()));
            }
            let url = format!("{}/file/bot{}/{file_path}", self.base, token.expose());
            let mut resp = self
                .client
                .get(url)
                .timeout(self.download_timeout)
                .send()
                .await
                .map_err(|e| transport("file download", &e))?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(AppError::Provider(format!("Telegram file download failed with status {status}")));
            }
            let too_big = || AppError::PayloadTooLarge(format!("the file is larger than {max_bytes} bytes"));
            if resp.content_length().is_some_and(|n| n > max_bytes) {
                return Err(too_big());
            }
            let content_type =
                resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
            let mut bytes = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| transport("file download", &e))? {
                if (bytes.len() + chunk.len()) as u64 > max_bytes {
                    return Err(too_big());
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Downloaded { bytes, content_type })
        })
    }

    fn send_message<'a>(
        &'a self,
        token: &'a SecretValue,
        chat_id: &'a str,
        text: &'a str,
    ) -> BoxFut<'a, AppResult<()>> {
        Box::pin(
            async move { self.call(token, "sendMessage", json!({"chat_id": chat_id, "text": text})).await.map(|_| ()) },
        )
    }

    fn send_text<'a>(&'a self, token: &'a SecretValue, m: &'a OutgoingText) -> BoxFut<'a, Result<i64, SendFailure>> {
        Box::pin(async move {
            let mut body = json!({"chat_id": m.chat_id, "text": m.text});
            if m.html {
                body["parse_mode"] = json!("HTML");
            }
            if let Some(rp) = reply_parameters(m.reply_to) {
                body["reply_parameters"] = rp;
            }
            let req = self.client.post(self.url(token, "sendMessage")).json(&body);
            message_id_of("sendMessage", &self.send_call("sendMessage", req).await?)
        })
    }

    fn send_audio<'a>(&'a self, token: &'a SecretValue, m: &'a OutgoingAudio) -> BoxFut<'a, Result<i64, SendFailure>> {
        Box::pin(async move {
            let (method, field) = if m.voice { ("sendVoice", "voice") } else { ("sendAudio", "audio") };
            let mut body = json!({"chat_id": m.chat_id, field: m.url});
            if let Some(c) = &m.caption {
                body["caption"] = json!(c);
                if m.html {
                    body["parse_mode"] = json!("HTML");
                }
            }
            if let Some(rp) = reply_parameters(m.reply_to) {
                body["reply_parameters"] = rp;
            }
            let req = self.client.post(self.url(token, method)).json(&body);
            message_id_of(method, &self.send_call(method, req).await?)
        })
    }

    fn send_chat_action<'a>(
        &'a self,
        token: &'a SecretValue,
        chat_id: &'a str,
        action: &'a str,
    ) -> BoxFut<'a, Result<(), SendFailure>> {
        Box::pin(async move {
            let req = self
                .client
                .post(self.url(token, "sendChatAction"))
                .json(&json!({"chat_id": chat_id, "action": action}));
            self.send_call("sendChatAction", req).await.map(|_| ())
        })
    }

    fn delete_webhook<'a>(&'a self, token: &'a SecretValue) -> BoxFut<'a, AppResult<()>> {
        Box::pin(
            async move { self.call(token, "deleteWebhook", json!({"drop_pending_updates": false})).await.map(|_| ()) },
        )
    }

    fn get_updates<'a>(
        &'a self,
        token: &'a SecretValue,
        offset: i64,
        timeout_s: u64,
    ) -> BoxFut<'a, AppResult<Vec<Value>>> {
        Box::pin(async move {
            let body = json!({"offset": offset, "timeout": timeout_s, "allowed_updates": crate::telegram::rules::ALLOWED_UPDATES});
            let r =
                self.call_within(token, "getUpdates", body, self.api_timeout + Duration::from_secs(timeout_s)).await?;
            match r {
                Value::Array(a) => Ok(a),
                _ => Err(AppError::Provider("Telegram getUpdates did not return a list".into())),
            }
        })
    }
}
