//! The queue store against DynamoDB Local: every rule through the store's real operations,
//! with the clock moved by hand.

use integration_tests::*;
use shared::conversations::model::HistoryRole;
use shared::error::LeaseRefusal;
use shared::queue::model::MessageStatus;
use shared::queue::*;
use shared::workers::model::UpsertWorkerArgs;
use shared::workers::model::WorkerStatus;

fn lease(job: &shared::queue::model::ClaimedJob, worker: &str) -> LeaseArgs {
    LeaseArgs {
        worker_id: worker.into(),
        message_id: job.message_id.clone(),
        lease_id: job.lease_id.clone(),
        token_hash: None,
    }
}

fn fail_args(job: &shared::queue::model::ClaimedJob, worker: &str, err: &str) -> FailArgs {
    FailArgs {
        worker_id: worker.into(),
        message_id: job.message_id.clone(),
        lease_id: job.lease_id.clone(),
        error_message: err.into(),
        token_hash: None,
    }
}

#[tokio::test]
async fn enqueue_claim_complete_round_trip() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    let r = e.store.enqueue(enq("c1", "bot", "hi")).await.unwrap();
    assert!(!r.deduplicated);
    assert!(e.store.has_queued("c1").await.unwrap());

    let job = e.store.claim("w1", None).await.unwrap().expect("a job");
    assert_eq!(job.message_id, r.message_id);
    assert_eq!(job.payload.message_text, "hi");
    assert_eq!(job.lease_expires_at, T0 + 360_000);
    assert!(!e.store.has_queued("c1").await.unwrap(), "processing does not count as queued");
    let w = e.store.get_worker("w1").await.unwrap().unwrap();
    assert_eq!((w.status, w.load(), w.assigned_conversation_id.as_deref()), (WorkerStatus::Active, 1, Some("c1")));

    e.clock.advance(1_000);
    e.store.complete(&lease(&job, "w1")).await.unwrap();
    let m = e.store.get_message(&job.message_id).await.unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::Done);
    assert!(m.open_key.is_none() && m.lease_id.is_none() && m.claimed_by.is_none());
    assert_eq!(m.ttl, Some((T0 + 1_000 + 7 * 86_400_000) / 1000));
    let c = e.store.get_conversation("c1").await.unwrap().unwrap();
    assert_eq!(c.open_count, 0);
    assert!(c.ready_at.is_none() && c.lock_lease_id.is_none(), "an empty conversation leaves the ready index");
    assert_eq!(e.store.get_worker("w1").await.unwrap().unwrap().load(), 0);
    assert!(e.store.claim("w1", Some("c1")).await.unwrap().is_none());
}

#[tokio::test]
async fn enqueue_refusals_are_precise_and_write_nothing() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    seed_agent(&e.store, "off", false).await;
    e.store.enqueue(enq("bound", "bot", "x")).await.unwrap();
    let before = snapshot(&e).await;

    let err = e.store.enqueue(enq("c-new", "ghost", "x")).await.unwrap_err();
    assert_eq!((code(&err), err.to_string().as_str()), ("NotFound", "Agent profile 'ghost' not found or disabled"));
    let err = e.store.enqueue(enq("c-new", "off", "x")).await.unwrap_err();
    assert_eq!(err.to_string(), "Agent profile 'off' not found or disabled");

    let mut blank = enq("c-new", "bot", "x");
    blank.payload.provider_user_id = "  ".into();
    let err = e.store.enqueue(blank).await.unwrap_err();
    assert_eq!(code(&err), "ValidationError");
    assert!(err.to_string().starts_with("providerUserId is required"), "{err}");

    let err = e.store.enqueue(enq("bound", "other", "x")).await;
    seed_agent(&e.store, "other", true).await;
    let err2 = e.store.enqueue(enq("bound", "other", "x")).await.unwrap_err();
    assert_eq!(code(&err.unwrap_err()), "NotFound");
    assert_eq!(code(&err2), "Conflict");
    assert_eq!(err2.to_string(), "Conversation 'bound' is already bound to agent 'bot', cannot enqueue for 'other'.");

    let mut big = enq("c-new", "bot", "");
    big.payload.message_text = "x".repeat(300 * 1024);
    assert_eq!(code(&e.store.enqueue(big).await.unwrap_err()), "PayloadTooLarge");
    let mut nan = enq("c-new", "bot", "x");
    nan.priority = Some(f64::NAN);
    assert_eq!(code(&e.store.enqueue(nan).await.unwrap_err()), "ValidationError");
    let mut zero = enq("c-new", "bot", "x");
    zero.max_attempts = Some(0);
    assert_eq!(code(&e.store.enqueue(zero).await.unwrap_err()), "ValidationError");
    assert_eq!(code(&e.store.enqueue(enq(" ", "bot", "x")).await.unwrap_err()), "ValidationError");

    let mut after = snapshot(&e).await;
    // Only the profile written in between differs.
    after.retain(|i| !i.contains("AGENT#other"));
    assert_eq!(before, after, "refused enqueues leave the tables as they were");
    assert!(e.store.get_conversation("c-new").await.unwrap().is_none());
}

#[tokio::test]
async fn enqueue_is_idempotent_on_external_message_id() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    let mut a = enq("c1", "bot", "hello");
    a.payload.external_message_id = Some("tg-777".into());
    let first = e.store.enqueue(a.clone()).await.unwrap();
    let before = snapshot(&e).await;
    let second = e.store.enqueue(a.clone()).await.unwrap();
    assert_eq!(second.message_id, first.message_id);
    assert!(second.deduplicated);
    assert_eq!(snapshot(&e).await, before, "the duplicate wrote nothing");
    assert_eq!(e.store.get_conversation("c1").await.unwrap().unwrap().open_count, 1);
    // The same external id in another conversation is another message.
    let mut other = a;
    other.conversation_id = "c2".into();
    assert_ne!(e.store.enqueue(other).await.unwrap().message_id, first.message_id);
}

/// The original looks at the 25 oldest queued rows only and returns nothing when they all
/// belong to busy conversations. Here 30 busy conversations are ahead of one ready one.
#[tokio::test]
async fn no_head_of_line_blocking_behind_busy_conversations() {
    let e = env_with(one_shard()).await;
    seed_agent(&e.store, "bot", true).await;
    for i in 0..30 {
        let cid = format!("busy-{i:02}");
        e.store.enqueue(enq(&cid, "bot", "first")).await.unwrap();
        e.store.enqueue(enq(&cid, "bot", "second")).await.unwrap();
        e.store.enqueue(enq(&cid, "bot", "third")).await.unwrap();
        let job = e.store.claim(&format!("busy-worker-{i}"), Some(&cid)).await.unwrap().expect("claim busy");
        assert_eq!(job.payload.message_text, "first");
    }
    e.clock.advance(10);
    // (This process's promotion of newly due conversations, one Query a second at most, is done
    // by this empty poll, so the claim below is counted alone.)
    assert!(e.store.claim("probe", None).await.unwrap().is_none());
    let ready = e.store.enqueue(enq("quiet", "bot", "me please")).await.unwrap();
    e.counter.reset();
    let job = e.store.claim("fresh-worker", None).await.unwrap().expect("the ready conversation is found");
    assert_eq!(job.message_id, ready.message_id);
    let requests = e.counter.total();
    assert!(requests <= 3, "an unassigned claim costs 3 requests however many conversations are busy, got {requests}");
    // A second fresh worker finds nothing: everything left is locked or owned.
    assert!(e.store.claim("another", None).await.unwrap().is_none());
}

#[tokio::test]
async fn leases_are_enforced_by_time_without_a_sweep() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    e.store.enqueue(enq("c1", "bot", "x")).await.unwrap();
    let job = e.store.claim("w1", None).await.unwrap().unwrap();
    e.clock.advance(100_000);
    let hb = e.store.heartbeat(&lease(&job, "w1")).await.unwrap();
    assert_eq!(hb.lease_expires_at, T0 + 100_000 + 360_000);
    e.clock.set(hb.lease_expires_at);
    let before = snapshot(&e).await;
    for err in [
        e.store.heartbeat(&lease(&job, "w1")).await.unwrap_err(),
        e.store.complete(&lease(&job, "w1")).await.unwrap_err(),
        e.store.fail(&fail_args(&job, "w1", "boom")).await.unwrap_err(),
    ] {
        assert_eq!(err.lease_refusal(), Some(LeaseRefusal::LeaseExpired), "{err}");
        assert_eq!(code(&err), "Conflict");
    }
    assert_eq!(snapshot(&e).await, before, "late calls change nothing");
    // Someone else's lease and a wrong lease id are refused too.
    let mut wrong = lease(&job, "w2");
    e.clock.set(T0 + 1);
    assert_eq!(e.store.complete(&wrong).await.unwrap_err().lease_refusal(), Some(LeaseRefusal::LeaseMismatch));
    wrong.worker_id = "w1".into();
    wrong.lease_id = "01ARZ3NDEKTSV4RRFFQ69G5FAV-l".into();
    assert_eq!(e.store.heartbeat(&wrong).await.unwrap_err().lease_refusal(), Some(LeaseRefusal::LeaseMismatch));
    let mut missing = lease(&job, "w1");
    missing.message_id = format!("{}:c1", shared::ids::ulid(5));
    assert_eq!(code(&e.store.complete(&missing).await.unwrap_err()), "NotFound");
    missing.message_id = "garbage".into();
    assert_eq!(code(&e.store.complete(&missing).await.unwrap_err()), "ValidationError");
}

#[tokio::test]
async fn an_expired_lease_counts_as_an_attempt_and_poison_dead_letters() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    let mut a = enq("poison", "bot", "kills its worker");
    a.max_attempts = Some(3);
    let id = e.store.enqueue(a).await.unwrap().message_id;
    let mut claims = 0;
    for round in 0..10 {
        match e.store.claim(&format!("w{round}"), None).await.unwrap() {
            Some(job) => {
                claims += 1;
                assert_eq!(job.message_id, id);
                assert_eq!(job.attempts, round, "each expiry is one attempt");
                e.clock.advance(360_001); // the worker dies: no heartbeat, no complete
                e.clock.advance(420_000); // and its ownership goes stale
            }
            None => break,
        }
    }
    assert_eq!(claims, 3, "claimed maxAttempts times, then never again");
    let m = e.store.get_message(&id).await.unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::DeadLetter);
    assert_eq!(m.attempts, 3);
    assert_eq!(m.last_error.as_deref(), Some("Lease expired while processing"));
    let c = e.store.get_conversation("poison").await.unwrap().unwrap();
    assert_eq!((c.open_count, c.ready_at, c.lock_lease_id), (0, None, None));
    for w in ["w0", "w1", "w2"] {
        let row = e.store.get_worker(w).await.unwrap().unwrap();
        assert_eq!(row.load, 0, "{w}: the holder of a recovered lease has no job left");
    }
}

#[tokio::test]
async fn a_worker_reclaiming_its_own_expired_lease_holds_one_job() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    e.store.enqueue(enq("c1", "bot", "slow")).await.unwrap();
    let first = e.store.claim("w1", Some("c1")).await.unwrap().unwrap();
    e.clock.advance(360_000);
    let again = e.store.claim("w1", Some("c1")).await.unwrap().expect("the expired lease is claimable again");
    assert_eq!((again.message_id.as_str(), again.attempts), (first.message_id.as_str(), 1));
    assert_eq!(e.store.get_worker("w1").await.unwrap().unwrap().load, 1, "one job, not two");
    e.store.complete(&lease(&again, "w1")).await.unwrap();
    assert_eq!(e.store.get_worker("w1").await.unwrap().unwrap().load, 0);
}

#[tokio::test]
async fn fifo_holds_across_retries() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    let first = e.store.enqueue(enq("c1", "bot", "one")).await.unwrap().message_id;
    e.clock.advance(1);
    let second = e.store.enqueue(enq("c1", "bot", "two")).await.unwrap().message_id;
    let job = e.store.claim("w1", Some("c1")).await.unwrap().unwrap();
    assert_eq!(job.message_id, first);
    let f = e.store.fail(&fail_args(&job, "w1", "transient")).await.unwrap();
    assert!(f.requeued && !f.dead_lettered);
    let at = f.next_scheduled_for.unwrap();
    assert!((T0 + 1 + 1_000..=T0 + 1 + 1_099).contains(&at), "first retry after 1 s + ≤10% jitter: {at}");
    // While the retry waits, the later message does not overtake it.
    assert!(e.store.claim("w1", Some("c1")).await.unwrap().is_none());
    assert!(e.store.claim("w2", None).await.unwrap().is_none());
    e.clock.set(at);
    let again = e.store.claim("w1", Some("c1")).await.unwrap().unwrap();
    assert_eq!((again.message_id.as_str(), again.attempts), (first.as_str(), 1));
    e.store.complete(&lease(&again, "w1")).await.unwrap();
    let next = e.store.claim("w1", Some("c1")).await.unwrap().unwrap();
    assert_eq!(next.message_id, second);
    let m = e.store.get_message(&first).await.unwrap().unwrap();
    assert!(m.last_error.is_none(), "done clears lastError");
}

#[tokio::test]
async fn fail_dead_letters_after_max_attempts_and_redrive_brings_it_back() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    let mut a = enq("c1", "bot", "x");
    a.max_attempts = Some(2);
    let id = e.store.enqueue(a).await.unwrap().message_id;
    let later = e.store.enqueue(enq("c1", "bot", "later")).await.unwrap().message_id;
    let j = e.store.claim("w1", None).await.unwrap().unwrap();
    let f = e.store.fail(&fail_args(&j, "w1", &"e".repeat(10_000))).await.unwrap();
    assert!(f.requeued);
    e.clock.advance(f.next_scheduled_for.unwrap() - T0);
    let j = e.store.claim("w1", Some("c1")).await.unwrap().unwrap();
    assert_eq!(j.message_id, id);
    let f = e.store.fail(&fail_args(&j, "w1", "again")).await.unwrap();
    assert_eq!(f, FailResult { requeued: false, dead_lettered: true, next_scheduled_for: None });
    let m = e.store.get_message(&id).await.unwrap().unwrap();
    assert_eq!((m.status, m.attempts, m.last_error.as_deref()), (MessageStatus::DeadLetter, 2, Some("again")));
    assert_eq!(e.store.queue_stats().await.unwrap().dead_letter, 1);
    // The next message goes on.
    let j2 = e.store.claim("w1", Some("c1")).await.unwrap().unwrap();
    assert_eq!(j2.message_id, later);
    e.store.complete(&lease(&j2, "w1")).await.unwrap();

    let bad = e.store.redrive(RedriveArgs { conversation_id: None, message_ids: None }).await.unwrap_err();
    assert_eq!(code(&bad), "ValidationError");
    let r = e.store.redrive(RedriveArgs { conversation_id: Some("c1".into()), message_ids: None }).await.unwrap();
    assert_eq!(r.message_ids, vec![id.clone()]);
    let m = e.store.get_message(&id).await.unwrap().unwrap();
    assert_eq!((m.status, m.attempts), (MessageStatus::Queued, 0));
    let j3 = e.store.claim("w1", Some("c1")).await.unwrap().unwrap();
    assert_eq!(j3.message_id, id);
    // Redriving something that is not dead-lettered is refused.
    let err = e.store.redrive(RedriveArgs { conversation_id: None, message_ids: Some(vec![id]) }).await.unwrap_err();
    assert_eq!(code(&err), "Conflict");
}

#[tokio::test]
async fn sticky_workers_keep_their_conversation_until_stale() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    e.store.enqueue(enq("c1", "bot", "a")).await.unwrap();
    e.store.enqueue(enq("c2", "bot", "b")).await.unwrap();
    let j = e.store.claim("owner", Some("c1")).await.unwrap().unwrap();
    e.store.complete(&lease(&j, "owner")).await.unwrap();
    e.store.enqueue(enq("c1", "bot", "c")).await.unwrap();
    // I6: another worker cannot take c1 from its fresh owner; it gets c2.
    assert!(e.store.claim("intruder", Some("c1")).await.unwrap().is_none());
    let k = e.store.claim("intruder", None).await.unwrap().unwrap();
    assert_eq!(k.conversation_id, "c2");
    // I5: the owner is assigned to c1 and cannot claim elsewhere, filter or not.
    e.store.complete(&lease(&k, "intruder")).await.unwrap();
    e.store.enqueue(enq("c2", "bot", "d")).await.unwrap();
    assert!(e.store.claim("owner", Some("c2")).await.unwrap().is_none());
    let o = e.store.claim("owner", None).await.unwrap().unwrap();
    assert_eq!(o.conversation_id, "c1", "an assigned worker without a filter is routed to its conversation");
    e.store.complete(&lease(&o, "owner")).await.unwrap();
    // Once the owner is stale, its conversation is open to others.
    e.store.enqueue(enq("c1", "bot", "e")).await.unwrap();
    assert!(e.store.claim("third", Some("c1")).await.unwrap().is_none());
    e.clock.advance(420_000);
    let t = e.store.claim("third", Some("c1")).await.unwrap().unwrap();
    assert_eq!(t.payload.message_text, "e");
}

#[tokio::test]
async fn only_active_workers_claim() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    e.store.enqueue(enq("c1", "bot", "a")).await.unwrap();
    let up = |status| UpsertWorkerArgs::status("w", "fly", status);
    e.store.upsert_worker_state(&up(WorkerStatus::Active)).await.unwrap();
    e.store.upsert_worker_state(&up(WorkerStatus::Draining)).await.unwrap();
    let before = snapshot(&e).await;
    assert!(e.store.claim("w", None).await.unwrap().is_none());
    assert!(e.store.claim("w", Some("c1")).await.unwrap().is_none());
    assert_eq!(snapshot(&e).await, before);
    let err = e.store.upsert_worker_state(&up(WorkerStatus::Active)).await.unwrap_err();
    assert_eq!(err.to_string(), "Worker 'w' cannot transition from 'draining' to 'active'.");
    e.store.upsert_worker_state(&up(WorkerStatus::Stopping)).await.unwrap();
    e.store.upsert_worker_state(&up(WorkerStatus::Stopped)).await.unwrap();
    assert!(e.store.claim("w", None).await.unwrap().is_none(), "stopped is terminal");
    assert!(e.store.claim("fresh", None).await.unwrap().is_some());
}

#[tokio::test]
async fn scheduled_messages_wait_and_do_not_block_earlier_ones() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    let mut later = enq("c1", "bot", "tomorrow");
    later.scheduled_for = Some(T0 + 86_400_000);
    let tomorrow = e.store.enqueue(later).await.unwrap().message_id;
    assert!(e.store.claim("w", None).await.unwrap().is_none(), "not due");
    assert_eq!(e.store.queue_stats().await.unwrap().queued_scheduled, 1);
    e.clock.advance(5);
    let now_msg = e.store.enqueue(enq("c1", "bot", "now")).await.unwrap().message_id;
    let j = e.store.claim("w", None).await.unwrap().expect("the message due now goes first");
    assert_eq!(j.message_id, now_msg);
    e.store.complete(&lease(&j, "w")).await.unwrap();
    assert!(e.store.claim("w", Some("c1")).await.unwrap().is_none());
    e.clock.set(T0 + 86_400_000);
    assert_eq!(e.store.claim("w", Some("c1")).await.unwrap().unwrap().message_id, tomorrow);
}

#[tokio::test]
async fn higher_priority_conversations_are_claimed_first() {
    let e = env_with(one_shard()).await;
    seed_agent(&e.store, "bot", true).await;
    let mut low = enq("low", "bot", "l");
    low.priority = Some(10.0);
    e.store.enqueue(low).await.unwrap();
    e.clock.advance(10);
    let mut high = enq("high", "bot", "h");
    high.priority = Some(90.0);
    e.store.enqueue(high).await.unwrap();
    e.clock.advance(10);
    assert_eq!(e.store.claim("w1", None).await.unwrap().unwrap().conversation_id, "high");
    assert_eq!(e.store.claim("w2", None).await.unwrap().unwrap().conversation_id, "low");
}

#[tokio::test]
async fn the_sweep_recovers_expired_leases_without_reviving_the_worker() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    e.store.enqueue(enq("c1", "bot", "a")).await.unwrap();
    e.store.enqueue(enq("c2", "bot", "b")).await.unwrap();
    let j1 = e.store.claim("w1", Some("c1")).await.unwrap().unwrap();
    e.store.claim("w2", Some("c2")).await.unwrap().unwrap();
    assert_eq!(e.store.release_expired_leases(None).await.unwrap(), ReleaseResult::default(), "nothing expired yet");
    e.clock.advance(200_000);
    e.store.heartbeat(&lease(&j1, "w1")).await.unwrap();
    e.clock.advance(200_000); // w2's lease expired, w1's is alive
    let stats = e.store.queue_stats().await.unwrap();
    assert_eq!((stats.processing, stats.processing_expired), (1, 1));
    let r = e.store.release_expired_leases(Some(10)).await.unwrap();
    assert_eq!(r, ReleaseResult { requeued: 1, dead_lettered: 0, unlocked: 1 });
    let w2 = e.store.get_worker("w2").await.unwrap().unwrap();
    assert_eq!(w2.load(), 0);
    assert_eq!(w2.heartbeat_at, T0, "the sweep does not make a dead worker look alive (W7)");
    let stats = e.store.queue_stats().await.unwrap();
    // Issue 7 §2.4: the sweep requeues with the same backoff as `fail` (first retry: 1 s + jitter).
    assert_eq!((stats.queued_scheduled, stats.processing, stats.processing_expired), (1, 1, 0));
    e.clock.advance(1_100);
    // The recovered message is open to anyone: its owner lost the conversation with the lease.
    let again = e.store.claim("w3", None).await.unwrap().unwrap();
    assert_eq!((again.conversation_id.as_str(), again.attempts), ("c2", 1));
}

#[tokio::test]
async fn append_and_has_queued() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    let missing = e
        .store
        .append_messages(AppendArgs {
            conversation_id: "nope".into(),
            workspace_id: None,
            messages: vec![NewHistoryEntry { role: HistoryRole::User, content: "x".into(), at: None }],
            holder: None,
        })
        .await
        .unwrap();
    assert_eq!(missing, AppendResult { updated: false, message_count: 0 });
    assert!(!e.store.has_queued("nope").await.unwrap());
    e.store.enqueue(enq("c1", "bot", "a")).await.unwrap();
    let entries = vec![
        NewHistoryEntry { role: HistoryRole::User, content: "hello".into(), at: None },
        NewHistoryEntry { role: HistoryRole::Assistant, content: "hi!".into(), at: None },
        NewHistoryEntry { role: HistoryRole::Tool, content: "t".into(), at: Some(42) },
    ];
    let r = e
        .store
        .append_messages(AppendArgs {
            conversation_id: "c1".into(),
            workspace_id: None,
            messages: entries,
            holder: None,
        })
        .await;
    assert_eq!(r.unwrap(), AppendResult { updated: true, message_count: 3 });
    let h = e.store.list_history("c1", 10).await.unwrap();
    assert_eq!(
        h.iter().map(|x| (x.content.as_str(), x.at)).collect::<Vec<_>>(),
        vec![("hello", T0), ("hi!", T0 + 1), ("t", 42)]
    );
    let too_many =
        (0..51).map(|_| NewHistoryEntry { role: HistoryRole::User, content: "x".into(), at: None }).collect();
    let err = e.store.append_messages(AppendArgs {
        conversation_id: "c1".into(),
        workspace_id: None,
        messages: too_many,
        holder: None,
    });
    assert_eq!(code(&err.await.unwrap_err()), "ValidationError");
    let huge = vec![NewHistoryEntry { role: HistoryRole::User, content: "x".repeat(70_000), at: None }];
    let err = e.store.append_messages(AppendArgs {
        conversation_id: "c1".into(),
        workspace_id: None,
        messages: huge,
        holder: None,
    });
    assert_eq!(code(&err.await.unwrap_err()), "PayloadTooLarge");
    assert_eq!(e.store.list_history("c1", 10).await.unwrap().len(), 3, "refused appends add nothing");
}

#[tokio::test]
async fn system_prompt_from_runtime_config_is_appended() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    e.store
        .set_message_config(shared::agents::model::MessageConfig {
            system_prompt: Some("  Answer in French. ".into()),
            telegram_attachment_retention_ms: Some(-5),
        })
        .await
        .unwrap();
    let stored = e.store.message_config().await.unwrap().unwrap();
    assert_eq!(stored.system_prompt.as_deref(), Some("Answer in French."));
    assert_eq!(stored.telegram_attachment_retention_ms, None);
    e.store.enqueue(enq("c1", "bot", "hello ")).await.unwrap();
    let j = e.store.claim("w", None).await.unwrap().unwrap();
    assert_eq!(j.payload.message_text, "hello\n\nAnswer in French.");
    assert_eq!(j.payload.metadata.unwrap()["providerUserId"], "user-1");
}

#[tokio::test]
async fn listings_are_ordered_and_clamped() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    for i in 0..5 {
        e.store.enqueue(enq("c1", "bot", &format!("m{i}"))).await.unwrap();
        e.clock.advance(1);
    }
    let rows = e
        .store
        .list_conversation_items(&ListConversationArgs { conversation_id: "c1".into(), limit: Some(3) })
        .await
        .unwrap();
    let texts: Vec<_> = rows.iter().map(|r| r.payload.as_ref().unwrap().message_text.clone()).collect();
    assert_eq!(texts, vec!["m4", "m3", "m2"], "newest first");
    let q = e.store.list_jobs_by_status(&ListByStatusArgs { status: "queued".into(), limit: Some(0) }).await.unwrap();
    assert_eq!(q.len(), 1, "limit is clamped to at least 1");
    let all = e.store.list_jobs_by_status(&ListByStatusArgs { status: "queued".into(), limit: None }).await.unwrap();
    assert_eq!(all.iter().map(|r| r.scheduled_for).collect::<Vec<_>>(), (0..5).map(|i| T0 + i).collect::<Vec<_>>());
    let err = e.store.list_jobs_by_status(&ListByStatusArgs { status: "weird".into(), limit: None }).await.unwrap_err();
    assert_eq!(code(&err), "ValidationError");
}

/// Claim and complete cost the same number of requests at any depth.
#[tokio::test]
async fn request_counts_do_not_depend_on_depth() {
    let e = env().await;
    seed_agent(&e.store, "bot", true).await;
    let mut per_depth = Vec::new();
    for (round, depth) in [10usize, 300].into_iter().enumerate() {
        let cid = format!("deep-{round}");
        for i in 0..depth {
            e.store.enqueue(enq(&format!("{cid}-{}", i % 20), "bot", "x")).await.unwrap();
        }
        e.store.enqueue(enq(&cid, "bot", "mine")).await.unwrap();
        let w = format!("sticky-{round}");
        e.counter.reset();
        let j = e.store.claim(&w, Some(&cid)).await.unwrap().unwrap();
        e.store.complete(&lease(&j, &w)).await.unwrap();
        per_depth.push(e.counter.total());
    }
    assert_eq!(per_depth, vec![3, 3], "sticky claim (Query + Transact) + complete (Transact) at depth 10 and 300");
}

// ------------------------------------------------------------------ issue 7 §2 (through the
// op envelope and the worker routes)

use serde_json::{Value, json};

async fn op(a: &AppEnv, op: &str, args: Value) -> Value {
    let payload = json!({"op": op, "args": args});
    // The sweeps are the cleanup function's ops.
    let r = if cleanup::op_names().contains(&op) { a.cleanup(payload).await } else { invoke(&a.app, payload).await };
    r.unwrap_or_else(|e| panic!("{op}: {e:?}"))
}

async fn op_err(a: &AppEnv, op: &str, args: Value) -> String {
    let e = invoke(&a.app, json!({"op": op, "args": args})).await.expect_err("refused");
    format!("{e:?}")
}

fn msg(cid: &str, text: &str) -> Value {
    json!({"conversationId": cid, "agentKey": "bot",
           "payload": {"provider": "telegram", "providerUserId": "u1", "messageText": text}})
}

async fn worker_claim(a: &AppEnv, token: &str, body: Value) -> Value {
    let (st, job) = a.post("claim", token, body).await;
    assert_eq!(st, 200, "{job}");
    job
}

/// Defect 1: a worker assigned by `upsertWorkerState` (reconcile pre-assigns every machine it
/// spawns) keeps others out of its conversation, as if it had claimed there.
#[tokio::test]
async fn a_pre_assigned_worker_keeps_its_conversation() {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    op(
        &a,
        "upsertWorkerState",
        json!({"workerId": "w1", "provider": "fly", "status": "active", "load": 0,
               "assignment": {"conversationId": "c1", "agentKey": "bot", "leaseId": "spawn:w1"}}),
    )
    .await;
    let t1 = a.mint("w1").await;
    let t2 = a.mint("w2").await;
    let id = op(&a, "enqueue", msg("c1", "for w1")).await["messageId"].as_str().unwrap().to_string();
    assert_eq!(worker_claim(&a, &t2, json!({})).await, Value::Null, "another worker may not take c1");
    assert_eq!(worker_claim(&a, &t2, json!({"conversationId": "c1"})).await, Value::Null);
    let job = worker_claim(&a, &t1, json!({})).await;
    assert_eq!(job["messageId"], id, "the assigned worker gets its conversation's message");
}

/// Defect 1: an owner that only sends the idle `worker-heartbeat` stays the owner after the
/// lease-call freshness window; once its heartbeat is stale too, others may take over.
#[tokio::test]
async fn an_owner_alive_by_worker_heartbeat_keeps_its_conversation() {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    let t1 = a.mint("w1").await;
    let t2 = a.mint("w2").await;
    op(&a, "enqueue", msg("c1", "one")).await;
    let j = worker_claim(&a, &t1, json!({})).await;
    let (st, _) = a.post("complete", &t1, json!({"messageId": j["messageId"], "leaseId": j["leaseId"]})).await;
    assert_eq!(st, 200);
    a.e.clock.advance(300_000);
    assert_eq!(a.post("worker-heartbeat", &t1, json!({})).await.0, 200);
    a.e.clock.advance(200_000); // past the lease-call window (420 s), heartbeat 200 s old
    let id = op(&a, "enqueue", msg("c1", "two")).await["messageId"].as_str().unwrap().to_string();
    assert_eq!(worker_claim(&a, &t2, json!({})).await, Value::Null, "the owner is alive");
    assert_eq!(worker_claim(&a, &t2, json!({"conversationId": "c1"})).await, Value::Null);
    let j = worker_claim(&a, &t1, json!({})).await;
    assert_eq!(j["messageId"], id);
    let (st, _) = a.post("complete", &t1, json!({"messageId": j["messageId"], "leaseId": j["leaseId"]})).await;
    assert_eq!(st, 200);
    // The owner goes quiet altogether: after the stale window its conversation is open.
    let id = op(&a, "enqueue", msg("c1", "three")).await["messageId"].as_str().unwrap().to_string();
    a.e.clock.advance(420_000);
    assert_eq!(worker_claim(&a, &t2, json!({})).await["messageId"], id);
}

/// Defects 2 and 4: the sweep releases the old holder's assignment (it holds no lock any more)
/// and requeues the message with the same backoff as `fail`.
#[tokio::test]
async fn the_sweep_releases_the_assignment_and_backs_off() {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    let t1 = a.mint("w1").await;
    let id = op(&a, "enqueue", msg("c1", "slow")).await["messageId"].as_str().unwrap().to_string();
    let j = worker_claim(&a, &t1, json!({})).await;
    assert_eq!(j["messageId"], id);
    a.e.clock.advance(360_001);
    let r = op(&a, "releaseExpiredLeases", json!({})).await;
    assert_eq!((r["requeued"].as_u64(), r["unlocked"].as_u64()), (Some(1), Some(1)), "{r}");
    let now = T0 + 360_001;
    let m = a.e.store.get_message(&id).await.unwrap().unwrap();
    assert_eq!((m.status, m.attempts), (MessageStatus::Queued, 1));
    assert!((now + 1_000..=now + 1_099).contains(&m.scheduled_for), "backoff of a first retry: {}", m.scheduled_for);
    assert_eq!(m.next_retry_at, Some(m.scheduled_for));
    let w = op(&a, "getWorker", json!({"workerId": "w1"})).await;
    assert_eq!(w["load"], 0);
    assert!(w.get("assignedConversationId").is_none_or(Value::is_null), "assignment released: {w}");
    // The slow but alive worker claims again: elsewhere at once, its old message when due.
    let other = op(&a, "enqueue", msg("c2", "next")).await["messageId"].as_str().unwrap().to_string();
    let j2 = worker_claim(&a, &t1, json!({})).await;
    assert_eq!(j2["messageId"], other);
    let (st, _) = a.post("complete", &t1, json!({"messageId": j2["messageId"], "leaseId": j2["leaseId"]})).await;
    assert_eq!(st, 200);
    assert_eq!(worker_claim(&a, &t1, json!({"conversationId": "c1"})).await, Value::Null, "not due yet");
}

/// Defect 5: a message left `processing` without a lock (a partial write, a hand edit) is
/// repaired by the sweep, and a claim takes it instead of giving up.
#[tokio::test]
async fn a_processing_message_without_a_lock_is_repaired() {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    let orphan = |id: String, with_lease: bool| {
        let store = a.e.store.clone();
        let table = a.e.tables.queue.clone();
        async move {
            let (ulid, cid) = id.split_once(':').unwrap();
            let mut u = store
                .client
                .update_item()
                .table_name(table)
                .key("pk", shared::adapters::dynamo::s(format!("C#{cid}")))
                .key("sk", shared::adapters::dynamo::s(format!("M#{ulid}")))
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":p", shared::adapters::dynamo::s("processing"))
                // Status and its index partition change together, as every write of the store does.
                .expression_attribute_values(
                    ":sp",
                    shared::adapters::dynamo::s(shared::adapters::dynamo::keys::status_part(
                        MessageStatus::Processing,
                        ulid,
                    )),
                );
            u = if with_lease {
                u.update_expression("SET #st = :p, statusPart = :sp, claimedBy = :w, leaseId = :l, leaseExpiresAt = :t")
                    .expression_attribute_values(":w", shared::adapters::dynamo::s("ghost"))
                    .expression_attribute_values(":l", shared::adapters::dynamo::s("01ARZ3NDEKTSV4RRFFQ69G5FAV-l"))
                    .expression_attribute_values(":t", shared::adapters::dynamo::n(T0 - 1))
            } else {
                u.update_expression("SET #st = :p, statusPart = :sp")
            };
            u.send().await.unwrap();
        }
    };
    let c1 = op(&a, "enqueue", msg("c1", "edited")).await["messageId"].as_str().unwrap().to_string();
    let c2 = op(&a, "enqueue", msg("c2", "edited too")).await["messageId"].as_str().unwrap().to_string();
    orphan(c1.clone(), true).await;
    orphan(c2.clone(), false).await;
    // The sweep's orphan pass reads one status shard a call, in turn: within 32 calls it has
    // seen every shard (issue 12), and it requeues each orphan once.
    let mut requeued = 0;
    for _ in 0..shared::adapters::dynamo::keys::STATUS_SHARDS {
        requeued += op(&a, "releaseExpiredLeases", json!({})).await["requeued"].as_u64().unwrap();
    }
    assert_eq!(requeued, 2);
    for id in [&c1, &c2] {
        let m = a.e.store.get_message(id).await.unwrap().unwrap();
        assert_eq!((m.status, m.attempts, m.claimed_by), (MessageStatus::Queued, 1, None));
    }
    a.e.clock.advance(2_000);
    let t = a.mint("w1").await;
    let j = worker_claim(&a, &t, json!({"conversationId": "c1"})).await;
    assert_eq!(j["messageId"], c1);
    // A claim that finds such a head takes it (the expiry counts) instead of giving up.
    let c3 = op(&a, "enqueue", msg("c3", "edited again")).await["messageId"].as_str().unwrap().to_string();
    orphan(c3.clone(), true).await;
    let t2 = a.mint("w2").await;
    let j = worker_claim(&a, &t2, json!({"conversationId": "c3"})).await;
    assert_eq!((j["messageId"].as_str(), j["attempts"].as_u64()), (Some(c3.as_str()), Some(1)));
}

/// Defect 11: the agent is checked before the payload; the sweep leaves a stopped worker's load
/// alone; list ops omit absent fields; `listQueueItemsForConversation` is newest first by due time.
#[tokio::test]
async fn smaller_defects_of_issue_7() {
    let a = app_env().await;
    seed_agent(&a.e.store, "bot", true).await;
    let before = snapshot(&a.e).await;
    let mut bad = msg("c1", "x");
    bad["agentKey"] = json!("ghost");
    bad["payload"]["providerUserId"] = json!("  ");
    let e = op_err(&a, "enqueue", bad.clone()).await;
    assert!(e.contains("NotFound") && e.contains("Agent profile 'ghost' not found"), "{e}");
    bad["payload"].as_object_mut().unwrap().remove("providerUserId");
    let e = op_err(&a, "enqueue", bad).await;
    assert!(e.contains("Agent profile 'ghost' not found"), "{e}");
    assert_eq!(snapshot(&a.e).await, before, "refusals write nothing");

    // A stopped worker's load is left alone by the sweep.
    op(&a, "enqueue", msg("c1", "x")).await;
    let t = a.mint("w1").await;
    worker_claim(&a, &t, json!({})).await;
    for st in ["draining", "stopping", "stopped"] {
        op(&a, "upsertWorkerState", json!({"workerId": "w1", "provider": "fly", "status": st, "load": 1})).await;
    }
    a.e.clock.advance(360_001);
    assert_eq!(op(&a, "releaseExpiredLeases", json!({})).await["requeued"], 1);
    assert_eq!(op(&a, "getWorker", json!({"workerId": "w1"})).await["load"], 1, "stopped: left alone");

    // Absent fields are omitted, not null.
    let rows = op(&a, "listJobsByStatus", json!({"status": "queued"})).await;
    let row = rows[0].as_object().unwrap();
    assert!(row.values().all(|v| !v.is_null()), "{rows}");
    let mut later = msg("c9", "later");
    later["scheduledFor"] = json!(T0 + 900_000);
    op(&a, "enqueue", later).await;
    a.e.clock.advance(1);
    op(&a, "enqueue", msg("c9", "now")).await;
    a.e.clock.advance(1);
    let mut mid = msg("c9", "mid");
    mid["scheduledFor"] = json!(T0 + 800_000);
    op(&a, "enqueue", mid).await;
    let rows = op(&a, "listQueueItemsForConversation", json!({"conversationId": "c9"})).await;
    let texts: Vec<_> = rows.as_array().unwrap().iter().map(|r| r["payload"]["messageText"].clone()).collect();
    assert_eq!(texts, vec![json!("later"), json!("mid"), json!("now")], "newest first by due time");
    assert!(rows.as_array().unwrap().iter().all(|r| r.as_object().unwrap().values().all(|v| !v.is_null())));
}

/// Defect 3: ties go to the earlier due time, then insertion order, every time; a conversation's
/// priority is its current head's.
#[tokio::test]
async fn priority_order_is_deterministic_and_follows_the_head() {
    let a = app_env_with(shared::config::Policies {
        workers: shared::workers::model::WorkerPolicy { auth_cache_ms: 0, ..Default::default() },
        ..one_shard()
    })
    .await;
    seed_agent(&a.e.store, "bot", true).await;
    for round in 0..3 {
        let ids: Vec<String> = (0..6).map(|i| format!("r{round}-c{i}")).collect();
        for c in &ids {
            op(&a, "enqueue", msg(c, "x")).await;
        }
        a.e.clock.advance(1);
        for (i, c) in ids.iter().enumerate() {
            let t = a.mint(&format!("r{round}-w{i}")).await;
            assert_eq!(worker_claim(&a, &t, json!({})).await["conversationId"], json!(c), "round {round}");
        }
    }
    // The head's priority counts: c's head is low, the next message high.
    let mut low = msg("c", "low");
    low["priority"] = json!(10);
    op(&a, "enqueue", low).await;
    let mut high = msg("c", "high");
    high["priority"] = json!(90);
    op(&a, "enqueue", high).await;
    let t = a.mint("first").await;
    let j = worker_claim(&a, &t, json!({"conversationId": "c"})).await;
    assert_eq!(a.post("complete", &t, json!({"messageId": j["messageId"], "leaseId": j["leaseId"]})).await.0, 200);
    let mut mid = msg("d", "mid");
    mid["priority"] = json!(50);
    op(&a, "enqueue", mid).await;
    a.e.clock.advance(420_001); // "first" is gone: c is open to anyone
    let t = a.mint("next").await;
    assert_eq!(worker_claim(&a, &t, json!({})).await["payload"]["messageText"], "high");
}

/// Defect 3: priority is global, not ranked within the first page of ready conversations. Thirty
/// conversations wait at priority 50, then one arrives at 100: the 100 is claimed first, then the
/// fifties in insertion order.
#[tokio::test]
async fn priority_is_global_beyond_the_first_page() {
    let e = env_with(one_shard()).await;
    seed_agent(&e.store, "bot", true).await;
    for i in 0..30 {
        e.store.enqueue(enq(&format!("p50-{i:02}"), "bot", "x")).await.unwrap();
        e.clock.advance(1);
    }
    let mut high = enq("p100", "bot", "urgent");
    high.priority = Some(100.0);
    e.store.enqueue(high).await.unwrap();
    e.clock.advance(1);
    assert_eq!(e.store.claim("w-first", None).await.unwrap().unwrap().conversation_id, "p100");
    for i in 0..5 {
        let j = e.store.claim(&format!("w{i}"), None).await.unwrap().unwrap();
        assert_eq!(j.conversation_id, format!("p50-{i:02}"));
    }
}

/// A conversation that was not due when written (scheduled, backing off, or written before the
/// `due` index existed) joins the global order when its time comes, at its own priority.
#[tokio::test]
async fn conversations_not_due_when_written_are_promoted_in_order() {
    let e = env_with(one_shard()).await;
    seed_agent(&e.store, "bot", true).await;
    let mut later = enq("later", "bot", "scheduled");
    later.priority = Some(90.0);
    later.scheduled_for = Some(T0 + 5_000);
    e.store.enqueue(later).await.unwrap();
    for c in ["now-1", "now-2", "now-3"] {
        e.store.enqueue(enq(c, "bot", "x")).await.unwrap();
    }
    // A conversation as the previous code wrote it: in `r0`, without a rank.
    e.store.enqueue(enq("legacy", "bot", "old")).await.unwrap();
    e.store
        .client
        .update_item()
        .table_name(&e.tables.queue)
        .key("pk", shared::adapters::dynamo::s("C#legacy"))
        .key("sk", shared::adapters::dynamo::s("CONV"))
        .update_expression("SET readyShard = :r REMOVE dueRank")
        .expression_attribute_values(":r", shared::adapters::dynamo::s("r0"))
        .send()
        .await
        .unwrap();
    e.clock.advance(1);
    assert_eq!(e.store.claim("w1", None).await.unwrap().unwrap().conversation_id, "now-1");
    e.clock.advance(5_000);
    // Due now, and ahead of the fifties by priority.
    assert_eq!(e.store.claim("w2", None).await.unwrap().unwrap().conversation_id, "later");
    assert_eq!(e.store.claim("w3", None).await.unwrap().unwrap().conversation_id, "now-2");
    assert_eq!(e.store.claim("w4", None).await.unwrap().unwrap().conversation_id, "now-3");
    assert_eq!(e.store.claim("w5", None).await.unwrap().unwrap().conversation_id, "legacy");
    assert!(e.store.claim("w6", None).await.unwrap().is_none());
}

/// A message enqueued while the head is being processed, into a conversation with nothing else
/// open, gives the conversation its priority when the head leaves.
#[tokio::test]
async fn a_message_enqueued_behind_a_claimed_head_sets_the_next_priority() {
    let e = env_with(one_shard()).await;
    seed_agent(&e.store, "bot", true).await;
    let mut low = enq("c", "bot", "low");
    low.priority = Some(10.0);
    e.store.enqueue(low).await.unwrap();
    e.clock.advance(1);
    let j = e.store.claim("owner", Some("c")).await.unwrap().unwrap();
    let mut high = enq("c", "bot", "high");
    high.priority = Some(95.0);
    e.store.enqueue(high).await.unwrap();
    e.store.enqueue(enq("d", "bot", "mid")).await.unwrap();
    e.store.complete(&lease(&j, "owner")).await.unwrap();
    let conv = e.store.get_conversation("c").await.unwrap().unwrap();
    assert_eq!(conv.priority, Some(95.0));
    e.clock.advance(420_001); // the owner is gone: c is open to anyone
    assert_eq!(e.store.claim("other", None).await.unwrap().unwrap().payload.message_text, "high");
}

/// A queue table made before the `due` index existed (a kept `--data-dir`, an older deployment's
/// local tables) gets the index when the tables are ensured again.
#[tokio::test]
async fn tables_made_by_an_older_version_get_the_missing_index() {
    use shared::adapters::dynamo::schema;
    let e = env().await;
    let name = format!("{}-old", e.tables.queue);
    let full = schema::TABLES.iter().find(|t| t.logical == schema::QUEUE).unwrap();
    let gsis: Vec<schema::IndexDef> = full.gsis.iter().filter(|g| g.name != schema::IDX_DUE).cloned().collect();
    let attrs: Vec<(&str, schema::AttrType)> =
        full.attributes.iter().filter(|(a, _)| *a != "dueRank").cloned().collect();
    let old = schema::TableDef {
        gsis: Box::leak(gsis.into_boxed_slice()),
        attributes: Box::leak(attrs.into_boxed_slice()),
        ..full.clone()
    };
    assert!(schema::create_table(&e.store.client, &old, &name).await.unwrap());
    let indexes = |d: aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput| -> Vec<String> {
        d.table.unwrap().global_secondary_indexes.unwrap().into_iter().filter_map(|g| g.index_name).collect()
    };
    let before = indexes(e.store.client.describe_table().table_name(&name).send().await.unwrap());
    assert!(!before.contains(&"due".to_string()));
    assert!(!schema::create_table(&e.store.client, full, &name).await.unwrap());
    let after = indexes(e.store.client.describe_table().table_name(&name).send().await.unwrap());
    assert!(after.contains(&"due".to_string()), "{after:?}");
    assert_eq!(after.len(), full.gsis.len());
}

/// A control table made before it had a TTL (a kept `--data-dir` from before pairing codes) gets
/// the TTL when the tables are ensured again, so codes and attempt counters are cleaned up.
#[tokio::test]
async fn tables_made_by_an_older_version_get_the_missing_ttl() {
    use aws_sdk_dynamodb::types::TimeToLiveStatus;
    use shared::adapters::dynamo::schema;
    let e = env().await;
    let name = format!("{}-old-ttl", e.tables.control);
    let full = schema::TABLES.iter().find(|t| t.logical == schema::CONTROL).unwrap();
    let old = schema::TableDef { ttl_attribute: None, ..full.clone() };
    assert!(schema::create_table(&e.store.client, &old, &name).await.unwrap());
    let status = || async {
        e.store
            .client
            .describe_time_to_live()
            .table_name(&name)
            .send()
            .await
            .unwrap()
            .time_to_live_description
            .and_then(|d| d.time_to_live_status)
    };
    assert!(!matches!(status().await, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)));
    assert!(!schema::create_table(&e.store.client, full, &name).await.unwrap());
    assert!(matches!(status().await, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)));
    // Ensuring again changes nothing (and does not fail on an already enabled TTL).
    assert!(!schema::create_table(&e.store.client, full, &name).await.unwrap());
}
