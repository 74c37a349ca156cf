//! Media rules (pure): MIME types, metadata keys, distinct storage ids.

use super::model::PROTECTED_METADATA_KEYS;
use crate::error::{AppError, AppResult};
use crate::ids;
use crate::queue::model::Attachment;
use std::collections::BTreeMap;

pub fn check_mime(v: &str) -> AppResult<()> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.contains('/')
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '+' | '-' | '_'));
    if ok { Ok(()) } else { Err(AppError::validation("mimeType must look like type/subtype (e.g. audio/mpeg)")) }
}

/// The same storage id twice in one message is refused (it would be one row written twice).
pub fn check_distinct_storage_ids(atts: &[Attachment]) -> AppResult<()> {
    for (i, a) in atts.iter().enumerate() {
        if atts[..i].iter().any(|b| b.storage_id == a.storage_id) {
            return Err(AppError::validation(format!(
                "payload.attachments[{i}].storageId '{}' appears twice in this message",
                ids::truncate(&a.storage_id, 60)
            )));
        }
    }
    Ok(())
}

/// The keys a worker merges into `payload.metadata`: 1 to 50, bounded, no routing key.
pub fn check_metadata(metadata: &BTreeMap<String, String>) -> AppResult<()> {
    if metadata.is_empty() || metadata.len() > 50 {
        return Err(AppError::validation("metadata must have 1 to 50 keys"));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.len() > 128 || v.len() > 4096 {
            return Err(AppError::validation(format!(
                "metadata key '{}': keys are 1 to 128 characters, values at most 4096 bytes",
                ids::truncate(k, 40)
            )));
        }
        if PROTECTED_METADATA_KEYS.contains(&k.as_str()) {
            return Err(AppError::validation(format!("metadata key '{k}' is set at enqueue and cannot be changed")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_mime_rules() {
        assert!(check_mime("audio/mpeg").is_ok());
        assert!(check_mime("audio").is_err());
        assert!(check_mime("a/b c").is_err());
        let m = |k: &str| BTreeMap::from([(k.to_string(), "v".to_string())]);
        assert!(check_metadata(&m("note")).is_ok());
        assert!(check_metadata(&BTreeMap::new()).is_err());
        assert!(check_metadata(&m("telegramChatId")).is_err(), "routing keys are protected");
        assert!(check_metadata(&m(&"k".repeat(129))).is_err());
    }
}
