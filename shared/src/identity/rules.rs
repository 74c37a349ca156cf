//! Pure identity rules: pairing codes, TTLs, derived statuses, rate-limit windows, the bind plan
//! (which bindings a new one displaces, which uniqueness items it writes), webhook URLs and the
//! onboarding state machine. Time and randomness are arguments.

use super::model::{Binding, BindingStatus, NextAction, PairingCode, PairingStatus, PairingView};
use crate::clock::Millis;
use crate::error::{AppError, AppResult};

/// Pairing codes: 10 characters from 32 that cannot be mistaken for each other (no 0/O, 1/I).
pub const CODE_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
pub const CODE_LEN: usize = 10;
/// TTL of a pairing code: default, least and most (spec §5.1).
pub const DEFAULT_TTL_MS: Millis = 900_000;
pub const MIN_TTL_MS: Millis = 60_000;
pub const MAX_TTL_MS: Millis = 86_400_000;
/// The route Telegram posts updates to.
pub const WEBHOOK_PATH: &str = "/telegram/webhook";

/// A code from `CODE_LEN` random bytes (each byte's low 5 bits: uniform over 32 characters).
pub fn code_from(random: &[u8]) -> String {
    random.iter().take(CODE_LEN).map(|b| CODE_ALPHABET[(b & 31) as usize] as char).collect()
}

/// A code as typed by a user, in canonical form, or `None` when it cannot be one of ours (then
/// it is refused without a lookup).
pub fn normalize_code(input: &str) -> Option<String> {
    let c = input.trim().to_ascii_uppercase();
    (c.len() == CODE_LEN && c.bytes().all(|b| CODE_ALPHABET.contains(&b))).then_some(c)
}

/// `ttlMs` clamped to 1 min..24 h, 15 min when absent.
pub fn clamp_ttl(ttl_ms: Option<i64>) -> Millis {
    ttl_ms.unwrap_or(DEFAULT_TTL_MS).clamp(MIN_TTL_MS, MAX_TTL_MS)
}

/// The status readers see: a pending code past its expiry is expired.
pub fn derived_status(c: &PairingCode, now: Millis) -> PairingStatus {
    match c.status {
        PairingStatus::Pending if c.expires_at <= now => PairingStatus::Expired,
        s => s,
    }
}

pub fn view(c: &PairingCode, now: Millis) -> PairingView {
    PairingView {
        code: c.code.clone(),
        consumer_user_id: c.consumer_user_id.clone(),
        agent_key: c.agent_key.clone(),
        bot_identity: c.bot_identity.clone(),
        status: derived_status(c, now),
        created_at: c.created_at,
        expires_at: c.expires_at,
        used_at: c.used_at,
        telegram_user_id: c.telegram_user_id.clone(),
        telegram_chat_id: c.telegram_chat_id.clone(),
    }
}

/// Why a code cannot be consumed (spec §5.4's order, W-4's fixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeRefusal {
    NotFound,
    AlreadyUsedOrExpired,
    Expired,
    OtherBot,
}

impl ConsumeRefusal {
    pub fn message(self) -> &'static str {
        match self {
            ConsumeRefusal::NotFound => "Pairing code not found",
            ConsumeRefusal::AlreadyUsedOrExpired => "Pairing code already used or expired",
            ConsumeRefusal::Expired => "Pairing code expired",
            ConsumeRefusal::OtherBot => "Pairing code belongs to a different Telegram bot",
        }
    }
    pub fn into_error(self) -> AppError {
        match self {
            ConsumeRefusal::NotFound => AppError::not_found(self.message()),
            _ => AppError::conflict(self.message()),
        }
    }
}

pub fn check_consume(c: Option<&PairingCode>, bot_identity: &str, now: Millis) -> Result<(), ConsumeRefusal> {
    let Some(c) = c else { return Err(ConsumeRefusal::NotFound) };
    if c.status != PairingStatus::Pending {
        return Err(ConsumeRefusal::AlreadyUsedOrExpired);
    }
    if c.expires_at <= now {
        return Err(ConsumeRefusal::Expired);
    }
    if c.bot_identity != bot_identity {
        return Err(ConsumeRefusal::OtherBot);
    }
    Ok(())
}

/// The window an attempt at `now` counts in, and when that window's counter may be dropped.
pub fn attempt_window(now: Millis, window_ms: Millis) -> (i64, Millis) {
    let w = now.div_euclid(window_ms.max(1));
    (w, (w + 2) * window_ms.max(1))
}

/// `user-agent:<agentKey>:<consumerUserId>` (spec §2).
pub fn user_agent_conversation_id(agent_key: &str, consumer_user_id: &str) -> String {
    format!("user-agent:{agent_key}:{consumer_user_id}")
}

/// A uniqueness item of a binding: one active binding per (bot, Telegram user) and per (bot, chat).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Guard {
    TgUser { bot: String, user: String },
    TgChat { bot: String, chat: String },
}

/// The guards an active binding holds.
pub fn guards_of(b: &Binding) -> Vec<Guard> {
    let mut g = Vec::new();
    if let Some(bot) = &b.bot_identity {
        if let Some(u) = &b.telegram_user_id {
            g.push(Guard::TgUser { bot: bot.clone(), user: u.clone() });
        }
        if let Some(c) = &b.telegram_chat_id {
            g.push(Guard::TgChat { bot: bot.clone(), chat: c.clone() });
        }
    }
    g
}

/// What binding `new` writes, in one transaction: the bindings it displaces (the user's own, and
/// the holders of the guards it takes), and each guard with the binding id it must still hold
/// (`None`: the guard must not exist).
#[derive(Debug, Clone, PartialEq)]
pub struct BindPlan {
    pub revoke: Vec<Binding>,
    /// Guards written for the new binding, with the holder expected now.
    pub put_guards: Vec<(Guard, Option<String>)>,
    /// Guards of displaced bindings that the new one does not take over, with their holder.
    pub delete_guards: Vec<(Guard, String)>,
}

/// `holders`: for each guard of `new`, the binding holding it now (read from the guard item).
pub fn plan_bind(new: &Binding, own: Option<&Binding>, holders: &[(Guard, Option<Binding>)]) -> BindPlan {
    let mut revoke: Vec<Binding> = Vec::new();
    let mut add = |b: &Binding| {
        if b.status == BindingStatus::Active && !revoke.iter().any(|r| r.binding_id == b.binding_id) {
            revoke.push(b.clone());
        }
    };
    if let Some(o) = own {
        add(o);
    }
    for (_, h) in holders {
        if let Some(h) = h {
            add(h);
        }
    }
    let new_guards = guards_of(new);
    let put_guards = new_guards
        .iter()
        .map(|g| {
            let holder = holders.iter().find(|(hg, _)| hg == g).and_then(|(_, h)| h.as_ref());
            (g.clone(), holder.map(|h| h.binding_id.clone()))
        })
        .collect();
    let mut delete_guards: Vec<(Guard, String)> = Vec::new();
    for r in &revoke {
        for g in guards_of(r) {
            if !new_guards.contains(&g) && !delete_guards.iter().any(|(d, _)| *d == g) {
                delete_guards.push((g, r.binding_id.clone()));
            }
        }
    }
    BindPlan { revoke, put_guards, delete_guards }
}

/// The URL Telegram posts to: the deployment's public base URL (HTTPS; plain HTTP only for
/// `localhost`/`127.0.0.1`, the local runner) plus `/telegram/webhook`.
pub fn webhook_url(base: &str) -> AppResult<String> {
    let b = base.trim().trim_end_matches('/');
    if b.is_empty() {
        return Err(AppError::validation(
            "the webhook URL is required: pass publicBaseUrl or set PUBLIC_BASE_URL (the API Gateway URL)",
        ));
    }
    let local = ["http://localhost", "http://127.0.0.1"]
        .iter()
        .any(|p| b.strip_prefix(p).is_some_and(|r| r.is_empty() || r.starts_with([':', '/'])));
    if !b.starts_with("https://") && !local {
        return Err(AppError::validation(format!(
            "publicBaseUrl '{}' must start with https:// (Telegram only posts to HTTPS)",
            crate::ids::truncate(b, 80)
        )));
    }
    if b.len() > 400 || b.chars().any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
        return Err(AppError::validation("publicBaseUrl must be a plain URL without query or fragment"));
    }
    Ok(if b.ends_with(WEBHOOK_PATH) { b.to_string() } else { format!("{b}{WEBHOOK_PATH}") })
}

/// The five onboarding states (W-5: three separate facts, each step reachable).
pub fn next_action(token_verified: bool, webhook_ready: bool, binding_active: bool, pending_live: bool) -> NextAction {
    if !token_verified {
        NextAction::ImportToken
    } else if !webhook_ready {
        NextAction::ConfigureWebhook
    } else if binding_active {
        NextAction::Ready
    } else if pending_live {
        NextAction::CompletePairing
    } else {
        NextAction::CreatePairing
    }
}

/// Whether a value has the shape of a bot token (`<digits>:<20..=100 of A-Z a-z 0-9 _ ->`), so
/// nothing else is ever sent to Telegram (or stored) as one.
pub fn is_bot_token_shaped(t: &str) -> bool {
    let Some((id, secret)) = t.split_once(':') else { return false };
    (1..=20).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_digit())
        && (20..=100).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The per-agent bot token ref: the one resolver every flow uses (W-8), never the global one (W-9).
pub fn token_ref(agent_key: &str) -> String {
    format!("telegram.botToken.{agent_key}")
}

/// Where a bot's webhook secret is kept.
pub fn webhook_secret_ref(bot_identity: &str) -> String {
    format!("telegram.webhookSecret.{bot_identity}")
}

/// The profile's refs with the per-agent token ref placed before any other Telegram ref (the
/// hydration takes the first active one), added once.
pub fn refs_with_token(refs: &[String], token_ref: &str) -> Vec<String> {
    let mut out: Vec<String> = refs.iter().filter(|r| r.as_str() != token_ref).cloned().collect();
    let at =
        out.iter().position(|r| r == "telegram.botToken" || r.starts_with("telegram.botToken.")).unwrap_or(out.len());
    out.insert(at, token_ref.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::model::BindingSource;

    fn code(status: PairingStatus, expires_at: Millis) -> PairingCode {
        PairingCode {
            code: "ABCDEFGH23".into(),
            consumer_user_id: "u".into(),
            agent_key: "a".into(),
            bot_identity: "7".into(),
            status,
            created_at: 0,
            expires_at,
            used_at: None,
            telegram_user_id: None,
            telegram_chat_id: None,
        }
    }

    fn binding(id: &str, user: &str, tg_user: Option<&str>, chat: Option<&str>) -> Binding {
        Binding {
            binding_id: id.into(),
            consumer_user_id: user.into(),
            agent_key: "a".into(),
            conversation_id: user_agent_conversation_id("a", user),
            bot_identity: Some("7".into()),
            status: BindingStatus::Active,
            source: BindingSource::TelegramPairing,
            telegram_user_id: tg_user.map(str::to_string),
            telegram_chat_id: chat.map(str::to_string),
            group_paired: false,
            metadata: None,
            bound_at: 0,
            revoked_at: None,
            flag: None,
        }
    }

    #[test]
    fn codes_are_fixed_length_and_unambiguous() {
        let c = code_from(&(0u8..=255).collect::<Vec<_>>());
        assert_eq!(c.len(), CODE_LEN);
        assert_eq!(c, "23456789AB");
        assert_eq!(code_from(&[31, 63, 255, 0, 1, 2, 3, 4, 5, 6]), "ZZZ2345678");
        for b in [b'0', b'O', b'1', b'I'] {
            assert!(!CODE_ALPHABET.contains(&b));
        }
        assert_eq!(normalize_code(" abcdefgh23 ").as_deref(), Some("ABCDEFGH23"));
        assert_eq!(normalize_code("ABCDEFGH2"), None);
        assert_eq!(normalize_code("ABCDEFGH10"), None, "0 and 1 are not in the alphabet");
    }

    #[test]
    fn ttls_are_clamped() {
        assert_eq!(clamp_ttl(None), 900_000);
        assert_eq!(clamp_ttl(Some(1)), 60_000);
        assert_eq!(clamp_ttl(Some(-5)), 60_000);
        assert_eq!(clamp_ttl(Some(i64::MAX)), 86_400_000);
        assert_eq!(clamp_ttl(Some(120_000)), 120_000);
    }

    #[test]
    fn consumption_checks_in_order_with_injected_time() {
        let c = code(PairingStatus::Pending, 1_000);
        assert_eq!(check_consume(None, "7", 0), Err(ConsumeRefusal::NotFound));
        assert_eq!(check_consume(Some(&c), "7", 999), Ok(()));
        assert_eq!(check_consume(Some(&c), "7", 1_000), Err(ConsumeRefusal::Expired));
        assert_eq!(check_consume(Some(&c), "8", 0), Err(ConsumeRefusal::OtherBot));
        let used = code(PairingStatus::Used, 1_000);
        assert_eq!(check_consume(Some(&used), "7", 0), Err(ConsumeRefusal::AlreadyUsedOrExpired));
        assert_eq!(derived_status(&c, 999), PairingStatus::Pending);
        assert_eq!(derived_status(&c, 1_000), PairingStatus::Expired);
        assert_eq!(derived_status(&used, 5_000), PairingStatus::Used);
        assert_eq!(view(&c, 2_000).status, PairingStatus::Expired);
    }

    #[test]
    fn attempt_windows() {
        assert_eq!(attempt_window(0, 600_000), (0, 1_200_000));
        assert_eq!(attempt_window(599_999, 600_000).0, 0);
        assert_eq!(attempt_window(600_000, 600_000).0, 1);
    }

    #[test]
    fn a_bind_displaces_the_users_own_and_the_guard_holders() {
        let new = binding("n", "u1", Some("42"), Some("42"));
        let own = binding("o", "u1", Some("41"), Some("41"));
        let other = binding("x", "u2", Some("42"), Some("42"));
        let holders = vec![
            (Guard::TgUser { bot: "7".into(), user: "42".into() }, Some(other.clone())),
            (Guard::TgChat { bot: "7".into(), chat: "42".into() }, Some(other.clone())),
        ];
        let p = plan_bind(&new, Some(&own), &holders);
        assert_eq!(p.revoke.iter().map(|b| b.binding_id.as_str()).collect::<Vec<_>>(), ["o", "x"]);
        assert_eq!(p.put_guards.len(), 2);
        assert!(p.put_guards.iter().all(|(_, h)| h.as_deref() == Some("x")));
        assert_eq!(
            p.delete_guards,
            vec![
                (Guard::TgUser { bot: "7".into(), user: "41".into() }, "o".to_string()),
                (Guard::TgChat { bot: "7".into(), chat: "41".into() }, "o".to_string()),
            ]
        );
        let fresh = plan_bind(&binding("n", "u", None, None), None, &[]);
        assert!(fresh.revoke.is_empty() && fresh.put_guards.is_empty() && fresh.delete_guards.is_empty());
    }

    #[test]
    fn webhook_urls() {
        assert_eq!(
            webhook_url("https://x.execute-api.eu-west-1.amazonaws.com/").unwrap(),
            "https://x.execute-api.eu-west-1.amazonaws.com/telegram/webhook"
        );
        assert_eq!(webhook_url("https://h/prod/telegram/webhook").unwrap(), "https://h/prod/telegram/webhook");
        assert_eq!(webhook_url("http://127.0.0.1:8787").unwrap(), "http://127.0.0.1:8787/telegram/webhook");
        for bad in ["", "http://example.com", "http://127.0.0.1.evil.com", "https://h/?a=1", "ftp://x"] {
            assert!(webhook_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn all_five_next_actions_are_reachable() {
        use NextAction::*;
        assert_eq!(next_action(false, true, true, true), ImportToken);
        assert_eq!(next_action(true, false, true, true), ConfigureWebhook);
        assert_eq!(next_action(true, true, false, false), CreatePairing);
        assert_eq!(next_action(true, true, false, true), CompletePairing);
        assert_eq!(next_action(true, true, true, false), Ready);
    }

    #[test]
    fn the_agent_token_ref_goes_first_among_telegram_refs() {
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            refs_with_token(&r(&["fly.apiToken"]), "telegram.botToken.a"),
            r(&["fly.apiToken", "telegram.botToken.a"])
        );
        assert_eq!(
            refs_with_token(&r(&["x", "telegram.botToken", "telegram.botToken.a"]), "telegram.botToken.a"),
            r(&["x", "telegram.botToken.a", "telegram.botToken"])
        );
        assert_eq!(token_ref("a"), "telegram.botToken.a");
        assert!(is_bot_token_shaped("7001:AAfakeTokenForBotA_secret"));
        for bad in [
            "",
            "7001",
            "7001:short",
            "x1:AAfakeTokenForBotA_secret",
            "7001:AAfake TokenForBotA_secret",
            "7001:AAfake/TokenForBotA_secre",
        ] {
            assert!(!is_bot_token_shaped(bad), "{bad}");
        }
    }
}
