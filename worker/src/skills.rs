//! Global skills at boot (worker-runtime §4.3, done better): the manifest from
//! `POST /worker/skills-manifest` is checked whole before anything on disk changes — every file's
//! SHA-256 is required and must match its content, every skill's bundle checksum must match
//! (`shared::protocol::skills::bundle_sha256`), paths are checked segment by segment, the entry
//! script of the module format, `SKILL.md` and the marker must be there — and then the managed set
//! is replaced as a whole: every skill is written into a staging directory first, the live
//! directories are swapped in by renames (rolled back if one fails), skills no longer in the
//! manifest are removed, and the lockfile is written last. A directory without the marker file
//! belongs to an operator: it is never touched, and a skill that would replace it is skipped and
//! reported. The original materializes skill by skill, so one bad skill leaves a mixed set.

use shared::protocol::skills::{
    LAYOUT_VERSION, MARKER_PATH, ModuleFormat, SkillsManifest, bundle_sha256, sha256_hex, skill_dir_name,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The lockfile in the skills directory: what was materialized last.
pub const LOCKFILE: &str = ".skills.lock.json";

/// A skill ready to be written: its directory name and its files (path, content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub dir: String,
    pub files: Vec<(String, String)>,
}

/// A relative path made of plain segments (no empty, `.` or `..` segment, no backslash, no
/// leading `/`), or why not.
fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.contains('\\') || p.chars().any(char::is_control) {
        return Err(format!("bad file path '{p}'"));
    }
    if p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(format!("bad file path '{p}'"));
    }
    Ok(())
}

/// Check the whole manifest; nothing is written unless every skill passes.
pub fn check(m: &SkillsManifest) -> Result<Vec<Checked>, String> {
    if m.layout_version != LAYOUT_VERSION {
        return Err(format!("manifest layout '{}' is not {LAYOUT_VERSION}", m.layout_version));
    }
    let mut dirs = BTreeSet::new();
    let mut out = Vec::new();
    for s in &m.skills {
        let who = format!("skill '{}' {}", s.slug, s.version);
        let dir = skill_dir_name(if s.skill_dir_name.is_empty() { &s.slug } else { &s.skill_dir_name });
        if dir.starts_with('.') || !dirs.insert(dir.clone()) {
            return Err(format!("{who}: directory '{dir}' is not usable (hidden or used twice)"));
        }
        let mut paths = BTreeSet::new();
        for f in &s.files {
            check_path(&f.path).map_err(|e| format!("{who}: {e}"))?;
            if !paths.insert(f.path.as_str()) {
                return Err(format!("{who}: file '{}' twice", f.path));
            }
            if f.sha256 != sha256_hex(f.content.as_bytes()) {
                return Err(format!("{who}: checksum mismatch for '{}'", f.path));
            }
        }
        let entry = match s.module_format {
            ModuleFormat::Esm => "scripts/index.mjs",
            ModuleFormat::Cjs => "scripts/index.cjs",
        };
        for needed in ["SKILL.md", entry, MARKER_PATH] {
            if !paths.contains(needed) {
                return Err(format!("{who}: '{needed}' is missing"));
            }
        }
        let bundle = bundle_sha256(s.files.iter().filter(|f| f.path != MARKER_PATH));
        if bundle != s.sha256 {
            return Err(format!("{who}: bundle checksum mismatch"));
        }
        out.push(Checked { dir, files: s.files.iter().map(|f| (f.path.clone(), f.content.clone())).collect() });
    }
    Ok(out)
}

/// The `manifestVersion` of the lockfile in `skills_dir`, if any.
pub fn locked_version(skills_dir: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(skills_dir.join(LOCKFILE)).ok()?).ok()?;
    v["manifestVersion"].as_str().map(str::to_string)
}

/// What a materialization did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub written: Vec<String>,
    pub removed: Vec<String>,
    /// Directories of the manifest that an operator's own directory (no marker) occupies.
    pub skipped: Vec<String>,
}

fn managed(dir: &Path) -> bool {
    dir.join(MARKER_PATH).is_file()
}

fn write_skill(root: &Path, c: &Checked) -> std::io::Result<()> {
    for (path, content) in &c.files {
        let p = root.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, content)?;
    }
    Ok(())
}

/// Replace the managed skills of `skills_dir` by `skills` (already [`check`]ed), then write the
/// lockfile. On an error the live directories are as they were (staged copies are removed).
pub fn materialize(
    skills_dir: &Path,
    m: &SkillsManifest,
    skills: &[Checked],
    worker_id: &str,
) -> std::io::Result<Applied> {
    std::fs::create_dir_all(skills_dir)?;
    let tag = format!("{}-{}", std::process::id(), shared::ids::random_u128() as u32);
    let staging = skills_dir.join(format!(".staging-{tag}"));
    let backup = skills_dir.join(format!(".backup-{tag}"));
    let mut applied = Applied::default();
    let wanted: Vec<&Checked> = skills
        .iter()
        .filter(|c| {
            let live = skills_dir.join(&c.dir);
            let foreign = live.exists() && !managed(&live);
            if foreign {
                applied.skipped.push(c.dir.clone());
            }
            !foreign
        })
        .collect();
    // 1. Stage every skill: nothing live changes if this fails.
    let staged = (|| {
        for c in &wanted {
            write_skill(&staging.join(&c.dir), c)?;
        }
        std::fs::create_dir_all(&backup)
    })();
    if let Err(e) = staged {
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_dir_all(&backup);
        return Err(e);
    }
    // 2. Swap them in; a failed rename puts back every skill already swapped.
    let mut placed: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    let undo = |placed: Vec<(PathBuf, Option<PathBuf>)>| {
        for (live, old) in placed.into_iter().rev() {
            let _ = std::fs::remove_dir_all(&live);
            if let Some(b) = old {
                let _ = std::fs::rename(&b, &live);
            }
        }
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_dir_all(&backup);
    };
    for c in &wanted {
        let live = skills_dir.join(&c.dir);
        let old = if live.exists() {
            let b = backup.join(&c.dir);
            if let Err(e) = std::fs::rename(&live, &b) {
                undo(placed);
                return Err(e);
            }
            Some(b)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(staging.join(&c.dir), &live) {
            if let Some(b) = &old {
                let _ = std::fs::rename(b, &live);
            }
            undo(placed);
            return Err(e);
        }
        placed.push((live, old));
    }
    applied.written = wanted.iter().map(|c| c.dir.clone()).collect();
    // 3. Managed skills no longer in the manifest go; the operator's directories stay.
    let keep: BTreeSet<&str> = wanted.iter().map(|c| c.dir.as_str()).collect();
    for entry in std::fs::read_dir(skills_dir)?.flatten() {
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if p.is_dir() && !name.starts_with('.') && !keep.contains(name.as_str()) && managed(&p) {
            std::fs::remove_dir_all(&p)?;
            applied.removed.push(name);
        }
    }
    let _ = std::fs::remove_dir_all(&staging);
    let _ = std::fs::remove_dir_all(&backup);
    // 4. The lockfile, last.
    let mut names: Vec<&str> = keep.into_iter().collect();
    names.sort_unstable();
    let lock = serde_json::json!({
        "layoutVersion": m.layout_version,
        "manifestVersion": m.manifest_version,
        "generatedAt": m.generated_at,
        "releaseChannel": m.release_channel,
        "skillsDir": skills_dir.display().to_string(),
        "skillsCount": names.len(),
        "skills": names,
        "workspaceId": m.workspace_id,
        "workerId": worker_id,
    });
    let tmp = skills_dir.join(format!(".lock-{tag}"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&lock).unwrap_or_default())?;
    std::fs::rename(&tmp, skills_dir.join(LOCKFILE))?;
    applied.written.sort();
    applied.removed.sort();
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::skills::{ManifestSkill, ReleaseChannel, SkillFile};

    fn file(path: &str, content: &str) -> SkillFile {
        SkillFile { path: path.into(), content: content.into(), sha256: sha256_hex(content.as_bytes()) }
    }

    fn skill(slug: &str, body: &str) -> ManifestSkill {
        let files = vec![file("SKILL.md", &format!("# {slug}")), file("scripts/index.mjs", body)];
        let sha256 = bundle_sha256(files.iter());
        let mut all = files;
        all.push(file(MARKER_PATH, "{}\n"));
        ManifestSkill {
            slug: slug.into(),
            version: "1.0.0".into(),
            module_format: ModuleFormat::Esm,
            entry_point: "scripts/index.mjs".into(),
            sha256,
            skill_dir_name: slug.into(),
            files: all,
        }
    }

    fn manifest(skills: Vec<ManifestSkill>, version: &str) -> SkillsManifest {
        SkillsManifest {
            layout_version: LAYOUT_VERSION.into(),
            manifest_version: version.into(),
            generated_at: 1,
            release_channel: ReleaseChannel::Stable,
            workspace_id: "default".into(),
            skills,
        }
    }

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("af-skills-{:016x}", shared::ids::random_u128() as u64));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_bad_checksum_or_path_refuses_the_whole_manifest() {
        let good = skill("weather", "export default 1");
        assert_eq!(check(&manifest(vec![good.clone()], "v1")).unwrap().len(), 1);
        let mut bad_file = skill("other", "export default 1");
        bad_file.files[1].content = "export default 2".into();
        assert!(check(&manifest(vec![good.clone(), bad_file], "v1")).unwrap_err().contains("checksum mismatch"));
        let mut bad_bundle = good.clone();
        bad_bundle.sha256 = "0".repeat(64);
        assert!(check(&manifest(vec![bad_bundle], "v1")).unwrap_err().contains("bundle checksum"));
        for p in ["../x", "a/../b", "./a", "/etc/x", "a//b", "a\\b"] {
            let mut s = good.clone();
            s.files.push(file(p, "x"));
            assert!(check(&manifest(vec![s], "v1")).unwrap_err().contains("bad file path"), "{p}");
        }
        let mut no_entry = good.clone();
        no_entry.module_format = ModuleFormat::Cjs;
        assert!(check(&manifest(vec![no_entry], "v1")).unwrap_err().contains("scripts/index.cjs"));
    }

    #[test]
    fn the_managed_set_is_replaced_whole_and_operator_directories_are_left_alone() {
        let dir = tmp();
        // An operator's own skill, and a managed one the next manifest drops.
        std::fs::create_dir_all(dir.join("mine")).unwrap();
        std::fs::write(dir.join("mine/SKILL.md"), "operator's").unwrap();
        let m1 = manifest(vec![skill("weather", "v1"), skill("old", "x")], "m1");
        let a = materialize(&dir, &m1, &check(&m1).unwrap(), "w1").unwrap();
        assert_eq!(a.written, vec!["old", "weather"]);
        assert_eq!(locked_version(&dir).as_deref(), Some("m1"));
        // The next manifest: weather updated, old gone, and one that collides with "mine".
        let m2 = manifest(vec![skill("weather", "v2"), skill("mine", "y")], "m2");
        let a = materialize(&dir, &m2, &check(&m2).unwrap(), "w1").unwrap();
        assert_eq!(
            (a.written, a.removed, a.skipped),
            (vec!["weather".into()], vec!["old".into()], vec!["mine".into()])
        );
        assert_eq!(std::fs::read_to_string(dir.join("weather/scripts/index.mjs")).unwrap(), "v2");
        assert!(dir.join("weather").join(MARKER_PATH).is_file());
        assert_eq!(std::fs::read_to_string(dir.join("mine/SKILL.md")).unwrap(), "operator's");
        assert!(!dir.join("old").exists());
        assert_eq!(locked_version(&dir).as_deref(), Some("m2"));
        let leftovers: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".staging") || n.starts_with(".backup") || n.starts_with(".lock-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
