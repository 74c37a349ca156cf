//! Who may call what: `enqueue` serves the producer's ops, `admin` the operator's, `api` the end
//! user's; `api` takes the user from a verified token when the deployment configures a key, and
//! from the arguments only in trusted-backend mode.

use integration_tests::*;
use serde_json::{Value, json};
use shared::access::model::AccessPolicy;
use shared::config::Policies;
use shared::workers::model::WorkerPolicy;

const KEY_REF: &str = "api.userTokenKey";

async fn token_env() -> AppEnv {
    app_env_with(Policies {
        workers: WorkerPolicy { auth_cache_ms: 0, ..WorkerPolicy::default() },
        access: AccessPolicy {
            user_token_secret_ref: Some(KEY_REF.into()),
            issuer: Some("consumer".into()),
            ..AccessPolicy::default()
        },
        ..integration_tests::test_policies()
    })
    .await
}

fn token(user: &str, key: &[u8], exp_s: i64) -> String {
    shared::access::token::sign(&json!({"sub": user, "exp": exp_s, "iss": "consumer"}), key).unwrap()
}

/// A snapshot (uploading) of `user`'s conversation with `bot`, made through the worker protocol.
async fn user_snapshot(a: &AppEnv, user: &str) {
    a.e.store
        .configure_agent(
            serde_json::from_value(json!({"agentKey": "bot", "version": "1", "enabled": true, "secretsRef": []}))
                .unwrap(),
        )
        .await
        .unwrap();
    let cid = shared::snapshots::rules::user_agent_conversation(user, "bot");
    a.e.store.enqueue(enq(&cid, "bot", "hello")).await.unwrap();
    let t = a.mint(&format!("w-{user}")).await;
    let (st, job) = a.post("claim", &t, json!({"conversationId": cid})).await;
    assert_eq!(st, 200, "{job}");
    let prep = json!({"workspaceId": "default", "agentKey": "bot", "conversationId": cid, "reason": "manual"});
    let (st, p) = a.post("snapshot-prepare", &t, prep).await;
    assert_eq!(st, 200, "{p}");
}

#[tokio::test]
async fn each_function_serves_only_its_callers_ops() {
    let a = app_env().await;
    let (producer, admin_ops, user_ops) = (enqueue::op_names(), admin::op_names(), api::op_names());
    let cleanup_ops = cleanup::op_names();
    for op in all_op_names() {
        let n = [&producer, &admin_ops, &user_ops, &cleanup_ops].iter().filter(|l| l.contains(&op)).count();
        assert_eq!(n, 1, "{op} is served by {n} functions");
    }
    assert_eq!(producer, vec!["enqueue", "hasQueuedJobsForConversation"]);
    let before = snapshot(&a.e).await;
    let refused = [
        enqueue::handle(&a.app, json!({"op": "importSecret", "args": {"secretRef": "a.b", "plaintextValue": "v"}}))
            .await,
        enqueue::handle(&a.app, json!({"op": "configureAgent", "args": {"agentKey": "x", "version": "1"}})).await,
        admin::handle(&a.app, json!({"op": "listSnapshotsForUserAgent", "args": {"agentKey": "bot"}})).await,
        api::handle(&a.app, json!({"op": "mintWorkerToken", "args": {"workerId": "w"}})).await,
        api::handle(&a.app, json!({"op": "enqueue", "args": {}})).await,
    ];
    for r in refused {
        let e = r.unwrap_err();
        assert_eq!(code(&e), "ValidationError");
        assert!(e.to_string().contains("unknown op"), "{e}");
    }
    assert_eq!(snapshot(&a.e).await, before);
}

#[tokio::test]
async fn trusted_backend_mode_takes_the_user_from_the_arguments() {
    let a = app_env().await;
    user_snapshot(&a, "u2").await;
    let list = |args: Value| api::handle(&a.app, json!({"op": "listSnapshotsForUserAgent", "args": args}));
    assert_eq!(list(json!({"consumerUserId": "u2", "agentKey": "bot"})).await.unwrap().as_array().unwrap().len(), 1);
    assert_eq!(list(json!({"consumerUserId": "u1", "agentKey": "bot"})).await.unwrap(), json!([]));
    let e = list(json!({"agentKey": "bot"})).await.unwrap_err();
    assert_eq!((code(&e), e.to_string().contains("consumerUserId is required")), ("ValidationError", true), "{e}");
    for bad in [json!(""), json!(7), json!("a\u{0}b")] {
        let e = list(json!({"consumerUserId": bad, "agentKey": "bot"})).await.unwrap_err();
        assert_eq!(code(&e), "ValidationError", "{e}");
    }
    // A token is not silently ignored where nothing verifies it.
    let e = api::handle(
        &a.app,
        json!({"op": "listSnapshotsForUserAgent", "args": {"agentKey": "bot"}, "userToken": "x.y.z"}),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("verifies no user tokens"), "{e}");
}

#[tokio::test]
async fn with_a_key_the_user_is_the_verified_tokens_only() {
    let a = token_env().await;
    a.secret(KEY_REF, "k-0123456789abcdef0123456789abcdef").await;
    let key = b"k-0123456789abcdef0123456789abcdef";
    user_snapshot(&a, "u2").await;
    let exp = (a.app.now() / 1000) + 600;
    let call = |tok: Option<String>, args: Value| {
        let mut p = json!({"op": "listSnapshotsForUserAgent", "args": args});
        if let Some(t) = tok {
            p["userToken"] = json!(t);
        }
        api::handle(&a.app, p)
    };
    // Its own data through its token.
    let mine = call(Some(token("u2", key, exp)), json!({"agentKey": "bot"})).await.unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let latest = api::handle(
        &a.app,
        json!({"op": "getLatestSnapshotForUserAgent", "args": {"agentKey": "bot"}, "userToken": token("u2", key, exp)}),
    )
    .await
    .unwrap();
    assert_eq!(latest["conversationId"], "user-agent:bot:u2");
    // Another user's token does not reach it, with or without naming u2 in the args.
    assert_eq!(call(Some(token("u1", key, exp)), json!({"agentKey": "bot"})).await.unwrap(), json!([]));
    let e = call(Some(token("u1", key, exp)), json!({"consumerUserId": "u2", "agentKey": "bot"})).await.unwrap_err();
    assert_eq!(code(&e), "Forbidden", "{e}");
    // Naming oneself is fine.
    assert!(call(Some(token("u2", key, exp)), json!({"consumerUserId": "u2", "agentKey": "bot"})).await.is_ok());
    // No token, a forged one, an expired one, a wrong issuer: 401, and the body never has the token.
    let forged = token("u2", b"another key", exp);
    let expired = token("u2", key, exp - 3_600);
    let wrong_iss = shared::access::token::sign(&json!({"sub": "u2", "exp": exp, "iss": "x"}), key).unwrap();
    for (tok, why) in [
        (None, "pass 'userToken'"),
        (Some(forged.clone()), "bad signature"),
        (Some(expired), "expired"),
        (Some(wrong_iss), "issuer"),
        (Some("not-a-token".into()), "compact JWS"),
    ] {
        let e = call(tok.clone(), json!({"consumerUserId": "u2", "agentKey": "bot"})).await.unwrap_err();
        assert_eq!(code(&e), "Unauthorized", "{e}");
        assert!(e.to_string().contains(why), "{e}");
        if let Some(t) = tok {
            assert!(!e.to_string().contains(&t));
        }
    }
    // Unknown ops are named before any authentication.
    let e = api::handle(&a.app, json!({"op": "nope"})).await.unwrap_err();
    assert!(e.to_string().contains("unknown op 'nope'"), "{e}");
    // Bad envelopes.
    for bad in [json!([1]), json!({"op": "listSnapshotsForUserAgent", "extra": 1}), json!("x")] {
        assert_eq!(code(&api::handle(&a.app, bad).await.unwrap_err()), "ValidationError");
    }
}

/// An identity provider's key set, served over HTTP, that the test can rotate; counts fetches.
struct Idp {
    url: String,
    doc: std::sync::Arc<std::sync::Mutex<Value>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn idp(doc: Value) -> Idp {
    use std::sync::atomic::Ordering;
    let doc = std::sync::Arc::new(std::sync::Mutex::new(doc));
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (d, f) = (doc.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (d, f) = (d.clone(), f.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                axum::Json(d.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Idp { url: format!("http://{addr}/.well-known/jwks.json"), doc, fetches }
}

fn b64u(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The INTEGERs of a DER SEQUENCE (an RSAPublicKey: n, e), leading zeros dropped.
fn der_ints(der: &[u8]) -> Vec<Vec<u8>> {
    fn len(b: &[u8], i: &mut usize) -> usize {
        let l = b[*i] as usize;
        *i += 1;
        if l < 0x80 {
            return l;
        }
        let mut v = 0;
        for _ in 0..(l & 0x7f) {
            v = (v << 8) | b[*i] as usize;
            *i += 1;
        }
        v
    }
    let mut i = 1;
    len(der, &mut i);
    let mut out = vec![];
    while i < der.len() {
        assert_eq!(der[i], 2, "INTEGER");
        i += 1;
        let l = len(der, &mut i);
        let mut v = der[i..i + l].to_vec();
        i += l;
        while v.len() > 1 && v[0] == 0 {
            v.remove(0);
        }
        out.push(v);
    }
    out
}

struct RsaKey(aws_lc_rs::signature::RsaKeyPair, &'static str);
struct EcKey(aws_lc_rs::signature::EcdsaKeyPair, &'static str);

impl RsaKey {
    fn new(kid: &'static str) -> Self {
        Self(aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(), kid)
    }
    fn jwk(&self) -> Value {
        use aws_lc_rs::signature::KeyPair;
        let ints = der_ints(self.0.public_key().as_ref());
        json!({"kty": "RSA", "kid": self.1, "alg": "RS256", "use": "sig", "n": b64u(&ints[0]), "e": b64u(&ints[1])})
    }
    fn token(&self, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64u(json!({"alg": "RS256", "kid": self.1}).to_string().as_bytes()),
            b64u(claims.to_string().as_bytes())
        );
        let mut sig = vec![0; self.0.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.0.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig).unwrap();
        format!("{input}.{}", b64u(&sig))
    }
}

impl EcKey {
    fn new(kid: &'static str) -> Self {
        Self(
            aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                .unwrap(),
            kid,
        )
    }
    fn jwk(&self) -> Value {
        use aws_lc_rs::signature::KeyPair;
        let p = self.0.public_key().as_ref().to_vec();
        json!({"kty": "EC", "crv": "P-256", "kid": self.1, "x": b64u(&p[1..33]), "y": b64u(&p[33..65])})
    }
    fn token(&self, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64u(json!({"alg": "ES256", "kid": self.1}).to_string().as_bytes()),
            b64u(claims.to_string().as_bytes())
        );
        let sig = self.0.sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64u(sig.as_ref()))
    }
}

/// With `USER_TOKEN_JWKS_URL`, RS256 and ES256 tokens of the provider's keys are accepted, by
/// `kid`, with the key set cached and refetched when the provider rotates its keys; HS256 is not
/// accepted (no secret is configured), nor a key the set does not have.
#[tokio::test]
async fn tokens_of_an_identity_providers_key_set() {
    use std::sync::atomic::Ordering;
    let (r1, e1, r2, stranger) = (RsaKey::new("r1"), EcKey::new("e1"), RsaKey::new("r2"), RsaKey::new("r1"));
    let idp = idp(json!({"keys": [r1.jwk(), e1.jwk()]})).await;
    let a = app_env_with(Policies {
        access: AccessPolicy { jwks_url: Some(idp.url.clone()), ..AccessPolicy::default() },
        ..integration_tests::test_policies()
    })
    .await;
    user_snapshot(&a, "u2").await;
    let exp = (a.app.now() / 1000) + 600;
    let claims = |user: &str| json!({"sub": user, "exp": exp});
    let call = |tok: String| {
        api::handle(&a.app, json!({"op": "listSnapshotsForUserAgent", "args": {"agentKey": "bot"}, "userToken": tok}))
    };
    assert_eq!(call(r1.token(&claims("u2"))).await.unwrap().as_array().unwrap().len(), 1);
    assert_eq!(call(e1.token(&claims("u2"))).await.unwrap().as_array().unwrap().len(), 1);
    assert_eq!(call(e1.token(&claims("u1"))).await.unwrap(), json!([]));
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1, "the key set is cached");
    // A key of the same kid that is not the provider's; an HS256 token; an unknown kid.
    for (tok, why) in [
        (stranger.token(&claims("u2")), "bad signature"),
        (token("u2", b"guess", exp), "HS256 is not accepted"),
        (r2.token(&claims("u2")), "no key of the key set"),
    ] {
        let e = call(tok).await.unwrap_err();
        assert_eq!(code(&e), "Unauthorized", "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    // The provider rotates in r2: accepted once the set is refetched (at most every 30 s).
    idp.doc.lock().unwrap()["keys"].as_array_mut().unwrap().push(r2.jwk());
    a.e.clock.advance(31_000);
    assert_eq!(call(r2.token(&claims("u2"))).await.unwrap().as_array().unwrap().len(), 1);
    assert!(idp.fetches.load(Ordering::SeqCst) <= 3);
}

/// `getProviderOperationalReadiness` (admin) says what the pool lacks and how `api` learns users.
#[tokio::test]
async fn provider_readiness_reports_missing_config_and_the_user_auth_mode() {
    let a = app_env().await;
    let r = admin::handle(&a.app, json!({"op": "getProviderOperationalReadiness"})).await.unwrap();
    assert_eq!(r["userAuthMode"], "trustedBackend");
    assert_eq!(r["issues"], json!(["missing_provider_runtime_config", "missing_message_runtime_config"]));
    admin::handle(&a.app, json!({"op": "setMessageRuntimeConfig", "args": {"messageConfig": {"systemPrompt": "p"}}}))
        .await
        .unwrap();
    let r = admin::handle(&a.app, json!({"op": "getProviderOperationalReadiness"})).await.unwrap();
    assert_eq!(
        (r["workerRuntimeConfigPresent"].as_bool(), r["issues"].clone()),
        (Some(true), json!(["missing_provider_runtime_config"]))
    );
    let t = token_env().await;
    let r = admin::handle(&t.app, json!({"op": "getProviderOperationalReadiness"})).await.unwrap();
    assert_eq!(r["userAuthMode"], "userToken");
}
