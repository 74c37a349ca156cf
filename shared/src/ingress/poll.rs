//! Long polling instead of the webhook (the local runner's `--telegram-token` mode: a developer
//! chats with a local agent from a phone, no public URL needed). Each update goes through the
//! same ingress pipeline as a webhook delivery: the accept stage's dedupe-and-persist (the bot is
//! the one whose token polled, so there is no webhook secret to check), then the process stage.
//! The offset is kept in memory; a restart gets the unconfirmed updates again and the dedupe on
//! (bot, update_id) drops those already accepted.

use super::{MAX_UPDATE_BYTES, ProcessOutcome, process};
use crate::adapters::dynamo::identity::Accepted;
use crate::app::App;
use crate::error::{AppError, AppResult};
use crate::secrets::SecretValue;
use serde_json::Value;
use std::time::Duration;

/// One bot's polling state.
#[derive(Debug)]
pub struct Poller {
    token: SecretValue,
    pub bot_identity: String,
    /// The next update wanted (the ones before are confirmed to Telegram by asking for it).
    pub offset: i64,
    /// How long one `getUpdates` waits for an update.
    pub timeout_s: u64,
}

/// What one round of polling did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    pub updates: usize,
    pub outcomes: Vec<String>,
}

impl Poller {
    /// Get ready to poll with `token`: the bot's identity (`getMe`), and its webhook removed
    /// (Telegram refuses `getUpdates` while one is set).
    pub async fn start(app: &App, token: SecretValue, timeout_s: u64) -> AppResult<Self> {
        let me = app.telegram.get_me(&token).await?;
        app.telegram.delete_webhook(&token).await?;
        Ok(Self { token, bot_identity: me.bot_identity, offset: 0, timeout_s })
    }

    /// One `getUpdates`, each update accepted and processed in order; the offset moves past
    /// every update seen (one that cannot be accepted is logged and left: retrying it would
    /// block the rest).
    pub async fn poll_once(&mut self, app: &App) -> AppResult<Round> {
        let updates = app.telegram.get_updates(&self.token, self.offset, self.timeout_s).await?;
        let mut round = Round { updates: updates.len(), outcomes: Vec::new() };
        for u in &updates {
            let Some(id) = u.get("update_id").and_then(Value::as_i64) else { continue };
            self.offset = self.offset.max(id + 1);
            match accept_polled(app, &self.bot_identity, u).await {
                Ok(Some(o)) => round.outcomes.push(o.outcome),
                Ok(None) => round.outcomes.push("duplicate".into()),
                Err(e) => {
                    e.log("telegram polled update");
                    round.outcomes.push(format!("error: {}", e.code().as_str()));
                }
            }
        }
        Ok(round)
    }

    /// Poll until the process ends; errors are logged and retried with a growing pause (at most
    /// 30 s).
    pub async fn run(self, app: &App) {
        self.run_then(app, |_| {}).await
    }

    /// [`Poller::run`], calling `after` with each round that got updates (the local runner asks
    /// for a reconcile cycle when one was enqueued, as the queue table's stream does on AWS).
    pub async fn run_then(mut self, app: &App, after: impl Fn(&Round)) {
        let mut pause = Duration::from_secs(1);
        loop {
            match self.poll_once(app).await {
                Ok(r) => {
                    pause = Duration::from_secs(1);
                    if r.updates > 0 {
                        after(&r);
                    }
                    if r.updates > 0 {
                        tracing::info!(bot_identity = %self.bot_identity, updates = r.updates, outcomes = ?r.outcomes, "telegram updates polled");
                    }
                }
                Err(e) => {
                    e.log("telegram getUpdates");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Accept one polled update of `bot_identity` (dedupe on (bot, update_id) and persist, as the
/// webhook's accept stage does) and process it. `None` when it was accepted before.
pub async fn accept_polled(app: &App, bot_identity: &str, update: &Value) -> AppResult<Option<ProcessOutcome>> {
    let update_id = update
        .get("update_id")
        .and_then(Value::as_i64)
        .ok_or_else(|| AppError::validation("not a Telegram update: no integer update_id"))?;
    let rec = app.store.get_bot(bot_identity).await?.ok_or_else(|| {
        AppError::not_found(format!(
            "bot {bot_identity} belongs to no agent: import its token for one (importTelegramTokenForAgent)"
        ))
    })?;
    let raw = update.to_string();
    if raw.len() > MAX_UPDATE_BYTES {
        return Err(AppError::PayloadTooLarge(format!("update {update_id} is {} bytes: dropped", raw.len())));
    }
    let keep_until = app.now() + app.store.policy.telegram.update_retention_ms;
    match app.store.accept_update(bot_identity, update_id, &rec.agent_key, &raw, keep_until).await? {
        Accepted::Duplicate => Ok(None),
        Accepted::New => {
            // Transient failures are retried here (on AWS the stream would retry them).
            let mut last = None;
            for attempt in 0..3u64 {
                match process(app, bot_identity, update_id).await {
                    Ok(o) => return Ok(Some(o)),
                    Err(e) => {
                        last = Some(e);
                        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                    }
                }
            }
            Err(last.unwrap_or_else(|| AppError::internal("processing a polled update failed")))
        }
    }
}
