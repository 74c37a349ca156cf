//! Global skills (spec §13): bundle files, versions, releases, the op arguments and results, and
//! the worker manifest (`openclaw-workspace-skill-v1`), which is also a worker-protocol wire type
//! (re-exported by `crate::protocol::skills`).

use crate::clock::Millis;
use serde::{Deserialize, Serialize};

/// The manifest layout this backend serves.
pub const LAYOUT_VERSION: &str = "openclaw-workspace-skill-v1";
/// The marker file every materialized skill directory carries (generated, never accepted).
pub const MARKER_PATH: &str = ".af-global-skill.json";
/// The marker's `managedBy`.
pub const MANAGED_BY: &str = "agent-factory";

/// How the entry script is loaded: `scripts/index.mjs` (esm) or `scripts/index.cjs` (cjs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModuleFormat {
    #[default]
    Esm,
    Cjs,
}

impl ModuleFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleFormat::Esm => "esm",
            ModuleFormat::Cjs => "cjs",
        }
    }
    /// The entry script the bundle must include.
    pub fn entry_script(self) -> &'static str {
        match self {
            ModuleFormat::Esm => "scripts/index.mjs",
            ModuleFormat::Cjs => "scripts/index.cjs",
        }
    }
}

/// A release channel. Workers read one (`SKILLS_RELEASE_CHANNEL`); there is no fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseChannel {
    #[default]
    Stable,
    Canary,
}

impl ReleaseChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseChannel::Stable => "stable",
            ReleaseChannel::Canary => "canary",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SkillStatus {
    Active,
    Disabled,
}

/// One file of a bundle as the caller sends it (`sha256` is required; blank is refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleFileInput {
    pub path: String,
    pub content: String,
    #[serde(default)]
    pub sha256: Option<String>,
}

/// One file of a stored version or of a manifest: normalized path, UTF-8 text, lower-case hex
/// SHA-256 of the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkillFile {
    pub path: String,
    pub content: String,
    pub sha256: String,
}

/// A validated bundle: files in canonical order and the bundle checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub files: Vec<SkillFile>,
    pub sha256: String,
}

/// `deployGlobalSkill`'s arguments (spec §13.2).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployArgs {
    pub slug: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub version: String,
    pub files: Vec<BundleFileInput>,
    #[serde(default)]
    pub entry_point: Option<String>,
    #[serde(default)]
    pub module_format: Option<ModuleFormat>,
    #[serde(default)]
    pub release_channel: Option<ReleaseChannel>,
    #[serde(default)]
    pub actor: Option<String>,
}

/// A deploy that passed every rule that needs no stored state (spec §13.2 steps 1–6).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidDeploy {
    pub slug: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub version: String,
    pub bundle: Bundle,
    pub entry_point: String,
    pub module_format: ModuleFormat,
    pub release_channel: ReleaseChannel,
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployResult {
    pub skill_id: String,
    pub version_id: String,
    pub release_id: String,
    pub slug: String,
    pub version: String,
    pub sha256: String,
    pub release_channel: ReleaseChannel,
}

/// The active release of one channel, kept on the skill row (so listing and the manifest read
/// no release history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveRelease {
    pub release_id: String,
    pub version_id: String,
    pub version: String,
    pub sha256: String,
    pub module_format: ModuleFormat,
    pub entry_point: String,
    pub activated_by: String,
    pub activated_at: Millis,
}

/// The active release of each channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Releases {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<ActiveRelease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<ActiveRelease>,
}

impl Releases {
    pub fn get(&self, c: ReleaseChannel) -> Option<&ActiveRelease> {
        match c {
            ReleaseChannel::Stable => self.stable.as_ref(),
            ReleaseChannel::Canary => self.canary.as_ref(),
        }
    }
    pub fn set(&mut self, c: ReleaseChannel, r: ActiveRelease) {
        match c {
            ReleaseChannel::Stable => self.stable = Some(r),
            ReleaseChannel::Canary => self.canary = Some(r),
        }
    }
}

/// A skill (`globalSkills`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Skill {
    pub skill_id: String,
    pub slug: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: SkillStatus,
    pub created_by: String,
    pub updated_by: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    #[serde(default)]
    pub releases: Releases,
}

/// An immutable version (`globalSkillVersions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkillVersion {
    pub skill_id: String,
    pub version_id: String,
    pub version: String,
    pub module_format: ModuleFormat,
    pub entry_point: String,
    pub files: Vec<SkillFile>,
    pub sha256: String,
    pub created_by: String,
    pub created_at: Millis,
}

/// One release history row (`globalSkillReleases`); whether it is active is read from the
/// skill row's [`Releases`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRow {
    pub release_id: String,
    pub skill_id: String,
    pub version_id: String,
    pub version: String,
    pub release_channel: ReleaseChannel,
    pub activated_by: String,
    pub activated_at: Millis,
}

/// What one deploy writes, decided by `rules::plan_deploy`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployPlan {
    /// The skill row after the deploy; `is_new` when it did not exist.
    pub skill: Skill,
    pub is_new: bool,
    /// The version to insert, or `None` when an identical version is reused.
    pub new_version: Option<SkillVersion>,
    pub version_id: String,
    pub release: ReleaseRow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListArgs {
    #[serde(default)]
    pub release_channel: Option<ReleaseChannel>,
    #[serde(default)]
    pub status: Option<SkillStatus>,
    #[serde(default)]
    pub limit: Option<i64>,
}

/// A row of `listGlobalSkills`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkillRow {
    pub skill_id: String,
    pub slug: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: SkillStatus,
    pub updated_at: Millis,
    pub active_release: Option<ActiveReleaseView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveReleaseView {
    pub release_id: String,
    pub version_id: String,
    pub version: String,
    pub sha256: String,
    pub module_format: ModuleFormat,
    pub entry_point: String,
    pub release_channel: ReleaseChannel,
    pub activated_at: Millis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetStatusArgs {
    pub slug: String,
    pub status: SkillStatus,
    #[serde(default)]
    pub actor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetStatusResult {
    pub updated: bool,
    pub slug: String,
    pub status: SkillStatus,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlugArgs {
    pub slug: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResult {
    pub deleted: bool,
    pub slug: String,
    pub deleted_versions: u32,
    pub deleted_releases: u32,
}

/// `getWorkerGlobalSkillsManifest` / `POST /worker/skills-manifest` arguments. `workerId` is
/// accepted and ignored (the route fills in the token's worker).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_channel: Option<ReleaseChannel>,
}

/// The worker skills manifest (spec §13.4, worker-runtime §4.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkillsManifest {
    /// Always [`LAYOUT_VERSION`].
    pub layout_version: String,
    /// SHA-256 fingerprint of the (slug, version, bundle) set: stable while it is unchanged.
    pub manifest_version: String,
    pub generated_at: Millis,
    pub release_channel: ReleaseChannel,
    pub workspace_id: String,
    pub skills: Vec<ManifestSkill>,
}

/// One skill of the manifest: write `files` (marker included, last) under `<skills dir>/<skillDirName>/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSkill {
    pub slug: String,
    pub version: String,
    pub module_format: ModuleFormat,
    pub entry_point: String,
    /// Bundle checksum over every file but the marker, in the order given (see
    /// `skills::rules::bundle_sha256`).
    pub sha256: String,
    pub skill_dir_name: String,
    pub files: Vec<SkillFile>,
}

/// The marker file's content (keys in this order; pretty-printed, 2-space indent, then `\n`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker<'a> {
    pub slug: &'a str,
    pub version: &'a str,
    pub sha256: &'a str,
    pub managed_by: &'a str,
    pub entry_point: &'a str,
    pub module_format: ModuleFormat,
}
