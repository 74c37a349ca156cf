//! The Fly Machines adapter (`shared::adapters::fly`) against the fake Fly API
//! (`integration_tests::fake_fly`): classification by status, retries with backoff and
//! `Retry-After`, idempotent create, destroy with wait or force, rate limits, token hygiene.

use integration_tests::fake_fly::{FakeFly, Fault};
use serde_json::json;
use shared::adapters::fly::{FlyOptions, FlyProvider, FlySettings};
use shared::reconcile::fly_rules::{RateLimits, RetryPolicy};
use shared::reconcile::provider::{
    DEPLOYMENT_TAG, MachineSpec, MachineState, ProviderError, VolumeSpec, WORKER_TAG, WorkerProvider,
};
use shared::secrets::SecretValue;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TOKEN: &str = "fly-test-token-SENTINEL-0451";

/// Short timeouts and backoffs, generous rate limits: tests that want otherwise say so.
pub(crate) fn fast_options() -> FlyOptions {
    FlyOptions {
        request_timeout: Duration::from_millis(700),
        wait_secs: 1,
        retry: RetryPolicy {
            max_attempts: 3,
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(80),
            max_retry_after: Duration::from_secs(3),
        },
        limits: RateLimits { read: (1000.0, 1000.0), mutate: (1000.0, 1000.0), create: (1000.0, 1000.0) },
    }
}

pub(crate) fn settings(fake: &FakeFly, deployment: &str) -> FlySettings {
    FlySettings {
        api_base: fake.url.clone(),
        deployment_id: deployment.into(),
        app_name: Some("app1".into()),
        options: fast_options(),
    }
}

fn provider(fake: &FakeFly, opts: FlyOptions) -> FlyProvider {
    let s = FlySettings { options: opts, ..settings(fake, "dep-a") };
    FlyProvider::new(&s, "app1", SecretValue::new(TOKEN)).unwrap()
}

fn spec(name: &str, volume: Option<&str>) -> MachineSpec {
    MachineSpec {
        name: name.into(),
        region: "ams".into(),
        image: "registry.fly.io/worker:1".into(),
        env: BTreeMap::from([("WORKER_ID".to_string(), name.to_string())]),
        mount: volume.map(|v| (v.to_string(), "/data".to_string())),
        metadata: BTreeMap::from([(WORKER_TAG.to_string(), name.to_string())]),
    }
}

#[tokio::test]
async fn fly_create_tags_everything_is_idempotent_by_name_and_sends_the_token() {
    let fake = FakeFly::start(&["app1"]).await;
    let p = provider(&fake, fast_options());
    let vspec = VolumeSpec {
        name: shared::reconcile::naming::volume_name("data", "w1"),
        region: "ams".into(),
        size_gb: 1,
        metadata: BTreeMap::from([(WORKER_TAG.to_string(), "w1".to_string())]),
    };
    let v = p.create_volume(&vspec).await.unwrap();
    assert_eq!(p.create_volume(&vspec).await.unwrap().id, v.id, "same name and region: the same volume");
    assert_eq!(fake.volume_ids().len(), 1);
    let vol = fake.lock().volumes[&v.id].clone();
    assert_eq!((vol.metadata[DEPLOYMENT_TAG].as_str(), vol.metadata[WORKER_TAG].as_str()), (Some("dep-a"), Some("w1")));

    // The same name for another worker (a hash collision) is refused, never shared.
    let clash = VolumeSpec { metadata: BTreeMap::from([(WORKER_TAG.to_string(), "w9".to_string())]), ..vspec.clone() };
    let e = p.create_volume(&clash).await.unwrap_err();
    assert!(matches!(&e, ProviderError::Fatal { .. }) && e.to_string().contains("taken by worker w1"), "{e}");
    assert_eq!(fake.volume_ids().len(), 1);
    let m = p.create_machine(&spec("w1", Some(&v.id))).await.unwrap();
    assert_eq!(m.state, MachineState::Active);
    assert!(m.tagged_for("dep-a"));
    assert_eq!(m.metadata[WORKER_TAG], "w1");
    assert_eq!(m.volume_ids, vec![v.id.clone()]);
    let again = p.create_machine(&spec("w1", Some(&v.id))).await.unwrap();
    assert_eq!(again.id, m.id, "a second create of the same name returns the machine");
    assert_eq!(fake.machine_ids().len(), 1);
    assert_eq!(fake.count("POST", "/machines"), 1, "the second create never reached Fly");
    let listed = p.list_machines().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(p.get_machine(&m.id).await.unwrap().name, "w1");
    let fm = fake.machine(&m.id).unwrap();
    assert_eq!(fm.config["restart"]["policy"], "no");
    assert_eq!(fm.config["guest"]["memory_mb"], 2048);
    assert!(fake.requests().iter().all(|r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))));
}

#[tokio::test]
async fn fly_create_after_a_timeout_makes_exactly_one_machine() {
    let fake = FakeFly::start(&["app1"]).await;
    let p = provider(&fake, fast_options());
    // The create happens, but its answer comes after the client's 700 ms timeout.
    fake.fault(Fault::slow("POST", "/machines", Duration::from_millis(1_500), true));
    let m = p.create_machine(&spec("w-slow", None)).await.unwrap();
    assert_eq!(fake.machine_ids(), vec![m.id.clone()], "one machine, found by its name");
    assert_eq!(fake.count("POST", "/machines"), 1, "the create was not repeated");
    // A create that keeps failing ambiguously (409 from a concurrent create that holds the name
    // without it being listed yet) ends as Retryable, and no machine is made twice.
    fake.fault(Fault::status("POST", "/machines", 503, 10));
    let e = p.create_machine(&spec("w-down", None)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Retryable { status: Some(503), .. }), "{e:?}");
    assert_eq!(fake.count("POST", "/machines"), 1 + 3, "bounded: max_attempts creates");
    assert_eq!(fake.machine_ids().len(), 1);
}

#[tokio::test]
async fn fly_errors_are_classified_by_status_never_by_body() {
    let fake = FakeFly::start(&["app1"]).await;
    let p = provider(&fake, fast_options());
    let m = p.create_machine(&spec("w1", None)).await.unwrap();
    // A 500 whose body says "not found" is not "gone" (the original's W-P1): retried, then Retryable.
    fake.fault(Fault::status("GET", &format!("/machines/{}", m.id), 500, 3).body("{\"error\":\"machine not found\"}"));
    let e = p.get_machine(&m.id).await.unwrap_err();
    assert!(matches!(e, ProviderError::Retryable { status: Some(500), .. }), "{e:?}");
    assert_eq!(fake.count("GET", &format!("/machines/{}", m.id)), 3, "three attempts");
    // A transient 502 then success: the caller never sees the error.
    fake.fault(Fault::status("GET", &format!("/machines/{}", m.id), 502, 1));
    assert_eq!(p.get_machine(&m.id).await.unwrap().id, m.id);
    // 404 is NotFound: a vanished machine, and an unknown app (which says so).
    fake.vanish(&m.id);
    assert!(p.get_machine(&m.id).await.unwrap_err().is_not_found());
    let other = FlyProvider::new(&settings(&fake, "dep-a"), "no-such-app", SecretValue::new(TOKEN)).unwrap();
    let e = other.list_machines().await.unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("/apps/no-such-app/machines"), "{e}");
    // A 200 whose listing is not an array is not "no machines": nothing may be concluded.
    fake.fault(Fault::status("GET", "/v1/apps/app1/machines", 200, 1).exact().body("{\"machines\": []}"));
    let e = p.list_machines().await.unwrap_err();
    assert!(e.is_retryable() && e.to_string().contains("not a JSON array"), "{e}");
    // 422 is Fatal at once, no retry.
    let before = fake.count("POST", "/stop");
    fake.fault(Fault::status("POST", "/stop", 422, 5));
    let e = p.stop_machine("m-any").await.unwrap_err();
    assert!(matches!(e, ProviderError::Fatal { status: 422, .. }), "{e:?}");
    assert_eq!(fake.count("POST", "/stop"), before + 1);
    // 408, 409, 412 are retryable.
    for st in [408, 409, 412] {
        fake.fault(Fault::status("GET", "/volumes", st, 10));
        let e = p.list_volumes().await.unwrap_err();
        assert!(matches!(e, ProviderError::Retryable { status: Some(s), .. } if s == st), "{st}: {e:?}");
        fake.lock().faults.clear();
    }
    // A slow answer is a timeout: Retryable with no status, after the bounded attempts.
    for _ in 0..3 {
        fake.fault(Fault::slow("GET", "/volumes", Duration::from_millis(1_200), true));
    }
    let t = Instant::now();
    let e = p.list_volumes().await.unwrap_err();
    assert!(matches!(e, ProviderError::Retryable { status: None, .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "bounded in time: {:?}", t.elapsed());
    // Nothing listening: a connection error, Retryable.
    let dead = FlySettings { api_base: "http://127.0.0.1:9/v1".into(), ..settings(&fake, "dep-a") };
    let e = FlyProvider::new(&dead, "app1", SecretValue::new(TOKEN)).unwrap().list_machines().await.unwrap_err();
    assert!(matches!(e, ProviderError::Retryable { status: None, .. }), "{e:?}");
    // The token is in no error message.
    for e in [e, ProviderError::NotFound { what: String::new() }] {
        assert!(!e.to_string().contains(TOKEN));
    }
}

#[tokio::test]
async fn fly_429_bursts_honour_retry_after() {
    let fake = FakeFly::start(&["app1"]).await;
    let p = provider(&fake, fast_options());
    fake.fault(Fault::status("GET", "/apps/app1/machines", 429, 2).retry_after("1"));
    let t = Instant::now();
    assert!(p.list_machines().await.unwrap().is_empty());
    assert!(t.elapsed() >= Duration::from_secs(2), "waited the Retry-After twice: {:?}", t.elapsed());
    let at: Vec<Instant> = fake.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 3);
    for w in at.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(990), "never sooner than Retry-After: {:?}", w[1] - w[0]);
    }
    // A Retry-After beyond what one call may wait: one attempt, Retryable with the provider's hint.
    fake.fault(Fault::status("GET", "/apps/app1/machines", 429, 1).retry_after("60"));
    let e = p.list_machines().await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Retryable { status: Some(429), retry_after: Some(d), .. } if d == Duration::from_secs(60)),
        "{e:?}"
    );
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn fly_destroy_stops_waits_then_deletes_or_forces() {
    let fake = FakeFly::start(&["app1"]).await;
    let p = provider(&fake, fast_options());
    let m = p.create_machine(&spec("w1", None)).await.unwrap();
    p.destroy_machine(&m.id, false).await.unwrap();
    assert!(fake.machine(&m.id).is_none());
    let seq: Vec<String> = fake
        .requests()
        .iter()
        .skip(2)
        .map(|r| format!("{} {}", r.method, r.path.rsplit('/').next().unwrap()))
        .collect();
    assert_eq!(
        seq,
        vec![
            format!("GET {}", m.id),
            "POST stop".into(),
            "GET wait?state=stopped&timeout=1&instance_id=i1".into(),
            format!("DELETE {}", m.id)
        ]
    );
    // Already gone: NotFound (the caller counts it as destroyed).
    assert!(p.destroy_machine(&m.id, false).await.unwrap_err().is_not_found());

    // Stuck in stopping: the wait times out (408, retried), nothing is deleted; force deletes.
    let s = p.create_machine(&spec("w2", None)).await.unwrap();
    fake.set_stuck(&s.id);
    let e = p.destroy_machine(&s.id, false).await.unwrap_err();
    assert!(matches!(e, ProviderError::Retryable { status: Some(408), .. }), "{e:?}");
    assert_eq!(fake.machine(&s.id).unwrap().state, "stopping");
    assert_eq!(fake.count("DELETE", &s.id), 0, "no delete before the machine is stopped");
    assert_eq!(p.get_machine(&s.id).await.unwrap().state, MachineState::Stopping);
    p.destroy_machine(&s.id, true).await.unwrap();
    assert!(fake.machine(&s.id).is_none());
    assert_eq!(fake.count("DELETE", "force=true"), 1);
}

#[tokio::test]
async fn fly_warm_start_replaces_env_and_keeps_metadata() {
    let fake = FakeFly::start(&["app1"]).await;
    let p = provider(&fake, fast_options());
    let m = p.create_machine(&spec("w1", None)).await.unwrap();
    p.stop_machine(&m.id).await.unwrap();
    assert_eq!(p.get_machine(&m.id).await.unwrap().state, MachineState::Stopped);
    let env = BTreeMap::from([("BOOTSTRAP_CODE".to_string(), "fresh".to_string())]);
    p.start_machine(&m.id, &env).await.unwrap();
    let fm = fake.machine(&m.id).unwrap();
    assert_eq!(fm.state, "started");
    assert_eq!(fm.config["env"], json!({"BOOTSTRAP_CODE": "fresh"}));
    assert_eq!(fm.config["metadata"][DEPLOYMENT_TAG], "dep-a");
}

#[tokio::test]
async fn fly_client_side_rate_limit_paces_each_action_kind() {
    let fake = FakeFly::start(&["app1"]).await;
    let opts = FlyOptions { limits: RateLimits { read: (4.0, 2.0), ..fast_options().limits }, ..fast_options() };
    let p = provider(&fake, opts);
    let t = Instant::now();
    for _ in 0..6 {
        p.list_volumes().await.unwrap();
    }
    // A burst of 2, then 4 more at 4/s: about 1 s.
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(950) && took < Duration::from_secs(3), "{took:?}");
    // Another kind has its own bucket: a stop is not held back by the reads' debt.
    for _ in 0..3 {
        p.list_volumes().await.unwrap();
    }
    let t = Instant::now();
    assert!(p.stop_machine("m-unknown").await.unwrap_err().is_not_found());
    assert!(t.elapsed() < Duration::from_millis(200), "{:?}", t.elapsed());
}
