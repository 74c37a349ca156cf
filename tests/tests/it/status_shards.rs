//! The `byStatusShard` index (issue 12): messages spread over 32 partitions a status, a message
//! keeps its shard through every status, the readers see every shard, and the migration's
//! backfill (`backfillStatusShards`) brings items written before the index back into it.

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::*;
use serde_json::{Value, json};
use shared::adapters::dynamo::keys::{self, STATUS_SHARDS};
use shared::queue::model::MessageStatus;
use std::collections::{BTreeMap, BTreeSet};

async fn op(a: &AppEnv, op: &str, args: Value) -> Value {
    let payload = json!({"op": op, "args": args});
    let r = if cleanup::op_names().contains(&op) { a.cleanup(payload).await } else { invoke(&a.app, payload).await };
    r.unwrap_or_else(|e| panic!("{op}: {e:?}"))
}

async fn op_err(a: &AppEnv, op: &str, args: Value) -> shared::error::AppError {
    invoke(&a.app, json!({"op": op, "args": args})).await.expect_err("refused")
}

fn msg(cid: &str, text: &str) -> Value {
    json!({"conversationId": cid, "agentKey": "bot",
           "payload": {"provider": "telegram", "providerUserId": "u1", "messageText": text}})
}

async fn enqueue(a: &AppEnv, args: Value) -> String {
    op(a, "enqueue", args).await["messageId"].as_str().unwrap().to_string()
}

/// Every message item of the queue table as stored: message id → (status, statusPart).
async fn raw_messages(a: &AppEnv) -> BTreeMap<String, (String, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let page =
            a.e.store
                .client
                .scan()
                .table_name(&a.e.tables.queue)
                .filter_expression("begins_with(sk, :m)")
                .expression_attribute_values(":m", AttributeValue::S("M#".into()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .unwrap();
        for i in page.items() {
            let g = |k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned();
            out.insert(g("messageId").unwrap(), (g("status").unwrap(), g("statusPart")));
        }
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return out,
        }
    }
}

fn ulid_of(id: &str) -> &str {
    id.split_once(':').unwrap().0
}

fn shard_of_part(part: &str) -> &str {
    part.split_once('#').unwrap().1
}

/// An item as the version before `byStatusShard` wrote it: no `statusPart`.
async fn strip_status_part(a: &AppEnv, id: &str) {
    let (ulid, cid) = id.split_once(':').unwrap();
    a.e.store
        .client
        .update_item()
        .table_name(&a.e.tables.queue)
        .key("pk", AttributeValue::S(format!("C#{cid}")))
        .key("sk", AttributeValue::S(format!("M#{ulid}")))
        .update_expression("REMOVE statusPart")
        .send()
        .await
        .unwrap();
}

fn ids_of(rows: &Value) -> Vec<String> {
    rows.as_array().unwrap().iter().map(|r| r["_id"].as_str().unwrap().to_string()).collect()
}

/// Messages land on many `statusPart` keys; one message keeps its shard from queued through
/// processing to done, and through a fail, a dead-letter and a redrive; every reader
/// (`queueStats`, `listJobsByStatus` in exact due order, the oldest-ready gauge, the sweep's
/// orphan pass) sees all shards.
#[tokio::test]
async fn messages_spread_over_status_shards_and_keep_their_shard_for_life() {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    let mut ids = Vec::new();
    for i in 0..64 {
        let mut m = msg(&format!("c{}", i % 16), &format!("m{i}"));
        // Due times out of insertion order, some in the future.
        m["scheduledFor"] = json!(T0 + ((i * 7919) % 64) * 1_000);
        ids.push(enqueue(&a, m).await);
    }
    let raw = raw_messages(&a).await;
    let parts: BTreeSet<String> = raw.values().map(|(_, p)| p.clone().expect("every message has statusPart")).collect();
    assert!(parts.len() >= 16, "64 messages spread over many of the 32 shards: {parts:?}");
    for (id, (st, part)) in &raw {
        assert_eq!(st, "queued");
        assert_eq!(part.as_deref(), Some(keys::status_part(MessageStatus::Queued, ulid_of(id)).as_str()));
        assert!(shard_of_part(part.as_ref().unwrap()).parse::<u32>().unwrap() < STATUS_SHARDS);
    }

    // Exact global order over the shards: due time, then insertion (the message's ULID).
    let mut want: Vec<(i64, String)> =
        ids.iter().enumerate().map(|(i, id)| (T0 + ((i as i64 * 7919) % 64) * 1_000, id.clone())).collect();
    want.sort();
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
    let rows = op(&a, "listJobsByStatus", json!({"status": "queued", "limit": 5})).await;
    assert_eq!(ids_of(&rows), want[..5].to_vec());
    let rows = op(&a, "listJobsByStatus", json!({"status": "queued", "limit": 500})).await;
    assert_eq!(ids_of(&rows), want);
    let stats = op(&a, "queueStats", json!({})).await;
    assert_eq!((stats["queuedReady"].as_u64(), stats["queuedScheduled"].as_u64()), (Some(1), Some(63)), "{stats}");
    assert_eq!(a.e.store.oldest_ready_at(T0).await.unwrap(), Some(T0));
    a.e.clock.advance(64_000);
    assert_eq!(a.e.store.oldest_ready_at(a.e.store.now()).await.unwrap(), Some(T0), "the oldest of 64 due");

    // queued → processing → done: the same shard all along.
    let t = a.mint("w1").await;
    let (st, job) = a.post("claim", &t, json!({"conversationId": "c0"})).await;
    assert_eq!(st, 200, "{job}");
    let id = job["messageId"].as_str().unwrap().to_string();
    let nn = shard_of_part(raw[&id].1.as_ref().unwrap()).to_string();
    let part = |raw: &BTreeMap<String, (String, Option<String>)>| raw[&id].1.clone().unwrap();
    assert_eq!(part(&raw_messages(&a).await), format!("processing#{nn}"));
    let stats = op(&a, "queueStats", json!({})).await;
    assert_eq!((stats["processing"].as_u64(), stats["queuedReady"].as_u64()), (Some(1), Some(63)), "{stats}");
    assert_eq!(ids_of(&op(&a, "listJobsByStatus", json!({"status": "processing"})).await), vec![id.clone()]);
    let (st, _) = a.post("complete", &t, json!({"messageId": id, "leaseId": job["leaseId"]})).await;
    assert_eq!(st, 200);
    assert_eq!(part(&raw_messages(&a).await), format!("done#{nn}"));
    assert_eq!(ids_of(&op(&a, "listJobsByStatus", json!({"status": "done"})).await), vec![id.clone()]);

    // A message that fails (maxAttempts 1) is dead-lettered in its shard, redriven back to it.
    let mut once = msg("c-once", "fails");
    once["maxAttempts"] = json!(1);
    let once = enqueue(&a, once).await;
    let nn = shard_of_part(&keys::status_part(MessageStatus::Queued, ulid_of(&once))).to_string();
    let t = a.mint("w2").await;
    let (_, job) = a.post("claim", &t, json!({"conversationId": "c-once"})).await;
    assert_eq!(job["messageId"], once.as_str());
    let (st, _) =
        a.post("fail", &t, json!({"messageId": once, "leaseId": job["leaseId"], "errorMessage": "boom"})).await;
    assert_eq!(st, 200);
    assert_eq!(raw_messages(&a).await[&once], ("dead_letter".to_string(), Some(format!("dead_letter#{nn}"))));
    assert_eq!(op(&a, "queueStats", json!({})).await["deadLetter"], 1);
    assert_eq!(ids_of(&op(&a, "listJobsByStatus", json!({"status": "dead_letter"})).await), vec![once.clone()]);
    assert_eq!(op(&a, "redriveDeadLetters", json!({"messageIds": [once]})).await["redriven"], 1);
    assert_eq!(raw_messages(&a).await[&once], ("queued".to_string(), Some(format!("queued#{nn}"))));

    // An expired lease recovered by the sweep goes back to queued in its shard.
    let (_, job) = a.post("claim", &t, json!({"conversationId": "c-once"})).await;
    assert_eq!(job["messageId"], once.as_str());
    a.e.clock.advance(360_001);
    let r = op(&a, "releaseExpiredLeases", json!({})).await;
    assert_eq!(r["requeued"].as_u64().unwrap() + r["deadLettered"].as_u64().unwrap(), 1, "{r}");
    let (st, part) = raw_messages(&a).await[&once].clone();
    assert_eq!(part, Some(format!("{st}#{nn}")));
}

/// The migration: items written before `byStatusShard` (no `statusPart`) are invisible to the
/// readers until `backfillStatusShards`, run page by page through the admin envelope, gives them
/// their `statusPart`; a second run updates nothing; bad arguments are refused.
#[tokio::test]
async fn the_backfill_brings_items_of_the_old_version_back_into_the_index() {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(enqueue(&a, msg(&format!("b{}", i % 4), &format!("m{i}"))).await);
    }
    // One processing and one done message among them.
    let t = a.mint("w1").await;
    let (_, job) = a.post("claim", &t, json!({"conversationId": "b0"})).await;
    let (_, job2) = a.post("claim", &t, json!({"conversationId": "b0"})).await;
    assert_eq!(job2, Value::Null, "one at a time in a conversation");
    let (st, _) = a.post("complete", &t, json!({"messageId": job["messageId"], "leaseId": job["leaseId"]})).await;
    assert_eq!(st, 200);
    let (_, busy) = a.post("claim", &t, json!({"conversationId": "b0"})).await;
    let (done, busy) =
        (job["messageId"].as_str().unwrap().to_string(), busy["messageId"].as_str().unwrap().to_string());
    let before = raw_messages(&a).await;
    let stripped: Vec<String> = ids.iter().step_by(2).cloned().chain([done.clone(), busy.clone()]).collect();
    for id in &stripped {
        strip_status_part(&a, id).await;
    }
    let stripped: BTreeSet<String> = stripped.into_iter().collect();
    let queued_left = ids.iter().filter(|i| !stripped.contains(*i) && before[*i].0 == "queued").count() as u64;

    // The readers miss them.
    let stats = op(&a, "queueStats", json!({})).await;
    assert_eq!((stats["queuedReady"].as_u64(), stats["processing"].as_u64()), (Some(queued_left), Some(0)), "{stats}");
    let listed = ids_of(&op(&a, "listJobsByStatus", json!({"status": "queued", "limit": 500})).await);
    assert!(listed.iter().all(|i| !stripped.contains(i)) && listed.len() as u64 == queued_left);
    assert!(ids_of(&op(&a, "listJobsByStatus", json!({"status": "done"})).await).is_empty());

    // Bad arguments are refused, and write nothing.
    let snap = snapshot(&a.e).await;
    for bad in [
        json!({"limit": 0}),
        json!({"limit": 1001}),
        json!({"cursor": "nonsense"}),
        json!({"cursor": shared::paging::encode("listQueueItemsForUserAgent", "M#01J")}),
        json!({"cursor": shared::paging::encode_table_key("otherListing", "C#b0", "M#1")}),
        json!({"limit": 5, "extra": 1}),
    ] {
        let e = op_err(&a, "backfillStatusShards", bad.clone()).await;
        assert_eq!(code(&e), "ValidationError", "{bad}: {e}");
    }
    assert_eq!(snapshot(&a.e).await, snap, "refusals write nothing");

    // Page by page (pages of 3 items read: the table holds conversations, dedupe keys, ...).
    let mut cursor: Option<String> = None;
    let (mut pages, mut scanned, mut updated) = (0, 0, 0);
    loop {
        let mut args = json!({"limit": 3});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let r = op(&a, "backfillStatusShards", args).await;
        pages += 1;
        scanned += r["scanned"].as_u64().unwrap();
        updated += r["updated"].as_u64().unwrap();
        assert!(r["scanned"].as_u64().unwrap() <= 3, "{r}");
        match r["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 100, "the backfill ends");
    }
    assert!(pages > 3, "it paged: {pages}");
    assert_eq!(updated, stripped.len() as u64);
    assert!(scanned >= 12 + 4, "every item was read once: {scanned}");
    assert_eq!(raw_messages(&a).await, before, "statusPart restored as the writes had set it");

    // The readers see them again.
    let stats = op(&a, "queueStats", json!({})).await;
    let queued_all = before.values().filter(|(s, _)| s == "queued").count() as u64;
    assert_eq!((stats["queuedReady"].as_u64(), stats["processing"].as_u64()), (Some(queued_all), Some(1)), "{stats}");
    assert_eq!(ids_of(&op(&a, "listJobsByStatus", json!({"status": "done"})).await), vec![done]);
    assert_eq!(ids_of(&op(&a, "listJobsByStatus", json!({"status": "processing"})).await), vec![busy]);
    assert_eq!(
        op(&a, "listJobsByStatus", json!({"status": "queued", "limit": 500})).await.as_array().unwrap().len() as u64,
        queued_all
    );

    // A second run updates nothing.
    let r = op(&a, "backfillStatusShards", json!({"limit": 1000})).await;
    assert_eq!((r["updated"].as_u64(), r["nextCursor"].is_null()), (Some(0), true), "{r}");
}
