//! Unit tests of the global skill rules. Expected checksums were computed with the original's
//! runtime (Node 20: `localeCompare` ordering, `crypto` SHA-256, `JSON.stringify(m, null, 2)`).

use super::*;

fn file(path: &str, content: &str) -> BundleFileInput {
    BundleFileInput { path: path.into(), content: content.into(), sha256: Some(sha256_hex(content.as_bytes())) }
}

fn good() -> Vec<BundleFileInput> {
    vec![file("SKILL.md", "# Demo\n"), file("scripts/index.mjs", "export default () => 1;\n")]
}

fn err(r: AppResult<impl std::fmt::Debug>) -> String {
    r.unwrap_err().to_string()
}

/// The spec's worked ordering example (§13.1), shuffled, with `content of <path>\n` contents.
fn parity_bundle() -> Vec<BundleFileInput> {
    ["SKILL.md", "scripts/index.mjs", "a/b", "README.md", "9.md", "a.b", "_meta.json", "a-b", "10.md", "a_b"]
        .iter()
        .map(|p| file(p, &format!("content of {p}\n")))
        .collect()
}

#[test]
fn canonical_order_and_bundle_checksum_equal_the_originals() {
    let b = validate_files(&parity_bundle(), ModuleFormat::Esm).unwrap();
    let order: Vec<&str> = b.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        order,
        ["_meta.json", "10.md", "9.md", "a_b", "a-b", "a.b", "a/b", "README.md", "scripts/index.mjs", "SKILL.md"]
    );
    assert_eq!(b.sha256, "19bf1b592700c8c91dc6314a7f90fc61a47f43187b44eacc14e1c88e53666c71");
    // Byte order would give another checksum: the order is what the parity depends on.
    let mut bytes = b.files.clone();
    bytes.sort_by(|x, y| x.path.cmp(&y.path));
    assert_ne!(bundle_sha256(&bytes), b.sha256);

    let v = SkillVersion {
        skill_id: "s".into(),
        version_id: "v".into(),
        version: "1.0.0".into(),
        module_format: ModuleFormat::Esm,
        entry_point: "default".into(),
        files: b.files.clone(),
        sha256: b.sha256.clone(),
        created_by: "t".into(),
        created_at: 0,
    };
    let item = manifest_item("demo-skill", &v).unwrap();
    let marker = item.files.last().unwrap();
    assert_eq!(marker.path, MARKER_PATH);
    assert_eq!(marker.sha256, "ec9944087efadd0c41b02ed6aa03b4b27cd583f54b1ecd585ddedf6b6d79e2fc");
    assert!(marker.content.starts_with("{\n  \"slug\": \"demo-skill\",\n  \"version\": \"1.0.0\",\n"));
    assert!(marker.content.ends_with("\"moduleFormat\": \"esm\"\n}\n"));
    let m = manifest(vec![item], ReleaseChannel::Stable, None, 5);
    assert_eq!(m.manifest_version, "3328b1cf815a2af2ea53709f7cc8964d41ee900c01a2bff382581c2ce6507153");
    assert_eq!(m.layout_version, "openclaw-workspace-skill-v1");
    assert_eq!(m.workspace_id, "default");
    assert_eq!(m.skills[0].skill_dir_name, "demo-skill");
    assert_eq!(
        manifest(vec![], ReleaseChannel::Canary, Some("w"), 5).manifest_version,
        "2e1cfa82b035c26cbbbdae632cea070514eb8b773f616aaeaf668e2f0be8f10d"
    );
}

#[test]
fn canonical_order_matches_the_original_runtime_on_punctuation_case_and_accents() {
    // `[...words].sort((a, b) => a.localeCompare(b))` on Node 20 (ICU, en-US).
    let expected = [
        "_",
        "-",
        ".",
        "/",
        "0",
        "1",
        "10",
        "9",
        "a",
        "A",
        "a b",
        "a_b",
        "a-b",
        "a,b",
        "a;b",
        "a:b",
        "a!b",
        "a?b",
        "a.b",
        "a'b",
        "a\"b",
        "a(b",
        "a)b",
        "a[b",
        "a]b",
        "a{b",
        "a}b",
        "a@b",
        "a*b",
        "a/b",
        "a&b",
        "a#b",
        "a%b",
        "a`b",
        "a^b",
        "a+b",
        "a<b",
        "a=b",
        "a>b",
        "a|b",
        "a~b",
        "a$b",
        "ab",
        "aB",
        "Ab",
        "AB",
        "arger",
        "Ärger",
        "b",
        "B",
        "cafe",
        "café",
        "cafè",
        "e",
        "éclair",
        "f",
        "readme",
        "ReadMe",
        "README",
        "scripts_x",
        "scripts-x",
        "scripts.x",
        "scripts/x.mjs",
        "scripts/X.mjs",
        "z",
        "Z",
        "zebra",
    ];
    let mut v: Vec<&str> = expected.iter().rev().copied().collect();
    v.sort_by(|a, b| canonical_cmp(a, b));
    assert_eq!(v, expected);
}

#[test]
fn paths_are_normalized_and_unsafe_ones_refused() {
    assert_eq!(normalize_path("\\scripts\\index.mjs").unwrap(), "scripts/index.mjs");
    assert_eq!(normalize_path("//SKILL.md").unwrap(), "SKILL.md");
    assert_eq!(normalize_path(".hidden/x").unwrap(), ".hidden/x");
    assert_eq!(normalize_path("a..b/c").unwrap(), "a..b/c");
    for bad in ["", "/", ".", "..", "../x", "a/../b", "a/..", "./x", "a/./b", "a//b", "a/", "C:/x", "c:", "a\u{7}b"] {
        assert_eq!(err(normalize_path(bad)), format!("invalid_relative_path:{bad}"), "{bad:?}");
    }
    assert!(normalize_path(&"a".repeat(MAX_PATH_BYTES)).is_ok());
    assert!(normalize_path(&"a".repeat(MAX_PATH_BYTES + 1)).is_err());
}

#[test]
fn bundle_rules_in_order() {
    let esm = ModuleFormat::Esm;
    assert_eq!(err(validate_files(&[], esm)), "Global skill bundle must contain at least one file.");
    let mut f = good();
    f.push(file("../evil", "x"));
    assert_eq!(err(validate_files(&f, esm)), "invalid_relative_path:../evil");
    let mut f = good();
    f.push(file("/.af-global-skill.json", "{}"));
    assert_eq!(err(validate_files(&f, esm)), "Bundle files must not include .af-global-skill.json.");
    let mut f = good();
    f.push(file("\\SKILL.md", "again"));
    assert_eq!(err(validate_files(&f, esm)), "Duplicate bundle file path: SKILL.md");
    let mut f = good();
    f.push(file("big.txt", &"x".repeat(MAX_BUNDLE_BYTES)));
    assert_eq!(err(validate_files(&f, esm)), "Global skill bundle too large (max 200KB).");
    let mut f = good();
    f.push(file("exact.txt", &"x".repeat(MAX_BUNDLE_BYTES - 7 - 24)));
    assert!(validate_files(&f, esm).is_ok(), "exactly 200,000 bytes is accepted");
    let mut f = good();
    f[0].sha256 = Some("  ".into());
    assert_eq!(err(validate_files(&f, esm)), "Missing bundle checksum for SKILL.md.");
    let mut f = good();
    f[0].sha256 = None;
    assert_eq!(err(validate_files(&f, esm)), "Missing bundle checksum for SKILL.md.");
    let mut f = good();
    f[1].sha256 = Some(f[1].sha256.clone().unwrap().to_uppercase());
    assert_eq!(err(validate_files(&f, esm)), "Global skill checksum mismatch for scripts/index.mjs.");
    let mut f = good();
    f[1].sha256 = Some(format!(" {} ", f[1].sha256.clone().unwrap()));
    assert!(validate_files(&f, esm).is_ok(), "the caller's checksum is trimmed");
    assert_eq!(err(validate_files(&good()[1..], esm)), "Global skill bundle must include SKILL.md.");
    assert_eq!(err(validate_files(&good()[..1], esm)), "Global skill bundle must include scripts/index.mjs.");
    assert_eq!(err(validate_files(&good(), ModuleFormat::Cjs)), "Global skill bundle must include scripts/index.cjs.");
    // `./SKILL.md` is refused as a path, not silently missed.
    assert_eq!(err(validate_files(&[file("./SKILL.md", "")], esm)), "invalid_relative_path:./SKILL.md");
    let many: Vec<_> = (0..=MAX_BUNDLE_FILES).map(|i| file(&format!("f{i}"), "")).collect();
    assert!(err(validate_files(&many, esm)).contains("too many files"));
}

#[test]
fn slugs_versions_and_entry_points() {
    for ok in ["ab", "a1", "0-x", "my_skill-2", &"a".repeat(128)] {
        assert!(valid_slug(ok), "{ok}");
    }
    for bad in ["a", "-ab", "_ab", "a b", "aé", &"a".repeat(129), "A-b"] {
        assert!(!valid_slug(bad), "{bad}");
    }
    for ok in ["1.0.0", "10.20.30", "1.0.0-rc.1", "1.0.0+build.5", "0.0.0-a-b"] {
        assert!(valid_version(ok), "{ok}");
    }
    for bad in ["1.0", "v1.0.0", "1.0.0-beta+exp", "1.0.0-", "1.0.0.0", "1..0", "a.b.c", "1.0.0-é"] {
        assert!(!valid_version(bad), "{bad}");
    }
    let args = |slug: &str, version: &str, entry: Option<&str>| DeployArgs {
        slug: slug.into(),
        display_name: None,
        description: None,
        version: version.into(),
        files: good(),
        entry_point: entry.map(str::to_string),
        module_format: None,
        release_channel: None,
        actor: Some("  ".into()),
    };
    let v = validate_deploy(&args("  My-Skill ", " 1.2.3 ", None)).unwrap();
    assert_eq!((v.slug.as_str(), v.version.as_str(), v.entry_point.as_str()), ("my-skill", "1.2.3", "default"));
    assert_eq!(v.actor, "system");
    assert_eq!(v.release_channel, ReleaseChannel::Stable);
    assert!(err(validate_deploy(&args("x", "1.0.0", None))).starts_with("Invalid skill slug."));
    assert!(err(validate_deploy(&args("xy", "1.0", None))).starts_with("Invalid skill version."));
    assert_eq!(err(validate_deploy(&args("xy", "1.0.0", Some("  ")))), "entryPoint is required.");
    assert!(err(validate_deploy(&args("xy", "1.0.0", Some("a\u{0}b")))).starts_with("entryPoint must be"));
    assert!(validate_deploy(&args("xy", "1.0.0", Some(&"e".repeat(MAX_ENTRY_POINT_BYTES)))).is_ok());
    // Bundle errors come before slug errors.
    let mut a = args("x", "1.0", None);
    a.files.clear();
    assert_eq!(err(validate_deploy(&a)), "Global skill bundle must contain at least one file.");
}

fn ids(n: u8) -> DeployIds {
    DeployIds { skill_id: format!("s{n}"), version_id: format!("v{n}"), release_id: format!("r{n}") }
}

#[test]
fn deploy_plan_upserts_reuses_identical_versions_and_refuses_changed_ones() {
    let mut a = DeployArgs {
        slug: "demo".into(),
        display_name: Some("  ".into()),
        description: Some(" d ".into()),
        version: "1.0.0".into(),
        files: good(),
        entry_point: None,
        module_format: None,
        release_channel: None,
        actor: Some("ops".into()),
    };
    let v = validate_deploy(&a).unwrap();
    let p = plan_deploy(&v, None, None, ids(1), 10).unwrap();
    assert!(p.is_new);
    assert_eq!(p.skill.display_name, "demo");
    assert_eq!(p.skill.description.as_deref(), Some("d"));
    assert_eq!(p.skill.releases.stable.as_ref().unwrap().release_id, "r1");
    assert!(p.skill.releases.canary.is_none());
    let ver = p.new_version.clone().unwrap();
    assert_eq!((ver.version_id.as_str(), ver.skill_id.as_str()), ("v1", "s1"));

    // Identical redeploy on canary of a disabled skill: version reused, skill re-enabled, new release.
    let mut skill = p.skill.clone();
    skill.status = SkillStatus::Disabled;
    a.release_channel = Some(ReleaseChannel::Canary);
    a.display_name = Some("Demo".into());
    a.description = Some(String::new());
    let v2 = validate_deploy(&a).unwrap();
    let p2 = plan_deploy(&v2, Some(&skill), Some(&ver), ids(2), 20).unwrap();
    assert!(!p2.is_new && p2.new_version.is_none());
    assert_eq!(p2.version_id, "v1");
    assert_eq!(p2.skill.skill_id, "s1");
    assert_eq!(p2.skill.status, SkillStatus::Active);
    assert_eq!(p2.skill.display_name, "Demo");
    assert_eq!(p2.skill.description.as_deref(), Some(""));
    assert_eq!(p2.skill.releases.stable.as_ref().unwrap().release_id, "r1");
    assert_eq!(p2.skill.releases.canary.as_ref().unwrap().release_id, "r2");
    assert_eq!(p2.release.release_channel, ReleaseChannel::Canary);

    // Same version, other bundle / entry point / format: refused.
    a.files.push(file("extra.md", "x"));
    let v3 = validate_deploy(&a).unwrap();
    let e = plan_deploy(&v3, Some(&skill), Some(&ver), ids(3), 30).unwrap_err();
    assert_eq!(e.to_string(), "Skill demo@1.0.0 already exists with a different bundle.");
    assert_eq!(e.code().as_str(), "Conflict");
    a.files = good();
    a.entry_point = Some("main".into());
    assert!(plan_deploy(&validate_deploy(&a).unwrap(), Some(&skill), Some(&ver), ids(3), 30).is_err());
}

#[test]
fn manifest_refuses_corrupt_versions_and_orders_items() {
    let b = validate_files(&good(), ModuleFormat::Esm).unwrap();
    let mut v = SkillVersion {
        skill_id: "s".into(),
        version_id: "v".into(),
        version: "1.0.0".into(),
        module_format: ModuleFormat::Esm,
        entry_point: "default".into(),
        files: b.files.clone(),
        sha256: b.sha256.clone(),
        created_by: "t".into(),
        created_at: 0,
    };
    let one = manifest_item("b-skill", &v).unwrap();
    let two = manifest_item("a-skill", &v).unwrap();
    let m = manifest(vec![one.clone(), two.clone()], ReleaseChannel::Stable, Some(" ws "), 1);
    assert_eq!(m.skills[0].slug, "a-skill");
    assert_eq!(m.workspace_id, "ws");
    assert_eq!(m.manifest_version, manifest(vec![two, one], ReleaseChannel::Stable, None, 2).manifest_version);
    v.sha256 = "0".repeat(64);
    assert_eq!(
        err(manifest_item("b-skill", &v)),
        "internal error: Global skill bundle checksum mismatch for b-skill@1.0.0."
    );
    v.sha256 = b.sha256.clone();
    v.files[0].content.push('!');
    assert!(err(manifest_item("b-skill", &v)).contains("Global skill checksum mismatch for "));
}

#[test]
fn skill_dir_names() {
    assert_eq!(skill_dir_name("My Skill!"), "my-skill-");
    assert_eq!(skill_dir_name(""), "unnamed-skill");
    assert_eq!(skill_dir_name("ok_1-x"), "ok_1-x");
}
