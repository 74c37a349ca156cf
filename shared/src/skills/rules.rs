//! Global skill rules (spec §13), pure: bundle validation, the canonical file order, the bundle
//! checksum, the marker file, the deploy plan, and the manifest.
//!
//! Checksum parity with the original: the bundle checksum hashes the files in *canonical order*,
//! which is the original runtime's default string collation (ICU root: case-insensitive first,
//! punctuation < digits < letters), not byte order. [`canonical_cmp`] uses the CLDR root collation
//! (ICU4X, default options: tertiary strength, punctuation not ignored), which is what the
//! original's `localeCompare` does; paths that collate equal (none of two distinct valid paths
//! in practice) fall back to byte order so the order is total. `manifestVersion` uses plain
//! UTF-16 code-unit order, as the original does.

use super::model::*;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::OnceLock;

/// Cumulative UTF-8 bytes of every file's content.
pub const MAX_BUNDLE_BYTES: usize = 200_000;
/// Most files a bundle may carry (hardening, §16.14; the original had no cap).
pub const MAX_BUNDLE_FILES: usize = 256;
/// Longest normalized path, in bytes (hardening, §16.14).
pub const MAX_PATH_BYTES: usize = 256;
/// Most skills listed at once (`limit` is clamped to 1..=this; default 200).
/// Longest entry point (an export name), in bytes (hardening).
pub const MAX_ENTRY_POINT_BYTES: usize = 256;
pub const MAX_LIST_LIMIT: i64 = 500;
pub const DEFAULT_LIST_LIMIT: i64 = 200;

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Normalize a bundle path: `\` → `/`, leading `/` stripped. Refused with
/// `invalid_relative_path:<raw>`: an empty path, `.`, any `.` or `..` segment (`../x`, `a/..`,
/// `./x`), an empty segment (`a//b`, a trailing `/`), a drive-like first segment (`C:`), control
/// characters, or more than [`MAX_PATH_BYTES`] bytes. The original refused only empty, `.` and
/// paths containing `../` (§16.14); everything it refused is still refused.
pub fn normalize_path(raw: &str) -> AppResult<String> {
    let p = raw.replace('\\', "/");
    let p = p.trim_start_matches('/');
    let bad = || AppError::validation(format!("invalid_relative_path:{raw}"));
    if p.is_empty() || p.len() > MAX_PATH_BYTES || p.chars().any(char::is_control) {
        return Err(bad());
    }
    for (i, seg) in p.split('/').enumerate() {
        let drive = i == 0 && seg.len() == 2 && seg.ends_with(':') && seg.as_bytes()[0].is_ascii_alphabetic();
        if seg.is_empty() || seg == "." || seg == ".." || drive {
            return Err(bad());
        }
    }
    Ok(p.to_string())
}

fn collator() -> Option<&'static icu_collator::CollatorBorrowed<'static>> {
    static C: OnceLock<Option<icu_collator::CollatorBorrowed<'static>>> = OnceLock::new();
    C.get_or_init(|| icu_collator::Collator::try_new(Default::default(), Default::default()).ok()).as_ref()
}

/// The canonical order of bundle paths (see the module doc).
pub fn canonical_cmp(a: &str, b: &str) -> Ordering {
    let c = collator().map(|c| c.compare(a, b)).unwrap_or(Ordering::Equal);
    c.then_with(|| a.cmp(b))
}

/// Plain UTF-16 code-unit order (JavaScript's default `sort`).
pub fn code_unit_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The bundle checksum: SHA-256 hex of `path LF sha256 LF content` for each file, in the order
/// given, joined by `LF---LF`. entryPoint and moduleFormat are not part of it.
pub fn bundle_sha256<'a>(files: impl IntoIterator<Item = &'a SkillFile>) -> String {
    let mut h = Sha256::new();
    for (i, f) in files.into_iter().enumerate() {
        if i > 0 {
            h.update(b"\n---\n");
        }
        h.update(f.path.as_bytes());
        h.update(b"\n");
        h.update(f.sha256.as_bytes());
        h.update(b"\n");
        h.update(f.content.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Validate bundle files (spec §13.2 steps 1–3, first failure wins) and put them in canonical
/// order with their bundle checksum.
pub fn validate_files(files: &[BundleFileInput], format: ModuleFormat) -> AppResult<Bundle> {
    if files.is_empty() {
        return Err(AppError::validation("Global skill bundle must contain at least one file."));
    }
    if files.len() > MAX_BUNDLE_FILES {
        return Err(AppError::validation(format!("Global skill bundle has too many files (max {MAX_BUNDLE_FILES}).")));
    }
    let mut seen = HashSet::new();
    let mut total = 0usize;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let path = normalize_path(&f.path)?;
        if path == MARKER_PATH {
            return Err(AppError::validation("Bundle files must not include .af-global-skill.json."));
        }
        if !seen.insert(path.clone()) {
            return Err(AppError::validation(format!("Duplicate bundle file path: {path}")));
        }
        total += f.content.len();
        if total > MAX_BUNDLE_BYTES {
            return Err(AppError::validation("Global skill bundle too large (max 200KB)."));
        }
        let given = f.sha256.as_deref().map(str::trim).unwrap_or_default();
        if given.is_empty() {
            return Err(AppError::validation(format!("Missing bundle checksum for {path}.")));
        }
        let actual = sha256_hex(f.content.as_bytes());
        if given != actual {
            return Err(AppError::validation(format!("Global skill checksum mismatch for {path}.")));
        }
        out.push(SkillFile { path, content: f.content.clone(), sha256: actual });
    }
    if !seen.contains("SKILL.md") {
        return Err(AppError::validation("Global skill bundle must include SKILL.md."));
    }
    let entry = format.entry_script();
    if !seen.contains(entry) {
        return Err(AppError::validation(format!("Global skill bundle must include {entry}.")));
    }
    out.sort_by(|a, b| canonical_cmp(&a.path, &b.path));
    let sha256 = bundle_sha256(&out);
    Ok(Bundle { files: out, sha256 })
}

/// Slug: 2–128 characters of `[a-z0-9_-]`, the first alphanumeric (after trim + lower-case).
pub fn valid_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    (2..=128).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// Version: `N.N.N` optionally followed by one `-` or `+` suffix of `[A-Za-z0-9.-]+`.
pub fn valid_version(v: &str) -> bool {
    let (core, suffix) = match v.find(['-', '+']) {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    let core_ok = parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    let suffix_ok =
        suffix.is_none_or(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-'));
    core_ok && suffix_ok
}

/// `deployGlobalSkill`'s checks that need no stored state (spec §13.2 steps 1–6, in order).
pub fn validate_deploy(a: &DeployArgs) -> AppResult<ValidDeploy> {
    let slug = a.slug.trim().to_lowercase();
    let version = a.version.trim().to_string();
    let entry_point = a.entry_point.as_deref().unwrap_or("default").trim().to_string();
    let module_format = a.module_format.unwrap_or_default();
    let bundle = validate_files(&a.files, module_format)?;
    if !valid_slug(&slug) {
        return Err(AppError::validation("Invalid skill slug. Use lowercase letters, numbers, '-' and '_'."));
    }
    if !valid_version(&version) {
        return Err(AppError::validation("Invalid skill version. Use semantic versioning format."));
    }
    if entry_point.is_empty() {
        return Err(AppError::validation("entryPoint is required."));
    }
    if entry_point.len() > MAX_ENTRY_POINT_BYTES || entry_point.chars().any(char::is_control) {
        return Err(AppError::validation(format!(
            "entryPoint must be at most {MAX_ENTRY_POINT_BYTES} bytes, without control characters."
        )));
    }
    let actor = a.actor.as_deref().map(str::trim).filter(|s| !s.is_empty()).unwrap_or("system").to_string();
    Ok(ValidDeploy {
        slug,
        display_name: a.display_name.clone(),
        description: a.description.clone(),
        version,
        bundle,
        entry_point,
        module_format,
        release_channel: a.release_channel.unwrap_or_default(),
        actor,
    })
}

/// New ids for one deploy (made by the caller, so the plan stays pure).
#[derive(Debug, Clone)]
pub struct DeployIds {
    pub skill_id: String,
    pub version_id: String,
    pub release_id: String,
}

/// What a deploy writes (spec §13.2 step 7 and effects), given the stored skill and the stored
/// version with the same (slug, version), if any.
pub fn plan_deploy(
    v: &ValidDeploy,
    skill: Option<&Skill>,
    version: Option<&SkillVersion>,
    ids: DeployIds,
    now: Millis,
) -> AppResult<DeployPlan> {
    if let Some(old) = version
        && (old.sha256 != v.bundle.sha256 || old.module_format != v.module_format || old.entry_point != v.entry_point)
    {
        return Err(AppError::conflict(format!(
            "Skill {}@{} already exists with a different bundle.",
            v.slug, v.version
        )));
    }
    let blank = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let (mut s, is_new) = match skill {
        Some(old) => {
            let mut s = old.clone();
            if let Some(d) = blank(&v.display_name) {
                s.display_name = d;
            }
            if let Some(d) = &v.description {
                s.description = Some(d.trim().to_string());
            }
            s.status = SkillStatus::Active;
            s.updated_by = v.actor.clone();
            s.updated_at = now;
            (s, false)
        }
        None => (
            Skill {
                skill_id: ids.skill_id,
                slug: v.slug.clone(),
                display_name: blank(&v.display_name).unwrap_or_else(|| v.slug.clone()),
                description: blank(&v.description),
                status: SkillStatus::Active,
                created_by: v.actor.clone(),
                updated_by: v.actor.clone(),
                created_at: now,
                updated_at: now,
                releases: Releases::default(),
            },
            true,
        ),
    };
    let new_version = match version {
        Some(_) => None,
        None => Some(SkillVersion {
            skill_id: s.skill_id.clone(),
            version_id: ids.version_id.clone(),
            version: v.version.clone(),
            module_format: v.module_format,
            entry_point: v.entry_point.clone(),
            files: v.bundle.files.clone(),
            sha256: v.bundle.sha256.clone(),
            created_by: v.actor.clone(),
            created_at: now,
        }),
    };
    let version_id = version.map(|x| x.version_id.clone()).unwrap_or(ids.version_id);
    let release = ReleaseRow {
        release_id: ids.release_id,
        skill_id: s.skill_id.clone(),
        version_id: version_id.clone(),
        version: v.version.clone(),
        release_channel: v.release_channel,
        activated_by: v.actor.clone(),
        activated_at: now,
    };
    s.releases.set(
        v.release_channel,
        ActiveRelease {
            release_id: release.release_id.clone(),
            version_id: version_id.clone(),
            version: v.version.clone(),
            sha256: v.bundle.sha256.clone(),
            module_format: v.module_format,
            entry_point: v.entry_point.clone(),
            activated_by: v.actor.clone(),
            activated_at: now,
        },
    );
    Ok(DeployPlan { skill: s, is_new, new_version, version_id, release })
}

/// A listing row for `channel`.
pub fn skill_row(s: &Skill, channel: ReleaseChannel) -> SkillRow {
    SkillRow {
        skill_id: s.skill_id.clone(),
        slug: s.slug.clone(),
        display_name: s.display_name.clone(),
        description: s.description.clone(),
        status: s.status,
        updated_at: s.updated_at,
        active_release: s.releases.get(channel).map(|r| ActiveReleaseView {
            release_id: r.release_id.clone(),
            version_id: r.version_id.clone(),
            version: r.version.clone(),
            sha256: r.sha256.clone(),
            module_format: r.module_format,
            entry_point: r.entry_point.clone(),
            release_channel: channel,
            activated_at: r.activated_at,
        }),
    }
}

/// `limit` clamped to 1..=500, default 200.
pub fn list_limit(limit: Option<i64>) -> usize {
    limit.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, MAX_LIST_LIMIT) as usize
}

/// The directory a skill is materialized in: the slug lower-cased, every character outside
/// `[a-z0-9-_]` → `-`, `unnamed-skill` if empty.
pub fn skill_dir_name(slug: &str) -> String {
    let d: String = slug
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    if d.is_empty() { "unnamed-skill".into() } else { d }
}

/// The marker file of one skill version.
pub fn marker_file(slug: &str, version: &str, sha256: &str, entry_point: &str, format: ModuleFormat) -> SkillFile {
    let m = Marker { slug, version, sha256, managed_by: MANAGED_BY, entry_point, module_format: format };
    let mut content = serde_json::to_string_pretty(&m).unwrap_or_default();
    content.push('\n');
    SkillFile { path: MARKER_PATH.into(), sha256: sha256_hex(content.as_bytes()), content }
}

/// One manifest item from a stored version: the files re-validated (§13.1; a violation raises
/// the matching deploy error), the bundle checksum recomputed and compared, the marker appended.
pub fn manifest_item(slug: &str, v: &SkillVersion) -> AppResult<ManifestSkill> {
    let inputs: Vec<BundleFileInput> = v
        .files
        .iter()
        .map(|f| BundleFileInput { path: f.path.clone(), content: f.content.clone(), sha256: Some(f.sha256.clone()) })
        .collect();
    // Stored data that fails the rules is our fault, not the caller's: an internal error.
    let bundle = validate_files(&inputs, v.module_format).map_err(|e| AppError::internal(e.to_string()))?;
    if bundle.sha256 != v.sha256 {
        return Err(AppError::internal(format!("Global skill bundle checksum mismatch for {slug}@{}.", v.version)));
    }
    let mut files = bundle.files;
    files.push(marker_file(slug, &v.version, &v.sha256, &v.entry_point, v.module_format));
    Ok(ManifestSkill {
        slug: slug.to_string(),
        version: v.version.clone(),
        module_format: v.module_format,
        entry_point: v.entry_point.clone(),
        sha256: v.sha256.clone(),
        skill_dir_name: skill_dir_name(slug),
        files,
    })
}

/// `manifestVersion`: SHA-256 hex of the items joined by `|`, each
/// `<slug>@<version>:<bundle sha256>:<path>:<sha256>,...` (every file but the marker, those
/// entries in UTF-16 code-unit order); SHA-256 of `empty` when there are none. Items must
/// already be sorted by slug, then version.
pub fn manifest_version(items: &[ManifestSkill]) -> String {
    if items.is_empty() {
        return sha256_hex(b"empty");
    }
    let rendered: Vec<String> = items
        .iter()
        .map(|i| {
            let mut files: Vec<String> =
                i.files.iter().filter(|f| f.path != MARKER_PATH).map(|f| format!("{}:{}", f.path, f.sha256)).collect();
            files.sort_by(|a, b| code_unit_cmp(a, b));
            format!("{}@{}:{}:{}", i.slug, i.version, i.sha256, files.join(","))
        })
        .collect();
    sha256_hex(rendered.join("|").as_bytes())
}

/// The manifest from its items (sorted here by slug, then version).
pub fn manifest(
    mut items: Vec<ManifestSkill>,
    channel: ReleaseChannel,
    workspace_id: Option<&str>,
    now: Millis,
) -> SkillsManifest {
    items.sort_by(|a, b| code_unit_cmp(&a.slug, &b.slug).then_with(|| code_unit_cmp(&a.version, &b.version)));
    SkillsManifest {
        layout_version: LAYOUT_VERSION.into(),
        manifest_version: manifest_version(&items),
        generated_at: now,
        release_channel: channel,
        workspace_id: workspace_id.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("default").to_string(),
        skills: items,
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
