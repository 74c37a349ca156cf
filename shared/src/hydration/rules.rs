//! Which secret refs hydration reads (pure).

use crate::agents::model::AgentProfile;

/// Telegram token refs of a profile, in list order (spec §3.4, hydration rule).
pub fn telegram_token_refs(p: &AgentProfile) -> Vec<String> {
    p.secrets_ref.iter().filter(|r| *r == "telegram.botToken" || r.starts_with("telegram.botToken.")).cloned().collect()
}

/// `[preferred (trimmed, if non-blank), <prefix>.<agentKey>, <prefix>]` without duplicates.
pub fn candidates(preferred: Option<&str>, prefix: &str, agent_key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let pref = preferred.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    for r in pref.into_iter().chain([format!("{prefix}.{agent_key}"), prefix.to_string()]) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_chains_follow_the_spec() {
        assert_eq!(
            candidates(Some(" custom.key "), "agent-bridge.serviceKey", "bot"),
            vec!["custom.key", "agent-bridge.serviceKey.bot", "agent-bridge.serviceKey"]
        );
        assert_eq!(candidates(Some("  "), "p", "a"), vec!["p.a", "p"]);
        assert_eq!(candidates(Some("p"), "p", "a"), vec!["p", "p.a"], "duplicates removed, first place kept");
        let profile = AgentProfile {
            agent_key: "bot".into(),
            version: "1".into(),
            secrets_ref: vec![
                "fly.apiToken".into(),
                "telegram.botTokenX".into(),
                "telegram.botToken.bot".into(),
                "telegram.botToken".into(),
            ],
            enabled: true,
            bot_identity: None,
            bridge_config: None,
            updated_at: 0,
        };
        assert_eq!(telegram_token_refs(&profile), vec!["telegram.botToken.bot", "telegram.botToken"]);
    }
}
