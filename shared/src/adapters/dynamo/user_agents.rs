//! Reads of the user-agent views (spec §9): one consumer's bindings, newest first, and their
//! latest pairing codes. Bounded: the views read at most [`MAX_BINDINGS`] bindings and
//! [`MAX_PAIRINGS`] codes per user.

use super::{Store, from_item, keys, s};
use crate::adapters::sdk_error;
use crate::error::AppResult;
use crate::identity::model::{Binding, PairingCode};

/// The most bindings (active and revoked) the views read per user (the spec's 20 + 100).
pub const MAX_BINDINGS: i32 = 120;
/// The most pairing codes (one per agent) the views read per user (the spec's 50).
pub const MAX_PAIRINGS: usize = 50;

impl Store {
    /// The user's bindings, newest `boundAt` first (the binding history under `U#<user>`). One
    /// Query.
    pub async fn user_bindings(&self, consumer_user_id: &str) -> AppResult<Vec<Binding>> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.control)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(keys::user_pk(consumer_user_id)))
            .expression_attribute_values(":p", s(keys::BINDING_HISTORY_PREFIX))
            .scan_index_forward(false)
            .limit(MAX_BINDINGS)
            .send()
            .await
            .map_err(|e| sdk_error("Query user bindings", e))?;
        out.items.unwrap_or_default().into_iter().map(from_item).collect()
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
