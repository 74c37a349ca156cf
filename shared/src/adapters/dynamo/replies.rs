//! Reply records (`pk = C#<conversationId>`, `sk = R#<message ULID>#<part:03>`): the replies
//! domain's access patterns. A record is taken for sending in one transaction with the lease and
//! token checks, so a worker that lost its lease, or whose token was replaced, sends nothing.

use super::keys;
use super::tx::{tx_check, tx_put, tx_update};
use super::{Ex, Reason, Store, TxError, from_item, key, n, s, to_av, to_item};
use crate::clock::Millis;
use crate::error::{AppError, AppResult, LeaseRefusal};
use crate::ids::MessageRef;
use crate::queue::model::MessageItem;
use crate::replies::model::{ReplyRecord, ReplyState};
use crate::workers::auth::Principal;

/// The context of a reply call.
#[derive(Debug, Clone)]
pub struct ReplyContext {
    pub message: Option<MessageItem>,
    /// The record of this part, and of the part before it (pacing).
    pub record: Option<ReplyRecord>,
    pub previous: Option<ReplyRecord>,
}

/// How taking a record for sending went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    Yes,
    /// Another call took or finished it first: read again.
    LostRace,
}

fn state(st: ReplyState) -> &'static str {
    match st {
        ReplyState::Sending => "sending",
        ReplyState::Sent => "sent",
        ReplyState::Failed => "failed",
        ReplyState::Unconfirmed => "unconfirmed",
    }
}

impl Store {
    /// The message and the records of this part and the one before: one BatchGetItem, strongly
    /// consistent.
    pub async fn reply_context(&self, mref: &MessageRef, part: u32) -> AppResult<ReplyContext> {
        let pk = keys::conversation_pk(&mref.conversation_id);
        let mut ks = vec![
            (self.tables.queue.as_str(), key(&pk, keys::message_sk(&mref.ulid))),
            (self.tables.queue.as_str(), key(&pk, keys::reply_sk(&mref.ulid, part))),
        ];
        if part > 0 {
            ks.push((self.tables.queue.as_str(), key(&pk, keys::reply_sk(&mref.ulid, part - 1))));
        }
        let mut got = self.batch_get(&ks).await?.into_iter();
        let (m, r, p) = (got.next().flatten(), got.next().flatten(), got.next().flatten());
        Ok(ReplyContext {
            message: m.map(from_item).transpose()?,
            record: r.map(from_item).transpose()?,
            previous: p.map(from_item).transpose()?,
        })
    }

    /// The keys of a part's record.
    pub fn reply_keys(&self, mref: &MessageRef, part: u32) -> (String, String) {
        (keys::conversation_pk(&mref.conversation_id), keys::reply_sk(&mref.ulid, part))
    }

    /// Take a part for sending, in one transaction with the lease (the message is processing
    /// under `lease` by the caller, unexpired) and the caller's token: a new record is put if
    /// absent; an existing `sending` one is taken over when no call holds it and its content is
    /// the same. A failed lease is its 409, a failed token its 401.
    pub async fn take_reply(
        &self,
        p: &Principal,
        mref: &MessageRef,
        lease_id: &str,
        rec: &ReplyRecord,
        fresh: bool,
        now: Millis,
    ) -> AppResult<Taken> {
        let ex = Ex::new()
            .name("#st", "status")
            .val(":processing", s("processing"))
            .val(":w", s(&p.worker_id))
            .val(":l", s(lease_id))
            .val(":now", n(now))
            .val(":a", s(rec.attempt_id.clone().unwrap_or_default()))
            .val(":cu", n(rec.claim_until))
            .val(":sending", s("sending"))
            .val(":h", s(&rec.body_hash));
        let msg_key = key(keys::conversation_pk(&mref.conversation_id), keys::message_sk(&mref.ulid));
        let held = "#st = :processing AND claimedBy = :w AND leaseId = :l AND leaseExpiresAt > :now";
        let record = if fresh {
            tx_put(&self.tables.queue, to_item(rec)?, "attribute_not_exists(pk)", &ex)
        } else {
            tx_update(
                &self.tables.queue,
                key(&rec.pk, &rec.sk),
                "SET attemptId = :a, claimUntil = :cu, updatedAt = :now, workerId = :w, leaseId = :l REMOVE notBefore",
                Some("replyState = :sending AND claimUntil <= :now AND bodyHash = :h"),
                &ex,
            )
        };
        let items = vec![tx_check(&self.tables.queue, msg_key, held, &ex), self.token_check(p), record];
        match self.transact(items).await {
            Ok(()) => Ok(Taken::Yes),
            Err(TxError::Cancelled(r)) => {
                if let Some(m) = r.first().filter(|r| r.failed_condition()) {
                    let refusal = m
                        .item
                        .clone()
                        .map(from_item::<MessageItem>)
                        .transpose()?
                        .map(|msg| crate::queue::rules::check_lease(&msg, &p.worker_id, lease_id, now));
                    return Err(match refusal {
                        None => AppError::not_found(format!("message {} does not exist", mref.id())),
                        Some(Err(e)) => e,
                        Some(Ok(())) => {
                            AppError::lease(LeaseRefusal::LeaseMismatch, "the lease changed during the call")
                        }
                    });
                }
                if r.get(1).is_some_and(Reason::failed_condition) {
                    return Err(self.token_refusal(p).await);
                }
                if r.get(2).is_some_and(Reason::failed_condition) || r.iter().any(Reason::conflict) {
                    return Ok(Taken::LostRace);
                }
                Err(TxError::Cancelled(r).into_app("reply"))
            }
            Err(e) => Err(e.into_app("reply")),
        }
    }

    /// Record progress of the call holding `attempt`: the Telegram ids so far and the last send,
    /// and when `done` is given the final state (the record is then no call's any more). Whether
    /// the record was still this call's.
    pub async fn record_reply_progress(
        &self,
        rec_key: &(String, String),
        attempt: &str,
        ids: &[i64],
        last_sent_at: Option<Millis>,
        done: Option<(ReplyState, Option<&str>)>,
        now: Millis,
    ) -> AppResult<bool> {
        let mut ex = Ex::new()
            .val(":a", s(attempt))
            .val(":ids", to_av(&ids)?)
            .val(":now", n(now))
            .val(":t", n(last_sent_at.unwrap_or(0)))
            .val(":zero", n(0));
        let mut set = vec!["telegramMessageIds = :ids", "updatedAt = :now"];
        if last_sent_at.is_some() {
            set.push("lastSentAt = :t");
        }
        let mut remove = Vec::new();
        if let Some((st, err)) = done {
            ex = ex.val(":st", s(state(st)));
            set.extend(["replyState = :st", "claimUntil = :zero"]);
            remove.push("attemptId");
            ex = ex.name("#err", "error");
            match err {
                Some(e) => {
                    ex = ex.val(":err", s(crate::ids::truncate(e, 1000)));
                    set.push("#err = :err");
                }
                None => remove.push("#err"),
            }
        }
        let mut update = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        self.update_if(
            &self.tables.queue,
            key(&rec_key.0, &rec_key.1),
            &update,
            "attemptId = :a",
            &ex,
            "UpdateItem reply",
        )
        .await
    }

    /// Give a `sending` record back (nothing final happened): the next call resumes it, not
    /// before `not_before` when Telegram asked to wait.
    pub async fn release_reply(
        &self,
        rec_key: &(String, String),
        attempt: &str,
        not_before: Option<Millis>,
        error: &str,
        now: Millis,
    ) -> AppResult<bool> {
        let ex = Ex::new()
            .name("#err", "error")
            .val(":a", s(attempt))
            .val(":now", n(now))
            .val(":zero", n(0))
            .val(":nb", n(not_before.unwrap_or(0)))
            .val(":err", s(crate::ids::truncate(error, 1000)));
        let update = if not_before.is_some() {
            "SET claimUntil = :zero, updatedAt = :now, notBefore = :nb, #err = :err REMOVE attemptId"
        } else {
            "SET claimUntil = :zero, updatedAt = :now, #err = :err REMOVE attemptId"
        };
        self.update_if(
            &self.tables.queue,
            key(&rec_key.0, &rec_key.1),
            update,
            "attemptId = :a",
            &ex,
            "UpdateItem reply",
        )
        .await
    }
}
