//! Object storage for snapshot archives and media: S3 with presigned URLs (`adapters/s3.rs`), or, for the
//! local runner, a directory whose objects are served by the runner at presigned-style URLs
//! signed with HMAC (`adapters/blob_local.rs`). Workers never get storage credentials, only short-lived URLs.

pub use crate::BoxFut;
use crate::error::AppResult;

/// What a stored object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// Lowercase hex SHA-256 of the whole object; computed by reading it (see [`BlobBackend::digest`]).
    pub sha256: String,
}

/// A presigned upload: the worker sends `PUT <url>` with the body and every header in `headers`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresignedPut {
    pub url: String,
    pub method: &'static str,
    /// Headers the upload must carry exactly (they are part of the signature).
    pub headers: Vec<(String, String)>,
    pub expires_at: crate::clock::Millis,
}

/// How a worker uploads: what `snapshot-prepare` and `media-upload-url` return (flattened into
/// their responses as `uploadUrl`, `uploadMethod`, `uploadHeaders`, `uploadExpiresAt`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTarget {
    pub upload_url: String,
    pub upload_method: &'static str,
    /// Headers the upload must carry exactly (they are signed).
    pub upload_headers: std::collections::BTreeMap<String, String>,
    pub upload_expires_at: crate::clock::Millis,
}

impl From<PresignedPut> for UploadTarget {
    fn from(p: PresignedPut) -> Self {
        Self {
            upload_url: p.url,
            upload_method: p.method,
            upload_headers: p.headers.into_iter().collect(),
            upload_expires_at: p.expires_at,
        }
    }
}

/// A blob store. Keys are `/`-separated paths of `A-Z a-z 0-9 . _ - /` (no `..`).
pub trait BlobBackend: Send + Sync + std::fmt::Debug {
    /// A URL for one upload of `key`, valid until `expires_at` (epoch ms). When `size` is given the
    /// upload must be exactly that many bytes (the length is signed); `content_type` is signed too.
    fn presign_put<'a>(
        &'a self,
        key: &'a str,
        content_type: &'a str,
        size: Option<u64>,
        expires_at: crate::clock::Millis,
    ) -> BoxFut<'a, AppResult<PresignedPut>>;
    /// A URL to download `key`, valid until `expires_at` (epoch ms).
    fn presign_get<'a>(&'a self, key: &'a str, expires_at: crate::clock::Millis) -> BoxFut<'a, AppResult<String>>;
    /// Size of the object, or `None` when it does not exist.
    fn size<'a>(&'a self, key: &'a str) -> BoxFut<'a, AppResult<Option<u64>>>;
    /// Size and SHA-256 of the object, read in full as a stream (never buffered whole), or `None`
    /// when it does not exist.
    fn digest<'a>(&'a self, key: &'a str) -> BoxFut<'a, AppResult<Option<ObjectInfo>>>;
    /// Store bytes directly (server-side uploads, tests).
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>, content_type: &'a str) -> BoxFut<'a, AppResult<()>>;
    /// Delete the object; deleting a missing object is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFut<'a, AppResult<()>>;
}

/// Check a key against the allowed alphabet.
pub fn validate_key(key: &str) -> AppResult<()> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && !key.starts_with('/')
        && !key.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(crate::error::AppError::validation(format!("invalid object key '{}'", crate::ids::truncate(key, 80))))
    }
}

/// The object key of a media blob (`storageId` is ours: `m` + ULID, or what ingress stored).
pub fn media_key(storage_id: &str) -> String {
    format!("media/{storage_id}")
}

/// The object key of a snapshot archive.
pub fn snapshot_key(ulid: &str) -> String {
    format!("snapshots/{ulid}.tar.gz")
}
