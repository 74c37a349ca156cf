//! Telegram ingress, onboarding, pairing and bindings through the real entry points: the op
//! envelope (`invoke`: `api` for the user-scoped ops in trusted-backend mode, `admin` for the rest),
//! API Gateway v2 events into the `webhook` function's handler (accept), and DynamoDB stream
//! event JSON into the same function (process). Telegram is the fake Bot API server.

use integration_tests::fake_telegram::{FakeTelegram, Fault};
use integration_tests::{AppEnv, app_env, code, fixture, seed_agent, snapshot};
use serde_json::{Value, json};
use shared::app::App;

const TOKEN_A: &str = "7001:AAfakeTokenForBotA_secret";
const TOKEN_B: &str = "7002:BBfakeTokenForBotB_secret";
const BASE: &str = "https://af.example.com";

struct Tg {
    env: AppEnv,
    fake: FakeTelegram,
    app: App,
}

async fn setup() -> Tg {
    let env = app_env().await;
    let fake = FakeTelegram::start().await;
    fake.add_bot(TOKEN_A, 7001, "fake_a_bot");
    fake.add_bot(TOKEN_B, 7002, "fake_b_bot");
    // Real time: items with a DynamoDB TTL (codes, updates, attempt counters) must not look long
    // expired to DynamoDB Local, whose TTL sweeper would delete them mid-test.
    env.e.clock.set(shared::Clock::now_ms(&shared::SystemClock));
    let app = env.app.clone().with_telegram(fake.api(), Some(BASE.into()));
    seed_agent(&env.e.store, "a", true).await;
    seed_agent(&env.e.store, "b", true).await;
    Tg { env, fake, app }
}

async fn op(app: &App, name: &str, args: Value) -> shared::AppResult<Value> {
    integration_tests::invoke(app, json!({"op": name, "args": args})).await
}

/// An API Gateway v2 event for `POST /telegram/webhook`, with the secret header when given.
fn hook_request(secret: Option<&str>, body: &str) -> lambda_http::Request {
    let mut ev: Value = serde_json::from_str(&fixture("apigw-v2-worker-claim.json")).unwrap();
    ev["routeKey"] = json!("POST /telegram/webhook");
    ev["requestContext"]["routeKey"] = json!("POST /telegram/webhook");
    ev["rawPath"] = json!("/telegram/webhook");
    ev["requestContext"]["http"]["path"] = json!("/telegram/webhook");
    ev.as_object_mut().unwrap().remove("pathParameters");
    ev["body"] = json!(body);
    let h = ev["headers"].as_object_mut().unwrap();
    h.remove("authorization");
    h.insert("content-length".into(), json!(body.len().to_string()));
    if let Some(s) = secret {
        h.insert("x-telegram-bot-api-secret-token".into(), json!(s));
    }
    lambda_http::request::from_str(&ev.to_string()).expect("a valid API Gateway v2 event")
}

async fn post(app: &App, secret: Option<&str>, body: &str) -> (u16, Value) {
    let r = webhook::handle(app, hook_request(secret, body)).await;
    let status = r.status().as_u16();
    let text = match r.into_body() {
        lambda_http::Body::Text(t) => t,
        other => panic!("unexpected body {other:?}"),
    };
    (status, serde_json::from_str(&text).expect("JSON body"))
}

/// The process stage through the function, as the queue table's stream delivers a new update.
async fn process(app: &App, bot: &str, update_id: i64) -> Value {
    let ev = json!({"Records": [{"eventID": "1", "eventName": "INSERT", "eventSource": "aws:dynamodb",
        "dynamodb": {"Keys": {"pk": {"S": format!("TG#{bot}")}, "sk": {"S": format!("U#{update_id}")}},
        "SequenceNumber": "100", "StreamViewType": "NEW_AND_OLD_IMAGES"}}]});
    let out = webhook::dispatch(app, ev).await.expect("stream batch");
    if out["batchItemFailures"] != json!([]) {
        let e = shared::ingress::process(app, bot, update_id).await.unwrap_err();
        panic!("a transient failure: {}", e.chain());
    }
    update_outcome(app, bot, update_id).await
}

async fn update_outcome(app: &App, bot: &str, update_id: i64) -> Value {
    let item = app
        .store
        .get(&app.store.tables.queue, shared::adapters::dynamo::keys::update_key(bot, update_id))
        .await
        .unwrap()
        .expect("the update item");
    serde_dynamo::from_item(item).unwrap()
}

fn text_update(update_id: i64, user: i64, chat: i64, chat_type: &str, text: &str) -> String {
    json!({"update_id": update_id, "message": {"message_id": update_id * 10, "date": 1,
        "chat": {"id": chat, "type": chat_type}, "from": {"id": user, "is_bot": false, "first_name": "Ada", "username": "ada"},
        "text": text}})
    .to_string()
}

/// Accept then process one update: (accept status, accept body, outcome item).
async fn deliver(app: &App, secret: &str, bot: &str, body: &str) -> (u16, Value, Value) {
    let (s, b) = post(app, Some(secret), body).await;
    let id = serde_json::from_str::<Value>(body).unwrap()["update_id"].as_i64().unwrap();
    let o = process(app, bot, id).await;
    (s, b, o)
}

/// Import the token and configure the webhook for `agent`: the webhook secret Telegram holds.
async fn onboard(t: &Tg, agent: &str, token: &str) -> String {
    op(&t.app, "importTelegramTokenForAgent", json!({"agentKey": agent, "plaintextValue": token})).await.unwrap();
    op(&t.app, "configureTelegramWebhook", json!({"agentKey": agent})).await.unwrap();
    t.fake.webhook(token).expect("webhook set").secret_token
}

async fn state(app: &App, user: &str, agent: &str) -> Value {
    op(app, "getUserAgentOnboardingState", json!({"consumerUserId": user, "agentKey": agent})).await.unwrap()
}

async fn pairing_code(app: &App, user: &str, agent: &str, ttl: Option<i64>) -> String {
    let mut args = json!({"consumerUserId": user, "agentKey": agent});
    if let Some(t) = ttl {
        args["ttlMs"] = json!(t);
    }
    op(app, "createPairingCode", args).await.unwrap()["code"].as_str().unwrap().to_string()
}

async fn messages(app: &App, conversation_id: &str) -> Vec<Value> {
    let v = op(app, "listQueueItemsForConversation", json!({"conversationId": conversation_id})).await.unwrap();
    v.as_array().unwrap().clone()
}

#[tokio::test]
async fn telegram_onboarding_reaches_an_active_binding_and_routes_text() {
    let t = setup().await;
    assert_eq!(state(&t.app, "u1", "a").await["nextAction"], "import_token");

    let r =
        op(&t.app, "importTelegramTokenForAgent", json!({"agentKey": "a", "plaintextValue": TOKEN_A})).await.unwrap();
    assert_eq!(r["botIdentity"], "7001");
    assert_eq!(r["telegramUsername"], "fake_a_bot");
    assert_eq!(r["secretRef"], "telegram.botToken.a");
    let s = state(&t.app, "u1", "a").await;
    assert_eq!(s["nextAction"], "configure_webhook");
    assert_eq!(s["tokenVerified"], true);

    let w = op(&t.app, "configureTelegramWebhook", json!({"agentKey": "a"})).await.unwrap();
    assert_eq!(w["webhookUrl"], "https://af.example.com/telegram/webhook");
    let hook = t.fake.webhook(TOKEN_A).unwrap();
    assert_eq!(hook.url, "https://af.example.com/telegram/webhook");
    assert_eq!(hook.allowed_updates, vec!["message"]);
    assert!(hook.secret_token.len() >= 32);
    assert!(hook.secret_token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    assert_ne!(hook.secret_token, "af_v1_7001");
    let readiness = op(&t.app, "getWebhookReadiness", json!({"agentKey": "a"})).await.unwrap();
    assert_eq!(readiness["webhookReady"], true, "{readiness}");
    assert_eq!(state(&t.app, "u1", "a").await["nextAction"], "create_pairing");

    let p = op(&t.app, "createUserAgentPairing", json!({"consumerUserId": "u1", "agentKey": "a"})).await.unwrap();
    let code = p["pairing"]["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 10);
    assert_eq!(p["deepLink"], format!("https://t.me/fake_a_bot?start={code}"));
    assert_eq!(p["pairing"]["expiresAt"].as_i64().unwrap() - p["pairing"]["createdAt"].as_i64().unwrap(), 900_000);
    let s = state(&t.app, "u1", "a").await;
    assert_eq!(s["nextAction"], "complete_pairing");
    assert_eq!(s["pairingDeepLink"], p["deepLink"]);

    let (st, body, o) =
        deliver(&t.app, &hook.secret_token, "7001", &text_update(1, 42, 42, "private", &format!("/start {code}")))
            .await;
    assert_eq!((st, body), (200, json!({"ok": true})));
    assert_eq!(o["outcome"], "paired", "{o}");
    assert!(o.get("rawUpdate").is_none(), "the raw update is dropped once processed");
    let sent = t.fake.sent();
    assert_eq!(sent.len(), 1);
    assert!(!sent[0].2.contains("u1"), "the consumer id never goes to Telegram");
    assert!(messages(&t.app, "user-agent:a:u1").await.is_empty(), "/start is never enqueued");

    let s = state(&t.app, "u1", "a").await;
    assert_eq!(s["nextAction"], "ready", "{s}");
    let b = op(&t.app, "getUserAgentBinding", json!({"consumerUserId": "u1"})).await.unwrap();
    assert_eq!(b["telegramUserId"], "42");
    assert_eq!(b["source"], "telegram_pairing");
    assert_eq!(b["status"], "active");
    let status = op(&t.app, "getPairingCodeStatus", json!({"consumerUserId": "u1", "code": code})).await.unwrap();
    assert_eq!(status["status"], "used");
    let other = op(&t.app, "getPairingCodeStatus", json!({"consumerUserId": "u2", "code": code})).await.unwrap();
    assert_eq!(other, Value::Null, "another user does not see the code");

    let (_, _, o) = deliver(&t.app, &hook.secret_token, "7001", &text_update(2, 42, 42, "private", "hello")).await;
    assert_eq!(o["outcome"], "enqueued", "{o}");
    let m = messages(&t.app, "user-agent:a:u1").await;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["agentKey"], "a");
    let payload = &m[0]["payload"];
    assert_eq!(payload["messageText"], "hello");
    assert_eq!(payload["providerUserId"], "42");
    assert_eq!(payload["metadata"]["telegramBotIdentity"], "7001");
    assert_eq!(payload["metadata"]["telegramChatId"], "42");

    // A replay (Telegram re-delivers) is accepted once; a stream retry enqueues nothing new.
    let (st, body) = post(&t.app, Some(&hook.secret_token), &text_update(2, 42, 42, "private", "hello")).await;
    assert_eq!((st, body), (200, json!({"ok": true, "duplicate": true})));
    process(&t.app, "7001", 2).await;
    assert_eq!(messages(&t.app, "user-agent:a:u1").await.len(), 1, "enqueued once");

    let readiness =
        op(&t.app, "getTelegramAgentReadiness", json!({"consumerUserId": "u1", "agentKey": "a"})).await.unwrap();
    assert_eq!(readiness["issues"], json!([]), "{readiness}");
    assert_eq!(readiness["bindingActive"], true);

    // Revoking expires pending codes and sends the user's messages back to the bot's agent.
    let code2 = pairing_code(&t.app, "u1", "a", None).await;
    let r = op(&t.app, "revokeUserAgentBinding", json!({"consumerUserId": "u1"})).await.unwrap();
    assert_eq!(r, json!({"revoked": 1, "expiredPairings": 1}));
    let st = op(&t.app, "getPairingCodeStatus", json!({"consumerUserId": "u1", "code": code2})).await.unwrap();
    assert_eq!(st["status"], "expired");
    let (_, _, o) =
        deliver(&t.app, &hook.secret_token, "7001", &text_update(3, 42, 42, "private", "still there?")).await;
    assert_eq!(o["outcome"], "enqueued");
    assert_eq!(messages(&t.app, "telegram:7001:42").await.len(), 1, "the fallback conversation");
}

#[tokio::test]
async fn forged_missing_and_rotated_secrets_get_401_and_write_nothing() {
    let t = setup().await;
    let secret = onboard(&t, "a", TOKEN_A).await;
    let body = text_update(1, 42, 42, "private", "hi");
    let before = snapshot(&t.env.e).await;
    for forged in
        [None, Some("af_v1_7001"), Some("af:v1:7001"), Some(""), Some("x".repeat(48).as_str()), Some(&secret[..47])]
    {
        let (s, b) = post(&t.app, forged, &body).await;
        assert_eq!(s, 401, "{forged:?}");
        assert_eq!(b["ok"], false);
    }
    // A forged header with a malformed body is still a 401 (authentication comes first).
    assert_eq!(post(&t.app, Some("af_v1_7001"), "{not json").await.0, 401);
    assert_eq!(snapshot(&t.env.e).await, before, "no refusal writes anything");
    assert_eq!(t.fake.calls("sendMessage") + t.fake.calls("getFile"), 0, "accept never calls Telegram");

    // Re-configuring rotates the secret: the old one stops working, the new one works.
    op(&t.app, "configureTelegramWebhook", json!({"agentKey": "a"})).await.unwrap();
    let new = t.fake.webhook(TOKEN_A).unwrap().secret_token;
    assert_ne!(new, secret);
    assert_eq!(post(&t.app, Some(&secret), &body).await.0, 401);
    assert_eq!(post(&t.app, Some(&new), &body).await.0, 200);
}

#[tokio::test]
async fn malformed_bodies_get_400_and_other_updates_are_recorded() {
    let t = setup().await;
    let secret = onboard(&t, "a", TOKEN_A).await;
    let before = snapshot(&t.env.e).await;
    let (s, b) = post(&t.app, Some(&secret), "{not json").await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("not valid JSON"), "{b}");
    let (s, b) = post(&t.app, Some(&secret), "[1, 2]").await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("update_id"), "{b}");
    assert_eq!(post(&t.app, Some(&secret), r#"{"update_id": "7"}"#).await.0, 400);
    assert_eq!(snapshot(&t.env.e).await, before, "no malformed body writes anything");
    // A well-formed update of another kind is accepted (2xx, no retry storm) and recorded.
    let (s, _, o) = deliver(&t.app, &secret, "7001", r#"{"update_id": 9, "edited_message": {"text": "x"}}"#).await;
    assert_eq!(s, 200);
    assert_eq!(o["outcome"], "ignored");
    let (_, _, o) = deliver(&t.app, &secret, "7001", &text_update(10, 42, 42, "private", "/start")).await;
    assert_eq!(o["outcome"], "bad_start");
    assert!(messages(&t.app, "telegram:7001:42").await.is_empty());
}

#[tokio::test]
async fn expired_used_guessed_and_brute_forced_codes() {
    let t = setup().await;
    let secret = onboard(&t, "a", TOKEN_A).await;
    let start = |id: i64, user: i64, code: &str| text_update(id, user, user, "private", &format!("/start {code}"));

    // Expired (TTL clamped to at least one minute).
    let code = pairing_code(&t.app, "u1", "a", Some(1)).await;
    t.env.e.clock.advance(60_001);
    let (_, _, o) = deliver(&t.app, &secret, "7001", &start(1, 42, &code)).await;
    assert_eq!(o["outcome"], "pairing_failed");
    assert!(o["detail"].as_str().unwrap().contains("expired"), "{o}");
    assert_eq!(op(&t.app, "getUserAgentBinding", json!({"consumerUserId": "u1"})).await.unwrap(), Value::Null);
    let st = op(&t.app, "getUserAgentPairingStatus", json!({"consumerUserId": "u1", "agentKey": "a"})).await.unwrap();
    assert_eq!(st["status"], "expired");

    // Used: a second Telegram user cannot take the code.
    let code = pairing_code(&t.app, "u1", "a", None).await;
    assert_eq!(deliver(&t.app, &secret, "7001", &start(2, 42, &code)).await.2["outcome"], "paired");
    let (_, _, o) = deliver(&t.app, &secret, "7001", &start(3, 43, &code)).await;
    assert_eq!(o["outcome"], "pairing_failed");
    assert!(o["detail"].as_str().unwrap().contains("already used"), "{o}");
    let b = op(&t.app, "getUserAgentBinding", json!({"consumerUserId": "u1"})).await.unwrap();
    assert_eq!(b["telegramUserId"], "42");
    let e = op(
        &t.app,
        "consumePairingCode",
        json!({"code": code, "botIdentity": "7001", "telegramUserId": "44", "telegramChatId": "44"}),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), "Conflict");

    // Guessed, then brute-forced: the chat's window closes after 5 attempts, even for a real code.
    let real = pairing_code(&t.app, "u2", "a", None).await;
    for i in 0..5 {
        let (_, _, o) = deliver(&t.app, &secret, "7001", &start(10 + i, 50, "ZZZZZZZZZZ")).await;
        assert_eq!(o["outcome"], "pairing_failed", "attempt {i}");
    }
    let (_, _, o) = deliver(&t.app, &secret, "7001", &start(20, 50, &real)).await;
    assert_eq!(o["outcome"], "rate_limited");
    let st = op(&t.app, "getPairingCodeStatus", json!({"consumerUserId": "u2", "code": real})).await.unwrap();
    assert_eq!(st["status"], "pending", "a refused attempt leaves the code alone");
    // Another chat is not limited; the window passes.
    assert_eq!(deliver(&t.app, &secret, "7001", &start(21, 51, "ZZZZZZZZZZ")).await.2["outcome"], "pairing_failed");
    t.env.e.clock.advance(1_200_000);
    let real = pairing_code(&t.app, "u2", "a", None).await;
    assert_eq!(deliver(&t.app, &secret, "7001", &start(22, 50, &real)).await.2["outcome"], "paired");
    for (_, _, text) in t.fake.sent() {
        assert!(!text.contains("u1") && !text.contains("u2"), "{text}");
    }
}

fn code_of(e: &shared::AppError) -> &'static str {
    code(e)
}

#[tokio::test]
async fn two_bots_and_the_same_telegram_user_and_bot_uniqueness() {
    let t = setup().await;
    let sa = onboard(&t, "a", TOKEN_A).await;
    let sb = onboard(&t, "b", TOKEN_B).await;
    let ca = pairing_code(&t.app, "u1", "a", None).await;
    let cb = pairing_code(&t.app, "u2", "b", None).await;
    // A code belongs to its bot.
    let (_, _, o) = deliver(&t.app, &sb, "7002", &text_update(1, 42, 42, "private", &format!("/start {ca}"))).await;
    assert!(o["detail"].as_str().unwrap().contains("different Telegram bot"), "{o}");
    assert_eq!(
        deliver(&t.app, &sa, "7001", &text_update(2, 42, 42, "private", &format!("/start {ca}"))).await.2["outcome"],
        "paired"
    );
    assert_eq!(
        deliver(&t.app, &sb, "7002", &text_update(2, 42, 42, "private", &format!("/start {cb}"))).await.2["outcome"],
        "paired"
    );
    deliver(&t.app, &sa, "7001", &text_update(3, 42, 42, "private", "to a")).await;
    deliver(&t.app, &sb, "7002", &text_update(3, 42, 42, "private", "to b")).await;
    let ma = messages(&t.app, "user-agent:a:u1").await;
    let mb = messages(&t.app, "user-agent:b:u2").await;
    assert_eq!((ma.len(), mb.len()), (1, 1));
    assert_eq!(ma[0]["payload"]["messageText"], "to a");
    assert_eq!(mb[0]["payload"]["messageText"], "to b");
    let r =
        op(&t.app, "resolveAgentForTelegram", json!({"botIdentity": "7002", "telegramUserId": "42"})).await.unwrap();
    assert_eq!(r["consumerUserId"], "u2");

    // Bot A cannot be claimed by agent b; nothing changes.
    let before = snapshot(&t.env.e).await;
    let e = op(&t.app, "importTelegramTokenForAgent", json!({"agentKey": "b", "plaintextValue": TOKEN_A}))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "Conflict");
    assert!(e.to_string().contains("already assigned to agent 'a'"), "{e}");
    assert_eq!(snapshot(&t.env.e).await, before);
    // A binding's bot must be the agent's.
    let e = op(
        &t.app,
        "bindUserAgent",
        json!({"consumerUserId": "u3", "agentKey": "a", "botIdentity": "7002", "telegramUserId": "9"}),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), "ValidationError");
}

#[tokio::test]
async fn group_chats_route_by_user_unless_paired_as_a_group() {
    let t = setup().await;
    let s = onboard(&t, "a", TOKEN_A).await;
    let c1 = pairing_code(&t.app, "u1", "a", None).await;
    deliver(&t.app, &s, "7001", &text_update(1, 42, 42, "private", &format!("/start {c1}"))).await;
    // Another member of a group: not u1's conversation.
    deliver(&t.app, &s, "7001", &text_update(2, 43, -100, "group", "from 43")).await;
    assert_eq!(messages(&t.app, "telegram:7001:-100").await.len(), 1);
    // u1 in the group: routed by (bot, user).
    deliver(&t.app, &s, "7001", &text_update(3, 42, -100, "group", "from 42")).await;
    assert_eq!(messages(&t.app, "user-agent:a:u1").await.len(), 1);
    // A group paired explicitly routes every member to its binding.
    let c2 = pairing_code(&t.app, "u2", "a", None).await;
    assert_eq!(
        deliver(&t.app, &s, "7001", &text_update(4, 44, -200, "supergroup", &format!("/start@fake_a_bot {c2}")))
            .await
            .2["outcome"],
        "paired"
    );
    deliver(&t.app, &s, "7001", &text_update(5, 45, -200, "supergroup", "from 45")).await;
    let m = messages(&t.app, "user-agent:a:u2").await;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["payload"]["providerUserId"], "45");
}

#[tokio::test]
async fn media_is_downloaded_with_limits_before_enqueue() {
    let t = setup().await;
    let s = onboard(&t, "a", TOKEN_A).await;
    t.fake.add_file("doc1", "documents/file_1.pdf", b"%PDF-1.4 tiny".to_vec(), None, Some("application/pdf"));
    t.fake.add_file("big1", "photos/file_2.jpg", vec![0u8; 16], Some(21 * 1024 * 1024), None);
    t.fake.add_file("exe1", "documents/file_3.exe", b"MZ".to_vec(), None, Some("application/x-msdownload"));
    let update = |id: i64, m: Value| {
        let mut u = json!({"update_id": id, "message": {"message_id": id, "chat": {"id": 42, "type": "private"}, "from": {"id": 42}}});
        for (k, v) in m.as_object().unwrap() {
            u["message"][k] = v.clone();
        }
        u.to_string()
    };
    let (_, _, o) = deliver(
        &t.app,
        &s,
        "7001",
        &update(
            1,
            json!({"caption": "see", "photo": [{"file_id": "big1", "file_size": 22020096}],
        "document": {"file_id": "doc1", "file_name": "a.pdf", "mime_type": "application/pdf", "file_size": 13}}),
        ),
    )
    .await;
    assert_eq!(o["outcome"], "enqueued", "{o}");
    let m = messages(&t.app, "telegram:7001:42").await;
    assert_eq!(m.len(), 1);
    let p = &m[0]["payload"];
    assert_eq!(p["messageText"], "see");
    let atts = p["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 1, "the oversized photo is left out");
    assert_eq!(atts[0]["kind"], "document");
    assert_eq!(atts[0]["mimeType"], "application/pdf");
    let sid = atts[0]["storageId"].as_str().unwrap();
    use shared::blob::BlobBackend;
    assert_eq!(t.env.blobs.size(&shared::blob::media_key(sid)).await.unwrap(), Some(13));
    assert!(p["metadata"]["telegramSkippedMedia"].as_str().unwrap().contains("20 MB"));
    assert_eq!(p["metadata"]["telegramMediaType"], "document");
    assert_eq!(t.fake.calls("file"), 1, "the oversized file is never downloaded");
    // Only unacceptable media and no text: nothing is enqueued.
    let (_, _, o) = deliver(
        &t.app,
        &s,
        "7001",
        &update(
            2,
            json!({"document": {"file_id": "exe1", "file_name": "x.exe", "mime_type": "application/x-msdownload"}}),
        ),
    )
    .await;
    assert_eq!(o["outcome"], "ignored");
    assert!(o["detail"].as_str().unwrap().contains("not accepted"), "{o}");
    assert_eq!(messages(&t.app, "telegram:7001:42").await.len(), 1);
}

#[tokio::test]
async fn bot_api_faults_are_stable_errors_without_the_token() {
    let t = setup().await;
    let before = snapshot(&t.env.e).await;
    let import = |tok: &str| json!({"agentKey": "a", "plaintextValue": tok});
    t.fake.fault("getMe", Fault::Status(502));
    let e = op(&t.app, "importTelegramTokenForAgent", import(TOKEN_A)).await.unwrap_err();
    assert_eq!(code_of(&e), "ProviderError");
    assert!(e.to_string().contains("Telegram getMe failed: HTTP 502"), "{e}");
    t.fake.fault("getMe", Fault::RetryAfter(3));
    let e = op(&t.app, "importTelegramTokenForAgent", import(TOKEN_A)).await.unwrap_err();
    assert!(e.to_string().contains("rate limited (retry after 3 s)"), "{e}");
    t.fake.fault("getMe", Fault::Slow(std::time::Duration::from_millis(1500)));
    let e = op(&t.app, "importTelegramTokenForAgent", import(TOKEN_A)).await.unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    let e = op(&t.app, "importTelegramTokenForAgent", import("9999:unknownTokenOfNoBot_x")).await.unwrap_err();
    assert_eq!(code_of(&e), "ValidationError");
    for msg in [e.to_string(), e.chain()] {
        assert!(!msg.contains("AAfakeToken") && !msg.contains("unknownTokenOfNoBot"), "{msg}");
    }
    assert_eq!(snapshot(&t.env.e).await, before, "a refused import stores nothing");
    assert!(t.env.app.secrets.get("telegram.botToken.a").await.unwrap().is_none());

    // setWebhook fails: the bot's webhook state is not changed, onboarding stays at configure_webhook.
    op(&t.app, "importTelegramTokenForAgent", import(TOKEN_A)).await.unwrap();
    t.fake.fault("setWebhook", Fault::Status(500));
    let e = op(&t.app, "configureTelegramWebhook", json!({"agentKey": "a"})).await.unwrap_err();
    assert_eq!(code_of(&e), "ProviderError");
    assert_eq!(state(&t.app, "u1", "a").await["nextAction"], "configure_webhook");
    let e = op(&t.app, "configureTelegramWebhook", json!({"agentKey": "a", "publicBaseUrl": "http://evil.example"}))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "ValidationError");
}

/// The accept stage's cost, measured: one GetItem (the hook) and one conditional PutItem per
/// update (the secret comes from the process cache); a replay costs the same and writes nothing.
/// The process stage of a routed text update is counted too (printed).
#[tokio::test]
async fn accept_costs_two_requests_per_update() {
    let t = setup().await;
    let s = onboard(&t, "a", TOKEN_A).await;
    post(&t.app, Some(&s), &text_update(1, 42, 42, "private", "warm the secret cache")).await;
    let counter = &t.env.e.counter;
    counter.reset();
    let n = 20;
    for i in 0..n {
        assert_eq!(post(&t.app, Some(&s), &text_update(100 + i, 42, 42, "private", "hi")).await.0, 200);
    }
    let per_update = counter.total() as f64 / n as f64;
    let ops = counter.by_operation();
    eprintln!("accept: {per_update} DynamoDB requests per accepted update ({ops:?})");
    assert_eq!(per_update, 2.0, "{ops:?}");
    counter.reset();
    post(&t.app, Some(&s), &text_update(100, 42, 42, "private", "hi")).await;
    assert_eq!(counter.total(), 2, "a replay: the lookup and the refused put");
    counter.reset();
    process(&t.app, "7001", 101).await;
    eprintln!(
        "process (unbound text, fallback agent): {} DynamoDB requests ({:?})",
        counter.total(),
        counter.by_operation()
    );
}

/// A new bot on an agent flags the old bot's bindings and expires its pending codes (both
/// reported), the old bot's secret stops working, and onboarding goes back to configuring the
/// webhook.
#[tokio::test]
async fn a_bot_change_flags_the_bindings_of_the_old_bot() {
    let t = setup().await;
    let s = onboard(&t, "a", TOKEN_A).await;
    let c = pairing_code(&t.app, "u1", "a", None).await;
    deliver(&t.app, &s, "7001", &text_update(1, 42, 42, "private", &format!("/start {c}"))).await;
    let pending = pairing_code(&t.app, "u2", "a", None).await;
    let r =
        op(&t.app, "importTelegramTokenForAgent", json!({"agentKey": "a", "plaintextValue": TOKEN_B})).await.unwrap();
    assert_eq!(r["previousBotIdentity"], "7001");
    assert_eq!((r["flaggedBindings"].as_i64(), r["expiredPairings"].as_i64()), (Some(1), Some(1)), "{r}");
    let st = op(&t.app, "getPairingCodeStatus", json!({"consumerUserId": "u2", "code": pending})).await.unwrap();
    assert_eq!(st["status"], "expired", "the old bot's pending code can no longer be used: {st}");
    let b = op(&t.app, "getUserAgentBinding", json!({"consumerUserId": "u1"})).await.unwrap();
    assert_eq!(b["flag"], "bot_changed");
    let st = state(&t.app, "u1", "a").await;
    assert_eq!(st["nextAction"], "configure_webhook", "{st}");
    assert_eq!(st["bindingStatus"], "flagged");
    assert_eq!(
        post(&t.app, Some(&s), &text_update(2, 42, 42, "private", "hi")).await.0,
        401,
        "the old bot's hook is gone"
    );
    let r =
        op(&t.app, "resolveAgentForTelegram", json!({"botIdentity": "7001", "telegramUserId": "42"})).await.unwrap();
    assert_eq!(r["agentKey"], Value::Null, "a flagged binding is not routed");
    // The old bot is free again for another agent.
    op(&t.app, "importTelegramTokenForAgent", json!({"agentKey": "b", "plaintextValue": TOKEN_A})).await.unwrap();
}

/// Two Telegram users race for one code: exactly one binding, the code used once.
#[tokio::test]
async fn a_code_raced_by_two_chats_pairs_exactly_once() {
    let t = setup().await;
    onboard(&t, "a", TOKEN_A).await;
    for round in 0..5 {
        let user = format!("race{round}");
        let c = pairing_code(&t.app, &user, "a", None).await;
        let consume = |tg: i64| {
            let app = t.app.clone();
            let c = c.clone();
            tokio::spawn(async move {
                op(&app, "consumePairingCode", json!({"code": c, "botIdentity": "7001", "telegramUserId": tg.to_string(), "telegramChatId": tg.to_string()})).await
            })
        };
        let (x, y) = (consume(1000 + round * 2), consume(1001 + round * 2));
        let (x, y) = (x.await.unwrap(), y.await.unwrap());
        assert_eq!(x.is_ok() as u8 + y.is_ok() as u8, 1, "{x:?} {y:?}");
        let winner = if x.is_ok() { 1000 + round * 2 } else { 1001 + round * 2 };
        let b = op(&t.app, "getUserAgentBinding", json!({"consumerUserId": user})).await.unwrap();
        assert_eq!(b["telegramUserId"], winner.to_string());
    }
}

async fn put_raw(t: &Tg, item: Value) {
    let item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> =
        serde_dynamo::to_item(item).unwrap();
    t.env.e.store.client.put_item().table_name(&t.env.e.tables.control).set_item(Some(item)).send().await.unwrap();
}

/// Data migrated from the original: a Telegram binding and a pending code without a bot
/// identity are revoked (annotated) and expired; profiles without one are counted.
#[tokio::test]
async fn soft_reset_revokes_legacy_bindings_and_expires_legacy_codes() {
    let t = setup().await;
    let binding = json!({"bindingId": "01LEGACY", "consumerUserId": "old1", "agentKey": "a",
        "conversationId": "user-agent:a:old1", "status": "active", "source": "telegram_pairing",
        "telegramUserId": "99", "telegramChatId": "99", "boundAt": 5, "metadata": {"displayName": "Old"}});
    let mut pointer = binding.clone();
    pointer["pk"] = json!("USER#old1");
    pointer["sk"] = json!("BINDING");
    let mut history = binding.clone();
    history["pk"] = json!("USER#old1");
    history["sk"] = json!("BH#0000000000005#01LEGACY");
    put_raw(&t, pointer).await;
    put_raw(&t, history).await;
    put_raw(
        &t,
        json!({"pk": "PAIR#LEGACY2345", "sk": "CODE", "code": "LEGACY2345", "consumerUserId": "old2",
        "agentKey": "a", "status": "pending", "createdAt": 1, "expiresAt": 9_999_999_999_999i64}),
    )
    .await;
    let r = op(&t.app, "softResetTelegramBindingsMissingBotIdentity", json!({})).await.unwrap();
    assert_eq!(
        r,
        json!({"revokedBindings": 1, "annotatedBindings": 0, "expiredPairings": 1, "pendingPairingsMissingBotIdentity": 1,
            "legacyBindingsMissingBotIdentity": 1, "profilesMissingBotIdentity": 2})
    );
    assert_eq!(op(&t.app, "getUserAgentBinding", json!({"consumerUserId": "old1"})).await.unwrap(), Value::Null);
    let h = t
        .env
        .e
        .store
        .get(&t.env.e.tables.control, shared::adapters::dynamo::keys::key("USER#old1", "BH#0000000000005#01LEGACY"))
        .await
        .unwrap()
        .unwrap();
    let h: Value = serde_dynamo::from_item(h).unwrap();
    assert_eq!(h["status"], "revoked");
    assert_eq!(h["metadata"]["softResetReason"], "missing_bot_identity");
    assert_eq!(h["metadata"]["displayName"], "Old");
    let code = t
        .env
        .e
        .store
        .get(&t.env.e.tables.control, shared::adapters::dynamo::keys::key("PAIR#LEGACY2345", "CODE"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(serde_dynamo::from_item::<_, Value>(code).unwrap()["status"], "expired");
    // A second run finds nothing to revoke; the revoked row is annotated again.
    let r = op(&t.app, "softResetTelegramBindingsMissingBotIdentity", json!({})).await.unwrap();
    assert_eq!(
        (r["revokedBindings"].as_i64(), r["annotatedBindings"].as_i64(), r["expiredPairings"].as_i64()),
        (Some(0), Some(1), Some(0))
    );
    // Bindings made by this version always carry their bot: untouched.
    let s = onboard(&t, "a", TOKEN_A).await;
    let c = pairing_code(&t.app, "u1", "a", None).await;
    deliver(&t.app, &s, "7001", &text_update(1, 42, 42, "private", &format!("/start {c}"))).await;
    let r =
        op(&t.app, "softResetTelegramBindingsMissingBotIdentity", json!({"revokeActiveBindings": true})).await.unwrap();
    assert_eq!((r["revokedBindings"].as_i64(), r["profilesMissingBotIdentity"].as_i64()), (Some(0), Some(1)));
    assert_eq!(op(&t.app, "getUserAgentBinding", json!({"consumerUserId": "u1"})).await.unwrap()["status"], "active");
    let refs = op(&t.app, "getRequiredSecretRefs", json!({})).await.unwrap();
    assert_eq!(refs["secretRefs"], json!(["telegram.botToken.a", "telegram.botToken.b"]));
    let refs = op(&t.app, "getRequiredSecretRefs", json!({"agentKey": "a"})).await.unwrap();
    assert_eq!(refs["secretRefs"], json!(["telegram.botToken.a"]));
}

/// The user-agent views (spec §9) from real state: a pending code makes the agent `pairing`, a
/// Telegram pairing makes it `active` and the user's active agent; a message from the app goes
/// to the binding's conversation with the chat ids; the queue view leaves `rawUpdateJson` out;
/// another user sees none of it; without an active binding nothing is sent.
#[tokio::test]
async fn user_agent_views_follow_pairing_and_messages_reach_the_bound_conversation() {
    let t = setup().await;
    let secret = onboard(&t, "a", TOKEN_A).await;
    let overview = |user: &'static str| op(&t.app, "getUserAgentsOverview", json!({"consumerUserId": user}));
    let o = overview("u1").await.unwrap();
    assert_eq!((o["agents"].as_array().unwrap().len(), o["canCreateNewAgent"].as_bool()), (0, Some(true)), "{o}");
    let code = pairing_code(&t.app, "u1", "a", None).await;
    let e = op(&t.app, "getUserAgent", json!({"consumerUserId": "u1", "agentKey": "a"})).await.unwrap();
    assert_eq!((e["status"].as_str(), e["pairingStatus"].as_str()), (Some("pairing"), Some("pending")), "{e}");
    let refused =
        op(&t.app, "sendMessageToUserAgent", json!({"consumerUserId": "u1", "agentKey": "a", "content": "x"})).await;
    assert_eq!(code_of(&refused.unwrap_err()), "NotFound");
    let (_, _, o) =
        deliver(&t.app, &secret, "7001", &text_update(1, 42, 42, "private", &format!("/start {code}"))).await;
    assert_eq!(o["outcome"], "paired", "{o}");
    let o = overview("u1").await.unwrap();
    assert_eq!((o["activeAgentKey"].as_str(), o["canCreateNewAgent"].as_bool()), (Some("a"), Some(false)), "{o}");
    let a = &o["agents"][0];
    assert_eq!(
        (a["status"].as_str(), a["pairingStatus"].as_str(), a["canChat"].as_bool()),
        (Some("active"), Some("used"), Some(true))
    );
    assert_eq!(a["telegramUsername"], "fake_a_bot");
    let active = op(&t.app, "getActiveUserAgent", json!({"consumerUserId": "u1"})).await.unwrap();
    assert_eq!(active["agentKey"], "a");
    let sent = op(
        &t.app,
        "sendMessageToUserAgent",
        json!({"consumerUserId": "u1", "agentKey": "a", "content": "from the app", "metadata": {"k": "v"}}),
    )
    .await
    .unwrap();
    assert!(sent["messageId"].is_string(), "{sent}");
    deliver(&t.app, &secret, "7001", &text_update(2, 42, 42, "private", "from telegram")).await;
    let items =
        op(&t.app, "listQueueItemsForUserAgent", json!({"consumerUserId": "u1", "agentKey": "a"})).await.unwrap();
    assert_eq!(items["nextCursor"], Value::Null, "{items}");
    let items = items["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    let app_msg = items.iter().find(|i| i["payload"]["messageText"] == "from the app").unwrap();
    assert_eq!(app_msg["payload"]["provider"], "telegram");
    assert_eq!(app_msg["payload"]["providerUserId"], "42");
    assert_eq!(app_msg["payload"]["metadata"]["source"], "user_agent_api");
    assert_eq!(app_msg["payload"]["metadata"]["telegramChatId"], "42");
    assert!(items.iter().all(|i| i["payload"].get("rawUpdateJson").is_none()));
    let only_done = op(
        &t.app,
        "listQueueItemsForUserAgent",
        json!({"consumerUserId": "u1", "agentKey": "a", "statuses": ["done"], "limit": 10}),
    )
    .await
    .unwrap();
    assert_eq!(only_done, json!({"items": [], "nextCursor": null}));
    let view =
        op(&t.app, "getConversationViewForUserAgent", json!({"consumerUserId": "u1", "agentKey": "a"})).await.unwrap();
    assert_eq!(view["conversationId"], app_msg["conversationId"]);
    assert_eq!((view["hasQueuedJobs"].as_bool(), view["queueItems"].as_array().unwrap().len()), (Some(true), 2));
    assert_eq!((view["contextHistory"].clone(), view["lastUserMessageAt"].clone()), (json!([]), Value::Null));
    op(
        &t.app,
        "appendConversationMessages",
        json!({"conversationId": view["conversationId"], "workspaceId": "default",
               "messages": [{"role": "user", "content": "q", "at": 5}, {"role": "assistant", "content": "r", "at": 7}]}),
    )
    .await
    .unwrap();
    let view =
        op(&t.app, "getConversationViewForUserAgent", json!({"consumerUserId": "u1", "agentKey": "a"})).await.unwrap();
    assert_eq!(view["contextHistory"].as_array().unwrap().len(), 2);
    assert_eq!((view["lastUserMessageAt"].as_i64(), view["lastAssistantMessageAt"].as_i64()), (Some(5), Some(7)));
    // Another user: nothing of u1's.
    assert_eq!(overview("u2").await.unwrap()["agents"], json!([]));
    assert_eq!(op(&t.app, "getActiveUserAgent", json!({"consumerUserId": "u2"})).await.unwrap(), Value::Null);
    // Bad input: precise refusals.
    for (name, args) in [
        ("listQueueItemsForUserAgent", json!({"consumerUserId": "u1", "agentKey": "a", "limit": 0})),
        ("listQueueItemsForUserAgent", json!({"consumerUserId": "u1", "agentKey": "a", "statuses": ["nope"]})),
        ("getUserAgent", json!({"consumerUserId": "u1"})),
    ] {
        assert_eq!(code_of(&op(&t.app, name, args).await.unwrap_err()), "ValidationError", "{name}");
    }
}

/// The user-agent listings are pages, not silent truncations: queue items, history and agents
/// come back `limit` at a time with a `nextCursor` until the last page; every item appears once,
/// in order; a cursor of another listing or a forged one is refused, and so is one of another
/// user's conversation (it can only move within the caller's own).
#[tokio::test]
async fn user_agent_listings_page_with_cursors() {
    let t = setup().await;
    let secret = onboard(&t, "a", TOKEN_A).await;
    let code = pairing_code(&t.app, "u1", "a", None).await;
    deliver(&t.app, &secret, "7001", &text_update(1, 42, 42, "private", &format!("/start {code}"))).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let r = op(
            &t.app,
            "sendMessageToUserAgent",
            json!({"consumerUserId": "u1", "agentKey": "a", "content": format!("m{i}")}),
        )
        .await
        .unwrap();
        sent.push(r["messageId"].as_str().unwrap().to_string());
    }
    // Queue items: 2 + 2 + 1, newest first, each once.
    let (mut seen, mut cursor, mut pages) = (Vec::new(), Value::Null, 0);
    loop {
        let mut args = json!({"consumerUserId": "u1", "agentKey": "a", "limit": 2});
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = op(&t.app, "listQueueItemsForUserAgent", args).await.unwrap();
        pages += 1;
        seen.extend(page["items"].as_array().unwrap().iter().map(|i| i["_id"].as_str().unwrap().to_string()));
        cursor = page["nextCursor"].clone();
        if cursor.is_null() || pages > 5 {
            break;
        }
    }
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!((seen, pages), (newest_first, 3));
    // Status filter across pages: every queued item, none twice.
    let first = op(&t.app, "listQueueItemsForUserAgent", json!({"consumerUserId": "u1", "agentKey": "a", "limit": 4}))
        .await
        .unwrap();
    let c = first["nextCursor"].clone();
    let rest = op(
        &t.app,
        "listQueueItemsForUserAgent",
        json!({"consumerUserId": "u1", "agentKey": "a", "limit": 4, "statuses": ["queued"], "cursor": c}),
    )
    .await
    .unwrap();
    assert_eq!((rest["items"].as_array().unwrap().len(), rest["nextCursor"].clone()), (1, Value::Null), "{rest}");
    assert_eq!(rest["items"][0]["_id"], sent[0].as_str());
    // History: 5 entries, pages of 2 from the newest; each page oldest first.
    let view =
        op(&t.app, "getConversationViewForUserAgent", json!({"consumerUserId": "u1", "agentKey": "a"})).await.unwrap();
    let cid = view["conversationId"].clone();
    let msgs: Vec<Value> = (0..5).map(|i| json!({"role": "user", "content": format!("h{i}"), "at": 10 + i})).collect();
    op(
        &t.app,
        "appendConversationMessages",
        json!({"conversationId": cid, "workspaceId": "default", "messages": msgs}),
    )
    .await
    .unwrap();
    let (mut history, mut cursor) = (Vec::new(), Value::Null);
    for _ in 0..4 {
        let mut args = json!({"consumerUserId": "u1", "agentKey": "a", "historyLimit": 2});
        if !cursor.is_null() {
            args["historyCursor"] = cursor.clone();
        }
        let v = op(&t.app, "getConversationViewForUserAgent", args).await.unwrap();
        assert_eq!(v["lastUserMessageAt"], 14, "the newest entry, whatever the page: {v}");
        let page: Vec<String> = v["contextHistory"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["content"].as_str().unwrap().to_string())
            .collect();
        history.insert(0, page);
        assert_eq!(v["historyTruncated"].as_bool(), Some(!v["historyNextCursor"].is_null()));
        cursor = v["historyNextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(history, vec![vec!["h0"], vec!["h1", "h2"], vec!["h3", "h4"]]);
    // Agents: a pending code for a second agent makes two; pages of 1.
    onboard(&t, "b", TOKEN_B).await;
    pairing_code(&t.app, "u1", "b", None).await;
    let p1 = op(&t.app, "listUserAgents", json!({"consumerUserId": "u1", "limit": 1})).await.unwrap();
    let p2 = op(&t.app, "listUserAgents", json!({"consumerUserId": "u1", "limit": 1, "cursor": p1["nextCursor"]}))
        .await
        .unwrap();
    assert_eq!(
        (p1["items"][0]["agentKey"].as_str(), p2["items"][0]["agentKey"].as_str(), p2["nextCursor"].clone()),
        (Some("a"), Some("b"), Value::Null),
        "{p1} {p2}"
    );
    // Refusals: another listing's cursor, a forged one, a bad limit; and u2 with u1's cursor reads
    // u2's own (empty) conversation, never u1's.
    for (name, args) in [
        ("listQueueItemsForUserAgent", json!({"consumerUserId": "u1", "agentKey": "a", "cursor": p1["nextCursor"]})),
        ("listQueueItemsForUserAgent", json!({"consumerUserId": "u1", "agentKey": "a", "cursor": "00ff"})),
        ("listUserAgents", json!({"consumerUserId": "u1", "cursor": first["nextCursor"]})),
        ("getConversationViewForUserAgent", json!({"consumerUserId": "u1", "agentKey": "a", "historyCursor": "x"})),
        ("getConversationViewForUserAgent", json!({"consumerUserId": "u1", "agentKey": "a", "historyLimit": 501})),
    ] {
        let e = op(&t.app, name, args).await.unwrap_err();
        assert_eq!(code_of(&e), "ValidationError", "{name}: {e}");
    }
    let other = op(
        &t.app,
        "listQueueItemsForUserAgent",
        json!({"consumerUserId": "u2", "agentKey": "a", "cursor": first["nextCursor"]}),
    )
    .await
    .unwrap();
    assert_eq!(other, json!({"items": [], "nextCursor": null}));
}

/// A token import writes the secret before the bot claim, and the two share no transaction: when
/// the claim fails (here the profile changed while getMe was on its way), the agent's ref gets
/// its previous token back, so it never holds a bot the agent does not own. An agent with no
/// token before has none after.
#[tokio::test]
async fn a_failed_bot_claim_puts_the_previous_token_back() {
    const TOKEN_C: &str = "7003:CCfakeTokenForBotC_secret";
    let t = setup().await;
    t.fake.add_bot(TOKEN_C, 7003, "fake_c_bot");
    onboard(&t, "a", TOKEN_A).await;
    for (agent, before) in [("a", Some(TOKEN_A)), ("b", None)] {
        t.fake.fault("getMe", Fault::Slow(std::time::Duration::from_millis(400)));
        let app = t.app.clone();
        let import = tokio::spawn(async move {
            op(&app, "importTelegramTokenForAgent", json!({"agentKey": agent, "plaintextValue": TOKEN_C})).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        // The profile changes under the import (a new version is deployed).
        op(&t.app, "configureAgent", json!({"agentKey": agent, "version": "2", "secretsRef": [format!("telegram.botToken.{agent}")], "enabled": true}))
            .await
            .unwrap();
        let e = import.await.unwrap().unwrap_err();
        assert!(!e.to_string().contains("CCfake") && !e.chain().contains("CCfake"), "{e}");
        t.env.app.secrets.forget(&format!("telegram.botToken.{agent}"));
        let now = t.env.app.secrets.get(&format!("telegram.botToken.{agent}")).await.unwrap();
        assert_eq!(now.as_ref().map(|v| v.expose().to_string()).as_deref(), before, "agent {agent}: {e}");
        assert!(t.env.e.store.get_bot("7003").await.unwrap().is_none(), "bot C claimed by nobody");
    }
    let p = op(&t.app, "getAgentProfile", json!({"agentKey": "a"})).await.unwrap();
    assert_eq!(p["botIdentity"], "7001");
    // Without a race the same import goes through.
    let r =
        op(&t.app, "importTelegramTokenForAgent", json!({"agentKey": "b", "plaintextValue": TOKEN_C})).await.unwrap();
    assert_eq!(r["botIdentity"], "7003");
}
