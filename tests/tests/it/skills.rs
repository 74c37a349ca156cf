//! Global skills (spec §13) through the `admin` function's op envelope and the worker route
//! `POST /worker/skills-manifest`, on DynamoDB Local: good and bad bundles (refusals change
//! nothing), versions and channels, status, delete, and the manifest a worker materializes.

use integration_tests::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::protocol::skills::{MARKER_PATH, SkillsManifest, bundle_sha256, sha256_hex};

fn file(path: &str, content: &str) -> Value {
    json!({"path": path, "content": content, "sha256": hex::encode(Sha256::digest(content.as_bytes()))})
}

fn bundle(tag: &str) -> Vec<Value> {
    vec![
        file("SKILL.md", &format!("# Demo {tag}\n")),
        file("scripts/index.mjs", &format!("export default () => '{tag}';\n")),
        file("README.md", "read me\n"),
    ]
}

async fn deploy(a: &AppEnv, args: Value) -> Result<Value, shared::AppError> {
    invoke(&a.app, json!({"op": "deployGlobalSkill", "args": args})).await
}

async fn op(a: &AppEnv, name: &str, args: Value) -> Value {
    invoke(&a.app, json!({"op": name, "args": args})).await.unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test]
async fn good_bundles_deploy_with_versions_and_channels_and_bad_ones_change_nothing() {
    let a = app_env().await;
    let r = deploy(&a, json!({"slug": " Demo-Skill ", "version": "1.0.0", "files": bundle("a"), "actor": "ops"}))
        .await
        .unwrap();
    assert_eq!(r["slug"], "demo-skill");
    assert_eq!(r["releaseChannel"], "stable");
    let sha = r["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);

    // An identical redeploy reuses the version and activates a new release.
    let again = deploy(&a, json!({"slug": "demo-skill", "version": "1.0.0", "files": bundle("a")})).await.unwrap();
    assert_eq!(again["versionId"], r["versionId"]);
    assert_eq!(again["skillId"], r["skillId"]);
    assert_ne!(again["releaseId"], r["releaseId"]);
    assert_eq!(again["sha256"], r["sha256"]);

    // A canary version.
    let canary = deploy(
        &a,
        json!({"slug": "demo-skill", "version": "1.1.0-rc.1", "files": bundle("b"), "releaseChannel": "canary",
               "displayName": "Demo", "description": "the demo"}),
    )
    .await
    .unwrap();
    assert_ne!(canary["versionId"], r["versionId"]);

    let rows = op(&a, "listGlobalSkills", json!({})).await;
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["displayName"], "Demo");
    assert_eq!(rows[0]["description"], "the demo");
    assert_eq!(rows[0]["status"], "active");
    assert_eq!(rows[0]["activeRelease"]["version"], "1.0.0");
    assert_eq!(rows[0]["activeRelease"]["releaseId"], again["releaseId"]);
    let rows = op(&a, "listGlobalSkills", json!({"releaseChannel": "canary"})).await;
    assert_eq!(rows[0]["activeRelease"]["version"], "1.1.0-rc.1");
    assert_eq!(rows[0]["activeRelease"]["moduleFormat"], "esm");

    // Refusals: every one leaves the stored state as it was.
    let before = snapshot(&a.e).await;
    let mut marker = bundle("a");
    marker.push(file(".af-global-skill.json", "{}"));
    let mut upper = bundle("a");
    upper[0]["sha256"] = json!(upper[0]["sha256"].as_str().unwrap().to_uppercase());
    let mut big = bundle("a");
    big.push(file("big.txt", &"x".repeat(200_000)));
    let mut dotdot = bundle("a");
    dotdot.push(file("scripts/../../etc/passwd", "x"));
    let mut dot = bundle("a");
    dot.push(file("./notes.md", "x"));
    let mut dup = bundle("a");
    dup.push(file("\\SKILL.md", "x"));
    let mut missing = bundle("a");
    missing[1]["sha256"] = json!("");
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"slug": "x1", "version": "1.0.0", "files": []}),
            "ValidationError",
            "Global skill bundle must contain at least one file.",
        ),
        (
            json!({"slug": "x1", "version": "1.0.0", "files": marker}),
            "ValidationError",
            "Bundle files must not include .af-global-skill.json.",
        ),
        (
            json!({"slug": "x1", "version": "1.0.0", "files": upper}),
            "ValidationError",
            "Global skill checksum mismatch for SKILL.md.",
        ),
        (
            json!({"slug": "x1", "version": "1.0.0", "files": missing}),
            "ValidationError",
            "Missing bundle checksum for scripts/index.mjs.",
        ),
        (
            json!({"slug": "x1", "version": "1.0.0", "files": big}),
            "ValidationError",
            "Global skill bundle too large (max 200KB).",
        ),
        (
            json!({"slug": "x1", "version": "1.0.0", "files": dotdot}),
            "ValidationError",
            "invalid_relative_path:scripts/../../etc/passwd",
        ),
        (
            json!({"slug": "x1", "version": "1.0.0", "files": dot}),
            "ValidationError",
            "invalid_relative_path:./notes.md",
        ),
        (
            json!({"slug": "x1", "version": "1.0.0", "files": dup}),
            "ValidationError",
            "Duplicate bundle file path: SKILL.md",
        ),
        (
            json!({"slug": "x1", "version": "1.0.0", "files": bundle("a"), "moduleFormat": "cjs"}),
            "ValidationError",
            "Global skill bundle must include scripts/index.cjs.",
        ),
        (
            json!({"slug": "x1", "version": "1.0.0", "files": [file("scripts/index.mjs", "")]}),
            "ValidationError",
            "Global skill bundle must include SKILL.md.",
        ),
        (
            json!({"slug": "-x", "version": "1.0.0", "files": bundle("a")}),
            "ValidationError",
            "Invalid skill slug. Use lowercase letters, numbers, '-' and '_'.",
        ),
        (
            json!({"slug": "x1", "version": "v1.0.0", "files": bundle("a")}),
            "ValidationError",
            "Invalid skill version. Use semantic versioning format.",
        ),
        (
            json!({"slug": "x1", "version": "1.0.0", "files": bundle("a"), "entryPoint": " "}),
            "ValidationError",
            "entryPoint is required.",
        ),
        (
            json!({"slug": "demo-skill", "version": "1.0.0", "files": bundle("changed")}),
            "Conflict",
            "Skill demo-skill@1.0.0 already exists with a different bundle.",
        ),
        (
            json!({"slug": "demo-skill", "version": "1.0.0", "files": bundle("a"), "entryPoint": "main"}),
            "Conflict",
            "Skill demo-skill@1.0.0 already exists with a different bundle.",
        ),
        (
            json!({"slug": "x1", "version": "1.0.0", "files": bundle("a"), "moduleFormat": "amd"}),
            "ValidationError",
            "unknown variant",
        ),
    ];
    for (args, code_want, msg) in cases {
        let e = deploy(&a, args.clone()).await.unwrap_err();
        assert_eq!(code(&e), code_want, "{args}: {e}");
        assert!(e.to_string().contains(msg), "{e} should say {msg}");
    }
    assert_eq!(snapshot(&a.e).await, before, "refused deploys wrote nothing");

    // A cjs skill; status and delete.
    let cjs = vec![file("SKILL.md", "# C\n"), file("scripts/index.cjs", "module.exports = 1;\n")];
    deploy(&a, json!({"slug": "cjs-skill", "version": "0.1.0", "files": cjs, "moduleFormat": "cjs"})).await.unwrap();
    let st = op(&a, "setGlobalSkillStatus", json!({"slug": "CJS-skill", "status": "disabled"})).await;
    assert_eq!(st, json!({"updated": true, "slug": "cjs-skill", "status": "disabled"}));
    let st = op(&a, "setGlobalSkillStatus", json!({"slug": "nope", "status": "disabled"})).await;
    assert_eq!(st["updated"], false);
    let disabled = op(&a, "listGlobalSkills", json!({"status": "disabled"})).await;
    assert_eq!(disabled.as_array().unwrap().len(), 1);
    assert_eq!(disabled[0]["slug"], "cjs-skill");
    assert_eq!(op(&a, "listGlobalSkills", json!({"limit": 1})).await.as_array().unwrap().len(), 1);

    let d = op(&a, "deleteGlobalSkill", json!({"slug": "demo-skill"})).await;
    assert_eq!(d, json!({"deleted": true, "slug": "demo-skill", "deletedVersions": 2, "deletedReleases": 3}));
    let d = op(&a, "deleteGlobalSkill", json!({"slug": "demo-skill"})).await;
    assert_eq!(d, json!({"deleted": false, "slug": "demo-skill", "deletedVersions": 0, "deletedReleases": 0}));
    let rows = op(&a, "listGlobalSkills", json!({})).await;
    assert_eq!(
        rows.as_array().unwrap().iter().map(|r| r["slug"].clone()).collect::<Vec<_>>(),
        vec![json!("cjs-skill")]
    );
    // Nothing of the deleted skill is left.
    assert!(!dump(&a.e.store, &a.e.tables.control).await.iter().any(|i| i.contains("demo-skill")));
}

#[tokio::test]
async fn the_worker_manifest_route_serves_active_skills_of_its_channel() {
    let a = app_env().await;
    let token = a.mint("w1").await;
    let (st, m) = a.post("skills-manifest", &token, json!({})).await;
    assert_eq!(st, 200, "{m}");
    let empty: SkillsManifest = serde_json::from_value(m).unwrap();
    assert!(empty.skills.is_empty());
    assert_eq!(empty.manifest_version, sha256_hex(b"empty"));

    deploy(&a, json!({"slug": "zeta", "version": "2.0.0", "files": bundle("z")})).await.unwrap();
    let alpha = deploy(&a, json!({"slug": "alpha", "version": "1.0.0", "files": bundle("a")})).await.unwrap();
    deploy(&a, json!({"slug": "alpha", "version": "1.1.0", "files": bundle("a2"), "releaseChannel": "canary"}))
        .await
        .unwrap();
    deploy(&a, json!({"slug": "canary-only", "version": "0.0.1", "files": bundle("c"), "releaseChannel": "canary"}))
        .await
        .unwrap();

    let (st, body) = a.post("skills-manifest", &token, json!({"workspaceId": "ws1"})).await;
    assert_eq!(st, 200, "{body}");
    let m: SkillsManifest = serde_json::from_value(body).unwrap();
    assert_eq!(m.layout_version, "openclaw-workspace-skill-v1");
    assert_eq!(m.workspace_id, "ws1");
    assert_eq!(m.skills.iter().map(|s| s.slug.as_str()).collect::<Vec<_>>(), ["alpha", "zeta"]);
    let s = &m.skills[0];
    assert_eq!((s.version.as_str(), s.skill_dir_name.as_str()), ("1.0.0", "alpha"));
    assert_eq!(s.sha256, alpha["sha256"].as_str().unwrap());
    // What a worker checks: each file's checksum, the bundle checksum without the marker, the marker last.
    for f in &s.files {
        assert_eq!(f.sha256, sha256_hex(f.content.as_bytes()), "{}", f.path);
    }
    let (marker, rest) = s.files.split_last().unwrap();
    assert_eq!(marker.path, MARKER_PATH);
    assert_eq!(bundle_sha256(rest), s.sha256);
    assert_eq!(
        rest.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["README.md", "scripts/index.mjs", "SKILL.md"]
    );
    let mk: Value = serde_json::from_str(&marker.content).unwrap();
    assert_eq!(mk["managedBy"], "agent-factory");
    assert_eq!(mk["sha256"], s.sha256.as_str());

    // Stable while the set is unchanged; the canary channel is its own set (no fallback).
    let (_, again) = a.post("skills-manifest", &token, json!({"releaseChannel": "stable"})).await;
    assert_eq!(again["manifestVersion"], m.manifest_version.as_str());
    let (_, canary) = a.post("skills-manifest", &token, json!({"releaseChannel": "canary"})).await;
    let canary: SkillsManifest = serde_json::from_value(canary).unwrap();
    assert_eq!(
        canary.skills.iter().map(|s| (s.slug.as_str(), s.version.as_str())).collect::<Vec<_>>(),
        [("alpha", "1.1.0"), ("canary-only", "0.0.1")]
    );
    assert_ne!(canary.manifest_version, m.manifest_version);

    // A disabled skill leaves every channel; redeploying it re-enables it.
    op(&a, "setGlobalSkillStatus", json!({"slug": "alpha", "status": "disabled"})).await;
    let (_, after) = a.post("skills-manifest", &token, json!({})).await;
    assert_eq!(after["skills"].as_array().unwrap().len(), 1);
    assert_ne!(after["manifestVersion"], m.manifest_version.as_str());
    deploy(&a, json!({"slug": "alpha", "version": "1.0.0", "files": bundle("a")})).await.unwrap();
    let (_, back) = a.post("skills-manifest", &token, json!({})).await;
    assert_eq!(back["manifestVersion"], m.manifest_version.as_str());

    // The admin op serves the same manifest.
    let via_op = op(&a, "getWorkerGlobalSkillsManifest", json!({})).await;
    assert_eq!(via_op["manifestVersion"], m.manifest_version.as_str());

    // Worker auth like every route: no token, a wrong token, a body naming another worker.
    let (st, _) = a.call("POST", "/worker/skills-manifest", None, json!({})).await;
    assert_eq!(st, 401);
    let (st, _) = a.post("skills-manifest", "not-a-token", json!({})).await;
    assert_eq!(st, 401);
    let (st, _) = a.post("skills-manifest", &token, json!({"workerId": "w2"})).await;
    assert_eq!(st, 403);
    let (st, body) = a.post("skills-manifest", &token, json!({"releaseChannel": "beta"})).await;
    assert_eq!(st, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_deploys_of_one_version_keep_it_immutable_and_cost_two_requests_each() {
    let a = std::sync::Arc::new(app_env().await);
    // Two different bundles for the same new version, deployed at once: one wins, the other is
    // refused as a different bundle (never two versions, never a mixed row).
    let mut tasks = Vec::new();
    for tag in ["left", "right"] {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            deploy(&a, json!({"slug": "race", "version": "1.0.0", "files": bundle(tag)})).await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let won: Vec<&Value> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(lost.to_string(), "Skill race@1.0.0 already exists with a different bundle.");
    let rows = op(&a, "listGlobalSkills", json!({})).await;
    assert_eq!(rows[0]["activeRelease"]["sha256"], won[0]["sha256"]);

    // Identical deploys at once: all succeed, one version, one release each, the last active.
    let winner_files = if won[0]["sha256"] == deploy_sha(&bundle("left")) { bundle("left") } else { bundle("right") };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (a, files) = (a.clone(), winner_files.clone());
        tasks.push(tokio::spawn(async move {
            deploy(&a, json!({"slug": "race", "version": "1.0.0", "files": files})).await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap()["versionId"], won[0]["versionId"]);
    }
    let d = op(&a, "deleteGlobalSkill", json!({"slug": "race"})).await;
    assert_eq!((d["deletedVersions"].as_u64(), d["deletedReleases"].as_u64()), (Some(1), Some(5)));

    // Cost: a deploy is one BatchGetItem and one TransactWriteItems.
    a.e.counter.reset();
    deploy(&a, json!({"slug": "cost", "version": "1.0.0", "files": bundle("c")})).await.unwrap();
    let by = a.e.counter.by_operation();
    assert_eq!(
        (by.get("BatchGetItem"), by.get("TransactWriteItems"), a.e.counter.total()),
        (Some(&1), Some(&1), 2),
        "{by:?}"
    );
}

/// The bundle checksum of files given in canonical order (as `bundle()` makes them).
fn deploy_sha(files: &[Value]) -> String {
    let mut fs: Vec<shared::skills::model::SkillFile> = files
        .iter()
        .map(|f| shared::skills::model::SkillFile {
            path: f["path"].as_str().unwrap().into(),
            content: f["content"].as_str().unwrap().into(),
            sha256: f["sha256"].as_str().unwrap().into(),
        })
        .collect();
    fs.sort_by(|x, y| shared::skills::rules::canonical_cmp(&x.path, &y.path));
    bundle_sha256(&fs)
}
