//! The table of `/worker/<op>` routes.

use super::{Auth, Route, route};
use crate::envelope::NoArgs;
use crate::hydration::model::HydrationArgs;
use crate::media::ops as media;
use crate::queue::{AppendArgs, ClaimArgs, ConversationArgs, FailArgs, LeaseArgs};
use crate::snapshots::ops as snapshots;
use crate::workers::rules::control_state;
use serde_json::json;

/// Every worker route. `Token` routes trust a recently verified token (their writes re-check it),
/// `Row` routes get a fresh worker row, hydration checks the token on the row it reads itself.
pub static ROUTES: &[Route] = &[
    // A spawned worker's first call: its single-use bootstrap code (from its env) for its token.
    route!("bootstrap", Auth::Code, false, false, |app, _who, a: crate::reconcile::model::BootstrapArgs| {
        app.store.redeem_bootstrap_code(&a.code).await?
    }),
    route!("claim", Auth::Token, false, true, |app, who, a: ClaimArgs| {
        let p = who.principal()?;
        app.store.claim_as(&p.worker_id, a.conversation_id.as_deref(), Some(&p.token_hash)).await?
    }),
    route!("heartbeat", Auth::Token, false, true, |app, who, a: LeaseArgs| {
        let a = LeaseArgs { token_hash: Some(who.principal()?.token_hash.clone()), ..a };
        app.store.heartbeat(&a).await?
    }),
    route!("complete", Auth::Token, false, true, |app, who, a: crate::usage::model::CompleteArgs| {
        // Optional token usage: checked before anything is written, counted after the complete.
        if let Some(u) = &a.usage {
            crate::usage::rules::validate(u)?;
        }
        app.store.complete(&a.lease(Some(who.principal()?.token_hash.clone()))).await?;
        if let Some(u) = &a.usage {
            crate::usage::ops::record_after_complete(app, &a.message_id, u).await;
        }
        json!({ "ok": true })
    }),
    route!("fail", Auth::Token, false, true, |app, who, a: FailArgs| {
        let a = FailArgs { token_hash: Some(who.principal()?.token_hash.clone()), ..a };
        app.store.fail(&a).await?
    }),
    route!("append-messages", Auth::Token, false, false, |app, who, a: AppendArgs| {
        let a = AppendArgs { holder: Some(who.principal()?.clone()), ..a };
        app.store.append_messages(a).await?
    }),
    route!("has-queued", Auth::Token, false, false, |app, _who, a: ConversationArgs| {
        json!({ "hasQueued": app.store.has_queued(&a.conversation_id).await? })
    }),
    route!("hydration", Auth::Deferred, false, false, |app, who, a: HydrationArgs| {
        crate::hydration::ops::hydrate(app, who.unverified()?, &a).await?
    }),
    route!("control-state", Auth::Row, true, false, |app, who, _a: NoArgs| {
        let (_, row) = who.with_row()?;
        control_state(Some(&row), app.now(), &app.store.policy.workers)
    }),
    route!("worker-heartbeat", Auth::Token, true, false, |app, who, _a: NoArgs| {
        app.store.worker_heartbeat(who.principal()?).await?
    }),
    route!("snapshot-prepare", Auth::Row, false, false, |app, who, a: crate::snapshots::model::PrepareArgs| {
        let (p, row) = who.with_row()?;
        snapshots::prepare(app, &p, &row, &a).await?
    }),
    route!("snapshot-finalize", Auth::Row, false, false, |app, who, a: crate::snapshots::model::FinalizeArgs| {
        let (p, row) = who.with_row()?;
        snapshots::finalize(app, &p, row, &a).await?
    }),
    route!("snapshot-fail", Auth::Row, false, false, |app, who, a: crate::snapshots::model::FailSnapshotArgs| {
        snapshots::fail(app, who.principal()?, &a).await?
    }),
    route!("snapshot-restore", Auth::Row, false, false, |app, who, a: crate::snapshots::model::RestoreArgs| {
        let (_, row) = who.with_row()?;
        snapshots::restore(app, &row, &a).await?
    }),
    route!("media-upload-url", Auth::Token, false, false, |app, who, a: crate::media::model::UploadUrlArgs| {
        media::upload_url(app, who.principal()?, &a).await?
    }),
    route!("media-url", Auth::Row, false, false, |app, who, a: crate::media::model::FileUrlArgs| {
        media::file_url(app, who.principal()?, &a).await?
    }),
    route!("message-metadata", Auth::Token, false, false, |app, who, a: crate::media::model::MetadataArgs| {
        json!({ "metadata": media::attach_metadata(app, who.principal()?, &a).await? })
    }),
    // Replies through the backend (issue 10): the lease holder's reply parts and typing indicator.
    route!("reply", Auth::Token, false, false, |app, who, a: crate::protocol::worker::ReplyArgs| {
        crate::replies::ops::reply(app, who.principal()?, &a).await?
    }),
    route!("typing", Auth::Token, false, false, |app, who, a: crate::protocol::worker::TypingArgs| {
        crate::replies::ops::typing(app, who.principal()?, &a).await?
    }),
    // The global skills manifest a worker materializes at boot (spec §13.4; wire type in
    // `crate::protocol::skills`).
    route!("skills-manifest", Auth::Token, true, true, |app, _who, a: crate::skills::model::ManifestArgs| {
        crate::skills::ops::manifest(app, &a).await?
    }),
];
