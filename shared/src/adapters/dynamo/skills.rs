//! Global skills in the control table (data model: "Global skills"): skill rows under one
//! partition (`SKILLS`, by slug), each skill's versions and release history under `SKILL#<slug>`.
//! A deploy is one TransactWriteItems (skill row, version, release row).

use super::tx::{tx_check, tx_put};
use super::{Ex, Item, Store, TxError, conflict_pause, from_item, keys, s, to_item};
use crate::adapters::sdk_error;
use crate::error::{AppError, AppResult};
use crate::skills::model::{DeployPlan, Skill, SkillVersion};
use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};

/// Most skill rows read by one listing or manifest (a bound, far above any real deployment).
pub const MAX_SKILLS: usize = 5_000;
/// Version rows per BatchGetItem (each up to ~200 KB; DynamoDB answers at most 16 MB).
const VERSIONS_PER_BATCH: usize = 25;

/// What a deploy's write found changed since its reads.
#[derive(Debug)]
pub enum DeployWrite {
    Done,
    /// A condition failed (a racing deploy or delete): read again and re-plan.
    Raced,
}

impl Store {
    fn sk_c(&self) -> &str {
        &self.tables.control
    }

    /// The skill row and the stored (slug, version) row, in one BatchGetItem.
    pub async fn skill_and_version(
        &self,
        slug: &str,
        version: &str,
    ) -> AppResult<(Option<Skill>, Option<SkillVersion>)> {
        let c = self.sk_c();
        let mut got =
            self.batch_get(&[(c, keys::skill_key(slug)), (c, keys::skill_version_key(slug, version))]).await?;
        let v = got.pop().flatten().map(from_item).transpose()?;
        let sk = got.pop().flatten().map(from_item).transpose()?;
        Ok((sk, v))
    }

    pub async fn get_skill(&self, slug: &str) -> AppResult<Option<Skill>> {
        self.get(self.sk_c(), keys::skill_key(slug)).await?.map(from_item).transpose()
    }

    /// Write a deploy plan: the skill row (created, or replaced if unchanged since read), the
    /// version (created, or checked to be the one read), the release row. One transaction.
    pub async fn write_deploy(&self, p: &DeployPlan, seen: Option<&Skill>, attempt: u32) -> AppResult<DeployWrite> {
        let c = self.sk_c();
        let slug = &p.skill.slug;
        let mut skill = to_item(&p.skill)?;
        skill.extend(keys::skill_key(slug));
        let skill_item = match seen {
            None => tx_put(c, skill, "attribute_not_exists(pk)", &Ex::new()),
            Some(old) => tx_put(
                c,
                skill,
                "skillId = :sid AND updatedAt = :ua",
                &Ex::new().val(":sid", s(&old.skill_id)).val(":ua", super::n(old.updated_at)),
            ),
        };
        let version_item = match &p.new_version {
            Some(v) => {
                let mut item = to_item(v)?;
                item.extend(keys::skill_version_key(slug, &v.version));
                tx_put(c, item, "attribute_not_exists(pk)", &Ex::new())
            }
            None => tx_check(
                c,
                keys::skill_version_key(slug, &p.release.version),
                "versionId = :vid",
                &Ex::new().val(":vid", s(&p.version_id)),
            ),
        };
        let mut release = to_item(&p.release)?;
        release.extend(keys::skill_release_key(slug, &p.release.release_id));
        let release_item = tx_put(c, release, "attribute_not_exists(pk)", &Ex::new());
        match self.transact(vec![skill_item, version_item, release_item]).await {
            Ok(()) => Ok(DeployWrite::Done),
            Err(TxError::Cancelled(r)) if r.iter().any(|x| x.failed_condition()) => Ok(DeployWrite::Raced),
            Err(TxError::Cancelled(r)) if r.iter().any(|x| x.conflict()) => {
                conflict_pause(attempt).await;
                Ok(DeployWrite::Raced)
            }
            Err(e) => Err(e.into_app("deployGlobalSkill")),
        }
    }

    /// Every skill row, by slug (one paginated Query of the `SKILLS` partition, at most
    /// [`MAX_SKILLS`] rows).
    pub async fn all_skills(&self) -> AppResult<Vec<Skill>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let r = self
                .client
                .query()
                .table_name(self.sk_c())
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(keys::SKILLS_PK))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query skills", e))?;
            for i in r.items.unwrap_or_default() {
                out.push(from_item::<Skill>(i)?);
            }
            start = r.last_evaluated_key;
            if start.is_none() || out.len() >= MAX_SKILLS {
                break;
            }
        }
        out.truncate(MAX_SKILLS);
        Ok(out)
    }

    /// The version rows of (slug, version) pairs, in order (`None` where missing).
    pub async fn skill_versions(&self, wanted: &[(String, String)]) -> AppResult<Vec<Option<SkillVersion>>> {
        let c = self.sk_c();
        let mut out = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(VERSIONS_PER_BATCH) {
            let ks: Vec<(&str, Item)> = chunk.iter().map(|(sl, v)| (c, keys::skill_version_key(sl, v))).collect();
            for got in self.batch_get(&ks).await? {
                out.push(got.map(from_item).transpose()?);
            }
        }
        Ok(out)
    }

    /// Set a skill's status: `false` when there is no such skill.
    pub async fn set_skill_status(&self, slug: &str, status: &str, actor: &str, now: i64) -> AppResult<bool> {
        let ex = Ex::new().name("#st", "status").val(":st", s(status)).val(":by", s(actor)).val(":now", super::n(now));
        self.update_if(
            self.sk_c(),
            keys::skill_key(slug),
            "SET #st = :st, updatedBy = :by, updatedAt = :now",
            "attribute_exists(pk)",
            &ex,
            "UpdateItem skill status",
        )
        .await
    }

    /// Hard-delete a skill: its versions and release rows first, the skill row last (so a
    /// delete cut short is finished by calling it again). `None` when there is no such skill;
    /// else the numbers of versions and releases deleted.
    pub async fn delete_skill(&self, slug: &str) -> AppResult<Option<(u32, u32)>> {
        if self.get_skill(slug).await?.is_none() {
            return Ok(None);
        }
        let c = self.sk_c();
        let (mut versions, mut releases) = (0u32, 0u32);
        let mut start: Option<Item> = None;
        loop {
            let r = self
                .client
                .query()
                .table_name(c)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(keys::skill_pk(slug)))
                .projection_expression("pk, sk")
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query skill rows", e))?;
            let items = r.items.unwrap_or_default();
            for i in &items {
                match super::item_s(i, "sk") {
                    Some(sk) if sk.starts_with(keys::SKILL_VERSION_PREFIX) => versions += 1,
                    Some(sk) if sk.starts_with(keys::SKILL_RELEASE_PREFIX) => releases += 1,
                    _ => {}
                }
            }
            for chunk in items.chunks(25) {
                self.delete_batch(c, chunk.to_vec()).await?;
            }
            start = r.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        self.client
            .delete_item()
            .table_name(c)
            .set_key(Some(keys::skill_key(slug)))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem skill", e))?;
        Ok(Some((versions, releases)))
    }

    /// Delete up to 25 items by key with BatchWriteItem, retrying unprocessed ones.
    async fn delete_batch(&self, table: &str, ks: Vec<Item>) -> AppResult<()> {
        let mut pending: Vec<WriteRequest> = ks
            .into_iter()
            .map(|k| {
                let k: Item = k.into_iter().filter(|(n, _)| n == "pk" || n == "sk").collect();
                DeleteRequest::builder()
                    .set_key(Some(k))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
            })
            .collect::<Result<_, _>>()
            .map_err(|e| AppError::internal(format!("BatchWriteItem request: {e}")))?;
        for attempt in 0..6 {
            if pending.is_empty() {
                return Ok(());
            }
            let r = self
                .client
                .batch_write_item()
                .request_items(table, std::mem::take(&mut pending))
                .send()
                .await
                .map_err(|e| sdk_error("BatchWriteItem", e))?;
            pending = r.unprocessed_items.unwrap_or_default().remove(table).unwrap_or_default();
            if !pending.is_empty() {
                conflict_pause(attempt).await;
            }
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(AppError::internal("BatchWriteItem left items unprocessed; call deleteGlobalSkill again"))
        }
    }
}
