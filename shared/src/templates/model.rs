//! The message template item (control table, `docs/data-model.md` §pushing) and the args of its ops.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};

/// A reusable message template of one company. Its id is `<ULID>:<companyId>` (it names the
/// item's key, so every op that takes a template id reads it directly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageTemplate {
    #[serde(rename = "_id")]
    pub template_id: String,
    pub company_id: String,
    /// Unique within the company: derived from the title (`rules::key_base`), `-2`, `-3`, ... on
    /// collisions.
    pub template_key: String,
    pub title: String,
    pub text: String,
    pub tags: Vec<String>,
    pub usage_count: i64,
    pub enabled: bool,
    pub created_by: String,
    pub updated_by: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// `createMessageTemplate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateArgs {
    pub company_id: String,
    pub title: String,
    pub text: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    pub actor_user_id: String,
}

/// `updateMessageTemplate`: absent fields keep their value.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateArgs {
    pub template_id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    pub actor_user_id: String,
}

/// `deleteMessageTemplate` / `getMessageTemplate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdArgs {
    pub template_id: String,
}

/// `listMessageTemplatesByCompany`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListArgs {
    pub company_id: String,
    #[serde(default)]
    pub include_disabled: Option<bool>,
    #[serde(default)]
    pub limit: Option<i64>,
}
