//! Reads of the user-agent views (spec §9): one consumer's bindings, newest first, and their
//! latest pairing codes. The views page over the agents these make; the reads themselves stop at
//! [`MAX_BINDINGS`] bindings and [`MAX_PAIRINGS`] codes per user (far beyond what a person
//! accumulates; reaching the cap is logged).

use super::{Store, from_item, keys, s};
use crate::adapters::sdk_error;
use crate::error::AppResult;
use crate::identity::model::{Binding, PairingCode};

/// The most bindings (active and revoked) the views read per user, in pages of 100.
pub const MAX_BINDINGS: usize = 1000;
/// The most pairing codes (one per agent) the views read per user (the spec's 50).
pub const MAX_PAIRINGS: usize = 50;

impl Store {
    /// The user's bindings, newest `boundAt` first (the binding history under `U#<user>`). One
    /// Query per 100 bindings, at most [`MAX_BINDINGS`].
    pub async fn user_bindings(&self, consumer_user_id: &str) -> AppResult<Vec<Binding>> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tables.control)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(keys::user_pk(consumer_user_id)))
                .expression_attribute_values(":p", s(keys::BINDING_HISTORY_PREFIX))
                .scan_index_forward(false)
                .limit(100)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query user bindings", e))?;
            for i in out.items.unwrap_or_default() {
                all.push(from_item(i)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() && all.len() < MAX_BINDINGS => start = Some(k),
                Some(k) if !k.is_empty() => {
                    tracing::warn!(read = all.len(), "a user's binding history reached the views' cap");
                    break;
                }
                _ => break,
            }
        }
        Ok(all)
    }

    /// The user's latest pairing code per agent (at most [`MAX_PAIRINGS`]): one Query of the
    /// pointers, then one GetItem per code.
    pub async fn user_pairings(&self, consumer_user_id: &str) -> AppResult<Vec<PairingCode>> {
        let mut out = Vec::new();
        for code in self.user_pairing_codes(consumer_user_id).await?.into_iter().take(MAX_PAIRINGS) {
            if let Some(p) = self.get_pairing(&code).await? {
                out.push(p);
            }
        }
        Ok(out)
    }
}
