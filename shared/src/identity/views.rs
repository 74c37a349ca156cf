//! The user-agent views (spec §9.1–9.3), as pure derivations over a user's bindings (newest
//! first), their latest pairing code per agent and the agents' profiles.

use super::model::{Binding, BindingStatus, PairingCode, PairingStatus};
use crate::clock::Millis;
use serde::Serialize;

/// Where a user stands with an agent (§9.1's table, first matching row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserAgentStatus {
    /// Nothing yet: no binding, no live code.
    Draft,
    /// A code is waiting to be used.
    Pairing,
    Active,
    /// Revoked, or the agent is disabled and nothing is bound.
    Disabled,
    /// Bound to an agent that is disabled.
    Failed,
}

/// What the views need of an agent's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileFacts {
    pub enabled: bool,
    pub version: String,
}

/// One agent as the user sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAgentEntry {
    pub consumer_user_id: String,
    pub agent_key: String,
    pub display_name: Option<String>,
    /// The Telegram username of the agent's bot.
    pub telegram_username: Option<String>,
    pub bot_identity: Option<String>,
    pub version: Option<String>,
    pub status: UserAgentStatus,
    pub binding_status: Option<BindingStatus>,
    pub pairing_status: Option<PairingStatus>,
    pub conversation_id: String,
    pub can_create_new_agent: bool,
    pub can_disable: bool,
    pub can_chat: bool,
    pub can_manage_push_jobs: bool,
}

/// The conversation of a (user, agent) pair without a binding naming one.
pub fn default_conversation(consumer_user_id: &str, agent_key: &str) -> String {
    format!("user-agent:{agent_key}:{consumer_user_id}")
}

/// The newest binding of `agent_key` among `bindings` (newest first), any status.
pub fn latest_binding<'a>(bindings: &'a [Binding], agent_key: &str) -> Option<&'a Binding> {
    bindings.iter().find(|b| b.agent_key == agent_key)
}

/// The agent of the newest active binding: the user's active agent.
pub fn active_agent_key(bindings: &[Binding]) -> Option<&str> {
    bindings.iter().find(|b| b.status == BindingStatus::Active).map(|b| b.agent_key.as_str())
}

/// The agents a user has: those of its bindings (newest first), then those of its pending codes.
pub fn agent_keys(bindings: &[Binding], pairings: &[PairingCode]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let pending = pairings.iter().filter(|p| p.status == PairingStatus::Pending).map(|p| &p.agent_key);
    for k in bindings.iter().map(|b| &b.agent_key).chain(pending) {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

/// The conversation a message to the user's agent goes to: the newest binding's, else the
/// default one.
pub fn target_conversation(bindings: &[Binding], consumer_user_id: &str, agent_key: &str) -> String {
    latest_binding(bindings, agent_key)
        .map(|b| b.conversation_id.trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| default_conversation(consumer_user_id, agent_key))
}

/// A message from the backend (the app, a template, a push) to the conversation the user talks to
/// the agent in: `b` is the user's active binding with it. The binding's Telegram chat and user
/// ids go into `metadata` (with `consumerUserId`), the provider is `telegram` when the binding has
/// a chat (the reply goes there) and `system_push` otherwise, and the provider user is the
/// Telegram user, else the chat, else the consumer.
pub fn message_to_binding(
    bindings: &[Binding],
    b: &Binding,
    consumer_user_id: &str,
    agent_key: &str,
    text: String,
    mut metadata: std::collections::BTreeMap<String, String>,
) -> crate::queue::EnqueueArgs {
    let nonblank = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let (chat, tg_user) = (nonblank(&b.telegram_chat_id), nonblank(&b.telegram_user_id));
    metadata.insert("consumerUserId".into(), consumer_user_id.to_string());
    if let Some(c) = &chat {
        metadata.insert("telegramChatId".into(), c.clone());
    }
    if let Some(u) = &tg_user {
        metadata.insert("telegramUserId".into(), u.clone());
    }
    crate::queue::EnqueueArgs {
        conversation_id: target_conversation(bindings, consumer_user_id, agent_key),
        agent_key: agent_key.to_string(),
        payload: crate::queue::model::Payload {
            provider: if chat.is_some() { "telegram" } else { "system_push" }.into(),
            provider_user_id: tg_user.or(chat).unwrap_or_else(|| consumer_user_id.to_string()),
            message_text: text,
            external_message_id: None,
            raw_update_json: None,
            metadata: Some(metadata),
            attachments: None,
        },
        priority: None,
        scheduled_for: None,
        max_attempts: None,
    }
}

/// The entry of `agent_key` for `consumer_user_id` at `now`. `pairing` is the user's latest code
/// for the agent; `bot_username` the agent's bot's Telegram username, when known.
#[allow(clippy::too_many_arguments)]
pub fn entry(
    consumer_user_id: &str,
    agent_key: &str,
    bindings: &[Binding],
    pairing: Option<&PairingCode>,
    profile: Option<&ProfileFacts>,
    bot_username: Option<String>,
    can_create_new_agent: bool,
    now: Millis,
) -> UserAgentEntry {
    let binding = latest_binding(bindings, agent_key);
    let meta = |k: &str| {
        binding
            .and_then(|b| b.metadata.as_ref())
            .and_then(|m| m.get(k))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let active = binding.is_some_and(|b| b.status == BindingStatus::Active);
    let pending = pairing.filter(|p| p.status == PairingStatus::Pending);
    let live_pending = pending.is_some_and(|p| p.expires_at > now);
    let enabled = profile.is_none_or(|p| p.enabled);
    let status = match (binding.map(|b| b.status), live_pending) {
        (Some(BindingStatus::Active), _) if !enabled => UserAgentStatus::Failed,
        (Some(BindingStatus::Active), _) => UserAgentStatus::Active,
        (_, true) => UserAgentStatus::Pairing,
        (Some(BindingStatus::Revoked), false) => UserAgentStatus::Disabled,
        (None, false) if !enabled => UserAgentStatus::Disabled,
        (None, false) => UserAgentStatus::Draft,
    };
    let pairing_status = if active {
        Some(PairingStatus::Used)
    } else {
        pending.map(|p| if p.expires_at > now { PairingStatus::Pending } else { PairingStatus::Expired })
    };
    let bot_identity = binding
        .and_then(|b| b.bot_identity.clone())
        .or_else(|| pairing.map(|p| p.bot_identity.clone()))
        .filter(|b| !b.trim().is_empty());
    let ok = status == UserAgentStatus::Active;
    UserAgentEntry {
        consumer_user_id: consumer_user_id.to_string(),
        agent_key: agent_key.to_string(),
        display_name: meta("displayName"),
        // The agent's bot (what a deep link needs), from the bot record `getMe` filled in (the
        // original guessed it from the token's secret ref, W-5).
        telegram_username: bot_username,
        bot_identity,
        version: profile.map(|p| p.version.clone()),
        status,
        binding_status: binding.map(|b| b.status),
        pairing_status,
        conversation_id: target_conversation(bindings, consumer_user_id, agent_key),
        can_create_new_agent,
        can_disable: ok,
        can_chat: ok,
        can_manage_push_jobs: ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::model::BindingSource;

    const NOW: Millis = 1_000_000;

    fn binding(agent: &str, status: BindingStatus, at: Millis) -> Binding {
        Binding {
            binding_id: format!("b{at}"),
            consumer_user_id: "u".into(),
            agent_key: agent.into(),
            conversation_id: format!("telegram:7:{at}"),
            bot_identity: Some("7".into()),
            status,
            source: BindingSource::TelegramPairing,
            telegram_user_id: Some("9".into()),
            telegram_chat_id: Some("9".into()),
            group_paired: false,
            metadata: None,
            bound_at: at,
            revoked_at: None,
            flag: None,
        }
    }

    fn code(agent: &str, status: PairingStatus, expires_at: Millis) -> PairingCode {
        PairingCode {
            code: "C".into(),
            consumer_user_id: "u".into(),
            agent_key: agent.into(),
            bot_identity: "7".into(),
            status,
            created_at: 0,
            expires_at,
            used_at: None,
            telegram_user_id: None,
            telegram_chat_id: None,
        }
    }

    fn status(b: &[Binding], p: Option<&PairingCode>, enabled: Option<bool>) -> UserAgentStatus {
        let prof = enabled.map(|e| ProfileFacts { enabled: e, version: "1".into() });
        entry("u", "a", b, p, prof.as_ref(), None, true, NOW).status
    }

    #[test]
    fn the_status_table_first_matching_row() {
        use BindingStatus::*;
        use UserAgentStatus as S;
        let live = code("a", PairingStatus::Pending, NOW + 1);
        let old = code("a", PairingStatus::Pending, NOW);
        assert_eq!(status(&[binding("a", Active, 5)], None, Some(false)), S::Failed);
        assert_eq!(status(&[binding("a", Active, 5)], Some(&live), Some(true)), S::Active);
        assert_eq!(status(&[binding("a", Active, 5)], None, None), S::Active);
        assert_eq!(status(&[binding("a", Revoked, 5)], Some(&live), Some(true)), S::Pairing);
        assert_eq!(status(&[], Some(&live), Some(false)), S::Pairing);
        assert_eq!(status(&[binding("a", Revoked, 5)], Some(&old), Some(true)), S::Disabled);
        assert_eq!(status(&[], Some(&old), Some(false)), S::Disabled);
        assert_eq!(status(&[], None, Some(true)), S::Draft);
        assert_eq!(status(&[], None, None), S::Draft);
        // Another agent's binding does not count.
        assert_eq!(status(&[binding("b", Active, 5)], None, Some(true)), S::Draft);
    }

    #[test]
    fn pairing_status_conversation_and_agent_set() {
        let e = entry("u", "a", &[], Some(&code("a", PairingStatus::Pending, NOW)), None, None, true, NOW);
        assert_eq!((e.pairing_status, e.conversation_id.as_str()), (Some(PairingStatus::Expired), "user-agent:a:u"));
        let bs = [binding("b", BindingStatus::Active, 9), binding("a", BindingStatus::Revoked, 5)];
        let e = entry("u", "b", &bs, None, None, Some("bot_b".into()), false, NOW);
        assert_eq!(e.pairing_status, Some(PairingStatus::Used));
        assert_eq!((e.conversation_id.as_str(), e.telegram_username.as_deref()), ("telegram:7:9", Some("bot_b")));
        assert!(e.can_chat && !e.can_create_new_agent);
        assert_eq!(active_agent_key(&bs), Some("b"));
        let ps = [code("c", PairingStatus::Pending, NOW + 5), code("a", PairingStatus::Pending, NOW + 5)];
        assert_eq!(agent_keys(&bs, &ps), vec!["b", "a", "c"]);
        assert_eq!(agent_keys(&[], &[code("d", PairingStatus::Used, 0)]), Vec::<String>::new());
    }
}
