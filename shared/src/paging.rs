//! Opaque page cursors for the read models: a listing's `nextCursor` names the sort key of the
//! last item it returned, tagged with the listing, so a cursor of one listing is refused by
//! another. Pure: the adapter turns the key back into an `ExclusiveStartKey` under the partition
//! the server chose (a cursor can move within the caller's own partition, never out of it).

use crate::error::{AppError, AppResult};
use serde::Serialize;

/// One page of a listing and the cursor of the next one (`None` on the last page).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The cursor continuing `listing` after the item whose sort key is `sort_key`.
pub fn encode(listing: &str, sort_key: &str) -> String {
    hex::encode(format!("{listing}\n{sort_key}"))
}

/// The sort key a cursor of `listing` continues after; the key must start with `prefix` (the
/// item kind the listing reads). A cursor of another listing, a truncated one or a forged one is
/// a validation error naming the listing.
pub fn decode(listing: &str, prefix: &str, cursor: &str) -> AppResult<String> {
    let bad = || AppError::validation(format!("cursor is not a nextCursor of {listing}"));
    if cursor.is_empty() || cursor.len() > 2048 {
        return Err(bad());
    }
    let raw = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (tag, key) = text.split_once('\n').ok_or_else(bad)?;
    if tag != listing || !key.starts_with(prefix) || key.len() == prefix.len() || key.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(key.to_string())
}

/// The cursor continuing a Scan of a whole table (`listing`) after the item with base key
/// (`pk`, `sk`): a Scan moves over partitions, so it needs both.
pub fn encode_table_key(listing: &str, pk: &str, sk: &str) -> String {
    hex::encode(serde_json::json!([listing, pk, sk]).to_string())
}

/// The base key (`pk`, `sk`) a cursor of [`encode_table_key`] continues after. A cursor of
/// another listing, a truncated one or a forged one is a validation error naming the listing.
pub fn decode_table_key(listing: &str, cursor: &str) -> AppResult<(String, String)> {
    let bad = || AppError::validation(format!("cursor is not a nextCursor of {listing}"));
    if cursor.is_empty() || cursor.len() > 8192 {
        return Err(bad());
    }
    let raw = hex::decode(cursor).map_err(|_| bad())?;
    let (tag, pk, sk): (String, String, String) = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let ok = |v: &str| !v.is_empty() && !v.chars().any(char::is_control);
    if tag != listing || !ok(&pk) || !ok(&sk) {
        return Err(bad());
    }
    Ok((pk, sk))
}

/// A page size: `given` or `default`, which must lie in `1..=max`.
pub fn limit(name: &str, given: Option<i64>, default: i64, max: i64) -> AppResult<i32> {
    let v = given.unwrap_or(default);
    if !(1..=max).contains(&v) {
        return Err(AppError::validation(format!("{name} must be 1 to {max}, got {v}")));
    }
    Ok(v as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_within_its_listing_only() {
        let c = encode("listQueueItemsForUserAgent", "M#01J0000000000000000000000A");
        assert_eq!(decode("listQueueItemsForUserAgent", "M#", &c).unwrap(), "M#01J0000000000000000000000A");
        let e = decode("historyOfUserAgent", "H#", &c).unwrap_err();
        assert!(e.to_string().contains("historyOfUserAgent"), "{e}");
        assert!(decode("listQueueItemsForUserAgent", "H#", &c).is_err(), "another item kind");
    }

    #[test]
    fn forged_and_malformed_cursors_are_refused() {
        for c in ["", "zz", "4d23", &"a".repeat(4000), &hex::encode("listX\nM#"), &hex::encode("listX\nM#a\u{0}b")] {
            assert!(decode("listX", "M#", c).is_err(), "{c:?}");
        }
    }

    #[test]
    fn a_table_cursor_round_trips_and_forgeries_are_refused() {
        let c = encode_table_key("backfillX", "C#telegram:1:42 \"x\"", "M#01J");
        assert_eq!(decode_table_key("backfillX", &c).unwrap(), ("C#telegram:1:42 \"x\"".to_string(), "M#01J".into()));
        assert!(decode_table_key("other", &c).unwrap_err().to_string().contains("other"));
        let forged = [
            String::new(),
            "zz".into(),
            hex::encode("[\"backfillX\",\"C#a\"]"),
            hex::encode("[\"backfillX\",\"\",\"M#1\"]"),
            hex::encode("[\"backfillX\",\"C#a\",\"M#\\u0000\"]"),
            encode("backfillX", "M#1"),
            "a".repeat(9000),
        ];
        for f in forged {
            assert!(decode_table_key("backfillX", &f).is_err(), "{f:?}");
        }
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(limit("limit", None, 50, 200).unwrap(), 50);
        assert_eq!(limit("limit", Some(200), 50, 200).unwrap(), 200);
        assert!(limit("limit", Some(0), 50, 200).is_err());
        assert!(limit("limit", Some(201), 50, 200).unwrap_err().to_string().contains("1 to 200"));
    }
}
