//! Message templates, push templates and jobs, the dispatcher and broadcasts through their real
//! entry points: the op envelope (`invoke`: `api` for user ops in trusted-backend mode, `admin` for
//! operator ops) and the `push-dispatch` function's handler, on DynamoDB Local.

use integration_tests::fake_telegram::FakeTelegram;
use integration_tests::{AppEnv, app_env, code, seed_agent, snapshot};
use serde_json::{Value, json};
use shared::Clock;
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

// ---------- push templates and jobs ----------

const HOUR: i64 = 3_600_000;

/// Today's (UTC) `HH:mm` a given number of minutes after the env's clock, and that instant.
fn slot_after(now: i64, minutes: i64) -> (String, i64) {
    let at = (now / 60_000 + minutes) * 60_000;
    let t = chrono_hm(at);
    (t, at)
}

fn chrono_hm(at: i64) -> String {
    let mins = at.rem_euclid(86_400_000) / 60_000;
    format!("{:02}:{:02}", mins / 60, mins % 60)
}

async fn push(app: &App, payload: Value) -> shared::AppResult<Value> {
    push_dispatch::handle(app, payload).await
}

#[tokio::test]
async fn push_templates_and_jobs_crud_with_validation_and_ownership() {
    let t = setup().await;
    let app = &t.app;
    pair(app, "u1", "501").await;
    let tpl = op(
        app,
        "createPushTemplate",
        json!({"companyId": "acme", "templateKey": "daily-check",
        "title": "Check", "text": "How did it go?", "periodicity": "daily",
        "suggestedTimes": [{"kind": "daily", "time": "09:00"}], "actorUserId": "admin"}),
    )
    .await
    .unwrap();
    let tid = tpl["templateId"].as_str().unwrap().to_string();
    let before = snapshot(&t.env.e).await;
    for (args, msg) in [
        (json!({"templateKey": "daily-check"}), "Template key 'daily-check' already exists for company"),
        (json!({"templateKey": "m", "periodicity": "manual"}), "Manual template does not accept suggested times"),
        (json!({"templateKey": "w", "periodicity": "weekly"}), "All suggested times must match template periodicity"),
        (
            json!({"templateKey": "x", "suggestedTimes": [{"kind": "daily", "time": "9:00"}]}),
            "Invalid time '9:00', expected HH:mm",
        ),
    ] {
        let mut a = json!({"companyId": "acme", "templateKey": "k", "title": "T", "text": "x", "periodicity": "daily",
            "suggestedTimes": [{"kind": "daily", "time": "09:00"}], "actorUserId": "admin"});
        for (k, v) in args.as_object().unwrap() {
            a[k] = v.clone();
        }
        let e = op(app, "createPushTemplate", a).await.unwrap_err();
        assert_eq!(e.to_string(), msg);
    }
    assert_eq!(snapshot(&t.env.e).await, before, "refusals write nothing");
    let list = op(app, "listPushTemplatesByCompany", json!({"companyId": "acme"})).await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(op(app, "listPushTemplatesByCompany", json!({"companyId": "other"})).await.unwrap(), json!([]));

    // A job from the template: its first suggested time; the user's active agent.
    let job = op(
        app,
        "createPushJobFromTemplate",
        json!({"companyId": "acme", "consumerUserId": "u1",
        "templateId": tid, "timezone": "europe/rome"}),
    )
    .await
    .unwrap();
    let jid = job["jobId"].as_str().unwrap().to_string();
    let got = op(app, "getPushJob", json!({"jobId": jid})).await.unwrap();
    assert_eq!(got["agentKey"], "a");
    assert_eq!(got["schedule"], json!({"kind": "daily", "time": "09:00"}));
    assert_eq!(got["sourceTemplateId"], tid.as_str());
    let next = shared::pushing::rules::next_run_at(
        &shared::pushing::model::Schedule::Daily { time: "09:00".into() },
        &chrono_tz::Europe::Rome,
        t.env.e.clock.now_ms(),
    )
    .unwrap();
    assert_eq!(got["nextRunAt"], json!(next));
    // Template from another company: refused.
    let e = op(
        app,
        "createPushJobFromTemplate",
        json!({"companyId": "other", "consumerUserId": "u1",
        "templateId": tid, "timezone": "UTC"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), "Template company mismatch");
    let e = op(app, "createPushJobCustom", json!({"companyId": "acme", "consumerUserId": "u1", "title": "t",
        "text": "x", "periodicity": "weekly", "timezone": "Mars/Olympus", "schedule": {"kind": "weekly", "weekday": 1, "time": "09:00"}}))
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), "Invalid timezone 'Mars/Olympus'");
    let e = op(
        app,
        "createPushJobCustom",
        json!({"companyId": "acme", "consumerUserId": "u1", "title": "t",
        "text": "x", "periodicity": "weekly", "timezone": "UTC", "schedule": {"kind": "daily", "time": "09:00"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), "Schedule kind must match periodicity");
    // ForAgent: the agent must be the user's active one.
    let e = op(app, "createPushJobCustomForAgent", json!({"consumerUserId": "u1", "companyId": "acme",
        "agentKey": "b", "title": "t", "text": "x", "periodicity": "manual", "timezone": "UTC", "schedule": {"kind": "manual"}}))
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), "Agent key must match the current active binding for the user");
    let mine = op(
        app,
        "createPushJobCustomForAgent",
        json!({"consumerUserId": "u1", "companyId": "acme",
        "agentKey": "a", "title": "t", "text": "manual one", "periodicity": "manual", "timezone": "UTC",
        "schedule": {"kind": "manual"}}),
    )
    .await
    .unwrap();
    assert_eq!(mine["nextRunAt"], Value::Null);
    let listed = op(app, "listPushJobsForAgent", json!({"consumerUserId": "u1", "agentKey": "a"})).await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(
        op(app, "listPushJobsForAgent", json!({"consumerUserId": "u2", "agentKey": "a"})).await.unwrap(),
        json!([])
    );
    // Another user cannot edit or trigger it.
    let e =
        op(app, "updatePushJobForAgent", json!({"consumerUserId": "u2", "agentKey": "a", "jobId": jid, "title": "x"}))
            .await
            .unwrap();
    assert_eq!(e, json!(false));
    let e = op(app, "triggerPushJobNowForAgent", json!({"consumerUserId": "u2", "agentKey": "a", "jobId": jid}))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "Push job not found for agent");
    // A title edit keeps the slot; a schedule edit recomputes it; disabling clears it.
    assert_eq!(
        op(
            app,
            "updatePushJobForAgent",
            json!({"consumerUserId": "u1", "agentKey": "a", "jobId": jid, "title": "New"})
        )
        .await
        .unwrap(),
        json!(true)
    );
    let got = op(app, "getPushJob", json!({"jobId": jid})).await.unwrap();
    assert_eq!((got["title"].clone(), got["nextRunAt"].clone()), (json!("New"), json!(next)));
    op(
        app,
        "updatePushJob",
        json!({"jobId": jid, "periodicity": "weekly", "schedule": {"kind": "weekly", "weekday": 1, "time": "00:30"}}),
    )
    .await
    .unwrap();
    let got = op(app, "getPushJob", json!({"jobId": jid})).await.unwrap();
    assert_ne!(got["nextRunAt"], json!(next));
    op(app, "setPushJobEnabled", json!({"jobId": jid, "enabled": false})).await.unwrap();
    let got = op(app, "getPushJob", json!({"jobId": jid})).await.unwrap();
    assert_eq!(got["nextRunAt"], Value::Null);
    assert_eq!(
        op(app, "listPushJobsForUser", json!({"consumerUserId": "u1"})).await.unwrap().as_array().unwrap().len(),
        2
    );
    assert_eq!(op(app, "deletePushJob", json!({"jobId": jid})).await.unwrap(), json!(true));
    assert_eq!(op(app, "deletePushJob", json!({"jobId": jid})).await.unwrap(), json!(false));
    assert_eq!(op(app, "deletePushTemplate", json!({"templateId": tid})).await.unwrap(), json!(true));
    assert_eq!(
        op(app, "listPushTemplatesByCompany", json!({"companyId": "acme", "includeDisabled": true})).await.unwrap(),
        json!([])
    );
}

#[tokio::test]
async fn concurrent_dispatchers_send_each_slot_once() {
    let t = setup().await;
    let app = &t.app;
    pair(app, "u1", "601").await;
    pair(app, "u2", "602").await;
    let now = t.env.e.clock.now_ms();
    let (hm, slot) = slot_after(now, 2);
    let mut jobs = Vec::new();
    for user in ["u1", "u2"] {
        for i in 0..4 {
            let j = op(
                app,
                "createPushJobCustom",
                json!({"companyId": "acme", "consumerUserId": user,
                "title": format!("t{i}"), "text": format!("push {i} for {user}"), "periodicity": "daily",
                "timezone": "UTC", "schedule": {"kind": "daily", "time": hm}}),
            )
            .await
            .unwrap();
            assert_eq!(j["nextRunAt"], json!(slot));
            jobs.push(j["jobId"].as_str().unwrap().to_string());
        }
    }
    // Not due yet: nothing.
    let r = push(app, json!({"op": "dispatchDuePushJobs"})).await.unwrap();
    assert_eq!(r["scanned"], 0);
    // Past the slot: two sweeps and every job's own schedule race.
    t.env.e.clock.set(slot + 30_000);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { push(&app, json!({"op": "dispatchDuePushJobs", "args": {}})).await }));
    }
    for j in &jobs {
        let (app, j) = (app.clone(), j.clone());
        tasks.push(tokio::spawn(
            async move { push(&app, json!({"op": "dispatchPushJob", "args": {"jobId": j}})).await },
        ));
    }
    let mut enqueued = 0;
    for task in tasks {
        let r = task.await.unwrap().unwrap();
        enqueued += r["enqueued"].as_i64().unwrap_or(0) + i64::from(r["outcome"] == "Enqueued");
        assert_eq!(r["errors"].as_i64().unwrap_or(0), 0, "{r}");
    }
    assert_eq!(enqueued, 8, "each job's slot enqueued exactly once");
    let mut texts: Vec<String> = Vec::new();
    for user in ["u1", "u2"] {
        for m in messages(app, &format!("user-agent:a:{user}")).await {
            texts.push(m["payload"]["messageText"].as_str().unwrap().to_string());
            assert_eq!(m["payload"]["metadata"]["pushMode"], "scheduled");
        }
    }
    texts.sort();
    let mut want: Vec<String> =
        ["u1", "u2"].iter().flat_map(|u| (0..4).map(move |i| format!("push {i} for {u}"))).collect();
    want.sort();
    assert_eq!(texts, want);
    for j in &jobs {
        let d = op(app, "listPushDispatchesByJob", json!({"jobId": j})).await.unwrap();
        let d = d.as_array().unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0]["status"], "enqueued");
        assert_eq!(d[0]["scheduledFor"], json!(slot));
        assert_eq!(d[0]["runKey"], format!("scheduled:{j}:{slot}"));
        let job = op(app, "getPushJob", json!({"jobId": j})).await.unwrap();
        assert_eq!(job["nextRunAt"], json!(slot + 24 * HOUR));
        assert_eq!(job["lastRunKey"], format!("scheduled:{j}:{slot}"));
    }
    // A second sweep in the same hour: nothing due.
    let r = push(app, json!({"op": "dispatchDuePushJobs"})).await.unwrap();
    assert_eq!((r["scanned"].clone(), r["enqueued"].clone()), (json!(0), json!(0)));
    // The user's view of the audit.
    let mine = op(app, "listPushDispatchesForAgent", json!({"consumerUserId": "u1", "agentKey": "a"})).await.unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_bad_job_is_recorded_failed_and_the_others_are_sent() {
    let t = setup().await;
    let app = &t.app;
    pair(app, "u1", "701").await;
    pair(app, "u2", "702").await;
    let now = t.env.e.clock.now_ms();
    let (hm, slot) = slot_after(now, 2);
    let mk = |user: &str| {
        json!({"companyId": "acme", "consumerUserId": user, "title": "t", "text": format!("hi {user}"),
            "periodicity": "daily", "timezone": "UTC", "schedule": {"kind": "daily", "time": hm}})
    };
    let good = op(app, "createPushJobCustom", mk("u1")).await.unwrap()["jobId"].as_str().unwrap().to_string();
    let bad_tz = op(app, "createPushJobCustom", mk("u1")).await.unwrap()["jobId"].as_str().unwrap().to_string();
    let revoked = op(app, "createPushJobCustom", mk("u2")).await.unwrap()["jobId"].as_str().unwrap().to_string();
    // A stored zone that no longer resolves (a tzdata change), and a revoked binding.
    let (ulid, user) = bad_tz.split_once(':').unwrap();
    t.env
        .e
        .store
        .client
        .update_item()
        .table_name(&t.env.e.store.tables.control)
        .set_key(Some(shared::adapters::dynamo::keys::push_job_key(user, ulid)))
        .update_expression("SET #z = :z")
        .expression_attribute_names("#z", "timezone")
        .expression_attribute_values(":z", aws_sdk_dynamodb::types::AttributeValue::S("Mars/Olympus".into()))
        .send()
        .await
        .unwrap();
    op(app, "revokeUserAgentBinding", json!({"consumerUserId": "u2"})).await.unwrap();
    t.env.e.clock.set(slot + 1_000);
    let r = push(app, json!({"op": "dispatchDuePushJobs"})).await.unwrap();
    assert_eq!(
        (r["scanned"].clone(), r["enqueued"].clone(), r["failed"].clone()),
        (json!(3), json!(1), json!(2)),
        "{r}"
    );
    assert_eq!(messages(app, "user-agent:a:u1").await.len(), 1);
    let d = |j: &str| {
        let j = j.to_string();
        async move { op(app, "listPushDispatchesByJob", json!({"jobId": j})).await.unwrap()[0].clone() }
    };
    assert_eq!(d(&good).await["status"], "enqueued");
    let f = d(&bad_tz).await;
    assert_eq!((f["status"].clone(), f["error"].clone()), (json!("failed"), json!("Invalid timezone 'Mars/Olympus'")));
    let f = d(&revoked).await;
    assert_eq!(f["status"], "failed");
    assert!(f["error"].as_str().unwrap().contains("No active binding"), "{f}");
    // The bad zone's job is quarantined (out of the due index); the revoked one moves on.
    assert_eq!(op(app, "getPushJob", json!({"jobId": bad_tz})).await.unwrap()["nextRunAt"], Value::Null);
    assert_eq!(op(app, "getPushJob", json!({"jobId": revoked})).await.unwrap()["nextRunAt"], json!(slot + 24 * HOUR));
    // A dispatcher outage: a slot a week old is recorded skipped, not sent.
    t.env.e.clock.set(slot + 8 * 24 * HOUR);
    let r = push(app, json!({"op": "dispatchDuePushJobs"})).await.unwrap();
    assert_eq!((r["skipped"].clone(), r["enqueued"].clone()), (json!(2), json!(0)), "{r}");
    let s = d(&good).await;
    assert_eq!(s["status"], "skipped");
    assert_eq!(messages(app, "user-agent:a:u1").await.len(), 1);
}

#[tokio::test]
async fn manual_triggers_and_broadcasts_replayed_with_their_key_send_once() {
    let t = setup().await;
    let app = &t.app;
    pair(app, "u1", "801").await;
    op(app, "bindUserAgent", json!({"consumerUserId": "u3", "agentKey": "b", "source": "manual"})).await.unwrap();
    let job = op(
        app,
        "createPushJobCustom",
        json!({"companyId": "acme", "consumerUserId": "u1", "title": "t",
        "text": "now!", "periodicity": "manual", "timezone": "UTC", "schedule": {"kind": "manual"}}),
    )
    .await
    .unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    let r1 = op(app, "triggerPushJobNow", json!({"jobId": job, "idempotencyKey": "click-1"})).await.unwrap();
    let r2 = op(app, "triggerPushJobNow", json!({"jobId": job, "idempotencyKey": "click-1"})).await.unwrap();
    assert_eq!(r1["enqueuedMessageId"], r2["enqueuedMessageId"]);
    assert_eq!(r2["deduplicated"], true);
    assert_eq!(messages(app, "user-agent:a:u1").await.len(), 1);
    op(
        app,
        "triggerPushJobNowForAgent",
        json!({"consumerUserId": "u1", "agentKey": "a", "jobId": job, "idempotencyKey": "click-2"}),
    )
    .await
    .unwrap();
    assert_eq!(messages(app, "user-agent:a:u1").await.len(), 2);

    // The company's roster: agents of its jobs (a here; b only in another company).
    op(
        app,
        "createPushJobCustom",
        json!({"companyId": "other", "consumerUserId": "u3", "title": "t",
        "text": "x", "periodicity": "manual", "timezone": "UTC", "schedule": {"kind": "manual"}}),
    )
    .await
    .unwrap();
    let args = json!({"companyId": "acme", "title": " News ", "text": "We ship today. ", "requestedBy": "ops",
        "idempotencyKey": "bc-1"});
    let b1 = op(app, "sendBroadcastToAllActiveAgents", args.clone()).await.unwrap();
    assert_eq!(
        (b1["totalTargets"].clone(), b1["enqueued"].clone(), b1["status"].clone()),
        (json!(1), json!(1), json!("done"))
    );
    let b2 = op(app, "sendBroadcastToAllActiveAgents", args).await.unwrap();
    assert_eq!(b2["broadcastId"], b1["broadcastId"]);
    let m = messages(app, "broadcast:agent:a").await;
    assert_eq!(m.len(), 1, "the replay sent nothing");
    assert_eq!(m[0]["payload"]["messageText"], "News \n\nWe ship today.");
    assert_eq!(m[0]["payload"]["metadata"]["adminInitiated"], "true");
    assert!(messages(app, "broadcast:agent:b").await.is_empty(), "another company's agent gets nothing");
    let audit = op(app, "getPushBroadcast", json!({"companyId": "acme", "idempotencyKey": "bc-1"})).await.unwrap();
    assert_eq!(audit["dispatches"].as_array().unwrap().len(), 1);
    assert_eq!(audit["dispatches"][0]["status"], "enqueued");
    let other = op(
        app,
        "sendBroadcastToAllActiveAgents",
        json!({"companyId": "other", "title": "x", "text": "y",
        "requestedBy": "ops", "idempotencyKey": "bc-1"}),
    )
    .await
    .unwrap();
    assert_eq!(other["enqueued"], 1);
    assert_eq!(messages(app, "broadcast:agent:b").await.len(), 1);
}

#[tokio::test]
async fn job_schedules_are_kept_in_step_on_eventbridge_scheduler() {
    use shared::adapters::scheduler::EventBridgeScheduler;
    let t = setup().await;
    let sdk = shared::adapters::aws::sdk_config(Some(&integration_tests::moto_endpoint())).await;
    let group = format!("af-push-{:08x}", shared::ids::random_u128() as u32);
    let fn_arn = "arn:aws:lambda:us-east-1:123456789012:function:push-dispatch";
    let sched =
        EventBridgeScheduler::new(&sdk, group, fn_arn.into(), "arn:aws:iam::123456789012:role/push-sched".into());
    sched.ensure_group().await.unwrap();
    sched.ensure_group().await.unwrap();
    let app = t.app.clone().with_push_scheduler(std::sync::Arc::new(sched.clone()));
    pair(&app, "u1", "901").await;
    let jid = op(
        &app,
        "createPushJobCustom",
        json!({"companyId": "acme", "consumerUserId": "u1", "title": "t",
        "text": "x", "periodicity": "weekly", "timezone": "Europe/Rome",
        "schedule": {"kind": "weekly", "weekday": 1, "time": "00:30"}}),
    )
    .await
    .unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    let s = sched.get(&jid).await.unwrap().expect("a schedule for the job");
    assert_eq!((s.expression.as_str(), s.timezone.as_str(), s.enabled), ("cron(30 0 ? * MON *)", "Europe/Rome", true));
    let input: Value = serde_json::from_str(&s.input).unwrap();
    assert_eq!(input, json!({"op": "dispatchPushJob", "args": {"jobId": jid}}));
    // The schedule's payload is what the function serves.
    assert!(push_dispatch::op_names().contains(&"dispatchPushJob"));
    // Edited: replaced.
    op(
        &app,
        "updatePushJob",
        json!({"jobId": jid, "periodicity": "monthly", "timezone": "America/New_York",
        "schedule": {"kind": "monthly", "dayOfMonth": "last", "time": "18:05"}}),
    )
    .await
    .unwrap();
    let s = sched.get(&jid).await.unwrap().unwrap();
    assert_eq!((s.expression.as_str(), s.timezone.as_str()), ("cron(5 18 L * ? *)", "America/New_York"));
    // Disabled: removed; enabled: back; deleted: removed.
    op(&app, "setPushJobEnabled", json!({"jobId": jid, "enabled": false})).await.unwrap();
    assert_eq!(sched.get(&jid).await.unwrap(), None);
    op(&app, "setPushJobEnabled", json!({"jobId": jid, "enabled": true})).await.unwrap();
    assert!(sched.get(&jid).await.unwrap().is_some());
    // A title edit leaves it alone; a manual job has none.
    op(&app, "updatePushJob", json!({"jobId": jid, "title": "renamed"})).await.unwrap();
    assert!(sched.get(&jid).await.unwrap().is_some());
    op(&app, "deletePushJob", json!({"jobId": jid})).await.unwrap();
    assert_eq!(sched.get(&jid).await.unwrap(), None);
    let manual = op(
        &app,
        "createPushJobCustom",
        json!({"companyId": "acme", "consumerUserId": "u1", "title": "t",
        "text": "x", "periodicity": "manual", "timezone": "UTC", "schedule": {"kind": "manual"}}),
    )
    .await
    .unwrap();
    assert_eq!(sched.get(manual["jobId"].as_str().unwrap()).await.unwrap(), None);
}

/// SAM: push-dispatch with its hourly sweep, the schedule group, and the role Scheduler assumes
/// (it may invoke push-dispatch and nothing else); admin and api get the schedule settings.
#[test]
fn push_dispatch_is_wired_with_its_schedules_and_least_privilege() {
    let path = format!("{}/../infra/template.yaml", env!("CARGO_MANIFEST_DIR"));
    let yaml: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let t: Value = serde_json::to_value(yaml).unwrap();
    let r = &t["Resources"];
    let f = &r["PushDispatchFunction"];
    assert_eq!(f["Metadata"]["BuildProperties"]["Binary"], "push-dispatch");
    let sweep = &f["Properties"]["Events"]["HourlySweep"];
    assert_eq!(sweep["Type"], "Schedule");
    assert_eq!(sweep["Properties"]["Schedule"], "cron(0 * * * ? *)");
    let input: Value = serde_json::from_str(sweep["Properties"]["Input"].as_str().unwrap()).unwrap();
    assert!(push_dispatch::op_names().contains(&input["op"].as_str().unwrap()));
    let pol = serde_json::to_string(&f["Properties"]["Policies"]).unwrap();
    assert!(!pol.contains("WorkersTable") && !pol.contains("secretsmanager") && !pol.contains("s3:"), "{pol}");
    assert_eq!(r["PushScheduleGroup"]["Type"], "AWS::Scheduler::ScheduleGroup");
    let role = &r["PushSchedulerRole"]["Properties"];
    let trust = &role["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(trust["Principal"]["Service"], "scheduler.amazonaws.com");
    let stmts = role["Policies"][0]["PolicyDocument"]["Statement"].as_array().unwrap();
    assert_eq!(stmts.len(), 1);
    assert_eq!(stmts[0]["Action"], "lambda:InvokeFunction");
    assert_eq!(stmts[0]["Resource"][0]["Fn::GetAtt"], json!(["PushDispatchFunction", "Arn"]));
    for name in ["AdminFunction", "ApiFunction"] {
        let p = &r[name]["Properties"];
        let env = &p["Environment"]["Variables"];
        assert_eq!(env["PUSH_SCHEDULE_GROUP"], json!({"Ref": "PushScheduleGroup"}), "{name}");
        assert_eq!(env["PUSH_DISPATCH_FUNCTION_ARN"]["Fn::GetAtt"], json!(["PushDispatchFunction", "Arn"]));
        assert_eq!(env["PUSH_SCHEDULER_ROLE_ARN"]["Fn::GetAtt"], json!(["PushSchedulerRole", "Arn"]));
        let pol = serde_json::to_string(&p["Policies"]).unwrap();
        assert!(pol.contains("schedule/${PushScheduleGroup}/*") && pol.contains("iam:PassedToService"), "{name}");
    }
}

/// The sweep reads the sparse due index (manual and disabled jobs are not in it), never scans,
/// and costs a fixed number of requests per due job.
#[tokio::test]
async fn the_sweep_cost_follows_due_jobs_not_all_jobs() {
    let t = setup().await;
    let app = &t.app;
    pair(app, "u1", "1001").await;
    let now = t.env.e.clock.now_ms();
    let (hm, slot) = slot_after(now, 2);
    let mk = |periodicity: &str, enabled: bool| {
        let schedule =
            if periodicity == "manual" { json!({"kind": "manual"}) } else { json!({"kind": "daily", "time": hm}) };
        json!({"companyId": "acme", "consumerUserId": "u1", "title": "t", "text": "x", "periodicity": periodicity,
            "timezone": "UTC", "schedule": schedule, "enabled": enabled})
    };
    for _ in 0..20 {
        op(app, "createPushJobCustom", mk("manual", true)).await.unwrap();
        op(app, "createPushJobCustom", mk("daily", false)).await.unwrap();
    }
    for _ in 0..5 {
        op(app, "createPushJobCustom", mk("daily", true)).await.unwrap();
    }
    t.env.e.clock.set(slot + 1_000);
    t.env.e.counter.reset();
    let r = push(app, json!({"op": "dispatchDuePushJobs"})).await.unwrap();
    assert_eq!((r["scanned"].clone(), r["enqueued"].clone()), (json!(5), json!(5)), "{r}");
    let ops = t.env.e.counter.by_operation();
    let total = t.env.e.counter.total();
    eprintln!("sweep of 5 due jobs among 45: {total} requests {ops:?}");
    assert!(!ops.contains_key("Scan"), "{ops:?}");
    assert!(total <= 2 + 5 * 4, "{total} requests: {ops:?}");
}

/// Two concurrent calls of one broadcast (a client retry racing the first): one message per agent.
#[tokio::test]
async fn a_broadcast_raced_with_its_own_replay_sends_once_per_agent() {
    let t = setup().await;
    let app = &t.app;
    pair(app, "u1", "1101").await;
    op(app, "bindUserAgent", json!({"consumerUserId": "u3", "agentKey": "b", "source": "manual"})).await.unwrap();
    for user in ["u1", "u3"] {
        op(
            app,
            "createPushJobCustom",
            json!({"companyId": "acme", "consumerUserId": user, "title": "t",
            "text": "x", "periodicity": "manual", "timezone": "UTC", "schedule": {"kind": "manual"}}),
        )
        .await
        .unwrap();
    }
    let args =
        json!({"companyId": "acme", "title": "Hello", "text": "all", "requestedBy": "ops", "idempotencyKey": "race-1"});
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (app, a) = (app.clone(), args.clone());
        tasks.push(tokio::spawn(async move { op(&app, "sendBroadcastToAllActiveAgents", a).await }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        let r = task.await.unwrap().unwrap();
        assert_eq!(r["totalTargets"], 2, "{r}");
        ids.push(r["broadcastId"].clone());
    }
    assert!(ids.iter().all(|i| *i == ids[0]));
    assert_eq!(messages(app, "broadcast:agent:a").await.len(), 1);
    assert_eq!(messages(app, "broadcast:agent:b").await.len(), 1);
    let audit = op(app, "getPushBroadcast", json!({"companyId": "acme", "idempotencyKey": "race-1"})).await.unwrap();
    assert_eq!(audit["broadcast"]["status"], "done");
    assert_eq!(audit["broadcast"]["enqueuedCount"], 2);
    assert_eq!(audit["dispatches"].as_array().unwrap().len(), 2);
}
