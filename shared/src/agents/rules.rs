//! Agent profile rules (pure).

use super::model::BridgeConfig;

/// The stored secret refs: the given ones, then the bridge refs when the bridge is enabled,
/// without duplicates (spec §7.2 less the platform refs).
pub fn profile_secret_refs(agent_key: &str, given: &[String], bridge: Option<&BridgeConfig>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |r: String| {
        if !out.contains(&r) {
            out.push(r);
        }
    };
    for r in given {
        push(r.trim().to_string());
    }
    if let Some(b) = bridge.filter(|b| b.enabled) {
        let pick = |v: &Option<String>, d: String| {
            v.as_deref().map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).unwrap_or(d)
        };
        push(pick(&b.service_key_secret_ref, format!("agent-bridge.serviceKey.{agent_key}")));
        push(pick(&b.app_base_url_map_json_secret_ref, format!("agent-bridge.baseUrlMapJson.{agent_key}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_refs_are_added_once_and_platform_refs_never() {
        let b = BridgeConfig { enabled: true, ..Default::default() };
        let refs =
            profile_secret_refs("bot", &["telegram.botToken.bot".into(), "telegram.botToken.bot".into()], Some(&b));
        assert_eq!(
            refs,
            vec!["telegram.botToken.bot", "agent-bridge.serviceKey.bot", "agent-bridge.baseUrlMapJson.bot"]
        );
        let off = BridgeConfig { enabled: false, ..Default::default() };
        assert_eq!(profile_secret_refs("bot", &[], Some(&off)), Vec::<String>::new());
        let custom =
            BridgeConfig { enabled: true, service_key_secret_ref: Some(" my.key ".into()), ..Default::default() };
        assert_eq!(profile_secret_refs("bot", &[], Some(&custom))[0], "my.key");
    }
}
