//! A queue gauge for metrics: the due time of the oldest ready message (one Query, Limit 1, of
//! the `byStatus` index; its sort key starts with the due time).

use super::{Store, s, schema};
use crate::adapters::sdk_error;
use crate::clock::Millis;
use crate::error::AppResult;

impl Store {
    /// The due time of the oldest queued message that is due at `now`, if any.
    pub async fn oldest_ready_at(&self, now: Millis) -> AppResult<Option<Millis>> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.queue)
            .index_name(schema::IDX_BY_STATUS)
            .key_condition_expression("#st = :st AND statusKey < :t")
            .projection_expression("scheduledFor")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s("queued"))
            .expression_attribute_values(":t", s(format!("{now:013}$")))
            .limit(1)
            .send()
            .await
            .map_err(|e| sdk_error("Query oldest ready", e))?;
        Ok(out
            .items
            .unwrap_or_default()
            .first()
            .and_then(|i| i.get("scheduledFor"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok()))
    }
}
