//! Pure rules of message templates: normalization (spec §12), validation, key derivation, ids.

use super::model::MessageTemplate;
use crate::error::{AppError, AppResult};

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest text, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Most tags per template, and the longest tag.
pub const MAX_TAGS: usize = 30;
pub const MAX_TAG_CHARS: usize = 50;
/// The longest company id, actor id and template key base.
pub const MAX_ID_CHARS: usize = 128;
/// `listMessageTemplatesByCompany`: default and largest `limit`.
pub const DEFAULT_LIST_LIMIT: i64 = 100;
pub const MAX_LIST_LIMIT: i64 = 200;
/// How many templates one company may hold (the listing reads them all, then sorts).
pub const MAX_TEMPLATES_PER_COMPANY: usize = 1_000;

/// A company id (also used by push templates and jobs): non-blank, at most
/// [`MAX_ID_CHARS`] characters, no control characters. Stored as given.
pub fn validate_company_id(v: &str) -> AppResult<()> {
    validate_id("companyId", v)
}

/// An actor id (`actorUserId`, `requestedBy`): stored verbatim, unverified (spec §0).
pub fn validate_actor(v: &str) -> AppResult<()> {
    validate_id("actorUserId", v)
}

fn validate_id(field: &str, v: &str) -> AppResult<()> {
    if v.trim().is_empty() {
        return Err(AppError::validation(format!("{field} is required")));
    }
    if v.chars().count() > MAX_ID_CHARS || v.chars().any(char::is_control) {
        return Err(AppError::validation(format!(
            "{field} must be at most {MAX_ID_CHARS} characters, without control characters"
        )));
    }
    Ok(())
}

/// Title and text trimmed, then required and bounded (spec §12's errors first).
pub fn normalize_title_text(title: &str, text: &str) -> AppResult<(String, String)> {
    let (title, text) = (title.trim().to_string(), text.trim().to_string());
    if title.is_empty() {
        return Err(AppError::validation("Template title is required"));
    }
    if text.is_empty() {
        return Err(AppError::validation("Template text is required"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(AppError::validation(format!("Template title must be at most {MAX_TITLE_CHARS} characters")));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(AppError::validation(format!("Template text must be at most {MAX_TEXT_CHARS} characters")));
    }
    Ok((title, text))
}

/// Tags trimmed, lower-cased, empties dropped, de-duplicated, sorted; bounded.
pub fn normalize_tags(tags: &[String]) -> AppResult<Vec<String>> {
    let mut out: Vec<String> =
        tags.iter().map(|t| t.trim().to_lowercase()).filter(|t| !t.is_empty()).collect::<Vec<_>>();
    out.sort();
    out.dedup();
    if out.len() > MAX_TAGS {
        return Err(AppError::validation(format!("a template has at most {MAX_TAGS} tags")));
    }
    if out.iter().any(|t| t.chars().count() > MAX_TAG_CHARS || t.chars().any(char::is_control)) {
        return Err(AppError::validation(format!(
            "a tag must be at most {MAX_TAG_CHARS} characters, without control characters"
        )));
    }
    Ok(out)
}

/// The key base of a title: lower-cased, every run of characters outside `[a-z0-9]` replaced by
/// one `-`, outer `-` removed; `message-template` when nothing is left (`Café Ünïcode` →
/// `caf-n-code`). Capped at [`MAX_ID_CHARS`] - 8 characters so suffixes fit.
pub fn key_base(title: &str) -> String {
    let mut out = String::new();
    for c in title.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut base: String = out.trim_matches('-').chars().take(MAX_ID_CHARS - 8).collect();
    while base.ends_with('-') {
        base.pop();
    }
    if base.is_empty() { "message-template".into() } else { base }
}

/// The first of `base`, `base-2`, `base-3`, ... not in `taken`.
pub fn first_free_key(base: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == base) {
        return base.to_string();
    }
    (2..).map(|i| format!("{base}-{i}")).find(|k| !taken.contains(k)).unwrap_or_else(|| base.to_string())
}

/// A template id: `<ULID>:<companyId>`.
pub fn template_id(ulid: &str, company_id: &str) -> String {
    format!("{ulid}:{company_id}")
}

/// The (ULID, company) of a template id; `None` when it is not one.
pub fn parse_template_id(id: &str) -> Option<(&str, &str)> {
    crate::pushing::rules::split_id(id)
}

/// The listing's `limit`: default 100, 1..=200.
pub fn list_limit(limit: Option<i64>) -> AppResult<usize> {
    let l = limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&l) {
        return Err(AppError::validation(format!("limit must be 1 to {MAX_LIST_LIMIT}, got {l}")));
    }
    Ok(l as usize)
}

/// The listing: enabled ones (all with `include_disabled`), most used first, then most recently
/// updated, then the first `limit` (sorted before the limit, unlike the original, §16.12).
pub fn list_view(mut all: Vec<MessageTemplate>, include_disabled: bool, limit: usize) -> Vec<MessageTemplate> {
    all.retain(|t| include_disabled || t.enabled);
    all.sort_by(|a, b| {
        b.usage_count.cmp(&a.usage_count).then(b.updated_at.cmp(&a.updated_at)).then(a.template_id.cmp(&b.template_id))
    });
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_base_follows_the_spec_examples() {
        assert_eq!(key_base("Café Ünïcode"), "caf-n-code");
        assert_eq!(key_base("日本語"), "message-template");
        assert_eq!(key_base("  Daily Check-in!! "), "daily-check-in");
        assert_eq!(key_base("a__b"), "a-b");
        assert!(key_base(&"x".repeat(500)).len() <= MAX_ID_CHARS - 8);
    }

    #[test]
    fn first_free_key_counts_up() {
        assert_eq!(first_free_key("a", &[]), "a");
        assert_eq!(first_free_key("a", &["a".into()]), "a-2");
        assert_eq!(first_free_key("a", &["a".into(), "a-2".into(), "a-4".into()]), "a-3");
    }

    #[test]
    fn normalization_and_validation() {
        assert_eq!(normalize_title_text("  T ", " x\n").unwrap(), ("T".into(), "x".into()));
        assert_eq!(normalize_title_text(" ", "x").unwrap_err().to_string(), "Template title is required");
        assert_eq!(normalize_title_text("t", "  ").unwrap_err().to_string(), "Template text is required");
        assert!(normalize_title_text(&"t".repeat(201), "x").is_err());
        let tags = normalize_tags(&[" B".into(), "a".into(), "".into(), "b".into(), "  ".into()]).unwrap();
        assert_eq!(tags, vec!["a", "b"]);
        assert!(normalize_tags(&(0..31).map(|i| i.to_string()).collect::<Vec<_>>()).is_err());
        assert!(validate_company_id(" ").is_err());
        assert!(validate_company_id("acme\n").is_err());
        assert!(validate_company_id("acme").is_ok());
        assert!(list_limit(Some(0)).is_err() && list_limit(Some(201)).is_err());
        assert_eq!(list_limit(None).unwrap(), 100);
    }

    #[test]
    fn ids_round_trip() {
        let u = crate::ids::ulid(1_700_000_000_000);
        let id = template_id(&u, "acme:eu");
        assert_eq!(parse_template_id(&id), Some((u.as_str(), "acme:eu")));
        assert_eq!(parse_template_id("nope"), None);
        assert_eq!(parse_template_id("x:acme"), None);
    }
}
