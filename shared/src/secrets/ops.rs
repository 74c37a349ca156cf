//! The consumer's secret ops, served through the op envelope `{"op", "args"}` (spec §3.1, with
//! W-3's fixes): `importSecret`, `secretStatus`, `getSecretsStatus`, `deleteSecret`.
//!
//! No op ever returns a value, and no error message or log line carries one: a refused
//! `plaintextValue` is described by its size or type only.

use super::{MAX_VALUE_BYTES, SecretInfo, SecretValue, Secrets, validate_ref};
use crate::adapters::dynamo::Store;
use crate::agents::model::AgentProfile;
use crate::error::{AppError, AppResult};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Most refs one `secretStatus` call may ask about.
pub const MAX_STATUS_REFS: usize = 100;
/// Metadata bounds: keys, key length, value length, and the whole map as JSON (it must fit
/// Secrets Manager's 2048-character `Description`, see `manager.rs`).
pub const MAX_METADATA_KEYS: usize = 20;
pub const MAX_METADATA_KEY_LEN: usize = 64;
pub const MAX_METADATA_VALUE_LEN: usize = 256;
pub const MAX_METADATA_JSON_CHARS: usize = 2000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportArgs {
    secret_ref: String,
    #[serde(deserialize_with = "plaintext")]
    plaintext_value: SecretValue,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusArgs {
    secret_refs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentArgs {
    agent_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefArgs {
    secret_ref: String,
}

/// `plaintextValue` must be a string; serde's own "invalid type" message would quote a
/// non-string value (a numeric PIN, say), so this one names only the type.
fn plaintext<'de, D: Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(SecretValue::new(s)),
        other => Err(D::Error::custom(format!("plaintextValue must be a string, got {}", json_type(&other)))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The secret ops served through the op envelope.
pub const TABLE: crate::envelope::OpTable<crate::app::App> = crate::envelope::OpTable {
    domain: "secrets",
    ops: &[
        crate::op!(crate::app::App, "importSecret", |app, a: ImportArgs| import_secret(
            &app.secrets,
            &a.secret_ref,
            &a.plaintext_value,
            &a.metadata.unwrap_or_default()
        )
        .await?),
        crate::op!(crate::app::App, "secretStatus", |app, a: StatusArgs| secret_status(&app.secrets, &a.secret_refs)
            .await?),
        crate::op!(crate::app::App, "getSecretsStatus", |app, a: AgentArgs| {
            agent_secrets_status(&app.store, &app.secrets, &a.agent_key).await?
        }),
        crate::op!(crate::app::App, "deleteSecret", |app, a: RefArgs| {
            let deleted = delete_secret(&app.secrets, &a.secret_ref).await?;
            json!({ "secretRef": a.secret_ref, "deleted": deleted })
        }),
    ],
};

/// `getSecretsStatus`: the status of every ref the agent's hydration may read.
pub async fn agent_secrets_status(store: &Store, secrets: &Secrets, agent_key: &str) -> AppResult<Value> {
    crate::queue::rules::validate_agent_key(agent_key)?;
    let Some(profile) = store.get_agent(agent_key).await? else {
        return Err(AppError::not_found(format!("no agent profile '{agent_key}'")));
    };
    let mut refs = Vec::new();
    for r in hydration_refs(&profile) {
        refs.push(status_of(secrets, &r).await?);
    }
    Ok(json!({ "agentKey": agent_key, "refs": crate::envelope::to_json(refs)? }))
}

/// Check an import without touching the backend.
pub fn validate_import(secret_ref: &str, value: &SecretValue, metadata: &BTreeMap<String, String>) -> AppResult<()> {
    validate_ref(secret_ref)?;
    let v = value.expose();
    if v.trim().is_empty() {
        return Err(AppError::validation("plaintextValue must not be blank"));
    }
    if v.len() > MAX_VALUE_BYTES {
        return Err(AppError::validation(format!(
            "plaintextValue is {} bytes; the limit is {MAX_VALUE_BYTES}",
            v.len()
        )));
    }
    validate_metadata(metadata)
}

pub fn validate_metadata(m: &BTreeMap<String, String>) -> AppResult<()> {
    if m.len() > MAX_METADATA_KEYS {
        return Err(AppError::validation(format!("metadata holds at most {MAX_METADATA_KEYS} keys, got {}", m.len())));
    }
    for (k, v) in m {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_METADATA_KEY_LEN
            && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !key_ok {
            return Err(AppError::validation(format!(
                "metadata key '{}' must be 1 to {MAX_METADATA_KEY_LEN} letters, digits, '.', '_' or '-'",
                crate::ids::truncate(k, 40)
            )));
        }
        if v.chars().count() > MAX_METADATA_VALUE_LEN || v.chars().any(char::is_control) {
            return Err(AppError::validation(format!(
                "metadata '{k}' must be at most {MAX_METADATA_VALUE_LEN} characters without control characters"
            )));
        }
    }
    let chars = serde_json::to_string(m).map(|s| s.chars().count()).unwrap_or(usize::MAX);
    if chars > MAX_METADATA_JSON_CHARS {
        return Err(AppError::validation(format!(
            "metadata is {chars} characters as JSON; the limit is {MAX_METADATA_JSON_CHARS}"
        )));
    }
    Ok(())
}

/// `importSecret`: validate, write a new active version, drop this process's cached value.
pub async fn import_secret(
    secrets: &Secrets,
    secret_ref: &str,
    value: &SecretValue,
    metadata: &BTreeMap<String, String>,
) -> AppResult<SecretInfo> {
    validate_import(secret_ref, value, metadata)?;
    let res = secrets.backend().put(secret_ref, value, metadata).await;
    // Forget even on failure: the write may have happened before the error.
    secrets.forget(secret_ref);
    let info = res?;
    tracing::info!(secret_ref, version = info.version.as_deref().unwrap_or(""), "secret imported");
    Ok(info)
}

/// `secretStatus`: one entry per input, in input order, duplicates kept.
pub async fn secret_status(secrets: &Secrets, refs: &[String]) -> AppResult<Vec<SecretInfo>> {
    if refs.len() > MAX_STATUS_REFS {
        return Err(AppError::validation(format!(
            "secretRefs holds at most {MAX_STATUS_REFS} refs, got {}",
            refs.len()
        )));
    }
    for (i, r) in refs.iter().enumerate() {
        validate_ref(r).map_err(|e| AppError::validation(format!("secretRefs[{i}]: {e}")))?;
    }
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        out.push(secrets.backend().info(r).await?);
    }
    Ok(out)
}

/// `deleteSecret`: deactivate the ref; whether it had an active value.
pub async fn delete_secret(secrets: &Secrets, secret_ref: &str) -> AppResult<bool> {
    validate_ref(secret_ref)?;
    let res = secrets.backend().delete(secret_ref).await;
    secrets.forget(secret_ref);
    let deleted = res?;
    tracing::info!(secret_ref, deleted, "secret deactivated");
    Ok(deleted)
}

/// Status of a ref that may come from a stored profile: a ref no secret can have (bad syntax)
/// is reported missing rather than sent to the backend.
async fn status_of(secrets: &Secrets, r: &str) -> AppResult<SecretInfo> {
    if validate_ref(r).is_err() {
        return Ok(SecretInfo::missing(r));
    }
    secrets.backend().info(r).await
}

/// Every ref the hydration of this agent's jobs may read, without duplicates: the profile's
/// `secretsRef` in order, then, when the bridge is enabled, the bridge candidates of
/// spec §6.3 (profile ref first, then per agent, then global) for each field the profile does
/// not set itself (`baseUrl`, `serviceId` and `appKey` come from the profile when present).
pub fn hydration_refs(p: &AgentProfile) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |r: String| {
        if !r.is_empty() && !out.contains(&r) {
            out.push(r);
        }
    };
    for r in &p.secrets_ref {
        push(r.trim().to_string());
    }
    if let Some(b) = p.bridge_config.as_ref().filter(|b| b.enabled) {
        let k = &p.agent_key;
        let chain = |preferred: Option<&str>, prefix: &str| crate::hydration::rules::candidates(preferred, prefix, k);
        let mut all = chain(b.service_key_secret_ref.as_deref(), "agent-bridge.serviceKey");
        if b.base_url.is_none() {
            all.extend(chain(None, "agent-bridge.baseUrl"));
        }
        all.extend(chain(b.app_base_url_map_json_secret_ref.as_deref(), "agent-bridge.baseUrlMapJson"));
        if b.service_id.is_none() {
            all.extend(chain(None, "agent-bridge.serviceId"));
        }
        if b.app_key.is_none() {
            all.extend(chain(None, "agent-bridge.appKey"));
        }
        all.into_iter().for_each(&mut push);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::model::BridgeConfig;

    fn profile(refs: &[&str], bridge: Option<BridgeConfig>) -> AgentProfile {
        AgentProfile {
            agent_key: "bot".into(),
            version: "1".into(),
            secrets_ref: refs.iter().map(|s| s.to_string()).collect(),
            enabled: true,
            bot_identity: None,
            bridge_config: bridge,
            updated_at: 0,
        }
    }

    #[test]
    fn hydration_refs_follow_the_bridge_chain() {
        assert_eq!(
            hydration_refs(&profile(&["telegram.botToken.bot", "fly.apiToken"], None)),
            ["telegram.botToken.bot", "fly.apiToken"]
        );
        let off = BridgeConfig { enabled: false, ..Default::default() };
        assert_eq!(hydration_refs(&profile(&["a"], Some(off))), ["a"]);
        let on = BridgeConfig { enabled: true, ..Default::default() };
        assert_eq!(
            hydration_refs(&profile(&["agent-bridge.serviceKey.bot"], Some(on))),
            [
                "agent-bridge.serviceKey.bot",
                "agent-bridge.serviceKey",
                "agent-bridge.baseUrl.bot",
                "agent-bridge.baseUrl",
                "agent-bridge.baseUrlMapJson.bot",
                "agent-bridge.baseUrlMapJson",
                "agent-bridge.serviceId.bot",
                "agent-bridge.serviceId",
                "agent-bridge.appKey.bot",
                "agent-bridge.appKey",
            ]
        );
        let custom = BridgeConfig {
            enabled: true,
            base_url: Some(String::new()),
            service_id: Some("svc".into()),
            app_key: Some("app".into()),
            service_key_secret_ref: Some(" my.key ".into()),
            app_base_url_map_json_secret_ref: Some("  ".into()),
        };
        assert_eq!(
            hydration_refs(&profile(&[], Some(custom))),
            [
                "my.key",
                "agent-bridge.serviceKey.bot",
                "agent-bridge.serviceKey",
                "agent-bridge.baseUrlMapJson.bot",
                "agent-bridge.baseUrlMapJson",
            ]
        );
    }

    #[test]
    fn imports_are_checked_before_any_write() {
        let m = BTreeMap::new();
        let ok = SecretValue::new("v");
        assert!(validate_import("telegram.botToken.bot", &ok, &m).is_ok());
        for (r, v) in [("", "v"), ("a b", "v"), ("a/b", "v"), ("a", ""), ("a", " \n\t")] {
            let e = validate_import(r, &SecretValue::new(v), &m).unwrap_err();
            assert_eq!(e.code().as_str(), "ValidationError", "{r:?}");
        }
        let big = SecretValue::new("x".repeat(MAX_VALUE_BYTES + 1));
        assert!(validate_import("a", &big, &m).unwrap_err().to_string().contains("bytes"));
        assert!(validate_import("a", &SecretValue::new("x".repeat(MAX_VALUE_BYTES)), &m).is_ok());
        let many: BTreeMap<_, _> = (0..21).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert!(validate_metadata(&many).is_err());
        assert!(validate_metadata(&BTreeMap::from([("bad key".into(), "v".into())])).is_err());
        assert!(validate_metadata(&BTreeMap::from([("k".into(), "x".repeat(257))])).is_err());
        assert!(validate_metadata(&BTreeMap::from([("k".into(), "a\nb".into())])).is_err());
        let wide: BTreeMap<_, _> =
            (0..20).map(|i| (format!("key-{i:02}-{}", "k".repeat(50)), "v".repeat(200))).collect();
        assert!(validate_metadata(&wide).unwrap_err().to_string().contains("as JSON"));
    }

    #[test]
    fn a_non_string_value_is_refused_without_being_quoted() {
        let r: AppResult<ImportArgs> =
            crate::envelope::args("importSecret", Some(json!({"secretRef": "a", "plaintextValue": 987654321})));
        let msg = r.err().unwrap().to_string();
        assert!(msg.contains("plaintextValue must be a string, got a number"), "{msg}");
        assert!(!msg.contains("987654321"), "{msg}");
    }
}
