//! Replies through the backend (issue 10): `POST /worker/reply` and `POST /worker/typing`
//! through the `claim` function's handler (API Gateway v2 events), on DynamoDB Local, with the
//! fake Telegram Bot API: sent exactly once whatever the retries, only by the live lease's
//! holder, split at 4,096 characters, Telegram's 429 passed back, a lost answer never sent twice,
//! refusals that change nothing.

use integration_tests::fake_telegram::{FakeTelegram, Fault, check_html};
use integration_tests::{AppEnv, apigw, app_env, enq, parts, seed_agent, snapshot};
use serde_json::{Value, json};
use shared::app::App;
use std::time::{Duration, Instant};

const TOKEN: &str = "7001:AAfakeTokenForReplies_secret";

struct R {
    env: AppEnv,
    fake: FakeTelegram,
    app: App,
    /// The worker holding the job, its token, and the job.
    w1: String,
    job: Value,
}

async fn setup() -> R {
    let env = app_env().await;
    // Real time: reply records carry a DynamoDB TTL, which must not look long expired.
    env.e.clock.set(shared::Clock::now_ms(&shared::SystemClock));
    let fake = FakeTelegram::start().await;
    fake.add_bot(TOKEN, 7001, "reply_bot");
    let app = env.app.clone().with_telegram(fake.api(), Some("https://af.example.com".into()));
    seed_agent(&env.e.store, "a", true).await;
    integration_tests::invoke(
        &app,
        json!({"op": "importTelegramTokenForAgent", "args": {"agentKey": "a", "plaintextValue": TOKEN}}),
    )
    .await
    .expect("import the bot token");
    let mut m = enq("c1", "a", "hi there");
    m.payload.metadata = Some(
        [
            ("telegramChatId".to_string(), "555".to_string()),
            ("telegramBotIdentity".into(), "7001".into()),
            ("telegramMessageId".into(), "77".into()),
        ]
        .into(),
    );
    env.e.store.enqueue(m).await.unwrap();
    let w1 = env.mint("w1").await;
    let mut r = R { env, fake, app, w1, job: Value::Null };
    let (st, job) = r.post("claim", &r.w1.clone(), json!({})).await;
    assert_eq!(st, 200, "{job}");
    r.job = job;
    r
}

impl R {
    async fn post(&self, op: &str, token: &str, body: Value) -> (u16, Value) {
        let (st, b) = parts(
            claim::handle(&self.app, apigw("POST", &format!("/worker/{op}"), Some(token), &body.to_string())).await,
        );
        assert!(!b.to_string().contains(TOKEN), "the bot token in an answer: {b}");
        (st, b)
    }

    fn body(&self, part: u32, text: &str) -> Value {
        json!({"messageId": self.job["messageId"], "leaseId": self.job["leaseId"], "part": part, "text": text})
    }

    async fn reply(&self, body: Value) -> (u16, Value) {
        let w1 = self.w1.clone();
        self.post("reply", &w1, body).await
    }

    fn advance(&self, ms: i64) {
        let now = shared::Clock::now_ms(&self.env.e.clock);
        self.env.e.clock.set(now + ms);
    }
}

fn code(v: &Value) -> (&str, &str) {
    (v["error"]["code"].as_str().unwrap_or("-"), v["error"]["reason"].as_str().unwrap_or("-"))
}

#[tokio::test]
async fn a_reply_is_sent_once_however_often_it_is_retried() {
    let r = setup().await;
    let mut body = r.body(0, "2 < 3 && <b>bold</b> <i>unclosed");
    body["parseMode"] = json!("HTML");
    body["replyToMessageId"] = json!(77);
    r.env.e.counter.reset();
    let (st, first) = r.reply(body.clone()).await;
    assert_eq!(st, 200, "{first}");
    let ops = r.env.e.counter.by_operation();
    println!("requests for a one-chunk reply: {ops:?}");
    assert_eq!(
        ops,
        [("BatchGetItem", 1), ("GetItem", 2), ("TransactWriteItems", 1), ("UpdateItem", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        "the token check (uncached here), message + records in one batch, the bot record, the take, the result"
    );
    assert_eq!(first["status"], "sent");
    assert_eq!(first["replayed"], false);
    assert_eq!(first["chunks"], 1);
    let out = r.fake.outbox();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["bot_id"], 7001, "the receiving bot's token");
    assert_eq!(out[0]["chat_id"], "555");
    assert_eq!(out[0]["text"], "2 &lt; 3 &amp;&amp; <b>bold</b> <i>unclosed</i>", "escaped and balanced");
    assert_eq!(out[0]["parse_mode"], "HTML");
    assert_eq!(out[0]["reply_parameters"]["message_id"], 77);
    assert_eq!(first["telegramMessageIds"], json!([out[0]["message_id"]]));

    // The worker did not get the answer (its network failed) and sends the part again: the
    // first result, nothing sent.
    for _ in 0..2 {
        let (st, again) = r.reply(body.clone()).await;
        assert_eq!(st, 200, "{again}");
        assert_eq!(again["replayed"], true);
        assert_eq!(again["telegramMessageIds"], first["telegramMessageIds"]);
    }
    assert_eq!(r.fake.outbox().len(), 1, "exactly one message at Telegram");
    // The same part with other content is refused: parts are not reused.
    let (st, b) = r.reply(r.body(0, "something else")).await;
    assert_eq!((st, code(&b).0), (409, "Conflict"), "{b}");
    // The next part is a message of its own; plain text goes as is, without parse mode.
    let (st, b) = r.reply(r.body(1, "a <plain> & text")).await;
    assert_eq!(st, 200, "{b}");
    let out = r.fake.outbox();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1]["text"], "a <plain> & text");
    assert!(out[1].get("parse_mode").is_none() && out[1].get("reply_parameters").is_none());
}

#[tokio::test]
async fn only_the_live_lease_holder_replies_or_types() {
    let r = setup().await;
    let w2 = r.env.mint("w2").await;
    let before = snapshot(&r.env.e).await;
    // Another worker, another lease: 409 and nothing sent or written.
    let (st, b) = r.post("reply", &w2, r.body(0, "not mine")).await;
    assert_eq!((st, code(&b)), (409, ("Conflict", "lease_mismatch")), "{b}");
    let mut stale = r.body(0, "old lease");
    stale["leaseId"] = json!("1700000000000-deadbeef");
    let (st, b) = r.reply(stale).await;
    assert_eq!((st, code(&b)), (409, ("Conflict", "lease_mismatch")), "{b}");
    let typing = json!({"messageId": r.job["messageId"], "leaseId": r.job["leaseId"]});
    let (st, b) = r.post("typing", &w2, typing.clone()).await;
    assert_eq!((st, code(&b)), (409, ("Conflict", "lease_mismatch")), "{b}");
    // A body workerId is the token's worker or 403.
    let mut other = r.body(0, "x");
    other["workerId"] = json!("w2");
    let (st, _) = r.reply(other).await;
    assert_eq!(st, 403);
    assert_eq!(snapshot(&r.env.e).await, before, "refusals write nothing");
    assert!(r.fake.outbox().is_empty() && r.fake.actions().is_empty(), "and send nothing");

    // The holder types and replies.
    let (st, b) = r.reply(typing.clone()).await;
    assert_eq!(st, 400, "typing's body is not a reply: {b}");
    let (st, b) = r.post("typing", &r.w1, typing.clone()).await;
    assert_eq!((st, b), (200, json!({"ok": true})));
    assert_eq!(r.fake.actions(), vec![(7001, "555".to_string(), "typing".to_string())]);

    // The lease runs out: the worker lost it, and sends nothing any more.
    r.advance(361_000);
    let before = snapshot(&r.env.e).await;
    let (st, b) = r.reply(r.body(0, "too late")).await;
    assert_eq!((st, code(&b)), (409, ("Conflict", "lease_expired")), "{b}");
    let (st, _) = r.post("typing", &r.w1, typing).await;
    assert_eq!(st, 409);
    assert_eq!(snapshot(&r.env.e).await, before);
    assert!(r.fake.outbox().is_empty());
    assert_eq!(r.fake.actions().len(), 1);
}

#[tokio::test]
async fn a_long_text_is_split_into_ordered_messages_of_at_most_4096() {
    let r = setup().await;
    let para = "lorem ipsum dolor sit amet ".repeat(60); // 1,620 characters
    let text = (0..6).map(|i| format!("{i}: {}", para.trim())).collect::<Vec<_>>().join("\n\n");
    assert!(text.len() > 9_000);
    let t0 = Instant::now();
    let (st, b) = r.reply(r.body(0, &text)).await;
    let took = t0.elapsed();
    assert_eq!(st, 200, "{b}");
    let out = r.fake.outbox();
    println!("{} characters → {} messages in {took:?} (paced 1 s apart in a private chat)", text.len(), out.len());
    assert_eq!(out.len(), 3);
    assert_eq!(b["chunks"], 3);
    assert_eq!(b["telegramMessageIds"], json!(out.iter().map(|m| m["message_id"].clone()).collect::<Vec<_>>()));
    let texts: Vec<&str> = out.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert!(texts.iter().all(|t| t.encode_utf16().count() <= 4096));
    assert!(
        texts[0].starts_with("0: ") && texts[1].starts_with("2: ") && texts[2].starts_with("4: "),
        "cut at paragraphs, in order"
    );
    assert_eq!(texts.join("\n\n"), text, "nothing lost");
    assert!(took >= Duration::from_millis(1_900), "per-chat pacing: {took:?}");

    // HTML: every message parses on its own at the (strict) fake.
    let html = format!("<b>{}</b> & <i>{}</i>", "bold &amp; brave ".repeat(300), "x < y ".repeat(300));
    let mut body = r.body(1, &html);
    body["parseMode"] = json!("HTML");
    let (st, b) = r.reply(body).await;
    assert_eq!(st, 200, "{b}");
    let out = r.fake.outbox();
    assert_eq!(out.len(), 3 + b["chunks"].as_u64().unwrap() as usize);
    for m in &out[3..] {
        let t = m["text"].as_str().unwrap();
        assert!(t.encode_utf16().count() <= 4096);
        check_html(t).unwrap_or_else(|e| panic!("{e}: {t}"));
    }
}

#[tokio::test]
async fn telegram_429_comes_back_as_429_and_the_retry_sends_once() {
    let r = setup().await;
    r.fake.fault("sendMessage", Fault::RetryAfter(3));
    let (st, b) = r.reply(r.body(0, "hello")).await;
    assert_eq!((st, code(&b).0), (429, "RateLimited"), "{b}");
    assert_eq!(b["error"]["retryAfterMs"], 3000);
    assert!(r.fake.outbox().is_empty());
    // Too early: answered from the record, Telegram is not called.
    let calls = r.fake.calls("sendMessage");
    let (st, b) = r.reply(r.body(0, "hello")).await;
    assert_eq!(st, 429, "{b}");
    assert!(b["error"]["retryAfterMs"].as_u64().unwrap() <= 3000);
    assert_eq!(r.fake.calls("sendMessage"), calls);
    // After the wait: sent, once.
    r.advance(3_000);
    let (st, b) = r.reply(r.body(0, "hello")).await;
    assert_eq!((st, &b["status"]), (200, &json!("sent")), "{b}");
    let (st, b) = r.reply(r.body(0, "hello")).await;
    assert_eq!((st, &b["replayed"]), (200, &json!(true)));
    assert_eq!(r.fake.outbox().len(), 1);

    // Typing passes the 429 on too.
    r.fake.fault("sendChatAction", Fault::RetryAfter(2));
    let (st, b) = r.post("typing", &r.w1, json!({"messageId": r.job["messageId"], "leaseId": r.job["leaseId"]})).await;
    assert_eq!((st, b["error"]["retryAfterMs"].as_u64()), (429, Some(2000)), "{b}");
}

#[tokio::test]
async fn network_errors_never_give_two_messages() {
    let r = setup().await;
    // Telegram unreachable (a 5xx before anything was sent): 502, the record stays retryable.
    r.fake.fault("sendMessage", Fault::Status(502));
    let (st, b) = r.reply(r.body(0, "first")).await;
    assert_eq!((st, code(&b).0), (502, "ProviderError"), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("retry"), "{b}");
    let (st, b) = r.reply(r.body(0, "first")).await;
    assert_eq!((st, &b["status"]), (200, &json!("sent")), "{b}");
    assert_eq!(r.fake.outbox().len(), 1);

    // Telegram sent the message, but its answer was lost (the client timed out): recorded as
    // unconfirmed, never sent again, whatever the retries.
    r.fake.fault("sendMessage", Fault::LoseAnswer(Duration::from_millis(1_500)));
    let (st, b) = r.reply(r.body(1, "second")).await;
    assert_eq!((st, &b["status"]), (200, &json!("unconfirmed")), "{b}");
    assert!(b["error"].as_str().unwrap().contains("may have been delivered"));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for _ in 0..2 {
        let (st, b) = r.reply(r.body(1, "second")).await;
        assert_eq!((st, &b["status"], &b["replayed"]), (200, &json!("unconfirmed"), &json!(true)), "{b}");
    }
    let texts: Vec<Value> = r.fake.outbox().iter().map(|m| m["text"].clone()).collect();
    assert_eq!(texts, vec![json!("first"), json!("second")], "one message at Telegram per part");

    // Telegram refuses (the user blocked the bot): failed, final, not retried.
    let mut m = enq("c2", "a", "again");
    m.payload.metadata = Some([("telegramChatId".to_string(), "403".to_string())].into());
    r.env.e.store.enqueue(m).await.unwrap();
    let w3 = r.env.mint("w3").await;
    let (_, job) = r.post("claim", &w3, json!({"conversationId": "c2"})).await;
    let body = json!({"messageId": job["messageId"], "leaseId": job["leaseId"], "part": 0, "text": "hi"});
    let (st, b) = r.post("reply", &w3, body.clone()).await;
    assert_eq!((st, &b["status"]), (200, &json!("failed")), "{b}");
    assert!(b["error"].as_str().unwrap().contains("blocked"), "{b}");
    let calls = r.fake.calls("sendMessage");
    let (_, b) = r.post("reply", &w3, body).await;
    assert_eq!((&b["status"], &b["replayed"]), (&json!("failed"), &json!(true)));
    assert_eq!(r.fake.calls("sendMessage"), calls);
}

#[tokio::test]
async fn malformed_bodies_are_400_and_change_nothing() {
    let r = setup().await;
    let before = snapshot(&r.env.e).await;
    let (mid, lid) = (r.job["messageId"].clone(), r.job["leaseId"].clone());
    let cases = [
        json!({"messageId": mid, "leaseId": lid, "text": "no part"}),
        json!({"messageId": mid, "leaseId": lid, "part": -1, "text": "x"}),
        json!({"messageId": mid, "leaseId": lid, "part": 0}),
        json!({"messageId": mid, "leaseId": lid, "part": 0, "text": "   "}),
        json!({"messageId": mid, "leaseId": lid, "part": 0, "text": "<b></b>", "parseMode": "HTML"}),
        json!({"messageId": mid, "leaseId": lid, "part": 0, "text": "x", "parseMode": "Markdown"}),
        json!({"messageId": mid, "leaseId": lid, "part": 0, "text": "x", "audio": {"storageId": "m1"}}),
        json!({"messageId": mid, "leaseId": lid, "part": 0, "text": "x", "colour": "red"}),
        json!({"messageId": mid, "leaseId": lid, "part": 0, "text": 5}),
        json!({"messageId": "not-a-message", "leaseId": lid, "part": 0, "text": "x"}),
        json!({"messageId": mid, "leaseId": lid, "part": 0, "text": "x", "replyToMessageId": "seven"}),
        json!({"messageId": mid, "leaseId": lid, "part": 0, "audio": {"storageId": "mNOPE"}}),
        json!([1, 2]),
    ];
    for c in cases {
        let (st, b) = r.reply(c.clone()).await;
        assert_eq!((st, code(&b).0), (400, "ValidationError"), "{c} → {b}");
    }
    let (st, b) = r.reply(r.body(0, &"x".repeat(40_001))).await;
    assert_eq!((st, code(&b).0), (413, "PayloadTooLarge"), "{b}");
    let (st, _) = r.post("typing", &r.w1, json!({"messageId": mid})).await;
    assert_eq!(st, 400);
    assert_eq!(snapshot(&r.env.e).await, before, "refused bodies write nothing");
    assert!(r.fake.outbox().is_empty() && r.fake.actions().is_empty());
}

#[tokio::test]
async fn audio_goes_by_a_short_lived_url_of_the_conversations_own_file() {
    let r = setup().await;
    let (st, up) = r
        .post(
            "media-upload-url",
            &r.w1,
            json!({"messageId": r.job["messageId"], "leaseId": r.job["leaseId"], "sizeBytes": 4, "mimeType": "audio/mpeg", "fileName": "a.mp3", "kind": "audio"}),
        )
        .await;
    assert_eq!(st, 200, "{up}");
    let body = json!({"messageId": r.job["messageId"], "leaseId": r.job["leaseId"], "part": 0,
        "audio": {"storageId": up["storageId"], "caption": "<b>listen</b>"}, "parseMode": "HTML"});
    let (st, b) = r.reply(body.clone()).await;
    assert_eq!((st, &b["status"]), (200, &json!("sent")), "{b}");
    let out = r.fake.outbox();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["method"], "sendAudio");
    assert!(out[0]["audio"].as_str().unwrap().contains(up["storageId"].as_str().unwrap()));
    assert_eq!((out[0]["caption"].as_str(), out[0]["parse_mode"].as_str()), (Some("<b>listen</b>"), Some("HTML")));
    let (_, b) = r.reply(body).await;
    assert_eq!(b["replayed"], true);
    assert_eq!(r.fake.outbox().len(), 1);
}

#[tokio::test]
async fn concurrent_calls_for_one_part_send_it_once() {
    let r = setup().await;
    // Telegram is slow: the other calls arrive while the first one is sending.
    r.fake.fault("sendMessage", Fault::Slow(Duration::from_millis(300)));
    let body = r.body(0, "only once");
    let (a, b, c, d) =
        tokio::join!(r.reply(body.clone()), r.reply(body.clone()), r.reply(body.clone()), r.reply(body.clone()));
    let statuses: Vec<u16> = [&a, &b, &c, &d].iter().map(|(s, _)| *s).collect();
    println!("four concurrent calls of one part: {statuses:?}");
    for (st, v) in [&a, &b, &c, &d] {
        match st {
            200 => assert_eq!(v["status"], "sent", "{v}"),
            429 => assert_eq!(code(v).0, "RateLimited", "another call was sending it: {v}"),
            other => panic!("{other}: {v}"),
        }
    }
    // A call that arrives after the sender finished gets the recorded answer (`replayed`).
    let senders = [&a, &b, &c, &d].iter().filter(|(s, v)| *s == 200 && v["replayed"] != json!(true)).count();
    assert_eq!(senders, 1, "one call sent it: {:?}", [&a, &b, &c, &d]);
    assert_eq!(r.fake.outbox().len(), 1, "one message at Telegram");
    let (st, v) = r.reply(body).await;
    assert_eq!((st, &v["replayed"]), (200, &json!(true)));
}

/// The adapter sorts send failures by what the caller may do: no connection = not sent (retry).
#[tokio::test]
async fn an_unreachable_telegram_is_not_sent() {
    use shared::telegram::model::{OutgoingText, SendFailure};
    use shared::telegram::port::BotApi;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let api = shared::adapters::telegram::HttpBotApi::new(&base).unwrap();
    let m = OutgoingText { chat_id: "1".into(), text: "x".into(), html: false, reply_to: None };
    let e = api.send_text(&shared::secrets::SecretValue::new(TOKEN), &m).await.unwrap_err();
    assert!(matches!(&e, SendFailure::NotSent(m) if m.contains("could not connect")), "{e:?}");
    assert!(!format!("{e:?}").contains(TOKEN));
}
