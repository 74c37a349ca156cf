//! The user-agent stats of spec §11 through the `api` function (trusted-backend mode): the
//! conversation figures of the user's active agent (zero for any other agent or user), and the
//! token usage of the pair.

use integration_tests::*;
use serde_json::{Value, json};

async fn api(a: &AppEnv, op: &str, args: Value) -> Value {
    invoke(&a.app, json!({"op": op, "args": args})).await.unwrap_or_else(|e| panic!("{op}: {e}"))
}

#[tokio::test]
async fn conversation_and_usage_stats_of_the_active_agent() {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    seed_agent(&a.e.store, "other", true).await;
    invoke(&a.app, json!({"op": "bindUserAgent", "args": {"consumerUserId": "alice", "agentKey": "bot"}}))
        .await
        .unwrap();
    let view = api(&a, "getConversationViewForUserAgent", json!({"consumerUserId": "alice", "agentKey": "bot"})).await;
    let cid = view["conversationId"].as_str().unwrap().to_string();
    let zero = json!({"contextMessages": 0, "queuedMessages": 0, "failedMessages": 0, "capped": false});
    assert_eq!(
        api(&a, "getUserAgentConversationStats", json!({"consumerUserId": "alice", "agentKey": "bot"})).await,
        zero
    );

    for (i, max) in [(1, None), (2, Some(1)), (3, None), (4, None)] {
        let mut m = enq(&cid, "bot", &format!("m{i}"));
        m.max_attempts = max;
        a.e.store.enqueue(m).await.unwrap();
    }
    a.e.store
        .append_messages(
            serde_json::from_value(json!({"conversationId": cid, "messages": [
                {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
            .unwrap(),
        )
        .await
        .unwrap();
    let token = a.mint("w1").await;
    let claim = |b: Value| a.post("claim", &token, b);
    // m1 done (with usage), m2 dead-lettered, m3 failed once (awaiting its retry), m4 queued.
    let j = claim(json!({"conversationId": cid})).await.1;
    let body = json!({"messageId": j["messageId"], "leaseId": j["leaseId"],
                      "usage": {"inputTokens": 40, "outputTokens": 2, "costMicros": 9}});
    assert_eq!(a.post("complete", &token, body).await.0, 200);
    for _ in 0..2 {
        let j = claim(json!({"conversationId": cid})).await.1;
        let body = json!({"messageId": j["messageId"], "leaseId": j["leaseId"], "errorMessage": "boom"});
        assert_eq!(a.post("fail", &token, body).await.0, 200);
    }

    let s = api(&a, "getUserAgentConversationStats", json!({"consumerUserId": "alice", "agentKey": "bot"})).await;
    assert_eq!(s, json!({"contextMessages": 2, "queuedMessages": 2, "failedMessages": 2, "capped": false}));
    // Not the user's active agent, or a user without one: all zero.
    assert_eq!(
        api(&a, "getUserAgentConversationStats", json!({"consumerUserId": "alice", "agentKey": "other"})).await,
        zero
    );
    assert_eq!(
        api(&a, "getUserAgentConversationStats", json!({"consumerUserId": "bob", "agentKey": "bot"})).await,
        zero
    );

    let u = api(&a, "getUserAgentUsageStats", json!({"consumerUserId": "alice", "agentKey": "bot", "days": 1})).await;
    assert_eq!((u["contextMessages"].as_u64(), u["failedMessages"].as_u64()), (Some(2), Some(2)));
    assert_eq!((u["totalPushJobs"].as_u64(), u["latestDispatchAt"].as_i64()), (Some(0), None));
    let t = &u["tokenUsage"];
    assert_eq!(
        (t["completions"].as_u64(), t["inputTokens"].as_u64(), t["costMicros"].as_u64()),
        (Some(1), Some(40), Some(9))
    );
    assert_eq!(t["days"].as_array().unwrap().len(), 1);

    // A disabled profile is no active agent (R1).
    seed_agent(&a.e.store, "bot", false).await;
    assert_eq!(
        api(&a, "getUserAgentConversationStats", json!({"consumerUserId": "alice", "agentKey": "bot"})).await,
        zero
    );
}

/// Push stats read the push dispatcher's items (`docs/data-model.md`, "Push templates, jobs,
/// dispatches"): jobs under `PJ#<user>` / `JOB#<ULID>`, dispatch records under `PJD#<jobId>` /
/// `D#<createdAt>#<ULID>` beside run-key guards `R#<runKey>` (not counted). Written here raw, in
/// that shape.
#[tokio::test]
async fn push_stats_count_the_pairs_jobs_and_dispatch_records() {
    use aws_sdk_dynamodb::types::{AttributeValue as Av, PutRequest, WriteRequest};
    let a = app_env().await;
    let put = |pk: String, sk: String, extra: Vec<(&str, Av)>| {
        let mut item = std::collections::HashMap::from([("pk".to_string(), Av::S(pk)), ("sk".to_string(), Av::S(sk))]);
        for (k, v) in extra {
            item.insert(k.to_string(), v);
        }
        WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item)).build().unwrap()).build()
    };
    let job = |ulid: &str, agent: Option<&str>, enabled: bool| {
        let mut extra = vec![("_id", Av::S(format!("{ulid}:alice"))), ("enabled", Av::Bool(enabled))];
        if let Some(ag) = agent {
            extra.push(("agentKey", Av::S(ag.into())));
        }
        put("PJ#alice".into(), format!("JOB#{ulid}"), extra)
    };
    let dispatch = |job: &str, at: i64, n: usize| {
        put(format!("PJD#{job}:alice"), format!("D#{at:013}#{n:026}"), vec![("createdAt", Av::N(at.to_string()))])
    };
    let mut rows = vec![
        job("J1", Some("bot"), true),
        job("J2", Some("bot"), false),
        job("J3", Some("other"), true),
        job("J4", None, true),
        put("PJD#J1:alice".into(), "R#scheduled:J1:5".into(), vec![]),
        dispatch("J2", T0 + 10, 0),
        dispatch("J3", T0 + 99, 0),
    ];
    rows.extend((0..3).map(|n| dispatch("J1", T0 + n as i64, n)));
    for chunk in rows.chunks(25) {
        a.e.store.client.batch_write_item().request_items(&a.e.tables.control, chunk.to_vec()).send().await.unwrap();
    }
    let s = api(&a, "getUserAgentPushStats", json!({"consumerUserId": "alice", "agentKey": "bot"})).await;
    assert_eq!(s, json!({"totalPushJobs": 2, "activePushJobs": 1, "totalDispatches": 4, "latestDispatchAt": T0 + 10}));
    let none = api(&a, "getUserAgentPushStats", json!({"consumerUserId": "bob", "agentKey": "bot"})).await;
    assert_eq!(none, json!({"totalPushJobs": 0, "activePushJobs": 0, "totalDispatches": 0, "latestDispatchAt": null}));

    // The count stops at 200, as the original's.
    let many: Vec<_> = (0..210).map(|n| dispatch("J2", T0 + 1_000 + n as i64, n)).collect();
    for chunk in many.chunks(25) {
        a.e.store.client.batch_write_item().request_items(&a.e.tables.control, chunk.to_vec()).send().await.unwrap();
    }
    let u = api(&a, "getUserAgentUsageStats", json!({"consumerUserId": "alice", "agentKey": "bot"})).await;
    assert_eq!((u["totalDispatches"].as_u64(), u["latestDispatchAt"].as_i64()), (Some(200), Some(T0 + 1_209)));
    assert_eq!((u["totalPushJobs"].as_u64(), u["contextMessages"].as_u64()), (Some(2), Some(0)));
}
