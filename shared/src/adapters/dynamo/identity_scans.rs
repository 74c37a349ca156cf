//! The control-table Scans of the operator's migration helpers (`getRequiredSecretRefs` without
//! an agent, `softResetTelegramBindingsMissingBotIdentity`): full Scans with a filter, run by an
//! operator, never on a request path. Each returns typed rows, so the use cases build no
//! expression and no key.

use super::{Ex, Item, Store, b, from_item, keys, s};
use crate::adapters::sdk_error;
use crate::agents::model::AgentProfile;
use crate::error::AppResult;
use crate::identity::model::Binding;
use std::collections::BTreeMap;

/// The filter matching a row without a bot identity (absent, NULL or empty).
const NO_BOT: &str = "(attribute_not_exists(botIdentity) OR attribute_type(botIdentity, :nul) OR botIdentity = :empty)";

/// A Telegram-paired binding row without a bot identity: the user's pointer (the active binding)
/// or one of its history rows.
#[derive(Debug)]
pub struct LegacyBinding {
    pub pointer: bool,
    pub binding: Binding,
}

impl Store {
    /// Every control-table item matching `filter`, at most `limit`.
    async fn scan_control(&self, filter: &str, ex: &Ex, limit: Option<usize>) -> AppResult<Vec<Item>> {
        let (names, values) = ex.for_exprs(&[filter]);
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(self.c())
                .filter_expression(filter)
                .set_expression_attribute_names(names.clone())
                .set_expression_attribute_values(values.clone())
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_error("Scan control", e))?;
            out.extend(page.items.unwrap_or_default());
            if let Some(l) = limit.filter(|l| out.len() >= *l) {
                out.truncate(l);
                break;
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    fn no_bot_ex() -> Ex {
        Ex::new().val(":nul", s("NULL")).val(":empty", s(""))
    }

    /// Up to `limit` enabled agent profiles (one Scan).
    pub async fn scan_enabled_profiles(&self, limit: usize) -> AppResult<Vec<AgentProfile>> {
        let ex = Ex::new().val(":p", s(keys::AGENT_PROFILE_SK)).val(":t", b(true));
        let items = self.scan_control("sk = :p AND enabled = :t", &ex, Some(limit)).await?;
        items.into_iter().map(from_item).collect()
    }

    /// Every Telegram-paired binding row (pointers and history) without a bot identity.
    pub async fn scan_legacy_bindings(&self) -> AppResult<Vec<LegacyBinding>> {
        let ex = Self::no_bot_ex()
            .name("#src", "source")
            .val(":tp", s("telegram_pairing"))
            .val(":ptr", s(keys::BINDING_SK))
            .val(":bh", s(keys::BINDING_HISTORY_PREFIX));
        let filter = format!("(sk = :ptr OR begins_with(sk, :bh)) AND #src = :tp AND {NO_BOT}");
        let mut out = Vec::new();
        for item in self.scan_control(&filter, &ex, None).await? {
            let pointer = super::item_s(&item, "sk") == Some(keys::BINDING_SK);
            out.push(LegacyBinding { pointer, binding: from_item(item)? });
        }
        Ok(out)
    }

    /// The codes of every pending pairing code without a bot identity.
    pub async fn scan_pending_codes_without_bot(&self) -> AppResult<Vec<String>> {
        let ex =
            Self::no_bot_ex().name("#st", "status").val(":code", s(keys::PAIRING_SK)).val(":pending", s("pending"));
        let items = self.scan_control(&format!("sk = :code AND #st = :pending AND {NO_BOT}"), &ex, None).await?;
        Ok(items.iter().filter_map(|i| super::item_s(i, "code").map(str::to_string)).collect())
    }

    /// How many agent profiles have no bot identity.
    pub async fn count_profiles_without_bot(&self) -> AppResult<usize> {
        let ex = Self::no_bot_ex().val(":profile", s(keys::AGENT_PROFILE_SK));
        Ok(self.scan_control(&format!("sk = :profile AND {NO_BOT}"), &ex, None).await?.len())
    }

    /// Merge `metadata` keys into a legacy binding's row (its pointer or its history row), if the
    /// row still holds that binding. Whether it did.
    pub async fn annotate_legacy_binding(
        &self,
        b: &Binding,
        pointer: bool,
        metadata: &BTreeMap<String, String>,
    ) -> AppResult<bool> {
        let key = if pointer {
            keys::binding_pointer_key(&b.consumer_user_id)
        } else {
            keys::binding_history_key(&b.consumer_user_id, b.bound_at, &b.binding_id)
        };
        let ex = Ex::new().name("#m", "metadata").val(":id", s(&b.binding_id)).val(":m", super::to_av(metadata)?);
        self.update_if(self.c(), key, "SET #m = :m", "bindingId = :id", &ex, "annotating a binding").await
    }
}
