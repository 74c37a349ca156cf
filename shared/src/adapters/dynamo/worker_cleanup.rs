//! The worker-row write of Fly cleanup: a row whose machine cleanup destroyed becomes `stopped`.

use super::{Ex, Store, keys, n, s};
use crate::error::AppResult;
use crate::queue::rules;

impl Store {
    /// Cleanup destroyed (and the provider confirmed) machine `machine_id` of `worker_id`: the row
    /// becomes `stopped` with `stoppedAt = now`, whatever its status was, if it still names that
    /// machine and is not stopped yet (one conditional UpdateItem); like every entry into
    /// `stopped`, its token hash is removed. Returns whether it changed.
    pub async fn mark_worker_machine_destroyed(&self, worker_id: &str, machine_id: &str) -> AppResult<bool> {
        rules::validate_worker_id(worker_id)?;
        let ex = Ex::new()
            .name("#st", "status")
            .val(":stopped", s("stopped"))
            .val(":m", s(machine_id))
            .val(":now", n(self.now()))
            .name("#ttl", "ttl")
            .val(":ttl", n(crate::workers::model::stopped_ttl(self.now())));
        self.update_if(
            &self.tables.workers,
            keys::worker_key(worker_id),
            "SET #st = :stopped, stoppedAt = :now, #ttl = :ttl REMOVE tokenHash, tokenIssuedAt",
            "attribute_exists(workerId) AND machineId = :m AND #st <> :stopped",
            &ex,
            "UpdateItem worker stopped by cleanup",
        )
        .await
    }
}
