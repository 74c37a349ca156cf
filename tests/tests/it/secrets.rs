//! The secret store: the Secrets Manager backend against moto_server, the local file backend,
//! the consumer ops (`importSecret`, `secretStatus`, `getSecretsStatus`, `deleteSecret`), the
//! per-process cache, and values never reaching logs, errors or `Debug` output.

use integration_tests::*;
use serde_json::{Value, json};
use shared::adapters::secrets_file::FileSecretBackend;
use shared::adapters::secrets_manager::SecretsManagerBackend;
use shared::agents::model::ConfigureAgentArgs;

use shared::secrets::{MAX_VALUE_BYTES, SecretBackend, SecretInfo, SecretValue, Secrets};
use std::collections::BTreeMap;
use std::sync::Arc;

const TTL: i64 = 60_000;

async fn moto() -> SecretsManagerBackend {
    moto_secrets().await
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn val(s: &str) -> SecretValue {
    SecretValue::new(s)
}

/// The stages of every version of the secret, by VersionId.
async fn stages(b: &SecretsManagerBackend, secret_ref: &str) -> BTreeMap<String, Vec<String>> {
    let d = b.client.describe_secret().secret_id(b.secret_name(secret_ref)).send().await.expect("describe");
    d.version_ids_to_stages.unwrap_or_default().into_iter().collect()
}

#[tokio::test]
async fn secrets_manager_versions_delete_and_reimport() {
    let b = moto().await;
    let r = "telegram.botToken.bot";
    assert_eq!(b.get(r).await.unwrap(), None, "a missing ref is None, not an error");
    assert_eq!(b.info(r).await.unwrap(), SecretInfo::missing(r));
    assert!(!b.delete(r).await.unwrap(), "nothing to delete");

    let i1 = b.put(r, &val("token-one"), &meta(&[("telegramBotId", "7123")])).await.unwrap();
    assert!(i1.has_active);
    let v1 = i1.version.clone().expect("a VersionId");
    assert!(i1.updated_at.is_some_and(|t| t > 1_600_000_000_000), "{i1:?}");
    assert_eq!(b.get(r).await.unwrap(), Some(val("token-one")));
    let info = b.info(r).await.unwrap();
    assert_eq!((info.has_active, info.version.as_deref()), (true, Some(v1.as_str())));
    assert_eq!(info.metadata, meta(&[("telegramBotId", "7123")]));
    assert!(info.updated_at.is_some());
    // The secret is named prefix + ref.
    assert!(b.secret_name(r).starts_with(&b.prefix) && b.secret_name(r).ends_with(r));

    // A new version becomes the active one; the old one stays as AWSPREVIOUS.
    let i2 = b.put(r, &val("token-two"), &meta(&[("telegramBotId", "7124")])).await.unwrap();
    let v2 = i2.version.clone().unwrap();
    assert_ne!(v1, v2, "a new version id");
    assert_eq!(b.get(r).await.unwrap(), Some(val("token-two")));
    let info = b.info(r).await.unwrap();
    assert_eq!(info.version.as_deref(), Some(v2.as_str()));
    assert_eq!(info.metadata, meta(&[("telegramBotId", "7124")]), "metadata describes the current value");
    let st = stages(&b, r).await;
    assert!(st[&v2].contains(&"AWSCURRENT".to_string()), "{st:?}");
    assert!(st[&v1].contains(&"AWSPREVIOUS".to_string()), "{st:?}");

    // Delete deactivates: no value, no active status; a second delete has nothing to do.
    assert!(b.delete(r).await.unwrap());
    assert_eq!(b.get(r).await.unwrap(), None);
    assert_eq!(b.info(r).await.unwrap(), SecretInfo::missing(r));
    assert!(!b.delete(r).await.unwrap());

    // Re-import works (restore + new version), and the history survived.
    let i3 = b.put(r, &val("token-three"), &BTreeMap::new()).await.unwrap();
    let v3 = i3.version.clone().unwrap();
    assert!(v3 != v1 && v3 != v2);
    assert_eq!(b.get(r).await.unwrap(), Some(val("token-three")));
    let info = b.info(r).await.unwrap();
    assert_eq!((info.has_active, info.version.as_deref()), (true, Some(v3.as_str())));
    assert!(info.metadata.is_empty());
    let st = stages(&b, r).await;
    assert!(st[&v2].contains(&"AWSPREVIOUS".to_string()), "{st:?}");

    // Other refs under the same prefix are untouched.
    assert_eq!(b.get("telegram.botToken").await.unwrap(), None);
}

#[tokio::test]
async fn secrets_manager_round_trips_every_string_exactly() {
    let b = moto().await;
    for (i, v) in ["k🔑y", "é ü ß 日本", "line1\nline2\t\"quoted\" \\ ", " padded ", &"x".repeat(MAX_VALUE_BYTES)]
        .into_iter()
        .enumerate()
    {
        let r = format!("exact.{i}");
        b.put(&r, &val(v), &meta(&[("note", "non-BMP 🔑 in metadata too")])).await.unwrap();
        assert_eq!(b.get(&r).await.unwrap().as_ref().map(SecretValue::expose), Some(v), "ref {r}");
        assert_eq!(b.info(&r).await.unwrap().metadata["note"], "non-BMP 🔑 in metadata too");
    }
}

#[tokio::test]
async fn secrets_manager_concurrent_first_imports_all_succeed() {
    let b = Arc::new(moto().await);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move { b.put("race", &val(&format!("v{i}")), &BTreeMap::new()).await }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap().expect("every import succeeds").version.unwrap());
    }
    let current = b.info("race").await.unwrap().version.unwrap();
    assert!(versions.contains(&current));
    let got = b.get("race").await.unwrap().unwrap();
    assert!(["v0", "v1", "v2", "v3"].contains(&got.expose()));
    let st = stages(&b, "race").await;
    assert_eq!(st.values().filter(|s| s.contains(&"AWSCURRENT".to_string())).count(), 1, "{st:?}");
}

#[tokio::test]
async fn file_backend_round_trip_persists_and_deletes() {
    let dir = std::env::temp_dir().join(format!("af-secrets-test-{:x}", shared::ids::random_u128()));
    let path = dir.join("data").join("secrets.json");
    let b = FileSecretBackend::open(&path).unwrap();
    assert_eq!(b.path(), Some(path.as_path()));
    assert_eq!(b.get("k").await.unwrap(), None);
    let i1 = b.put("k", &val("k🔑y"), &meta(&[("telegramUsername", "my_bot")])).await.unwrap();
    assert_eq!(i1.version.as_deref(), Some("1"));
    assert_eq!(b.get("k").await.unwrap(), Some(val("k🔑y")));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the file is private");
    }
    let leftovers: Vec<_> =
        std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("secrets.json")], "no temporary file left");
    let i2 = b.put("k", &val("second"), &BTreeMap::new()).await.unwrap();
    drop(b);

    // Re-open: the same active value, version and metadata.
    let b = FileSecretBackend::open(&path).unwrap();
    assert_eq!(b.get("k").await.unwrap(), Some(val("second")));
    assert_eq!(b.info("k").await.unwrap(), i2);
    assert!(b.delete("k").await.unwrap());
    drop(b);

    let b = FileSecretBackend::open(&path).unwrap();
    assert_eq!(b.get("k").await.unwrap(), None, "the deletion persisted");
    assert!(!b.info("k").await.unwrap().has_active);
    let i3 = b.put("k", &val("k🔑y"), &BTreeMap::new()).await.unwrap();
    assert_eq!(i3.version.as_deref(), Some("3"), "numbering continues after a delete");
    assert_eq!(FileSecretBackend::open(&path).unwrap().get("k").await.unwrap(), Some(val("k🔑y")));
    std::fs::remove_dir_all(&dir).unwrap();

    // Memory mode behaves the same, without a file.
    let m = FileSecretBackend::memory();
    assert_eq!(m.path(), None);
    m.put("k", &val("k🔑y"), &BTreeMap::new()).await.unwrap();
    assert_eq!(m.get("k").await.unwrap(), Some(val("k🔑y")));
}

fn secrets_on(backend: Arc<dyn SecretBackend>, e: &TestEnv) -> Secrets {
    Secrets::new(backend, Arc::new(e.clock.clone()), TTL)
}

async fn op(e: &TestEnv, s: &Secrets, name: &str, args: Value) -> Result<Value, shared::AppError> {
    integration_tests::secret_op(&e.store, s, name, args).await
}

/// The ops against one backend.
async fn ops_scenario(backend: Arc<dyn SecretBackend>) {
    let e = env().await;
    let s = secrets_on(backend, &e);
    let imported = op(
        &e,
        &s,
        "importSecret",
        json!({
            "secretRef": "telegram.botToken.bot", "plaintextValue": "123:ABC", "metadata": {"telegramBotId": "123"}
        }),
    )
    .await
    .unwrap();
    assert_eq!(imported["secretRef"], "telegram.botToken.bot");
    assert_eq!(imported["hasActive"], true);
    assert!(imported["version"].is_string() && imported["updatedAt"].is_i64(), "{imported}");
    assert_eq!(imported["metadata"], json!({"telegramBotId": "123"}));
    assert!(!imported.to_string().contains("123:ABC"), "no value in the result");
    assert_eq!(s.get("telegram.botToken.bot").await.unwrap(), Some(val("123:ABC")));

    // Status: input order, duplicates kept, missing refs reported.
    let st =
        op(&e, &s, "secretStatus", json!({"secretRefs": ["nope", "telegram.botToken.bot", "nope"]})).await.unwrap();
    let st = st.as_array().unwrap();
    assert_eq!(st.len(), 3);
    assert_eq!((st[0]["secretRef"].as_str(), &st[0]["hasActive"]), (Some("nope"), &json!(false)));
    assert_eq!(st[0]["version"], Value::Null);
    assert_eq!(st[1]["hasActive"], true);
    assert_eq!(st[1]["version"], imported["version"]);
    assert_eq!(st[2], st[0]);
    assert_eq!(op(&e, &s, "secretStatus", json!({"secretRefs": []})).await.unwrap(), json!([]));

    // Per agent: the profile's refs, then the bridge candidates.
    e.store
        .configure_agent(ConfigureAgentArgs {
            agent_key: "bot".into(),
            version: "1".into(),
            secrets_ref: vec!["telegram.botToken.bot".into()],
            enabled: true,
            bot_identity: None,
            bridge_config: Some(Some(shared::agents::model::BridgeConfig {
                enabled: true,
                base_url: Some("https://bridge.example".into()),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    op(&e, &s, "importSecret", json!({"secretRef": "agent-bridge.serviceKey", "plaintextValue": "sk"})).await.unwrap();
    let per_agent = op(&e, &s, "getSecretsStatus", json!({"agentKey": "bot"})).await.unwrap();
    assert_eq!(per_agent["agentKey"], "bot");
    let refs: Vec<(&str, bool)> = per_agent["refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["secretRef"].as_str().unwrap(), i["hasActive"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        refs,
        vec![
            ("telegram.botToken.bot", true),
            ("agent-bridge.serviceKey.bot", false),
            ("agent-bridge.baseUrlMapJson.bot", false),
            ("agent-bridge.serviceKey", true),
            ("agent-bridge.baseUrlMapJson", false),
            ("agent-bridge.serviceId.bot", false),
            ("agent-bridge.serviceId", false),
            ("agent-bridge.appKey.bot", false),
            ("agent-bridge.appKey", false),
        ]
    );
    let missing = op(&e, &s, "getSecretsStatus", json!({"agentKey": "ghost"})).await.unwrap_err();
    assert_eq!(code(&missing), "NotFound");

    // Rotation through the op is seen at once by this process (the cache is dropped).
    let again = op(&e, &s, "importSecret", json!({"secretRef": "telegram.botToken.bot", "plaintextValue": "456:DEF"}))
        .await
        .unwrap();
    assert_ne!(again["version"], imported["version"]);
    assert_eq!(s.get("telegram.botToken.bot").await.unwrap(), Some(val("456:DEF")));

    // Delete: deactivates, the cache forgets, a second delete reports false.
    let d = op(&e, &s, "deleteSecret", json!({"secretRef": "telegram.botToken.bot"})).await.unwrap();
    assert_eq!(d, json!({"secretRef": "telegram.botToken.bot", "deleted": true}));
    assert_eq!(s.get("telegram.botToken.bot").await.unwrap(), None);
    let d = op(&e, &s, "deleteSecret", json!({"secretRef": "telegram.botToken.bot"})).await.unwrap();
    assert_eq!(d["deleted"], false);
    let st = op(&e, &s, "secretStatus", json!({"secretRefs": ["telegram.botToken.bot"]})).await.unwrap();
    assert_eq!(st[0]["hasActive"], false);
    // And importing again works.
    op(&e, &s, "importSecret", json!({"secretRef": "telegram.botToken.bot", "plaintextValue": "789:GHI"}))
        .await
        .unwrap();
    assert_eq!(s.get("telegram.botToken.bot").await.unwrap(), Some(val("789:GHI")));
    e.drop_tables().await;
}

#[tokio::test]
async fn ops_on_the_file_backend() {
    ops_scenario(Arc::new(FileSecretBackend::memory())).await;
}

#[tokio::test]
async fn ops_on_secrets_manager() {
    ops_scenario(Arc::new(moto().await)).await;
}

/// Refused input: ValidationError with a precise message, and nothing written.
async fn bad_input_scenario(backend: Arc<dyn SecretBackend>) {
    let e = env().await;
    let s = secrets_on(backend, &e);
    let long_ref = "a".repeat(201);
    let many_meta: serde_json::Map<String, Value> = (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("importSecret", json!({"secretRef": "", "plaintextValue": "v"}), "1 to 200 characters"),
        ("importSecret", json!({"secretRef": "   ", "plaintextValue": "v"}), "contains ' '"),
        ("importSecret", json!({"secretRef": "bad/ref", "plaintextValue": "v"}), "contains '/'"),
        ("importSecret", json!({"secretRef": "bad ref", "plaintextValue": "v"}), "contains ' '"),
        ("importSecret", json!({"secretRef": "héllo", "plaintextValue": "v"}), "contains 'é'"),
        ("importSecret", json!({"secretRef": long_ref, "plaintextValue": "v"}), "1 to 200 characters"),
        ("importSecret", json!({"secretRef": "good", "plaintextValue": ""}), "must not be blank"),
        ("importSecret", json!({"secretRef": "good", "plaintextValue": " \n "}), "must not be blank"),
        (
            "importSecret",
            json!({"secretRef": "good", "plaintextValue": "x".repeat(MAX_VALUE_BYTES + 1)}),
            "the limit is",
        ),
        ("importSecret", json!({"secretRef": "good", "plaintextValue": 42}), "must be a string"),
        ("importSecret", json!({"secretRef": "good"}), "missing field `plaintextValue`"),
        ("importSecret", json!({"secretRef": "good", "plaintextValue": "v", "nowMs": 1}), "unknown field `nowMs`"),
        ("importSecret", json!({"secretRef": "good", "plaintextValue": "v", "metadata": many_meta}), "at most 20 keys"),
        ("importSecret", json!({"secretRef": "good", "plaintextValue": "v", "metadata": {"a b": "v"}}), "metadata key"),
        ("importSecret", json!({"secretRef": "good", "plaintextValue": "v", "metadata": {"k": 1}}), "invalid type"),
        ("importSecret", json!(["good", "v"]), "must be a JSON object"),
        ("secretStatus", json!({"secretRefs": ["good", "bad ref"]}), "secretRefs[1]"),
        ("secretStatus", json!({"secretRefs": vec!["good"; 101]}), "at most 100"),
        ("secretStatus", json!({"secretRef": "good"}), "unknown field"),
        ("deleteSecret", json!({"secretRef": ""}), "1 to 200 characters"),
        ("deleteSecret", json!({"secretRef": "good", "extra": true}), "unknown field `extra`"),
        ("getSecretsStatus", json!({"agentKey": "bad key"}), "agentKey"),
    ];
    for (name, args, text) in cases {
        let err = op(&e, &s, name, args.clone()).await.expect_err(&format!("{name} {args} must be refused"));
        assert_eq!(code(&err), "ValidationError", "{name} {args}: {err}");
        assert!(err.to_string().contains(text), "{name}: '{err}' should say '{text}'");
    }
    let st = op(&e, &s, "secretStatus", json!({"secretRefs": ["good"]})).await.unwrap();
    assert_eq!(st[0]["hasActive"], false, "nothing was written");
    assert_eq!(s.backend().info("good").await.unwrap(), SecretInfo::missing("good"));
    e.drop_tables().await;
}

#[tokio::test]
async fn bad_input_is_refused_on_the_file_backend() {
    bad_input_scenario(Arc::new(FileSecretBackend::memory())).await;
}

#[tokio::test]
async fn bad_input_is_refused_on_secrets_manager() {
    bad_input_scenario(Arc::new(moto().await)).await;
}

#[tokio::test]
async fn the_cache_sees_changes_behind_it_only_after_the_ttl() {
    let e = env().await;
    let backend: Arc<dyn SecretBackend> = Arc::new(FileSecretBackend::memory());
    let s = secrets_on(backend.clone(), &e);
    backend.put("r", &val("one"), &BTreeMap::new()).await.unwrap();
    assert_eq!(s.get("r").await.unwrap(), Some(val("one")));
    assert_eq!(s.get("gone").await.unwrap(), None);
    // Changed behind the cache (another process): still the cached value and absence ...
    backend.put("r", &val("two"), &BTreeMap::new()).await.unwrap();
    backend.put("gone", &val("here"), &BTreeMap::new()).await.unwrap();
    e.clock.advance(TTL - 1);
    assert_eq!(s.get("r").await.unwrap(), Some(val("one")));
    assert_eq!(s.get("gone").await.unwrap(), None, "negative results are cached too");
    // ... until the TTL has passed.
    e.clock.advance(1);
    assert_eq!(s.get("r").await.unwrap(), Some(val("two")));
    assert_eq!(s.get("gone").await.unwrap(), Some(val("here")));
    // A delete behind the cache, likewise.
    backend.delete("r").await.unwrap();
    assert_eq!(s.get("r").await.unwrap(), Some(val("two")));
    e.clock.advance(TTL);
    assert_eq!(s.get("r").await.unwrap(), None);
    // first_active walks the candidates in order.
    let cands = vec!["r".to_string(), "gone".to_string()];
    assert_eq!(s.first_active(&cands).await.unwrap(), Some(("gone".to_string(), val("here"))));
    e.drop_tables().await;
}
