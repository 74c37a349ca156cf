//! `POST /worker/skills-manifest`: the body ([`ManifestArgs`]: `workspaceId?`, `releaseChannel?`
//! = `stable`) and the answer ([`SkillsManifest`], layout `openclaw-workspace-skill-v1`).
//!
//! How a worker materializes it (worker-runtime §4.3, with this backend's guarantees): skills
//! come sorted by slug; each one's `files` are the bundle files in canonical order followed by the
//! marker `.af-global-skill.json` (last). Every file's `sha256` is the lower-case hex SHA-256 of
//! its UTF-8 `content`; the skill's `sha256` is [`bundle_sha256`] over every file but the marker,
//! in the order given. Paths are normalized relative paths (no `.`/`..`/empty segments, no
//! leading `/`, `/` separators). Write each skill to `<skills dir>/<skillDirName>/<path>`;
//! `manifestVersion` is stable while the set of (slug, version, bundle) is unchanged, so a
//! worker holding a lockfile with the same value may skip the work.

pub use crate::skills::model::{
    LAYOUT_VERSION, MANAGED_BY, MARKER_PATH, ManifestArgs, ManifestSkill, ModuleFormat, ReleaseChannel, SkillFile,
    SkillsManifest,
};
pub use crate::skills::rules::{bundle_sha256, sha256_hex, skill_dir_name};
