//! The `cleanup` function's `runFlyCleanup` through `cleanup::handle`, against the fake Fly API
//! and DynamoDB Local: report counts, dry run, tag scoping, rows updated, failures reported.

use integration_tests::fake_fly::{FakeFly, Fault};
use integration_tests::*;
use serde_json::{Value, json};
use shared::reconcile::provider::{DEPLOYMENT_TAG, WORKER_TAG};
use shared::workers::model::{UpsertWorkerArgs, WorkerStatus};

const TOKEN: &str = "fly-cleanup-token-SENTINEL";

fn tags(dep: &str, worker: &str) -> Value {
    json!({DEPLOYMENT_TAG: dep, WORKER_TAG: worker})
}

/// A worker row `active` on `machine_id` (then `draining` when asked).
async fn row(a: &AppEnv, worker: &str, machine_id: &str, draining: bool) {
    let mut u = UpsertWorkerArgs::status(worker, "fly", WorkerStatus::Active);
    u.machine_id = Some(machine_id.into());
    u.app_name = Some("app1".into());
    a.e.store.upsert_worker_state(&u).await.unwrap();
    if draining {
        a.e.store.upsert_worker_state(&UpsertWorkerArgs::status(worker, "fly", WorkerStatus::Draining)).await.unwrap();
    }
}

async fn status(a: &AppEnv, worker: &str) -> (WorkerStatus, Option<i64>) {
    let w = a.e.store.get_worker(worker).await.unwrap().unwrap();
    (w.status, w.stopped_at)
}

async fn run(a: &AppEnv, fake: &FakeFly, args: Value) -> Value {
    cleanup::handle(&a.cleanup_ctx_at(&fake.url), json!({"op": "runFlyCleanup", "args": args})).await.unwrap()
}

/// Two machines of this deployment (one active with a tagged volume, one stopped with an
/// untagged volume it mounts), one of another deployment, one untagged, an orphan volume of this
/// deployment and an untagged free volume.
struct World {
    a_m: String,
    b_m: String,
    other_m: String,
    untagged_m: String,
    a_v: String,
    b_v: String,
    other_v: String,
    untagged_v: String,
    orphan_v: String,
}

async fn world(a: &AppEnv, fake: &FakeFly) -> World {
    let a_m = fake.seed_machine("app1", "wA", "started", tags("dep-a", "wA"));
    let b_m = fake.seed_machine("app1", "wB", "stopped", tags("dep-a", "wB"));
    let other_m = fake.seed_machine("app1", "wX", "started", tags("dep-b", "wX"));
    let untagged_m = fake.seed_machine("app1", "app", "started", json!({}));
    let w = World {
        a_v: fake.seed_volume("app1", "va", Some(&a_m), json!({DEPLOYMENT_TAG: "dep-a"})),
        b_v: fake.seed_volume("app1", "vb", Some(&b_m), json!(null)),
        other_v: fake.seed_volume("app1", "vx", Some(&other_m), json!({DEPLOYMENT_TAG: "dep-b"})),
        untagged_v: fake.seed_volume("app1", "vu", None, json!(null)),
        orphan_v: fake.seed_volume("app1", "vo", None, json!({DEPLOYMENT_TAG: "dep-a"})),
        a_m,
        b_m,
        other_m,
        untagged_m,
    };
    row(a, "wA", &w.a_m, false).await;
    row(a, "wB", &w.b_m, true).await;
    row(a, "wX", &w.other_m, false).await;
    w
}

fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn cleanup_destroys_this_deployments_machines_and_volumes_reports_and_stops_their_rows() {
    let a = app_env().await;
    let fake = FakeFly::start(&["app1"]).await;
    let w = world(&a, &fake).await;
    a.secret("fly.apiToken", TOKEN).await;
    let r = run(&a, &fake, json!({})).await;
    assert_eq!(r["scope"], "deployment");
    assert_eq!((r["machinesFound"].as_u64(), r["machinesSkipped"].as_u64()), (Some(4), Some(2)));
    assert_eq!(ids(&r["machineIdsDeleted"]), sorted(vec![w.a_m.clone(), w.b_m.clone()]));
    assert_eq!((r["machinesDeleted"].as_u64(), r["machinesRemaining"].as_u64()), (Some(2), Some(0)));
    assert_eq!((r["volumesFound"].as_u64(), r["volumesSkipped"].as_u64()), (Some(5), Some(2)));
    assert_eq!(ids(&r["volumeIdsDeleted"]), sorted(vec![w.a_v.clone(), w.b_v.clone(), w.orphan_v.clone()]));
    assert_eq!((r["volumesDeleted"].as_u64(), r["volumesRemaining"].as_u64()), (Some(3), Some(0)));
    assert_eq!(r["errors"], json!([]), "{r}");
    assert_eq!(r["warnings"], json!([]), "{r}");
    assert_eq!(ids(&r["workerIdsStopped"]), vec!["wA", "wB"]);
    // Another deployment's and untagged machines and volumes survive, and so does their row.
    assert_eq!(sorted(fake.machine_ids()), sorted(vec![w.other_m.clone(), w.untagged_m.clone()]));
    assert_eq!(sorted(fake.volume_ids()), sorted(vec![w.other_v.clone(), w.untagged_v.clone()]));
    assert!(fake.requests().iter().all(|q| !q.path.contains(&w.other_m) && !q.path.contains(&w.untagged_m)));
    assert_eq!(status(&a, "wA").await, (WorkerStatus::Stopped, Some(T0)));
    assert_eq!(status(&a, "wB").await.0, WorkerStatus::Stopped);
    assert_eq!(status(&a, "wX").await, (WorkerStatus::Active, None));
    assert!(!r.to_string().contains(TOKEN));
    // A second run finds nothing of ours.
    let r = run(&a, &fake, json!({})).await;
    assert_eq!((r["machinesDeleted"].as_u64(), r["volumesDeleted"].as_u64()), (Some(0), Some(0)));

    // The full-app wipe only with the explicit flag: everything goes; rows of machines without
    // a worker tag are not touched, wX's row (its machine had the tag) is stopped.
    let r = run(&a, &fake, json!({"allMachinesInApp": true})).await;
    assert_eq!(r["scope"], "app");
    assert_eq!((r["machinesDeleted"].as_u64(), r["volumesDeleted"].as_u64()), (Some(2), Some(2)));
    assert!(fake.machine_ids().is_empty() && fake.volume_ids().is_empty());
    assert_eq!(status(&a, "wX").await.0, WorkerStatus::Stopped);
}

#[tokio::test]
async fn cleanup_dry_run_reports_and_deletes_nothing() {
    let a = app_env().await;
    let fake = FakeFly::start(&["app1"]).await;
    let w = world(&a, &fake).await;
    // Without the token secret: refused before any Fly call.
    let e = cleanup::handle(&a.cleanup_ctx_at(&fake.url), json!({"op": "runFlyCleanup", "args": {"dryRun": true}}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError");
    assert!(e.to_string().contains("fly.apiToken"), "{e}");
    assert!(fake.requests().is_empty());
    a.secret("fly.apiToken", TOKEN).await;
    let before = snapshot(&a.e).await;
    let r = run(&a, &fake, json!({"dryRun": true})).await;
    assert_eq!(r["dryRun"], true);
    assert_eq!(ids(&r["machineIdsTargeted"]), sorted(vec![w.a_m.clone(), w.b_m.clone()]));
    assert_eq!(ids(&r["volumeIdsTargeted"]), sorted(vec![w.a_v, w.b_v, w.orphan_v]));
    assert_eq!((r["machinesDeleted"].as_u64(), r["volumesDeleted"].as_u64()), (Some(0), Some(0)));
    assert_eq!(fake.writes(), 0, "no POST or DELETE reached Fly");
    assert_eq!(fake.machine_ids().len(), 4);
    assert_eq!(fake.volume_ids().len(), 5);
    assert!(snapshot(&a.e).await == before, "no row written");
    // The app name is required (argument or FLY_APP_NAME); an unknown app is reported, not thrown.
    let mut ctx = a.cleanup_ctx_at(&fake.url);
    ctx.fly.app_name = None;
    let e = cleanup::handle(&ctx, json!({"op": "runFlyCleanup", "args": {"dryRun": true}})).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError");
    let r = run(&a, &fake, json!({"appName": "nope", "dryRun": true})).await;
    assert!(r["errors"][0].as_str().unwrap().contains("Machine inventory failed"), "{r}");
}

#[tokio::test]
async fn cleanup_reports_a_500_during_teardown_and_keeps_that_row() {
    let a = app_env().await;
    let fake = FakeFly::start(&["app1"]).await;
    let bad = fake.seed_machine("app1", "w1", "started", tags("dep-a", "w1"));
    let good = fake.seed_machine("app1", "w2", "started", tags("dep-a", "w2"));
    let stuck = fake.seed_machine("app1", "w3", "started", tags("dep-a", "w3"));
    let bad_v = fake.seed_volume("app1", "v1", Some(&bad), json!({DEPLOYMENT_TAG: "dep-a"}));
    fake.set_stuck(&stuck);
    for (wk, m) in [("w1", &bad), ("w2", &good), ("w3", &stuck)] {
        row(&a, wk, m, false).await;
    }
    a.secret("fly.apiToken", TOKEN).await;
    // Every DELETE of the bad machine fails with 500 (graceful and forced).
    fake.fault(Fault::status("DELETE", &format!("/machines/{bad}"), 500, 100));
    let r = run(&a, &fake, json!({"machineConcurrency": 2})).await;
    let errors = r["errors"].to_string();
    assert!(errors.contains(&format!("Machine {bad}: destroy failed")) && errors.contains("(500)"), "{r}");
    assert_eq!(ids(&r["machineIdsDeleted"]), sorted(vec![good.clone(), stuck.clone()]));
    assert_eq!(r["machineIdsRemaining"], json!([bad]));
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains(&format!("Machine {stuck}: graceful stop did not finish")), "{r}");
    assert!(warnings.contains("left 1 machine(s) after verification"), "{r}");
    assert!(warnings.contains(&format!("Volume {bad_v}: kept")), "{r}");
    // The machine that may still run keeps its row; the destroyed ones are stopped.
    assert_eq!(status(&a, "w1").await.0, WorkerStatus::Active);
    assert_eq!(status(&a, "w2").await.0, WorkerStatus::Stopped);
    assert_eq!(status(&a, "w3").await.0, WorkerStatus::Stopped);
    assert!(fake.machine(&bad).is_some() && fake.volume_ids() == vec![bad_v]);
    assert!(!r.to_string().contains(TOKEN));
}

#[tokio::test]
async fn cleanup_keeps_its_report_when_a_verification_listing_fails() {
    let a = app_env().await;
    let fake = FakeFly::start(&["app1"]).await;
    let m = fake.seed_machine("app1", "w1", "stopped", tags("dep-a", "w1"));
    let v = fake.seed_volume("app1", "v1", None, json!({DEPLOYMENT_TAG: "dep-a"}));
    row(&a, "w1", &m, false).await;
    a.secret("fly.apiToken", TOKEN).await;
    // The inventory listing passes; the verification listings fail (machines and volumes).
    fake.fault(Fault::status("GET", "/v1/apps/app1/machines", 503, 100).exact().after(1));
    fake.fault(Fault::status("GET", "/v1/apps/app1/volumes", 503, 100).exact().after(1));
    let r = run(&a, &fake, json!({})).await;
    assert_eq!(r["machineIdsDeleted"], json!([m]));
    assert_eq!(r["volumeIdsDeleted"], json!([v]));
    assert_eq!((r["machinesRemaining"].clone(), r["volumesRemaining"].clone()), (Value::Null, Value::Null));
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("Machine verification listing failed"), "{r}");
    assert!(warnings.contains("Volume verification listing failed"), "{r}");
    assert_eq!(r["errors"], json!([]));
    // The destroy was confirmed by Fly's answer: the row is stopped.
    assert_eq!(status(&a, "w1").await.0, WorkerStatus::Stopped);
    assert!(fake.machine_ids().is_empty() && fake.volume_ids().is_empty());
}

/// Figures: a cleanup of 20 machines (each with a volume) at the adapter's default rate limits
/// and retry policy: wall time and requests sent. `bash infra/scripts/test.sh -p
/// integration-tests --test it -- --ignored --nocapture cleanup_figures`.
#[tokio::test]
#[ignore]
async fn cleanup_figures() {
    let a = app_env().await;
    let fake = FakeFly::start(&["app1"]).await;
    for i in 0..20 {
        let w = format!("w{i}");
        let m = fake.seed_machine("app1", &w, "started", tags("dep-a", &w));
        fake.seed_volume("app1", &format!("v{i}"), Some(&m), json!({DEPLOYMENT_TAG: "dep-a"}));
        row(&a, &w, &m, false).await;
    }
    a.secret("fly.apiToken", TOKEN).await;
    let mut ctx = a.cleanup_ctx_at(&fake.url);
    ctx.fly.options = shared::adapters::fly::FlyOptions::default();
    let t = std::time::Instant::now();
    let r = cleanup::handle(&ctx, json!({"op": "runFlyCleanup", "args": {}})).await.unwrap();
    let took = t.elapsed();
    assert_eq!((r["machinesDeleted"].as_u64(), r["volumesDeleted"].as_u64()), (Some(20), Some(20)), "{r}");
    assert_eq!(r["workersStopped"], 20);
    let reqs = fake.requests();
    println!(
        "cleanup of 20 machines + 20 volumes at the default limits: {:.1} s, {} requests ({} GET, {} POST, {} DELETE)",
        took.as_secs_f64(),
        reqs.len(),
        reqs.iter().filter(|q| q.method == "GET").count(),
        reqs.iter().filter(|q| q.method == "POST").count(),
        reqs.iter().filter(|q| q.method == "DELETE").count(),
    );
    // Fly's per-action limits: never more than burst + rate × elapsed requests of one kind.
    let first = reqs[0].at;
    let stops: Vec<f64> =
        reqs.iter().filter(|q| q.path.ends_with("/stop")).map(|q| (q.at - first).as_secs_f64()).collect();
    let max_in_1s =
        stops.iter().map(|s| stops.iter().filter(|x| **x >= *s && **x < s + 1.0).count()).max().unwrap_or(0);
    println!("stops: {} in total, at most {max_in_1s} in any 1 s window (bucket: 3/s, burst 6)", stops.len());
    assert!(max_in_1s <= 6 + 3, "{max_in_1s}");
}

#[tokio::test]
async fn cleanup_rides_out_a_429_burst_and_a_machine_that_vanishes() {
    let a = app_env().await;
    let fake = FakeFly::start(&["app1"]).await;
    let m1 = fake.seed_machine("app1", "w1", "started", tags("dep-a", "w1"));
    let m2 = fake.seed_machine("app1", "w2", "started", tags("dep-a", "w2"));
    row(&a, "w1", &m1, false).await;
    row(&a, "w2", &m2, false).await;
    a.secret("fly.apiToken", TOKEN).await;
    // m1's stop meets a 429 burst (Retry-After 1 s, twice); m2 vanishes before its teardown.
    fake.fault(Fault::status("POST", &format!("/machines/{m1}/stop"), 429, 2).retry_after("1"));
    fake.fault(Fault::vanish("GET", &format!("/machines/{m2}"), &m2));
    let r = run(&a, &fake, json!({})).await;
    assert_eq!(r["errors"], json!([]), "{r}");
    assert_eq!(r["warnings"], json!([]), "{r}");
    assert_eq!(ids(&r["machineIdsDeleted"]), sorted(vec![m1.clone(), m2.clone()]));
    assert_eq!(r["machinesRemaining"], 0);
    let stops: Vec<_> = fake.requests().into_iter().filter(|q| q.path.ends_with(&format!("{m1}/stop"))).collect();
    assert_eq!(stops.len(), 3, "two 429s, then the stop");
    for w in stops.windows(2) {
        assert!(w[1].at - w[0].at >= std::time::Duration::from_millis(990), "Retry-After honoured");
    }
    assert_eq!(fake.count("POST", &format!("{m2}/stop")), 0, "nothing sent to a machine that is gone");
    // Both are gone, so both rows are stopped.
    assert_eq!(status(&a, "w1").await.0, WorkerStatus::Stopped);
    assert_eq!(status(&a, "w2").await.0, WorkerStatus::Stopped);
    assert!(fake.machine_ids().is_empty());
}

#[tokio::test]
async fn cleanup_past_its_time_budget_starts_nothing_more_and_still_reports() {
    let a = app_env().await;
    let fake = FakeFly::start(&["app1"]).await;
    let m = fake.seed_machine("app1", "w1", "started", tags("dep-a", "w1"));
    let v = fake.seed_volume("app1", "v1", None, json!({DEPLOYMENT_TAG: "dep-a"}));
    row(&a, "w1", &m, false).await;
    a.secret("fly.apiToken", TOKEN).await;
    let mut ctx = a.cleanup_ctx_at(&fake.url);
    ctx.budget = std::time::Duration::ZERO;
    let r = cleanup::handle(&ctx, json!({"op": "runFlyCleanup", "args": {}})).await.unwrap();
    let errors = r["errors"].to_string();
    assert!(errors.contains(&format!("Machine {m}: not attempted")), "{r}");
    assert!(errors.contains(&format!("Volume {v}: not attempted")), "{r}");
    assert_eq!((r["machineIdsRemaining"].clone(), r["volumeIdsRemaining"].clone()), (json!([m]), json!([v])));
    assert_eq!(fake.writes(), 0);
    assert_eq!(status(&a, "w1").await.0, WorkerStatus::Active);
}
