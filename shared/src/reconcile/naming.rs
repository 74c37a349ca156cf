//! Deterministic names of provider resources (spec §8.4). Pure.
//!
//! A worker's dedicated volume is named `<prefix>_<hash>`: both parts sanitised (lower case,
//! every character outside `[a-z0-9_]` becomes `_`, runs of `_` collapsed, leading and trailing
//! `_` trimmed; an empty prefix becomes `openclaw`, an empty worker id `worker`), the hash the
//! 32-bit FNV-1a of the sanitised worker id in base 36, the prefix cut to `29 - len(hash)`
//! characters (at least 1). Always at most 30 characters (Fly's limit on volume names).

/// Fly's longest volume name.
pub const MAX_VOLUME_NAME: usize = 30;

/// Lower case; `[^a-z0-9_]` → `_`; runs of `_` collapsed; `_` trimmed at both ends.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out.trim_matches('_').to_string()
}

/// 32-bit FNV-1a over the string's UTF-16 code units (the original hashes JavaScript character
/// codes; for the sanitised ASCII ids used here these are the bytes).
pub fn fnv1a32(s: &str) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for unit in s.encode_utf16() {
        h ^= u32::from(unit);
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// `n` in base 36, lower case (1 to 7 characters for a u32).
pub fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The dedicated volume name of `worker_id` under `prefix` (spec §8.4).
pub fn volume_name(prefix: &str, worker_id: &str) -> String {
    let mut p = sanitize(prefix);
    if p.is_empty() {
        p = "openclaw".into();
    }
    let mut w = sanitize(worker_id);
    if w.is_empty() {
        w = "worker".into();
    }
    let hash = base36(fnv1a32(&w));
    let keep = (MAX_VOLUME_NAME - 1).saturating_sub(hash.len()).max(1);
    let p: String = p.chars().take(keep).collect();
    // Truncation may leave a trailing `_`; the original keeps it, and so do we (names must match).
    format!("{p}_{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_examples() {
        assert_eq!(volume_name("openclaw_data", "afw-1767258000000-0"), "openclaw_data_i59fdp");
        assert_eq!(volume_name("openclaw_data", "afw-1767258000000-1"), "openclaw_data_hv9toq");
        assert_eq!(
            volume_name("a_very_long_volume_prefix_name_exceeding", "afw-1767258000000-0"),
            "a_very_long_volume_pref_i59fdp"
        );
    }

    #[test]
    fn sanitising_defaults_and_the_length_bound() {
        assert_eq!(sanitize("__Open--Claw..Data__"), "open_claw_data");
        assert_eq!(sanitize("---"), "");
        assert!(volume_name("", "w1").starts_with("openclaw_"));
        assert_eq!(volume_name("p", "***"), format!("p_{}", base36(fnv1a32("worker"))));
        // Case and punctuation differences that sanitise alike name the same volume.
        assert_eq!(volume_name("Data", "AFW-1"), volume_name("data", "afw_1"));
        for (p, w) in
            [("x".repeat(100), "y".repeat(100)), ("é€".repeat(40), "w".into()), (String::new(), String::new())]
        {
            let n = volume_name(&p, &w);
            assert!(n.len() <= MAX_VOLUME_NAME && !n.is_empty(), "{n}");
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{n}");
        }
    }

    #[test]
    fn fnv_and_base36() {
        assert_eq!(fnv1a32(""), 2_166_136_261);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(u32::MAX), "1z141z3");
    }
}
