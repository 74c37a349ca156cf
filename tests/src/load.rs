//! A queue load: producers fill it, concurrent claim loops drain it the way workers do (a claim
//! for any conversation, then sticky claims for the conversations they got), and the drain checks
//! exactly-once and per-conversation order. Shared by the benchmark and the load tests.

use shared::adapters::dynamo::Store;
use shared::queue::LeaseArgs;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a drain saw.
#[derive(Debug)]
pub struct Drained {
    /// Distinct messages completed.
    pub unique: usize,
    /// Messages completed more than once.
    pub duplicates: usize,
    /// Conversations whose messages were completed out of insertion order.
    pub out_of_order: Vec<String>,
    pub secs: f64,
}

/// Enqueue `n` messages over `convs` conversations (`<prefix>-<i % convs>`) with 8 producers.
pub async fn fill(store: &Arc<Store>, prefix: &str, n: usize, convs: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, next, prefix) = (store.clone(), next.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                store.enqueue(crate::enq(&format!("{prefix}-{}", i % convs), "bot", "x")).await.expect("fill");
            }
        }));
    }
    for t in tasks {
        t.await.expect("producer");
    }
}

fn lease(j: &shared::queue::model::ClaimedJob, w: &str) -> LeaseArgs {
    LeaseArgs { worker_id: w.into(), message_id: j.message_id.clone(), lease_id: j.lease_id.clone(), token_hash: None }
}

/// Drain `n` messages with `loops` concurrent claim loops; each loop claims any conversation
/// with a fresh worker id, then keeps claiming the conversations it got (sticky) until they are
/// empty. Gives up after `timeout` (the counts then show what is missing).
pub async fn drain(store: &Arc<Store>, n: usize, loops: usize, timeout: Duration) -> Drained {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let order: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let dups = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..loops {
        let (store, seen, order, done, dups) = (store.clone(), seen.clone(), order.clone(), done.clone(), dups.clone());
        tasks.push(tokio::spawn(async move {
            let record = |j: &shared::queue::model::ClaimedJob| {
                if !seen.lock().unwrap_or_else(|p| p.into_inner()).insert(j.message_id.clone()) {
                    dups.fetch_add(1, Ordering::SeqCst);
                }
                let ulid = j.message_id.split(':').next().unwrap_or_default().to_string();
                order
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(j.conversation_id.clone())
                    .or_default()
                    .push(ulid);
                done.fetch_add(1, Ordering::SeqCst);
            };
            let mut mine: Vec<(String, String)> = Vec::new();
            let mut fresh = 0;
            while done.load(Ordering::SeqCst) < n && t.elapsed() < timeout {
                let mut progressed = false;
                let mut i = 0;
                while i < mine.len() {
                    let (w, c) = mine[i].clone();
                    match store.claim(&w, Some(&c)).await.expect("sticky claim") {
                        Some(j) => {
                            store.complete(&lease(&j, &w)).await.expect("complete");
                            record(&j);
                            progressed = true;
                        }
                        None => {
                            mine.swap_remove(i);
                            continue;
                        }
                    }
                    i += 1;
                }
                let w = format!("ld{k}-{fresh}");
                if let Some(j) = store.claim(&w, None).await.expect("claim") {
                    fresh += 1;
                    mine.push((w.clone(), j.conversation_id.clone()));
                    store.complete(&lease(&j, &w)).await.expect("complete");
                    record(&j);
                    progressed = true;
                }
                if !progressed {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("claim loop");
    }
    let out_of_order = order
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, v)| v.windows(2).any(|w| w[0] > w[1]))
        .map(|(c, _)| c.clone())
        .collect();
    let unique = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
    Drained { unique, duplicates: dups.load(Ordering::SeqCst), out_of_order, secs: t.elapsed().as_secs_f64() }
}

/// What reconcile does for unassigned claimers once per cycle (`queue::shards`): read the demand
/// and write the ready hint, every `every`, until the returned handle is aborted. Loads run it
/// in place of a reconcile loop.
pub fn refresh_hint_every(store: &Arc<Store>, every: Duration) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    tokio::spawn(async move {
        loop {
            let now = store.now();
            let (_, _, hint) = store.ready_demand(now, 200).await.expect("demand read");
            store.put_ready_hint(&hint).await.expect("hint write");
            tokio::time::sleep(every).await;
        }
    })
}
