//! Message templates, push templates and jobs, the dispatcher and broadcasts through their real
//! entry points: the op envelope (`invoke`: `api` for user ops in trusted-backend mode, `admin` for
//! operator ops) and the `push-dispatch` function's handler, on DynamoDB Local.

use integration_tests::fake_telegram::FakeTelegram;
use integration_tests::{AppEnv, app_env, code, seed_agent, snapshot};
use serde_json::{Value, json};
use shared::app::App;

const TOKEN_A: &str = "7001:AAfakeTokenForBotA_secret";

async fn op(app: &App, name: &str, args: Value) -> shared::AppResult<Value> {
    integration_tests::invoke(app, json!({"op": name, "args": args})).await
}

struct Env {
    env: AppEnv,
    app: App,
    _fake: FakeTelegram,
}

/// An application with agents `a` (bot 7001) and `b`, real time (pairing codes carry a TTL).
async fn setup() -> Env {
    let env = app_env().await;
    let fake = FakeTelegram::start().await;
    fake.add_bot(TOKEN_A, 7001, "fake_a_bot");
    env.e.clock.set(shared::Clock::now_ms(&shared::SystemClock));
    let app = env.app.clone().with_telegram(fake.api(), Some("https://af.example.com".into()));
    seed_agent(&env.e.store, "a", true).await;
    seed_agent(&env.e.store, "b", true).await;
    op(&app, "importTelegramTokenForAgent", json!({"agentKey": "a", "plaintextValue": TOKEN_A})).await.unwrap();
    Env { env, app, _fake: fake }
}

/// Pair `user` with agent `a` as Telegram user/chat `tg`: a code, then its consumption by the bot.
async fn pair(app: &App, user: &str, tg: &str) {
    let c = op(app, "createPairingCode", json!({"consumerUserId": user, "agentKey": "a"})).await.unwrap();
    let code = c["code"].as_str().unwrap();
    op(
        app,
        "consumePairingCode",
        json!({"code": code, "botIdentity": "7001", "telegramUserId": tg, "telegramChatId": tg}),
    )
    .await
    .unwrap();
}

async fn messages(app: &App, conversation_id: &str) -> Vec<Value> {
    let v = op(app, "listQueueItemsForConversation", json!({"conversationId": conversation_id})).await.unwrap();
    v.as_array().unwrap().clone()
}

#[tokio::test]
async fn message_templates_crud_is_scoped_to_a_company() {
    let t = setup().await;
    let app = &t.app;
    let mk = |company: &str, title: &str| {
        json!({"companyId": company, "title": title, "text": " Hello there \n", "tags": ["B", " a", "b"],
            "actorUserId": "admin1"})
    };
    let a1 = op(app, "createMessageTemplate", mk("acme", "Daily Check-in")).await.unwrap();
    assert_eq!(a1["templateKey"], "daily-check-in");
    let a2 = op(app, "createMessageTemplate", mk("acme", "daily check in!")).await.unwrap();
    assert_eq!(a2["templateKey"], "daily-check-in-2", "keys are unique within a company");
    let o1 = op(app, "createMessageTemplate", mk("other", "Daily Check-in")).await.unwrap();
    assert_eq!(o1["templateKey"], "daily-check-in", "another company has its own keys");
    // Refusals write nothing.
    let before = snapshot(&t.env.e).await;
    let e =
        op(app, "createMessageTemplate", json!({"companyId": "acme", "title": "  ", "text": "x", "actorUserId": "u"}))
            .await
            .unwrap_err();
    assert_eq!(e.to_string(), "Template title is required");
    let e = op(app, "createMessageTemplate", json!({"companyId": "", "title": "t", "text": "x", "actorUserId": "u"}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError");
    assert_eq!(snapshot(&t.env.e).await, before);

    let list = op(app, "listMessageTemplatesByCompany", json!({"companyId": "acme"})).await.unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["text"], "Hello there");
    assert_eq!(list[0]["tags"], json!(["a", "b"]));
    assert_eq!(list[0]["usageCount"], 0);
    assert!(list.iter().all(|t| t["companyId"] == "acme"));

    // Update: a new title moves the key; disabling hides it from the default listing.
    let id2 = a2["templateId"].as_str().unwrap();
    let ok = op(
        app,
        "updateMessageTemplate",
        json!({"templateId": id2, "title": "Weekly Recap", "enabled": false,
        "actorUserId": "admin2"}),
    )
    .await
    .unwrap();
    assert_eq!(ok, json!(true));
    let got = op(app, "getMessageTemplate", json!({"templateId": id2})).await.unwrap();
    assert_eq!(got["templateKey"], "weekly-recap");
    assert_eq!(got["updatedBy"], "admin2");
    let list = op(app, "listMessageTemplatesByCompany", json!({"companyId": "acme"})).await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let all =
        op(app, "listMessageTemplatesByCompany", json!({"companyId": "acme", "includeDisabled": true})).await.unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    // The freed key can be taken again.
    let a3 = op(app, "createMessageTemplate", mk("acme", "Daily check in")).await.unwrap();
    assert_eq!(a3["templateKey"], "daily-check-in-2");
    let e = op(app, "updateMessageTemplate", json!({"templateId": id2, "text": "  ", "actorUserId": "x"})).await;
    assert_eq!(e.unwrap_err().to_string(), "Template text is required");
    let unknown = format!("{}:acme", shared::ids::ulid(1));
    assert_eq!(
        op(app, "updateMessageTemplate", json!({"templateId": unknown, "title": "x", "actorUserId": "x"}))
            .await
            .unwrap(),
        json!(false)
    );
    assert_eq!(op(app, "deleteMessageTemplate", json!({"templateId": id2})).await.unwrap(), json!(true));
    assert_eq!(op(app, "deleteMessageTemplate", json!({"templateId": id2})).await.unwrap(), json!(false));
    // Its key guard went with it: the key is free.
    let a4 = op(app, "createMessageTemplate", mk("acme", "Weekly recap")).await.unwrap();
    assert_eq!(a4["templateKey"], "weekly-recap");
    // Message template ops are operator ops: `api` does not serve them.
    assert!(!api::op_names().contains(&"createMessageTemplate"));
    assert!(api::op_names().contains(&"sendMessageTemplateToUserAgent"));
}

#[tokio::test]
async fn a_template_is_sent_to_the_paired_conversation_and_counted() {
    let t = setup().await;
    let app = &t.app;
    let tpl = op(
        app,
        "createMessageTemplate",
        json!({"companyId": "acme", "title": "Nudge", "text": "Time to log!",
        "actorUserId": "admin"}),
    )
    .await
    .unwrap();
    let id = tpl["templateId"].as_str().unwrap().to_string();
    let send = |user: &str| {
        json!({"op": "sendMessageTemplateToUserAgent",
            "args": {"consumerUserId": user, "agentKey": "a", "templateId": id, "metadata": {"k": "v", "source": "spoof"}}})
    };
    // No binding yet: refused, nothing written, not counted.
    let before = snapshot(&t.env.e).await;
    let e = integration_tests::invoke(app, send("u1")).await.unwrap_err();
    assert_eq!(e.to_string(), "No active binding found for consumerUserId and agentKey");
    assert_eq!(snapshot(&t.env.e).await, before);

    pair(app, "u1", "555").await;
    let r = integration_tests::invoke(app, send("u1")).await.unwrap();
    assert_eq!(r["usageCount"], 1);
    let r2 = integration_tests::invoke(app, send("u1")).await.unwrap();
    assert_eq!(r2["usageCount"], 2);
    let msgs = messages(app, "user-agent:a:u1").await;
    assert_eq!(msgs.len(), 2);
    let p = &msgs[0]["payload"];
    assert_eq!(p["messageText"], "Time to log!");
    assert_eq!(p["provider"], "telegram");
    assert_eq!(p["providerUserId"], "555");
    assert_eq!(p["metadata"]["source"], "message_template");
    assert_eq!(p["metadata"]["templateKey"], "nudge");
    assert_eq!(p["metadata"]["templateId"], id.as_str());
    assert_eq!(p["metadata"]["k"], "v");
    assert_eq!(p["metadata"]["telegramChatId"], "555");
    let got = op(app, "getMessageTemplate", json!({"templateId": id})).await.unwrap();
    assert_eq!(got["usageCount"], 2);

    // Concurrent sends: every one counted once.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (app, payload) = (app.clone(), send("u1"));
        tasks.push(tokio::spawn(async move { integration_tests::invoke(&app, payload).await }));
    }
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.unwrap().unwrap()["usageCount"].as_i64().unwrap());
    }
    counts.sort();
    assert_eq!(counts, vec![3, 4, 5, 6, 7, 8]);
    assert_eq!(messages(app, "user-agent:a:u1").await.len(), 8);

    // Disabled: not found, nothing written.
    op(app, "updateMessageTemplate", json!({"templateId": id, "enabled": false, "actorUserId": "admin"}))
        .await
        .unwrap();
    let before = snapshot(&t.env.e).await;
    let e = integration_tests::invoke(app, send("u1")).await.unwrap_err();
    assert_eq!(e.to_string(), "Message template not found");
    assert_eq!(snapshot(&t.env.e).await, before);
}
