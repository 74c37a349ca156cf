//! Snapshot policy.

use crate::clock::Millis;

/// Snapshot retention, upload window and size.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotPolicy {
    /// Ready snapshots are kept this long after finalize, then expired (object deleted).
    pub retention_ms: Millis,
    /// An upload not finalized within this time fails (its URL expires at the same moment).
    pub upload_timeout_ms: Millis,
    /// Largest snapshot archive. Finalize reads the object once to verify it inside the claim
    /// function's 30 s, so raise this together with that function's memory and timeout.
    pub max_bytes: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self { retention_ms: 7 * 86_400_000, upload_timeout_ms: 3_600_000, max_bytes: 512 * 1024 * 1024 }
    }
}
