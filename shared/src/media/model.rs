//! Media policy.

use crate::clock::Millis;

/// Media retention, size and URL lifetimes.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPolicy {
    /// Default retention of media (message config `telegramAttachmentRetentionMs` overrides it).
    pub retention_ms: Millis,
    /// Telegram bots can download at most 20 MB: larger media are refused.
    pub max_bytes: u64,
    /// Lifetime of presigned download URLs handed to workers.
    pub download_url_ttl_ms: Millis,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        Self { retention_ms: 7 * 86_400_000, max_bytes: 20 * 1024 * 1024, download_url_ttl_ms: 900_000 }
    }
}
