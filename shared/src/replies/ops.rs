//! `POST /worker/reply` and `POST /worker/typing`: the thin executor of the replies rules.
//!
//! A reply call: check the part (pure) → read the message and the part's records (one
//! BatchGetItem) → the caller must hold the live lease (409 otherwise) → the plan (replay, wait,
//! or send) → take the record in one transaction with the lease and token checks (nothing is
//! sent unless this write succeeded) → send the chunks, recording the Telegram ids after each →
//! the final state. Telegram's 429 and an unreachable Telegram leave the record to be resumed by
//! a retry (HTTP 429 with `retryAfterMs`, 502); a refusal (`failed`) or a lost answer
//! (`unconfirmed`: never sent twice) are final and every retry gets them back.

use super::model::*;
use super::rules::{self, Plan};
use crate::app::App;
use crate::blob::media_key;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::ids::MessageRef;
use crate::protocol::worker::{ReplyArgs, ReplyResult, TypingArgs, TypingResult};
use crate::queue::model::{AttachmentStatus, MessageItem};
use crate::secrets::SecretValue;
use crate::telegram::model::{OutgoingAudio, OutgoingText, SendFailure};
use crate::workers::auth::Principal;
use std::time::{Duration, Instant};

/// A call stops sending chunks after this long and hands the rest to the next call (API Gateway
/// gives a request 30 s).
const CALL_BUDGET: Duration = Duration::from_secs(15);

/// The reply's target and the receiving bot's token. The bot must belong to the message's agent
/// (metadata cannot point a reply at another agent's bot).
async fn resolve(app: &App, msg: &MessageItem) -> AppResult<(Target, SecretValue)> {
    let has_bot = msg.payload.metadata.as_ref().is_some_and(|m| m.contains_key("telegramBotIdentity"));
    let agent_bot =
        if has_bot { None } else { app.store.get_agent(&msg.agent_key).await?.and_then(|p| p.bot_identity) };
    let t = rules::target(&msg.payload, agent_bot.as_deref())?;
    let bot = app.store.get_bot(&t.bot_identity).await?.filter(|b| b.agent_key == msg.agent_key).ok_or_else(|| {
        AppError::validation(format!(
            "bot {} is not agent '{}''s bot any more: nothing can be sent",
            crate::ids::truncate(&t.bot_identity, 40),
            msg.agent_key
        ))
    })?;
    let token = app.secrets.get(&bot.token_ref).await?.ok_or_else(|| {
        AppError::validation(format!("bot {} has no token (import it again): nothing can be sent", t.bot_identity))
    })?;
    Ok((t, token))
}

/// The held message: 404 when absent, 409 (with its reason) unless the caller holds its live lease.
fn held(
    msg: Option<MessageItem>,
    mref: &MessageRef,
    p: &Principal,
    lease_id: &str,
    now: Millis,
) -> AppResult<MessageItem> {
    let msg = msg.ok_or_else(|| AppError::not_found(format!("message {} does not exist", mref.id())))?;
    crate::queue::rules::check_lease(&msg, &p.worker_id, lease_id, now)?;
    Ok(msg)
}

fn rate_limited(what: &str, ms: u64) -> AppError {
    AppError::RateLimited { message: format!("{what}: retry in {ms} ms"), retry_after_ms: ms }
}

/// `POST /worker/reply`.
pub async fn reply(app: &App, p: &Principal, a: &ReplyArgs) -> AppResult<ReplyResult> {
    let content = rules::check(a)?;
    let mref = MessageRef::parse(&a.message_id)?;
    let hash = rules::body_hash(a);
    let rec_key = app.store.reply_keys(&mref, a.part);
    for _ in 0..3 {
        let now = app.now();
        let ctx = app.store.reply_context(&mref, a.part).await?;
        let msg = held(ctx.message, &mref, p, &a.lease_id, now)?;
        // A final record answers without reading the bot or its token.
        if let Some(Plan::Replay(r)) =
            ctx.record.as_ref().and_then(|r| rules::plan(Some(r), None, &hash, false, now).ok())
        {
            return Ok(r);
        }
        let (target, token) = resolve(app, &msg).await?;
        // An audio part's file is checked before anything is written.
        let audio_url = match &content {
            Content::Audio { storage_id, mime_type, .. } => {
                Some(audio_url(app, &msg, storage_id, mime_type.as_deref()).await?)
            }
            Content::Text { .. } => None,
        };
        let prev_sent = ctx.previous.as_ref().and_then(|r| r.last_sent_at);
        let (from, ids, wait_ms, fresh) = match rules::plan(ctx.record.as_ref(), prev_sent, &hash, target.group, now)? {
            Plan::Replay(r) => return Ok(r),
            Plan::RetryAfter { ms, why } => return Err(rate_limited(&format!("part {}: {why}", a.part), ms)),
            Plan::Send { from, ids, wait_ms, fresh } => (from, ids, wait_ms, fresh),
        };
        let attempt = format!("{:032x}", crate::ids::random_u128());
        let rec = ReplyRecord {
            pk: rec_key.0.clone(),
            sk: rec_key.1.clone(),
            message_id: msg.message_id.clone(),
            conversation_id: msg.conversation_id.clone(),
            part: a.part,
            worker_id: p.worker_id.clone(),
            lease_id: a.lease_id.clone(),
            reply_state: ReplyState::Sending,
            body_hash: hash.clone(),
            chat_id: target.chat_id.clone(),
            chunks: content.chunk_count(),
            telegram_message_ids: Vec::new(),
            attempt_id: Some(attempt.clone()),
            claim_until: now + SEND_CLAIM_MS,
            not_before: None,
            error: None,
            last_sent_at: None,
            created_at: now,
            updated_at: now,
            ttl: crate::adapters::dynamo::keys::ttl_seconds(now + REPLY_RETENTION_MS),
        };
        match app.store.take_reply(p, &mref, &a.lease_id, &rec, fresh, now).await? {
            crate::adapters::dynamo::replies::Taken::LostRace => continue,
            crate::adapters::dynamo::replies::Taken::Yes => {}
        }
        let job =
            Job { app, msg: &msg, target: &target, token: &token, rec_key: &rec_key, attempt: &attempt, a, audio_url };
        return job.send(&content, from, ids, wait_ms).await;
    }
    Err(rate_limited(&format!("part {}: other calls keep taking it", a.part), 1_000))
}

/// One call's sending, once it holds the record.
struct Job<'a> {
    app: &'a App,
    msg: &'a MessageItem,
    target: &'a Target,
    token: &'a SecretValue,
    rec_key: &'a (String, String),
    attempt: &'a str,
    a: &'a ReplyArgs,
    audio_url: Option<String>,
}

impl Job<'_> {
    fn result(
        &self,
        status: crate::protocol::worker::ReplyStatus,
        ids: Vec<i64>,
        chunks: u32,
        error: Option<String>,
    ) -> ReplyResult {
        ReplyResult {
            message_id: self.msg.message_id.clone(),
            part: self.a.part,
            status,
            telegram_message_ids: ids,
            chunks,
            error,
            replayed: false,
        }
    }

    async fn finish(&self, ids: &[i64], last: Option<Millis>, st: ReplyState, err: Option<&str>) -> AppResult<()> {
        let now = self.app.now();
        if !self.app.store.record_reply_progress(self.rec_key, self.attempt, ids, last, Some((st, err)), now).await? {
            tracing::warn!(message_id = %self.msg.message_id, part = self.a.part, "reply record taken over before its result was written");
        }
        Ok(())
    }

    async fn release(&self, not_before: Option<Millis>, why: &str) -> AppResult<()> {
        self.app.store.release_reply(self.rec_key, self.attempt, not_before, why, self.app.now()).await.map(|_| ())
    }

    async fn send_one(&self, content: &Content, i: usize) -> Result<i64, SendFailure> {
        let reply_to = if i == 0 { self.a.reply_to_message_id } else { None };
        let chat_id = self.target.chat_id.clone();
        match content {
            Content::Text { chunks, html } => {
                let m = OutgoingText { chat_id, text: chunks[i].clone(), html: *html, reply_to };
                self.app.telegram.send_text(self.token, &m).await
            }
            Content::Audio { caption, html, voice, .. } => {
                let url = self.audio_url.clone().unwrap_or_default();
                let m = OutgoingAudio { chat_id, url, caption: caption.clone(), html: *html, reply_to, voice: *voice };
                self.app.telegram.send_audio(self.token, &m).await
            }
        }
    }

    /// Send chunks `from..` (the ids of the earlier ones known), pacing the chat.
    async fn send(
        &self,
        content: &Content,
        from: usize,
        mut ids: Vec<i64>,
        mut wait_ms: Millis,
    ) -> AppResult<ReplyResult> {
        use crate::protocol::worker::ReplyStatus;
        let n = content.chunk_count() as usize;
        let started = Instant::now();
        for i in from..n {
            if wait_ms > 0 {
                tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
            }
            if i > from && started.elapsed() > CALL_BUDGET {
                self.release(None, "the call ran out of time; the next call sends the rest").await?;
                return Err(rate_limited("the reply is long: call again to send the rest", 1_000));
            }
            let sent = self.send_one(content, i).await;
            match sent {
                Ok(id) => {
                    ids.push(id);
                    let at = self.app.now();
                    if i + 1 < n {
                        self.app
                            .store
                            .record_reply_progress(self.rec_key, self.attempt, &ids, Some(at), None, at)
                            .await?;
                        wait_ms = rules::pace_wait(Some(at), self.target.group, self.app.now());
                    } else {
                        self.finish(&ids, Some(at), ReplyState::Sent, None).await?;
                    }
                }
                Err(SendFailure::RateLimited { retry_after_ms }) => {
                    let nb = self.app.now() + retry_after_ms as Millis;
                    self.release(Some(nb), "rate limited by Telegram").await?;
                    return Err(rate_limited(
                        &format!("Telegram rate-limits chat {}", self.target.chat_id),
                        retry_after_ms,
                    ));
                }
                Err(SendFailure::NotSent(m)) => {
                    self.release(None, &m).await?;
                    return Err(AppError::Provider(format!("{m}; nothing was sent: retry")));
                }
                Err(SendFailure::Refused(m)) => {
                    self.finish(&ids, None, ReplyState::Failed, Some(&m)).await?;
                    return Ok(self.result(ReplyStatus::Failed, ids, n as u32, Some(m)));
                }
                Err(SendFailure::Unknown(m)) => {
                    self.finish(&ids, None, ReplyState::Unconfirmed, Some(&m)).await?;
                    return Ok(self.result(ReplyStatus::Unconfirmed, ids, n as u32, Some(m)));
                }
            }
        }
        if from >= n {
            // Every chunk went out but the final write was lost: write it now.
            self.finish(&ids, None, ReplyState::Sent, None).await?;
        }
        Ok(self.result(ReplyStatus::Sent, ids, n as u32, None))
    }
}

/// A short-lived URL Telegram fetches the audio from: the blob must be an audio attachment
/// of this conversation, still kept.
async fn audio_url(app: &App, msg: &MessageItem, storage_id: &str, declared: Option<&str>) -> AppResult<String> {
    let row = app.store.get_attachment(msg, storage_id).await?.filter(|r| r.status == AttachmentStatus::Ready);
    let Some(row) = row else {
        return Err(AppError::validation(format!(
            "audio.storageId '{storage_id}' is not a stored file of this conversation (upload it with media-upload-url first)"
        )));
    };
    let mime = row.mime_type.as_deref().or(declared).unwrap_or_default();
    if !(mime.starts_with("audio/") || mime == "application/ogg") {
        return Err(AppError::validation(format!("audio.storageId '{storage_id}' is {mime}, not audio")));
    }
    let until = app.now() + 600_000;
    app.blobs.presign_get(&media_key(storage_id), until).await
}

/// `POST /worker/typing`: the `typing` action in the job's chat, for the lease holder.
pub async fn typing(app: &App, p: &Principal, a: &TypingArgs) -> AppResult<TypingResult> {
    let mref = MessageRef::parse(&a.message_id)?;
    let msg = held(app.store.get_message(&a.message_id).await?, &mref, p, &a.lease_id, app.now())?;
    let (target, token) = resolve(app, &msg).await?;
    match app.telegram.send_chat_action(&token, &target.chat_id, "typing").await {
        Ok(()) => Ok(TypingResult { ok: true }),
        Err(SendFailure::RateLimited { retry_after_ms }) => {
            Err(rate_limited("Telegram rate-limits this chat", retry_after_ms))
        }
        Err(f) => Err(AppError::Provider(f.describe())),
    }
}
