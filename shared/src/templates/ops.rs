//! Message template use cases and their op table (`admin`). Sending one is an `api` op
//! (`identity::user_agents`, `sendMessageTemplateToUserAgent`).

use super::model::{CreateArgs, IdArgs, ListArgs, MessageTemplate, UpdateArgs};
use super::rules;
use crate::app::App;
use crate::envelope::OpTable;
use crate::error::{AppError, AppResult};
use crate::op;
use serde_json::{Value, json};

/// How often a create/update retries when the key it picked was taken meanwhile.
const KEY_RETRIES: u32 = 5;

/// `createMessageTemplate`: the template's id.
pub async fn create(app: &App, a: CreateArgs) -> AppResult<Value> {
    rules::validate_company_id(&a.company_id)?;
    rules::validate_actor(&a.actor_user_id)?;
    let (title, text) = rules::normalize_title_text(&a.title, &a.text)?;
    let tags = rules::normalize_tags(&a.tags)?;
    let base = rules::key_base(&title);
    for _ in 0..KEY_RETRIES {
        let taken = app.store.message_template_keys(&a.company_id, &base).await?;
        if taken.len() >= rules::MAX_TEMPLATES_PER_COMPANY {
            return Err(AppError::conflict("this company has too many templates with that title"));
        }
        let now = app.now();
        let t = MessageTemplate {
            template_id: rules::template_id(&crate::ids::ulid(now), &a.company_id),
            company_id: a.company_id.clone(),
            template_key: rules::first_free_key(&base, &taken),
            title: title.clone(),
            text: text.clone(),
            tags: tags.clone(),
            usage_count: 0,
            enabled: a.enabled.unwrap_or(true),
            created_by: a.actor_user_id.clone(),
            updated_by: a.actor_user_id.clone(),
            created_at: now,
            updated_at: now,
        };
        if app.store.insert_message_template(&t).await? {
            return Ok(json!({ "templateId": t.template_id, "templateKey": t.template_key }));
        }
    }
    Err(AppError::conflict("createMessageTemplate: the template key was taken concurrently; try again"))
}

/// `updateMessageTemplate`: `false` for an unknown id.
pub async fn update(app: &App, a: UpdateArgs) -> AppResult<bool> {
    rules::validate_actor(&a.actor_user_id)?;
    for _ in 0..KEY_RETRIES {
        let Some(old) = app.store.get_message_template(&a.template_id).await? else { return Ok(false) };
        let (title, text) = rules::normalize_title_text(
            a.title.as_deref().unwrap_or(&old.title),
            a.text.as_deref().unwrap_or(&old.text),
        )?;
        let tags = match &a.tags {
            Some(t) => rules::normalize_tags(t)?,
            None => old.tags.clone(),
        };
        // The key is regenerated only when the title changed (and may stay the same).
        let template_key = if title != old.title {
            let base = rules::key_base(&title);
            let mut taken = app.store.message_template_keys(&old.company_id, &base).await?;
            taken.retain(|k| *k != old.template_key);
            rules::first_free_key(&base, &taken)
        } else {
            old.template_key.clone()
        };
        let new = MessageTemplate {
            title,
            text,
            tags,
            template_key,
            enabled: a.enabled.unwrap_or(old.enabled),
            updated_by: a.actor_user_id.clone(),
            updated_at: app.now().max(old.updated_at + 1),
            ..old.clone()
        };
        if app.store.replace_message_template(&old, &new).await? {
            return Ok(true);
        }
    }
    Err(AppError::conflict("updateMessageTemplate: the template key was taken concurrently; try again"))
}

/// `deleteMessageTemplate`: `false` for an unknown id.
pub async fn delete(app: &App, a: IdArgs) -> AppResult<bool> {
    match app.store.get_message_template(&a.template_id).await? {
        Some(t) => app.store.delete_message_template(&t).await,
        None => Ok(false),
    }
}

/// `listMessageTemplatesByCompany`: the company's templates, most used first.
pub async fn list(app: &App, a: ListArgs) -> AppResult<Vec<MessageTemplate>> {
    rules::validate_company_id(&a.company_id)?;
    let limit = rules::list_limit(a.limit)?;
    let all = app.store.company_message_templates(&a.company_id).await?;
    Ok(rules::list_view(all, a.include_disabled.unwrap_or(false), limit))
}

/// The message template ops (the `admin` function).
pub const TABLE: OpTable<App> = OpTable {
    domain: "message-templates",
    ops: &[
        op!(App, "createMessageTemplate", |app, a: CreateArgs| create(app, a).await?),
        op!(App, "updateMessageTemplate", |app, a: UpdateArgs| update(app, a).await?),
        op!(App, "deleteMessageTemplate", |app, a: IdArgs| delete(app, a).await?),
        op!(App, "getMessageTemplate", |app, a: IdArgs| app.store.get_message_template(&a.template_id).await?),
        op!(App, "listMessageTemplatesByCompany", |app, a: ListArgs| list(app, a).await?),
    ],
};
