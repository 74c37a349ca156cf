//! Usage metering: `POST /worker/complete` with `usage`, aggregated per agent (sharded per-day
//! counters), per (consumer user, agent) and per day, under concurrent completes from 8 workers
//! on DynamoDB Local; replays count once; bad usage is refused before anything is written.

use integration_tests::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const USERS: usize = 4;
const CONVS: usize = 24;
const PER: usize = 4;
const TOTAL: usize = CONVS * PER + USERS * PER;

fn usage_of(i: u64) -> Value {
    json!({"inputTokens": 100 + i, "outputTokens": 10, "model": "model-x", "costMicros": 3})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn usage_is_aggregated_per_agent_user_and_day_under_concurrent_completes() {
    let a = Arc::new(app_env().await);
    seed_agent(&a.e.store, "bot", true).await;
    // Conversations of 4 users: named by `metadata.consumerUserId`, or by the conversation id
    // (`user-agent:bot:<user>`); one conversation of nobody's (counted for the agent only).
    for c in 0..CONVS {
        let cid = format!("conv-{c}");
        for _ in 0..PER {
            let mut m = enq(&cid, "bot", "hi");
            m.payload.metadata = Some([("consumerUserId".to_string(), format!("u{}", c % USERS))].into());
            a.e.store.enqueue(m).await.unwrap();
        }
    }
    for u in 0..USERS {
        for _ in 0..PER {
            a.e.store.enqueue(enq(&format!("user-agent:bot:u{u}"), "bot", "hi")).await.unwrap();
        }
    }
    a.e.store.enqueue(enq("no-user-conv", "bot", "hi")).await.unwrap();

    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (a, done) = (a.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            // As workers do: a fresh worker takes any waiting conversation, then drains it.
            let (mut idle, mut n) = (0, 0);
            while done.load(Ordering::SeqCst) < TOTAL + 1 && idle < 200 {
                n += 1;
                let token = a.mint(&format!("w{w}-{n}")).await;
                let mut body = json!({});
                loop {
                    let (st, job) = a.post("claim", &token, body.clone()).await;
                    assert_eq!(st, 200, "{job}");
                    if job.is_null() {
                        break;
                    }
                    body = json!({"conversationId": job["conversationId"]});
                    let c = json!({"messageId": job["messageId"], "leaseId": job["leaseId"], "usage": usage_of(1)});
                    let (st, r) = a.post("complete", &token, c).await;
                    assert_eq!(st, 200, "{r}");
                    done.fetch_add(1, Ordering::SeqCst);
                }
                if body == json!({}) {
                    idle += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), TOTAL + 1);

    let agent =
        invoke(&a.app, json!({"op": "getAgentUsageStats", "args": {"agentKey": "bot", "days": 7}})).await.unwrap();
    let n = (TOTAL + 1) as u64;
    assert_eq!(agent["completions"], n);
    assert_eq!(agent["inputTokens"], n * 101);
    assert_eq!(agent["outputTokens"], n * 10);
    assert_eq!(agent["costMicros"], n * 3);
    let today = shared::usage::rules::day_of(T0);
    assert_eq!(agent["toDay"], today.as_str());
    assert_eq!(
        agent["days"],
        json!([{"day": today, "completions": n, "inputTokens": n * 101, "outputTokens": n * 10, "costMicros": n * 3}])
    );
    // Spread over the shards: no single hot counter item.
    let control = dump(&a.e.store, &a.e.tables.control).await;
    let shards = control.iter().filter(|i| i.contains("\"USAGE#A#bot#")).count();
    assert!(shards >= 4, "agent counters spread over {shards} shard items");

    for u in 0..USERS {
        let got = shared::usage::ops::user_agent_usage(&a.app, &format!("u{u}"), "bot", None).await.unwrap();
        let per_user = (CONVS / USERS * PER + PER) as u64;
        assert_eq!(got.totals.completions, per_user, "u{u}");
        assert_eq!(got.totals.input_tokens, per_user * 101, "u{u}");
        assert_eq!(got.days.len(), 1);
    }
    let other = shared::usage::ops::user_agent_usage(&a.app, "u0", "other-agent", None).await.unwrap();
    assert_eq!(other.totals.completions, 0);
}

#[tokio::test]
async fn usage_counts_once_per_message_and_bad_usage_changes_nothing() {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    let token = a.mint("w1").await;
    a.e.store.enqueue(enq("user-agent:bot:alice", "bot", "one")).await.unwrap();
    let (_, job) = a.post("claim", &token, json!({})).await;
    let (mid, lid) = (job["messageId"].clone(), job["leaseId"].clone());

    // Refused usage: 400, the message stays processing, nothing is written.
    let before = snapshot(&a.e).await;
    for bad in [
        json!({"inputTokens": -1, "outputTokens": 1}),
        json!({"inputTokens": 1, "outputTokens": 1_000_000_000_001u64}),
        json!({"inputTokens": 1, "outputTokens": 1, "model": "x".repeat(200)}),
        json!({"inputTokens": 1}),
        json!({"inputTokens": 1, "outputTokens": 1, "extra": true}),
    ] {
        let (st, r) = a.post("complete", &token, json!({"messageId": mid, "leaseId": lid, "usage": bad})).await;
        assert_eq!(st, 400, "{r}");
    }
    assert_eq!(snapshot(&a.e).await, before);

    a.e.counter.reset();
    let (st, _) = a.post("complete", &token, json!({"messageId": mid, "leaseId": lid, "usage": usage_of(0)})).await;
    assert_eq!(st, 200);
    let with_usage = a.e.counter.by_operation();
    // A replay of the usage write (a retried follow-up) counts nothing.
    let u: shared::usage::model::Usage = serde_json::from_value(usage_of(0)).unwrap();
    assert!(!shared::usage::ops::record(&a.app, mid.as_str().unwrap(), &u).await.unwrap());
    let got = shared::usage::ops::user_agent_usage(&a.app, "alice", "bot", Some(1)).await.unwrap();
    assert_eq!((got.totals.completions, got.totals.input_tokens, got.totals.cost_micros), (1, 100, 3));
    // A complete without usage counts nothing.
    a.e.store.enqueue(enq("user-agent:bot:alice", "bot", "two")).await.unwrap();
    let (_, job) = a.post("claim", &token, json!({})).await;
    a.e.counter.reset();
    let (st, _) = a.post("complete", &token, json!({"messageId": job["messageId"], "leaseId": job["leaseId"]})).await;
    assert_eq!(st, 200);
    let without = a.e.counter.by_operation();
    // The usage costs one GetItem (the message's agent and user) and one TransactWriteItems.
    let n = |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    assert_eq!(n(&with_usage, "GetItem"), n(&without, "GetItem") + 1, "{with_usage:?} vs {without:?}");
    assert_eq!(n(&with_usage, "TransactWriteItems"), n(&without, "TransactWriteItems") + 1);
    assert_eq!(with_usage.values().sum::<u64>(), without.values().sum::<u64>() + 2);
    let got = shared::usage::ops::user_agent_usage(&a.app, "alice", "bot", Some(1)).await.unwrap();
    assert_eq!(got.totals.completions, 1);
}
