//! Races with real concurrency against DynamoDB Local: 1,000 messages over 100 conversations
//! raced for from 8 tasks, and claimers that vanish mid-lease.

use integration_tests::*;
use shared::adapters::dynamo::Store;
use shared::config::Policies;
use shared::queue::model::QueuePolicy;
use shared::queue::model::{ClaimedJob, MessageStatus};
use shared::queue::{LeaseArgs, ListConversationArgs};
use shared::workers::model::WorkerPolicy;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the workers saw, checked as they go.
#[derive(Default)]
struct Ledger {
    in_flight: HashSet<String>,
    completed: HashSet<String>,
    /// conversation -> sequence numbers in completion order
    order: BTreeMap<String, Vec<u32>>,
    claims: usize,
}

fn seq_of(job: &ClaimedJob) -> u32 {
    job.payload.message_text.rsplit('#').next().unwrap().parse().unwrap()
}

fn lease(job: &ClaimedJob, w: &str) -> LeaseArgs {
    LeaseArgs {
        worker_id: w.into(),
        message_id: job.message_id.clone(),
        lease_id: job.lease_id.clone(),
        token_hash: None,
    }
}

async fn enqueue_all(store: Arc<Store>, convs: Vec<String>, per_conv: u32) {
    for seq in 0..per_conv {
        for c in &convs {
            store.enqueue(enq(c, "bot", &format!("{c}#{seq}"))).await.expect("enqueue");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_thousand_messages_raced_for_by_eight_tasks() {
    const CONVS: usize = 100;
    const PER: u32 = 10;
    const TOTAL: usize = CONVS * PER as usize;
    let e = env_system(integration_tests::test_policies()).await;
    seed_agent(&e.store, "bot", true).await;
    let convs: Vec<String> = (0..CONVS).map(|i| format!("conv-{i:03}")).collect();

    // Four producers enqueue while the workers already run.
    let mut producers = Vec::new();
    for chunk in convs.chunks(CONVS / 4) {
        producers.push(tokio::spawn(enqueue_all(e.store.clone(), chunk.to_vec(), PER)));
    }

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (store, ledger, done) = (e.store.clone(), ledger.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            // Each task runs many sticky workers: its assigned ones, plus a fresh one racing the
            // other tasks for unassigned conversations.
            let mut mine: Vec<(String, String)> = Vec::new();
            let mut next_id = 0;
            while done.load(Ordering::SeqCst) < TOTAL {
                assert!(started.elapsed() < Duration::from_secs(240), "the race did not finish in time");
                let mut got: Vec<(String, ClaimedJob)> = Vec::new();
                for (w, c) in &mine {
                    if let Some(j) = store.claim(w, Some(c)).await.expect("sticky claim") {
                        got.push((w.clone(), j));
                    }
                }
                let fresh = format!("task{t}-worker{next_id}");
                if let Some(j) = store.claim(&fresh, None).await.expect("unassigned claim") {
                    next_id += 1;
                    mine.push((fresh.clone(), j.conversation_id.clone()));
                    got.push((fresh, j));
                }
                if got.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                for (w, j) in got {
                    {
                        let mut l = ledger.lock().unwrap();
                        assert!(l.in_flight.insert(j.message_id.clone()), "{} handed out twice at once", j.message_id);
                        l.claims += 1;
                    }
                    store.complete(&lease(&j, &w)).await.expect("complete a live lease");
                    let mut l = ledger.lock().unwrap();
                    l.in_flight.remove(&j.message_id);
                    assert!(l.completed.insert(j.message_id.clone()), "{} completed twice", j.message_id);
                    l.order.entry(j.conversation_id.clone()).or_default().push(seq_of(&j));
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            next_id
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    let mut workers = 0;
    for t in tasks {
        workers += t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let l = std::mem::take(&mut *ledger.lock().unwrap());
    assert_eq!(l.completed.len(), TOTAL, "every message completed exactly once");
    assert_eq!(l.claims, TOTAL, "no message was claimed twice");
    assert_eq!(l.order.len(), CONVS);
    for (c, seqs) in &l.order {
        assert_eq!(seqs, &(0..PER).collect::<Vec<_>>(), "order kept in {c}");
    }
    assert!(workers >= CONVS, "sticky: at least one worker id per conversation ({workers})");
    let stats = e.store.queue_stats().await.unwrap();
    assert_eq!((stats.queued_ready, stats.queued_scheduled, stats.processing, stats.dead_letter), (0, 0, 0, 0));
    for c in &convs {
        let conv = e.store.get_conversation(c).await.unwrap().unwrap();
        assert_eq!((conv.open_count, conv.ready_at, conv.lock_lease_id.as_deref()), (0, None, None), "{c} is clean");
    }
    eprintln!(
        "race: {TOTAL} messages, {CONVS} conversations, {workers} worker ids, 8 tasks: {:.1} s; requests {:?}",
        elapsed.as_secs_f64(),
        e.counter.by_operation()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn claimers_that_vanish_mid_lease_leave_nothing_behind() {
    const CONVS: usize = 20;
    const PER: u32 = 8;
    const TOTAL: usize = CONVS * PER as usize;
    let policy = Policies {
        queue: QueuePolicy { lease_ms: 800, default_max_attempts: 3, ..QueuePolicy::default() },
        workers: WorkerPolicy { stale_after_ms: 1_000, ..WorkerPolicy::default() },
        ..integration_tests::test_policies()
    };
    let e = env_system(policy).await;
    seed_agent(&e.store, "bot", true).await;
    let convs: Vec<String> = (0..CONVS).map(|i| format!("crash-{i:02}")).collect();
    let mut poison = HashSet::new();
    for seq in 0..PER {
        for (i, c) in convs.iter().enumerate() {
            // Every fifth conversation has a message that kills every worker that takes it.
            let text = if i % 5 == 0 && seq == 3 { format!("poison {c}#{seq}") } else { format!("{c}#{seq}") };
            let id = e.store.enqueue(enq(c, "bot", &text)).await.unwrap().message_id;
            if text.starts_with("poison") {
                poison.insert(id);
            }
        }
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let vanished = Arc::new(AtomicUsize::new(0));
    let late = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // A sweeper races the claimers, as the scheduled rule would.
    let sweeper = {
        let (store, stop) = (e.store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut freed = 0;
            while !stop.load(Ordering::SeqCst) {
                freed += store.release_expired_leases(Some(50)).await.expect("sweep").unlocked;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            freed
        })
    };
    let mut tasks = Vec::new();
    for t in 0..6 {
        let (store, ledger, vanished, stop, late) =
            (e.store.clone(), ledger.clone(), vanished.clone(), stop.clone(), late.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let w = format!("crashy{t}-{n}");
                let Some(j) = store.claim(&w, None).await.expect("claim") else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                // One in four claimers vanishes, and anyone holding a poison message does.
                if j.payload.message_text.starts_with("poison") || (n + t).is_multiple_of(4) {
                    vanished.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                match store.complete(&lease(&j, &w)).await {
                    Ok(()) => {}
                    // A worker slower than its lease is refused and the message runs again.
                    Err(e) if e.lease_refusal().is_some() => {
                        late.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    Err(e) => panic!("complete: {e}"),
                }
                let mut l = ledger.lock().unwrap();
                assert!(l.completed.insert(j.message_id.clone()), "completed twice");
                l.order.entry(j.conversation_id.clone()).or_default().push(seq_of(&j));
            }
        }));
    }
    // Wait until every message is done or dead-lettered.
    loop {
        assert!(started.elapsed() < Duration::from_secs(120), "messages stuck after crashes");
        let s = e.store.queue_stats().await.unwrap();
        let done = ledger.lock().unwrap().completed.len() as u64;
        if s.queued_ready + s.queued_scheduled + s.processing + s.processing_expired == 0
            && done + s.dead_letter == TOTAL as u64
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let freed_by_sweeper = sweeper.await.unwrap();
    let l = std::mem::take(&mut *ledger.lock().unwrap());
    let mut dead = HashSet::new();
    for c in &convs {
        let rows = e
            .store
            .list_conversation_items(&ListConversationArgs { conversation_id: c.clone(), limit: Some(100) })
            .await
            .unwrap();
        assert_eq!(rows.len(), PER as usize);
        for r in rows {
            match r.status {
                MessageStatus::Done => assert!(l.completed.contains(&r.id)),
                MessageStatus::DeadLetter => {
                    assert_eq!(r.attempts, 3, "dead-lettered after maxAttempts expiries");
                    dead.insert(r.id);
                }
                s => panic!("{} left {s:?}", r.id),
            }
        }
    }
    assert!(poison.is_subset(&dead), "every poison message is dead-lettered, not looping");
    let mut per_conv: HashMap<&String, Vec<u32>> = HashMap::new();
    for (c, v) in &l.order {
        per_conv.insert(c, v.clone());
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(v, &sorted, "{c}: completions stay in order across crashes");
    }
    eprintln!(
        "crash: {TOTAL} messages, {} vanished claimers, {} late completes refused, {} done, {} dead-lettered ({} poison), sweeper freed {freed_by_sweeper}, {:.1} s",
        vanished.load(Ordering::SeqCst),
        late.load(Ordering::SeqCst),
        l.completed.len(),
        dead.len(),
        poison.len(),
        started.elapsed().as_secs_f64()
    );
}
