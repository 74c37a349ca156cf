//! The local runner's secret store: one JSON file (e.g. `<data-dir>/secrets.json`), or memory
//! only ([`FileSecretBackend::memory`]) when the runner has no data directory, and in tests.
//!
//! Each ref keeps its versions (1, 2, 3, ... like spec §1.4), at most one active; `put` adds a
//! version and makes it the active one, `delete` deactivates the active one. The newest
//! [`MAX_VERSIONS`] versions of a ref are kept, older ones are pruned on the next write.
//!
//! The file is written whole on every change, to a temporary file that is synced and renamed
//! over the old one (so a crash leaves the old or the new file, never half of one), with mode
//! 0600 on unix. The values are stored as they are (the file is as secret as the data directory
//! it lives in); this backend is for a developer's machine, Secrets Manager is for AWS. One
//! process owns the file: it is read once at open and kept in memory.

use crate::BoxFut;
use crate::clock::{Millis, SharedClock, SystemClock};
use crate::error::{AppError, AppResult};
use crate::secrets::{SecretBackend, SecretInfo, SecretValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Versions kept per ref (the active one is always the newest).
pub const MAX_VERSIONS: usize = 10;
/// The file format written (`format` field).
const FORMAT: u32 = 1;

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    format: u32,
    /// ref → versions, oldest first.
    secrets: BTreeMap<String, Vec<StoredVersion>>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredVersion {
    version: u64,
    value: String,
    active: bool,
    created_at: Millis,
    /// The version that was active when this one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotated_from: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

impl StoredVersion {
    fn info(&self, secret_ref: &str) -> SecretInfo {
        SecretInfo {
            secret_ref: secret_ref.to_string(),
            has_active: true,
            version: Some(self.version.to_string()),
            updated_at: Some(self.created_at),
            metadata: self.metadata.clone(),
        }
    }
}

/// Secrets in a local JSON file, or in memory.
pub struct FileSecretBackend {
    path: Option<PathBuf>,
    clock: SharedClock,
    data: Mutex<Data>,
}

impl std::fmt::Debug for FileSecretBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSecretBackend")
            .field("path", &self.path)
            .field("refs", &self.lock().secrets.len())
            .finish_non_exhaustive()
    }
}

impl FileSecretBackend {
    /// Open (or start) the store at `path`. Creates the parent directory; a file that exists
    /// must parse, and its permissions are narrowed to 0600.
    pub fn open(path: impl Into<PathBuf>) -> AppResult<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io_error("creating the directory of", &path, e))?;
        }
        let data = match std::fs::read(&path) {
            Ok(bytes) => {
                restrict_permissions(&path)?;
                let d: Data = serde_json::from_slice(&bytes).map_err(|e| {
                    // serde_json's message names a position and the expected token, never content.
                    AppError::internal(format!("secret file {} is not valid: {e}", path.display()))
                })?;
                if d.format > FORMAT {
                    return Err(AppError::internal(format!(
                        "secret file {} has format {}; this build reads up to {FORMAT}",
                        path.display(),
                        d.format
                    )));
                }
                d
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Data { format: FORMAT, ..Data::default() },
            Err(e) => return Err(io_error("reading", &path, e)),
        };
        Ok(Self { path: Some(path), clock: Arc::new(SystemClock), data: Mutex::new(data) })
    }

    /// A store that lives only as long as this value.
    pub fn memory() -> Self {
        Self { path: None, clock: Arc::new(SystemClock), data: Mutex::new(Data { format: FORMAT, ..Data::default() }) }
    }

    /// Use `clock` for version timestamps (default: the system clock).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The file, or `None` in memory mode.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `f` to a copy of the data, write the copy, and only then make it current, so a
    /// failed write leaves memory and file as they were.
    fn update<T>(&self, f: impl FnOnce(&mut Data) -> T) -> AppResult<T> {
        let mut g = self.lock();
        let mut next = g.clone();
        let out = f(&mut next);
        if let Some(path) = &self.path {
            persist(path, &next)?;
        }
        *g = next;
        Ok(out)
    }
}

impl SecretBackend for FileSecretBackend {
    fn get<'a>(&'a self, secret_ref: &'a str) -> BoxFut<'a, AppResult<Option<SecretValue>>> {
        Box::pin(async move {
            let g = self.lock();
            Ok(active(&g, secret_ref).map(|v| SecretValue::new(v.value.clone())))
        })
    }

    fn put<'a>(
        &'a self,
        secret_ref: &'a str,
        value: &'a SecretValue,
        metadata: &'a BTreeMap<String, String>,
    ) -> BoxFut<'a, AppResult<SecretInfo>> {
        Box::pin(async move {
            let now = self.clock.now_ms();
            self.update(|d| {
                let versions = d.secrets.entry(secret_ref.to_string()).or_default();
                let next = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
                let mut rotated_from = None;
                for v in versions.iter_mut().filter(|v| v.active) {
                    v.active = false;
                    rotated_from = Some(v.version);
                }
                versions.push(StoredVersion {
                    version: next,
                    value: value.expose().to_string(),
                    active: true,
                    created_at: now,
                    rotated_from,
                    metadata: metadata.clone(),
                });
                if versions.len() > MAX_VERSIONS {
                    versions.drain(..versions.len() - MAX_VERSIONS);
                }
                versions.last().expect("just pushed").info(secret_ref)
            })
        })
    }

    fn info<'a>(&'a self, secret_ref: &'a str) -> BoxFut<'a, AppResult<SecretInfo>> {
        Box::pin(async move {
            let g = self.lock();
            Ok(active(&g, secret_ref).map_or_else(|| SecretInfo::missing(secret_ref), |v| v.info(secret_ref)))
        })
    }

    fn delete<'a>(&'a self, secret_ref: &'a str) -> BoxFut<'a, AppResult<bool>> {
        Box::pin(async move {
            if active(&self.lock(), secret_ref).is_none() {
                return Ok(false); // nothing to change: no write
            }
            self.update(|d| {
                let mut had = false;
                for v in d.secrets.get_mut(secret_ref).into_iter().flatten().filter(|v| v.active) {
                    v.active = false;
                    had = true;
                }
                had
            })
        })
    }
}

fn active<'d>(d: &'d Data, secret_ref: &str) -> Option<&'d StoredVersion> {
    d.secrets.get(secret_ref)?.iter().rev().find(|v| v.active)
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> AppError {
    AppError::internal(format!("{what} secret file {}: {e}", path.display()))
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> AppResult<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| io_error("reading permissions of", path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "secret file was readable by others: narrowing it to 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error("setting permissions of", path, e))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> AppResult<()> {
    Ok(())
}

/// Write `data` to a temporary file next to `path` (0600), sync it, rename it over `path`.
fn persist(path: &Path, data: &Data) -> AppResult<()> {
    let bytes = serde_json::to_vec_pretty(data).map_err(|e| AppError::internal(format!("encoding secrets: {e}")))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "secrets".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            // A leftover temporary file keeps its old mode: set it again.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        #[cfg(unix)]
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error("writing", path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn meta(k: &str, v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(k.to_string(), v.to_string())])
    }

    #[tokio::test]
    async fn versions_rotate_and_delete_deactivates() {
        let clock = ManualClock::new(1_000);
        let b = FileSecretBackend::memory().with_clock(Arc::new(clock.clone()));
        assert_eq!(b.get("a").await.unwrap(), None);
        assert_eq!(b.info("a").await.unwrap(), SecretInfo::missing("a"));
        let i1 = b.put("a", &SecretValue::new("one"), &meta("m", "1")).await.unwrap();
        assert_eq!((i1.version.as_deref(), i1.updated_at, i1.has_active), (Some("1"), Some(1_000), true));
        clock.advance(5);
        let i2 = b.put("a", &SecretValue::new("two"), &BTreeMap::new()).await.unwrap();
        assert_eq!((i2.version.as_deref(), i2.updated_at), (Some("2"), Some(1_005)));
        assert_eq!(b.get("a").await.unwrap().unwrap().expose(), "two");
        assert_eq!(b.info("a").await.unwrap(), i2);
        {
            let g = b.lock();
            let v = &g.secrets["a"];
            assert_eq!(v.iter().filter(|v| v.active).count(), 1);
            assert_eq!(v[1].rotated_from, Some(1));
        }
        assert!(b.delete("a").await.unwrap());
        assert!(!b.delete("a").await.unwrap());
        assert_eq!(b.get("a").await.unwrap(), None);
        assert!(!b.info("a").await.unwrap().has_active);
        let i3 = b.put("a", &SecretValue::new("three"), &BTreeMap::new()).await.unwrap();
        assert_eq!(i3.version.as_deref(), Some("3"));
        assert_eq!(b.lock().secrets["a"][2].rotated_from, None, "nothing was active before it");
        assert!(!b.delete("never").await.unwrap());
    }

    #[tokio::test]
    async fn history_is_bounded_and_numbering_continues() {
        let b = FileSecretBackend::memory();
        for i in 0..(MAX_VERSIONS + 5) {
            b.put("r", &SecretValue::new(format!("v{i}")), &BTreeMap::new()).await.unwrap();
        }
        let g = b.lock();
        let v = &g.secrets["r"];
        assert_eq!(v.len(), MAX_VERSIONS);
        assert_eq!(v.last().unwrap().version, (MAX_VERSIONS + 5) as u64);
        assert!(v.last().unwrap().active);
    }

    #[tokio::test]
    async fn debug_never_shows_values() {
        let b = FileSecretBackend::memory();
        b.put("r", &SecretValue::new("hunter2-secret"), &BTreeMap::new()).await.unwrap();
        let s = format!("{b:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("refs: 1"), "{s}");
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_store() {
        let dir = std::env::temp_dir().join(format!("af-secrets-{:x}", crate::ids::random_u128()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("secrets.json");
        std::fs::write(&p, b"{not json").unwrap();
        let e = FileSecretBackend::open(&p).unwrap_err();
        assert!(e.to_string().contains("is not valid"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
