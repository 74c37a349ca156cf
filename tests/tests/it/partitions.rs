//! Writes per partition key (issue 12's measure) and a load over several ready shards: the tally
//! rules on synthetic stream records, then a real load on DynamoDB Local read back from the
//! queue table's stream — exactly once, in order per conversation, nothing left in any shard.

use integration_tests::partition_writes::{Change, Image, StreamReader, Tally};
use integration_tests::{endpoint, env_system, load, seed_agent};
use serde_json::json;
use shared::adapters::dynamo::schema;
use shared::config::Policies;
use std::time::Duration;

fn img(v: serde_json::Value) -> Option<Image> {
    v.as_object().cloned()
}

/// Each kind of index change costs what DynamoDB charges it: entering or leaving a sparse index
/// one write, a move between keys two (in two partitions), an in-place change of a projected
/// attribute one, of an attribute the index does not project none; LSIs count under the base
/// partition.
#[test]
fn the_tally_charges_each_index_change_as_dynamodb_does() {
    let def = schema::table(schema::QUEUE);
    let conv = |shard: Option<&str>, rank: Option<&str>, extra: &str| {
        let mut v = json!({"pk": {"S": "C#a"}, "sk": {"S": "CONV"}, "openKey": {"S": "!CONV"}, "x": {"S": extra}});
        if let Some(s) = shard {
            v["readyShard"] = json!({"S": s});
            v["readyAt"] = json!({"N": "5"});
        }
        if let Some(r) = rank {
            v["dueRank"] = json!({"S": r});
        }
        img(v)
    };
    let mut t = Tally::default();
    // Enters d0 (ready and due), then moves to l0 (ready: two writes; due: leaves), then an
    // attribute `due` does not project changes in place (ready ALL: one write; due: none).
    t.count(
        def,
        &[
            Change { old: None, new: conv(Some("d0"), Some("r1"), "1") },
            Change { old: conv(Some("d0"), Some("r1"), "1"), new: conv(Some("l0"), None, "1") },
            Change { old: conv(Some("l0"), None, "1"), new: conv(Some("l0"), None, "2") },
        ],
    );
    let w = |ix: &str, p: &str| t.writes.get(&(ix.to_string(), p.to_string())).copied().unwrap_or(0);
    assert_eq!((w("table", "C#a"), w("lsi:open", "C#a")), (3, 3));
    assert_eq!((w("ready", "d0"), w("ready", "l0")), (2, 2), "enter d0, leave d0, enter l0, update in l0");
    assert_eq!((w("due", "d0"), t.total("due")), (2, 2), "enter and leave; the update of x is not projected");
    assert_eq!(t.total(schema::IDX_BY_STATUS_SHARD), 0, "a conversation has no status");
    assert_eq!(t.hottest()[0], ("lsi:open".to_string(), "C#a".to_string(), 3));
    // A removal leaves every index the item was in.
    let mut r = Tally::default();
    r.count(def, &[Change { old: conv(Some("r0"), None, "1"), new: None }]);
    assert_eq!((r.total("table"), r.total("ready"), r.total("due")), (1, 1, 0));
}

/// A load over 4 ready shards, drained by 8 concurrent claim loops: every message completed
/// exactly once, each conversation's in insertion order, no conversation left in any `ready` or
/// `due` partition, and the per-key writes read back from the stream (printed; they are the
/// benchmark's phase 6 at a smaller scale).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_over_many_shards_is_exactly_once_in_order_and_leaves_nothing_behind() {
    let shards = 4u32;
    let (convs, n) = (40usize, 400usize);
    let mut policy = Policies::default();
    policy.queue.ready_shards = shards;
    let e = env_system(policy).await;
    seed_agent(&e.store, "bot", true).await;
    load::fill(&e.store, "ld", n, convs).await;
    let d = load::drain(&e.store, n, 8, Duration::from_secs(240)).await;
    assert_eq!((d.duplicates, d.unique), (0, n), "exactly once");
    assert!(d.out_of_order.is_empty(), "order per conversation: {:?}", d.out_of_order);
    for shard in 0..shards {
        for (ix, part) in [
            (schema::IDX_READY, format!("r{shard}")),
            (schema::IDX_READY, format!("l{shard}")),
            (schema::IDX_DUE, format!("d{shard}")),
        ] {
            let q = e
                .store
                .client
                .query()
                .table_name(&e.tables.queue)
                .index_name(ix)
                .key_condition_expression("readyShard = :p")
                .expression_attribute_values(":p", aws_sdk_dynamodb::types::AttributeValue::S(part.clone()))
                .send()
                .await
                .unwrap();
            assert_eq!(q.count(), 0, "{ix} {part} still holds {:?}", q.items());
        }
    }
    let stats = e.store.queue_stats().await.unwrap();
    assert_eq!((stats.queued_ready, stats.processing), (0, 0));
    let changes = StreamReader::new(&endpoint()).changes(&e.tables.queue).await;
    let mut t = Tally::default();
    t.count(schema::table(schema::QUEUE), &changes);
    // Every message was written at least three times (enqueue, claim, complete).
    assert!(
        t.writes.iter().filter(|((ix, p), _)| ix == "table" && p.starts_with("C#ld-")).map(|(_, w)| w).sum::<u64>()
            >= 3 * n as u64
    );
    let hottest = t.hottest();
    for (ix, key, w) in &hottest {
        eprintln!("{ix:<10} {key:<24} {w:>6} writes, {:.3} per message", *w as f64 / n as f64);
    }
    // With 4 shards no `ready`/`due` partition takes every message's writes.
    let ready_hot = hottest.iter().find(|(ix, _, _)| ix == "ready").map(|(_, _, w)| *w).unwrap();
    assert!(ready_hot < t.total("ready"), "the ready writes are spread over the shards");
    // The status index spreads each status over its 32 shards: no key takes more than a small
    // part of its writes (5 a message: queued in, queued → processing, processing → done).
    let status_hot = hottest.iter().find(|(ix, _, _)| ix == schema::IDX_BY_STATUS_SHARD).map(|(_, _, w)| *w).unwrap();
    assert!(t.total(schema::IDX_BY_STATUS_SHARD) >= 5 * n as u64);
    assert!(status_hot * 8 < t.total(schema::IDX_BY_STATUS_SHARD), "hottest status key: {status_hot} writes");
}
