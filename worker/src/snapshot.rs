//! The data dir as a snapshot: a gzip-compressed tar of everything in it, its SHA-256 and size;
//! and the way back: checksum verified first, unpacked into a staging directory, then moved
//! into place, so a bad archive leaves the data dir as it was (spec §15.9).

use sha2::Digest;
use std::path::Path;

/// The marker of a data dir some worker has used: a fresh volume (no marker) is restored from
/// the newest snapshot, a used one keeps what it has (it is newer).
pub const MARKER: &str = ".agent-worker";
const STAGING: &str = ".agent-worker-restore";

#[derive(Debug, Clone)]
pub struct Archive {
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub size: u64,
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// A `.tar.gz` of the data dir's contents (symlinks stored as links, not followed).
pub fn archive(dir: &Path) -> std::io::Result<Archive> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    if dir.exists() {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name == STAGING {
                continue;
            }
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                tar.append_dir_all(&name, &path)?;
            } else {
                tar.append_path_with_name(&path, &name)?;
            }
        }
    }
    let bytes = tar.into_inner()?.finish()?;
    Ok(Archive { sha256: sha256_hex(&bytes), size: bytes.len() as u64, bytes })
}

/// Whether the data dir was used by a worker before.
pub fn is_used(dir: &Path) -> bool {
    dir.join(MARKER).exists()
}

pub fn mark_used(dir: &Path, worker_id: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(MARKER), format!("{worker_id}\n"))
}

/// Check and unpack an archive into `dir`. Nothing in `dir` changes unless the checksum
/// matches and the whole archive unpacked.
pub fn restore(dir: &Path, bytes: &[u8], expected_sha256: Option<&str>) -> Result<usize, String> {
    let Some(expected) = expected_sha256 else {
        return Err("the snapshot has no checksum: not restored".into());
    };
    let got = sha256_hex(bytes);
    if !got.eq_ignore_ascii_case(expected) {
        return Err(format!("checksum mismatch (expected {expected}, got {got}): not restored"));
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let staging = dir.join(STAGING);
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    let unpacked = tar::Archive::new(flate2::read::GzDecoder::new(bytes)).unpack(&staging);
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!("the archive does not unpack: {e}: not restored"));
    }
    let mut moved = 0;
    let entries = std::fs::read_dir(&staging).map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = dir.join(entry.file_name());
        if target.is_dir() {
            let _ = std::fs::remove_dir_all(&target);
        } else if target.exists() {
            let _ = std::fs::remove_file(&target);
        }
        std::fs::rename(entry.path(), &target).map_err(|e| e.to_string())?;
        moved += 1;
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let d = std::env::temp_dir().join(format!("afw-snap-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn archive_and_restore_round_trip_with_checks() {
        let a = dir("a");
        std::fs::create_dir_all(a.join("workspace/memory")).unwrap();
        std::fs::write(a.join("workspace/memory/notes.md"), "remember this").unwrap();
        std::fs::write(a.join("top.txt"), "top").unwrap();
        let ar = archive(&a).unwrap();
        assert_eq!(ar.size, ar.bytes.len() as u64);
        assert_eq!(ar.sha256, sha256_hex(&ar.bytes));

        let b = dir("b");
        std::fs::write(b.join("top.txt"), "old").unwrap();
        // A wrong checksum or none: nothing changes.
        assert!(restore(&b, &ar.bytes, Some(&"0".repeat(64))).unwrap_err().contains("mismatch"));
        assert!(restore(&b, &ar.bytes, None).is_err());
        assert_eq!(std::fs::read_to_string(b.join("top.txt")).unwrap(), "old");
        // A broken archive with a matching checksum: nothing changes either.
        let junk = b"not a tarball".to_vec();
        assert!(restore(&b, &junk, Some(&sha256_hex(&junk))).is_err());
        assert_eq!(std::fs::read_to_string(b.join("top.txt")).unwrap(), "old");
        assert!(!b.join(STAGING).exists());
        // The real one.
        assert_eq!(restore(&b, &ar.bytes, Some(&ar.sha256)).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(b.join("top.txt")).unwrap(), "top");
        assert_eq!(std::fs::read_to_string(b.join("workspace/memory/notes.md")).unwrap(), "remember this");
        assert!(!is_used(&b));
        mark_used(&b, "w1").unwrap();
        assert!(is_used(&b));
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }
}
