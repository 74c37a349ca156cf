//! Global skill use cases and their op table (served by `admin`): deploy, list, set status,
//! delete, and the worker manifest (also `POST /worker/skills-manifest`).

use super::model::*;
use super::rules;
use crate::adapters::dynamo::skills::DeployWrite;
use crate::app::App;
use crate::envelope::OpTable;
use crate::error::{AppError, AppResult};
use crate::ids;
use crate::op;

/// Reads and writes one deploy may take when racing other deploys of the same skill.
const DEPLOY_ATTEMPTS: u32 = 6;

/// `deployGlobalSkill` (spec §13.2): validate, then upsert the skill, insert or reuse the
/// version and activate a new release on the channel, in one transaction.
pub async fn deploy(app: &App, a: &DeployArgs) -> AppResult<DeployResult> {
    let v = rules::validate_deploy(a)?;
    for attempt in 0..DEPLOY_ATTEMPTS {
        let (skill, version) = app.store.skill_and_version(&v.slug, &v.version).await?;
        let now = app.now();
        let ids = rules::DeployIds {
            skill_id: format!("skill_{}", ids::ulid(now)),
            version_id: format!("skillv_{}", ids::ulid(now)),
            release_id: ids::ulid(now),
        };
        let plan = rules::plan_deploy(&v, skill.as_ref(), version.as_ref(), ids, now)?;
        if let DeployWrite::Done = app.store.write_deploy(&plan, skill.as_ref(), attempt).await? {
            return Ok(DeployResult {
                skill_id: plan.skill.skill_id,
                version_id: plan.version_id,
                release_id: plan.release.release_id,
                slug: v.slug,
                version: v.version,
                sha256: v.bundle.sha256,
                release_channel: v.release_channel,
            });
        }
    }
    Err(AppError::conflict("deployGlobalSkill: concurrent deploys of this skill kept racing; try again"))
}

/// `listGlobalSkills` (spec §13.3): the first `limit` skills by slug (status filter applied
/// before the limit), each with its active release on the channel.
pub async fn list(app: &App, a: &ListArgs) -> AppResult<Vec<SkillRow>> {
    let channel = a.release_channel.unwrap_or_default();
    let limit = rules::list_limit(a.limit);
    Ok(app
        .store
        .all_skills()
        .await?
        .iter()
        .filter(|s| a.status.is_none_or(|st| s.status == st))
        .take(limit)
        .map(|s| rules::skill_row(s, channel))
        .collect())
}

/// `setGlobalSkillStatus` (spec §13.5).
pub async fn set_status(app: &App, a: &SetStatusArgs) -> AppResult<SetStatusResult> {
    let slug = a.slug.trim().to_lowercase();
    let actor = a.actor.as_deref().map(str::trim).filter(|s| !s.is_empty()).unwrap_or("system");
    let st = match a.status {
        SkillStatus::Active => "active",
        SkillStatus::Disabled => "disabled",
    };
    // A slug that cannot exist is not looked up (nor sent to DynamoDB as a key).
    let updated = rules::valid_slug(&slug) && app.store.set_skill_status(&slug, st, actor, app.now()).await?;
    Ok(SetStatusResult { updated, slug, status: a.status })
}

/// `deleteGlobalSkill` (spec §13.5): every release, every version, then the skill.
pub async fn delete(app: &App, a: &SlugArgs) -> AppResult<DeleteResult> {
    let slug = a.slug.trim().to_lowercase();
    let r = if !rules::valid_slug(&slug) { None } else { app.store.delete_skill(&slug).await? };
    let (deleted_versions, deleted_releases) = r.unwrap_or((0, 0));
    Ok(DeleteResult { deleted: r.is_some(), slug, deleted_versions, deleted_releases })
}

/// `getWorkerGlobalSkillsManifest` (spec §13.4): every active skill's active release on the
/// channel (no fallback), re-validated; any corrupt version fails the whole call.
pub async fn manifest(app: &App, a: &ManifestArgs) -> AppResult<SkillsManifest> {
    let channel = a.release_channel.unwrap_or_default();
    let skills: Vec<(String, String)> = app
        .store
        .all_skills()
        .await?
        .into_iter()
        .filter(|s| s.status == SkillStatus::Active)
        .filter_map(|s| s.releases.get(channel).map(|r| (s.slug.clone(), r.version.clone())))
        .collect();
    let versions = app.store.skill_versions(&skills).await?;
    let mut items = Vec::with_capacity(skills.len());
    for ((slug, _), v) in skills.iter().zip(versions) {
        // A release whose version row is missing (a delete in progress) is skipped.
        if let Some(v) = v {
            items.push(rules::manifest_item(slug, &v)?);
        }
    }
    Ok(rules::manifest(items, channel, a.workspace_id.as_deref(), app.now()))
}

/// The global skill ops (operator ops: `admin`).
pub const TABLE: OpTable<App> = OpTable {
    domain: "skills",
    ops: &[
        op!(App, "deployGlobalSkill", |app, a: DeployArgs| deploy(app, &a).await?),
        op!(App, "listGlobalSkills", |app, a: ListArgs| list(app, &a).await?),
        op!(App, "setGlobalSkillStatus", |app, a: SetStatusArgs| set_status(app, &a).await?),
        op!(App, "deleteGlobalSkill", |app, a: SlugArgs| delete(app, &a).await?),
        op!(App, "getWorkerGlobalSkillsManifest", |app, a: ManifestArgs| manifest(app, &a).await?),
    ],
};
