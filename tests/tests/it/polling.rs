//! The local runner's `--telegram-token` mode (issue 10, "With a real bot token"): long polling
//! of `getUpdates` into the same ingress pipeline as the webhook (accept's dedupe-and-persist,
//! then process), on the fake Bot API; the webhook is deleted first, the offset moves past what
//! was seen, a redelivered update is a duplicate, and the agent's reply goes back through
//! `POST /worker/reply` to the same chat.

use integration_tests::fake_telegram::{FakeTelegram, Webhook};
use integration_tests::{apigw, app_env, parts, seed_agent};
use serde_json::{Value, json};
use shared::ingress::poll::Poller;
use shared::secrets::SecretValue;

const TOKEN: &str = "7003:CCfakeTokenForPolling_secret";

fn text_update(update_id: i64, user: i64, text: &str) -> Value {
    json!({"update_id": update_id, "message": {"message_id": update_id * 10, "date": 1,
        "chat": {"id": user, "type": "private"}, "from": {"id": user, "is_bot": false, "first_name": "Ann"},
        "text": text}})
}

#[tokio::test]
async fn polled_updates_go_through_ingress_and_the_reply_comes_back() {
    let env = app_env().await;
    env.e.clock.set(shared::Clock::now_ms(&shared::SystemClock));
    let fake = FakeTelegram::start().await;
    fake.add_bot(TOKEN, 7003, "poll_bot");
    let app = env.app.clone().with_telegram(fake.api(), None);
    seed_agent(&env.e.store, "p", true).await;
    integration_tests::invoke(
        &app,
        json!({"op": "importTelegramTokenForAgent", "args": {"agentKey": "p", "plaintextValue": TOKEN}}),
    )
    .await
    .unwrap();
    // A webhook is set: Telegram refuses getUpdates until it is deleted.
    fake.state.lock().unwrap().bots.get_mut(TOKEN).unwrap().webhook =
        Some(Webhook { url: "https://old.example/telegram/webhook".into(), ..Default::default() });
    let e = app.telegram.get_updates(&SecretValue::new(TOKEN), 0, 0).await.unwrap_err();
    assert!(e.to_string().contains("HTTP 409"), "{e}");
    assert!(!e.to_string().contains(TOKEN));

    let mut poller = Poller::start(&app, SecretValue::new(TOKEN), 1).await.unwrap();
    assert_eq!(poller.bot_identity, "7003");
    assert!(fake.webhook(TOKEN).is_none(), "deleteWebhook came first");

    fake.push_update(TOKEN, text_update(100, 42, "hello"));
    fake.push_update(TOKEN, text_update(101, 42, "and again"));
    let round = poller.poll_once(&app).await.unwrap();
    assert_eq!((round.updates, round.outcomes.clone()), (2, vec!["enqueued".to_string(), "enqueued".to_string()]));
    assert_eq!(poller.offset, 102);
    // The next call confirms them: Telegram drops them, nothing more comes.
    let round = poller.poll_once(&app).await.unwrap();
    assert_eq!(round.updates, 0);
    assert_eq!(fake.pending_updates(TOKEN), 0);
    // A restarted runner (offset 0) given an update again: the dedupe on (bot, update_id).
    fake.push_update(TOKEN, text_update(100, 42, "hello"));
    let mut restarted = Poller::start(&app, SecretValue::new(TOKEN), 1).await.unwrap();
    assert_eq!(restarted.poll_once(&app).await.unwrap().outcomes, vec!["duplicate".to_string()]);

    // The local agent answers through the backend, to the same chat, with the bot that polled.
    let w = env.mint("w1").await;
    let post = |op: &str, body: Value| {
        let (app, w, op) = (app.clone(), w.clone(), op.to_string());
        async move { parts(claim::handle(&app, apigw("POST", &format!("/worker/{op}"), Some(&w), &body.to_string())).await) }
    };
    let (st, job) = post("claim", json!({})).await;
    assert_eq!(st, 200, "{job}");
    assert_eq!(job["conversationId"], "telegram:7003:42");
    assert_eq!(job["payload"]["messageText"], "hello");
    let (st, b) = post(
        "reply",
        json!({"messageId": job["messageId"], "leaseId": job["leaseId"], "part": 0, "text": "echo: hello",
            "replyToMessageId": 1000}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let out = fake.outbox();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0]["bot_id"].as_i64(), out[0]["chat_id"].as_str()), (Some(7003), Some("42")));
    assert_eq!(out[0]["text"], "echo: hello");

    // An update of a bot no agent owns is logged and skipped; polling goes on past it.
    let other = "7004:DDfakeTokenOfAnUnimportedBot";
    fake.add_bot(other, 7004, "stray_bot");
    let mut stray = Poller::start(&app, SecretValue::new(other), 1).await.unwrap();
    fake.push_update(other, text_update(5, 9, "hi"));
    let round = stray.poll_once(&app).await.unwrap();
    assert_eq!(round.outcomes, vec!["error: NotFound".to_string()]);
    assert_eq!(stray.offset, 6);
}
