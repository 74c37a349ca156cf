//! The identity op tables (use cases in `bots.rs`, `pairing.rs`, `readiness.rs`). `USER_TABLE` holds the ops that act for one end user
//! (each takes a [`ConsumerUserId`], which the `api` function will take from a verified token);
//! `ADMIN_TABLE` the operator ops (bot tokens, webhooks, bindings by hand, pairing by hand).

use super::bots::*;
use super::pairing::*;
use super::readiness::*;
use crate::access::ops::UserCtx;
use crate::app::App;
use crate::envelope::NoArgs;
use crate::envelope::OpTable;

use crate::op;
use crate::secrets::SecretValue;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

// ---------- args ----------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportTokenArgs {
    agent_key: String,
    #[serde(deserialize_with = "token")]
    plaintext_value: SecretValue,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

fn token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(SecretValue::new(s)),
        _ => Err(serde::de::Error::custom("plaintextValue must be a string")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigureWebhookArgs {
    agent_key: String,
    #[serde(default)]
    public_base_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentArgs {
    agent_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OptionalAgentArgs {
    #[serde(default)]
    agent_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserAgentArgs {
    agent_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePairingArgs {
    agent_key: String,
    #[serde(default)]
    ttl_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserCodeArgs {
    code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumeArgs {
    code: String,
    bot_identity: String,
    telegram_user_id: String,
    telegram_chat_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SoftResetArgs {
    #[serde(default)]
    revoke_active_bindings: Option<bool>,
    #[serde(default)]
    expire_pending_pairings: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolveTelegramArgs {
    bot_identity: String,
    #[serde(default)]
    telegram_user_id: Option<String>,
    #[serde(default)]
    telegram_chat_id: Option<String>,
}

// ---------- tables ----------

/// Ops that act for one end user (the `api` function): the user is the caller's (`UserCtx`).
pub const USER_TABLE: OpTable<UserCtx> = OpTable {
    domain: "identity",
    ops: &[
        op!(UserCtx, "createPairingCode", |c, a: CreatePairingArgs| create_pairing(
            &c.app,
            &c.user,
            &a.agent_key,
            a.ttl_ms
        )
        .await?),
        op!(UserCtx, "createUserAgentPairing", |c, a: CreatePairingArgs| {
            let (pairing, deep_link) = create_user_agent_pairing(&c.app, &c.user, &a.agent_key, a.ttl_ms).await?;
            json!({ "pairing": crate::envelope::to_json(pairing)?, "deepLink": deep_link })
        }),
        op!(UserCtx, "getPairingCodeStatus", |c, a: UserCodeArgs| pairing_code_status(&c.app, &c.user, &a.code)
            .await?),
        op!(UserCtx, "getUserAgentPairingStatus", |c, a: UserAgentArgs| user_agent_pairing_status(
            &c.app,
            &c.user,
            &a.agent_key
        )
        .await?),
        op!(UserCtx, "revokeUserAgentBinding", |c, _a: NoArgs| revoke(&c.app, &c.user).await?),
        op!(UserCtx, "resolveAgentForUser", |c, _a: NoArgs| {
            let b = active_binding(&c.app.store, &c.user).await?;
            json!({ "consumerUserId": c.user, "agentKey": b.map(|b| b.agent_key) })
        }),
        op!(UserCtx, "getUserAgentBinding", |c, _a: NoArgs| active_binding(&c.app.store, &c.user).await?),
        op!(UserCtx, "getUserAgentOnboardingState", |c, a: UserAgentArgs| onboarding_state(
            &c.app,
            &c.user,
            &a.agent_key
        )
        .await?),
        op!(UserCtx, "getTelegramAgentReadiness", |c, a: UserAgentArgs| agent_readiness(&c.app, &c.user, &a.agent_key)
            .await?),
        op!(UserCtx, "getAgentOperationalReadiness", |c, a: UserAgentArgs| agent_readiness(
            &c.app,
            &c.user,
            &a.agent_key
        )
        .await?),
    ],
};

/// Operator ops.
pub const ADMIN_TABLE: OpTable<App> = OpTable {
    domain: "identity-admin",
    ops: &[
        op!(App, "importTelegramTokenForAgent", |app, a: ImportTokenArgs| import_token(
            app,
            &a.agent_key,
            &a.plaintext_value,
            &a.metadata.unwrap_or_default()
        )
        .await?),
        op!(App, "configureTelegramWebhook", |app, a: ConfigureWebhookArgs| configure_webhook(
            app,
            &a.agent_key,
            a.public_base_url.as_deref()
        )
        .await?),
        op!(App, "reconcileTelegramBotIdentityForAgent", |app, a: AgentArgs| reconcile_bot(app, &a.agent_key).await?),
        op!(App, "getProviderOperationalReadiness", |app, _a: crate::envelope::NoArgs| provider_readiness(app).await?),
        op!(App, "getWebhookReadiness", |app, a: AgentArgs| webhook_readiness(app, &a.agent_key).await?),
        op!(App, "bindUserAgent", |app, a: BindArgs| bind_by_hand(app, a).await?),
        op!(App, "consumePairingCode", |app, a: ConsumeArgs| {
            let tg = TelegramIds {
                bot: check_id("botIdentity", &a.bot_identity)?,
                user: check_id("telegramUserId", &a.telegram_user_id)?,
                chat: check_id("telegramChatId", &a.telegram_chat_id)?,
                group: false,
                metadata: None,
            };
            consume_code(app, &a.code, &tg).await?
        }),
        op!(App, "resolveAgentForTelegram", |app, a: ResolveTelegramArgs| {
            let bot = check_id("botIdentity", &a.bot_identity)?;
            let user = a.telegram_user_id.as_deref().map(|u| check_id("telegramUserId", u)).transpose()?;
            let chat = a.telegram_chat_id.as_deref().map(|c| check_id("telegramChatId", c)).transpose()?;
            let t = resolve_for_telegram(&app.store, &bot, user.as_deref(), chat.as_deref(), true).await?;
            json!({
                "consumerUserId": t.as_ref().map(|t| &t.consumer_user_id),
                "agentKey": t.as_ref().map(|t| &t.agent_key),
                "conversationId": t.as_ref().map(|t| &t.conversation_id),
            })
        }),
        op!(App, "softResetTelegramBindingsMissingBotIdentity", |app, a: SoftResetArgs| soft_reset(
            app,
            a.revoke_active_bindings.unwrap_or(true),
            a.expire_pending_pairings.unwrap_or(true)
        )
        .await?),
        op!(App, "getRequiredSecretRefs", |app, a: OptionalAgentArgs| required_secret_refs(
            app,
            a.agent_key.as_deref()
        )
        .await?),
    ],
};
