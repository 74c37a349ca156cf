//! Message templates in the control table (`docs/data-model.md` §pushing): the item under its
//! company's partition and a key guard per template key, written together.

use super::tx::{tx_delete, tx_put, tx_update};
use super::{Ex, Item, Store, TxError, TxItem, b, from_item, keys, n, s, to_item};
use crate::adapters::sdk_error;
use crate::error::{AppError, AppResult};
use crate::templates::model::MessageTemplate;
use crate::templates::rules::{self, MAX_TEMPLATES_PER_COMPANY};

impl Store {
    fn template_item(&self, t: &MessageTemplate) -> AppResult<Item> {
        let (ulid, company) = rules::parse_template_id(&t.template_id)
            .ok_or_else(|| AppError::internal("message template with a malformed id"))?;
        let mut item = to_item(t)?;
        item.extend(keys::message_template_key(company, ulid));
        Ok(item)
    }

    fn key_guard(&self, t: &MessageTemplate) -> Item {
        let mut g = keys::message_template_key_guard(&t.company_id, &t.template_key);
        g.insert("templateId".into(), s(&t.template_id));
        g
    }

    /// The template keys of `company_id` starting with `base` (one Query of the guards).
    pub async fn message_template_keys(&self, company_id: &str, base: &str) -> AppResult<Vec<String>> {
        let prefix = format!("{}{base}", keys::MESSAGE_TEMPLATE_KEY_PREFIX);
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.control)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(keys::company_pk(company_id)))
                .expression_attribute_values(":p", s(&prefix))
                .projection_expression("sk")
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_error("Query template keys", e))?;
            out.extend(page.items.unwrap_or_default().iter().filter_map(|i| {
                super::item_s(i, "sk")
                    .and_then(|k| k.strip_prefix(keys::MESSAGE_TEMPLATE_KEY_PREFIX))
                    .map(str::to_string)
            }));
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() && out.len() < MAX_TEMPLATES_PER_COMPANY * 2 => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Insert a template and its key guard; `false` when the key was taken meanwhile.
    pub async fn insert_message_template(&self, t: &MessageTemplate) -> AppResult<bool> {
        let ex = Ex::new();
        let items = vec![
            tx_put(&self.tables.control, self.template_item(t)?, "attribute_not_exists(pk)", &ex),
            tx_put(&self.tables.control, self.key_guard(t), "attribute_not_exists(pk)", &ex),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(TxError::Cancelled(r)) if r.get(1).is_some_and(|x| x.failed_condition()) => Ok(false),
            Err(e) => Err(e.into_app("createMessageTemplate")),
        }
    }

    /// A template by id (`None` for an unknown or malformed id).
    pub async fn get_message_template(&self, template_id: &str) -> AppResult<Option<MessageTemplate>> {
        let Some((ulid, company)) = rules::parse_template_id(template_id) else { return Ok(None) };
        self.get(&self.tables.control, keys::message_template_key(company, ulid)).await?.map(from_item).transpose()
    }

    /// Write `new` over `old` (read just before): conditional on `old.updatedAt`, moving the key
    /// guard when the key changed. `usageCount` is left to the sends. `Ok(false)`: the new key was
    /// taken meanwhile; a lost race on the item is a `Conflict`.
    pub async fn replace_message_template(&self, old: &MessageTemplate, new: &MessageTemplate) -> AppResult<bool> {
        let (ulid, company) = rules::parse_template_id(&old.template_id)
            .ok_or_else(|| AppError::internal("message template with a malformed id"))?;
        let ex = Ex::new()
            .name("#t", "text")
            .val(":title", s(&new.title))
            .val(":text", s(&new.text))
            .val(":tags", super::to_av(&new.tags)?)
            .val(":en", b(new.enabled))
            .val(":key", s(&new.template_key))
            .val(":by", s(&new.updated_by))
            .val(":at", n(new.updated_at))
            .val(":old", n(old.updated_at));
        let mut items: Vec<TxItem> = vec![tx_update(
            &self.tables.control,
            keys::message_template_key(company, ulid),
            "SET title = :title, #t = :text, tags = :tags, enabled = :en, templateKey = :key, updatedBy = :by, updatedAt = :at",
            Some("attribute_exists(pk) AND updatedAt = :old"),
            &ex,
        )];
        if new.template_key != old.template_key {
            items.push(tx_put(&self.tables.control, self.key_guard(new), "attribute_not_exists(pk)", &ex));
            items.push(tx_delete(
                &self.tables.control,
                keys::message_template_key_guard(&old.company_id, &old.template_key),
                "attribute_exists(pk)",
                &ex,
            ));
        }
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(TxError::Cancelled(r)) if r.get(1).is_some_and(|x| x.failed_condition()) => Ok(false),
            Err(e) => Err(e.into_app("updateMessageTemplate")),
        }
    }

    /// Delete a template and its key guard; `false` when it is gone already.
    pub async fn delete_message_template(&self, t: &MessageTemplate) -> AppResult<bool> {
        let (ulid, company) = rules::parse_template_id(&t.template_id)
            .ok_or_else(|| AppError::internal("message template with a malformed id"))?;
        let ex = Ex::new();
        let items = vec![
            tx_delete(&self.tables.control, keys::message_template_key(company, ulid), "attribute_exists(pk)", &ex),
            tx_delete(
                &self.tables.control,
                keys::message_template_key_guard(&t.company_id, &t.template_key),
                "attribute_exists(pk)",
                &ex,
            ),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(TxError::Cancelled(r)) if r.first().is_some_and(|x| x.failed_condition()) => Ok(false),
            Err(e) => Err(e.into_app("deleteMessageTemplate")),
        }
    }

    /// Every template of a company (Query pages of `MTPL#`, at most
    /// [`MAX_TEMPLATES_PER_COMPANY`]).
    pub async fn company_message_templates(&self, company_id: &str) -> AppResult<Vec<MessageTemplate>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.control)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(keys::company_pk(company_id)))
                .expression_attribute_values(":p", s(keys::MESSAGE_TEMPLATE_PREFIX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query message templates", e))?;
            for item in page.items.unwrap_or_default() {
                out.push(from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() && out.len() < MAX_TEMPLATES_PER_COMPANY => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The write that counts one use of a template, for the send's transaction: conditional on
    /// the template being enabled and its count still `seen`.
    pub fn message_template_use(&self, t: &MessageTemplate) -> AppResult<TxItem> {
        let (ulid, company) = rules::parse_template_id(&t.template_id)
            .ok_or_else(|| AppError::internal("message template with a malformed id"))?;
        let ex = Ex::new().val(":seen", n(t.usage_count)).val(":one", n(1)).val(":t", b(true));
        Ok(tx_update(
            &self.tables.control,
            keys::message_template_key(company, ulid),
            "SET usageCount = usageCount + :one",
            Some("enabled = :t AND usageCount = :seen"),
            &ex,
        ))
    }
}
