//! The local runner's blob store: objects are files under a root directory, and the runner serves
//! them at presigned-style URLs signed with HMAC-SHA256, so workers use the same
//! "PUT/GET a URL with the listed headers" flow as with S3.
//!
//! Layout under `root`:
//! - `<key>`: the object's bytes;
//! - `<key>@ct`: its content type (one line);
//! - `<dir>/@tmp-<random>`: a write in progress (renamed into place when complete);
//! - `.blob-key`: the signing key (64 hex digits, mode 0600), kept so URLs survive a restart.
//!
//! `@` is never part of a key (see [`validate_key`]), so no object can collide with a sidecar or
//! temporary file; the key `.blob-key` itself is reserved. Keys that are prefixes of one another
//! as paths (`a` and `a/b`) cannot both exist here (they can in S3): the second write is a
//! `Conflict`.
//!
//! URLs: `<base_url>/blobs/<key>?op=put|get&exp=<epoch ms>[&len=<bytes>][&ct=<content type>]&sig=<hex>`,
//! where `sig` is HMAC-SHA256 over the method, key, expiry, length and content type (see
//! [`canonical_request`]). [`LocalBlobs::serve`] answers those requests without depending on an
//! HTTP framework.

use crate::BoxFut;
use crate::blob::{BlobBackend, ObjectInfo, PresignedPut, validate_key};
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

/// The largest object a presigned upload may carry (the runner's body limit should match).
pub const MAX_BODY_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Where the runner mounts [`LocalBlobs::serve`]: `PUT` and `GET` on `/blobs/<key>`.
pub const URL_PREFIX: &str = "/blobs/";
/// The signing key's file name under the root.
pub const KEY_FILE: &str = ".blob-key";
/// The longest accepted content type.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;

const META_SUFFIX: &str = "@ct";
const TMP_PREFIX: &str = "@tmp-";
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
const CHUNK: usize = 64 * 1024;
const SIGNING_VERSION: &str = "agent-factory-blob-v1";

/// A content type is part of a signature and an HTTP header: 1..=255 visible ASCII characters
/// or spaces.
pub fn validate_content_type(ct: &str) -> AppResult<()> {
    let ok = !ct.is_empty()
        && ct.len() <= MAX_CONTENT_TYPE_LEN
        && ct.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        && !ct.starts_with(' ')
        && !ct.ends_with(' ');
    if ok {
        Ok(())
    } else {
        Err(AppError::validation(format!(
            "invalid content type '{}': 1 to {MAX_CONTENT_TYPE_LEN} visible ASCII characters",
            crate::ids::truncate(&ct.escape_debug().to_string(), 80)
        )))
    }
}

/// What [`LocalBlobs::serve`] answers; the runner turns it into its framework's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl BlobHttpResponse {
    fn json(status: u16, v: &serde_json::Value) -> Self {
        Self { status, content_type: "application/json".to_string(), body: v.to_string().into_bytes() }
    }

    fn error(e: &AppError) -> Self {
        Self::json(e.code().http_status(), &e.to_body())
    }
}

/// The string a URL's signature covers. Every part is free of newlines: keys by
/// [`validate_key`], content types by [`validate_content_type`], the rest are numbers.
pub fn canonical_request(method: &str, key: &str, exp: Millis, len: Option<u64>, ct: Option<&str>) -> String {
    let len = len.map(|l| l.to_string()).unwrap_or_default();
    format!("{SIGNING_VERSION}\n{method}\n{key}\n{exp}\n{len}\n{}", ct.unwrap_or(""))
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pct_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The signed query parameters of a blob URL.
#[derive(Debug, Default, PartialEq, Eq)]
struct UrlParams {
    op: String,
    exp: Millis,
    len: Option<u64>,
    ct: Option<String>,
    sig: String,
}

fn forbidden(m: impl Into<String>) -> AppError {
    AppError::Forbidden(m.into())
}

fn parse_query(q: &str) -> AppResult<UrlParams> {
    let (mut op, mut exp, mut len, mut ct, mut sig) = (None, None, None, None, None);
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let v =
            pct_decode(v).ok_or_else(|| forbidden(format!("query parameter '{k}' is not valid percent-encoding")))?;
        let slot = match k {
            "op" => &mut op,
            "exp" => &mut exp,
            "len" => &mut len,
            "ct" => &mut ct,
            "sig" => &mut sig,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(forbidden(format!("query parameter '{k}' is given twice")));
        }
    }
    let missing = |n: &str| forbidden(format!("the URL has no '{n}' parameter (not a presigned blob URL)"));
    Ok(UrlParams {
        op: op.ok_or_else(|| missing("op"))?,
        exp: exp.ok_or_else(|| missing("exp"))?.parse().map_err(|_| forbidden("'exp' is not a number"))?,
        len: len.map(|l| l.parse().map_err(|_| forbidden("'len' is not a number"))).transpose()?,
        ct,
        sig: sig.ok_or_else(|| missing("sig"))?,
    })
}

fn io_error(what: &str, key: &str, e: std::io::Error) -> AppError {
    match e.kind() {
        ErrorKind::NotADirectory
        | ErrorKind::IsADirectory
        | ErrorKind::AlreadyExists
        | ErrorKind::DirectoryNotEmpty => {
            AppError::conflict(format!("{what} '{key}': the key clashes with another object's path ({e})"))
        }
        _ => AppError::internal(format!("{what} '{key}': {e}")),
    }
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("operating system randomness");
    hex::encode(b)
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("object path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{TMP_PREFIX}{}", random_hex(8)));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn meta_path(data: &Path) -> PathBuf {
    let mut s = data.as_os_str().to_owned();
    s.push(META_SUFFIX);
    PathBuf::from(s)
}

/// The object's size, or `None` when there is no file at `path`.
fn file_size(path: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(m.len())),
        Ok(_) => Ok(None),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(e),
    }
}

fn open_object(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    if file_size(path)?.is_none() {
        return Ok(None);
    }
    match std::fs::File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_content_type(data: &Path) -> String {
    std::fs::read_to_string(meta_path(data))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| validate_content_type(s).is_ok())
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string())
}

/// Load the signing key at `path`, or create it (random, mode 0600) when there is none.
fn load_or_create_key(path: &Path) -> AppResult<[u8; 32]> {
    let shown = path.display();
    let parse = |s: &str| -> AppResult<[u8; 32]> {
        let v = hex::decode(s.trim())
            .ok()
            .filter(|v| v.len() == 32)
            .ok_or_else(|| AppError::internal(format!("blob signing key file {shown} does not hold 64 hex digits")))?;
        let mut k = [0u8; 32];
        k.copy_from_slice(&v);
        Ok(k)
    };
    match std::fs::read_to_string(path) {
        Ok(s) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            }
            return parse(&s);
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(AppError::internal(format!("reading blob signing key file {shown}: {e}"))),
    }
    let key = LocalBlobs::random_key();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| AppError::internal(format!("writing blob signing key file {shown}: {e}")))?;
            Ok(key)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let s = std::fs::read_to_string(path)
                .map_err(|e| AppError::internal(format!("reading blob signing key file {shown}: {e}")))?;
            parse(&s)
        }
        Err(e) => Err(AppError::internal(format!("creating blob signing key file {shown}: {e}"))),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> AppResult<T> + Send + 'static) -> AppResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AppError::internal(format!("blob store task failed: {e}")))?
}

/// Objects under a directory, served at HMAC-signed URLs below `base_url`.
#[derive(Clone)]
pub struct LocalBlobs {
    root: PathBuf,
    base_url: String,
    key: [u8; 32],
}

impl std::fmt::Debug for LocalBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBlobs")
            .field("root", &self.root)
            .field("base_url", &self.base_url)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl LocalBlobs {
    /// A store under `root` (created on first write) whose URLs start with `base_url`
    /// (e.g. `http://127.0.0.1:8787`), signed with `signing_key`.
    pub fn new(root: impl Into<PathBuf>, base_url: impl Into<String>, signing_key: [u8; 32]) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_string();
        Self { root: root.into(), base_url, key: signing_key }
    }

    /// A store under `root` with the signing key kept at `root/.blob-key` (created, mode 0600,
    /// when missing), so URLs stay valid across restarts of a runner with a data directory.
    pub fn open(root: impl Into<PathBuf>, base_url: impl Into<String>) -> AppResult<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| AppError::internal(format!("creating blob directory {}: {e}", root.display())))?;
        let key = load_or_create_key(&root.join(KEY_FILE))?;
        Ok(Self::new(root, base_url, key))
    }

    /// 32 random bytes: a signing key for [`LocalBlobs::new`] (URLs die with the process).
    pub fn random_key() -> [u8; 32] {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("operating system randomness");
        k
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The data file of `key`, after checking the key.
    fn path_of(&self, key: &str) -> AppResult<PathBuf> {
        validate_key(key)?;
        if key.split('/').next() == Some(KEY_FILE) {
            return Err(AppError::validation(format!("object key '{key}' is reserved")));
        }
        Ok(self.root.join(key))
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    fn sign(&self, canonical: &str) -> String {
        let mut m = self.mac();
        m.update(canonical.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// Constant-time check of a hex signature.
    fn verify(&self, canonical: &str, sig_hex: &str) -> bool {
        let Ok(sig) = hex::decode(sig_hex) else { return false };
        let mut m = self.mac();
        m.update(canonical.as_bytes());
        m.verify_slice(&sig).is_ok()
    }

    fn url(&self, op: &str, key: &str, exp: Millis, len: Option<u64>, ct: Option<&str>) -> String {
        let method = if op == "put" { "PUT" } else { "GET" };
        let sig = self.sign(&canonical_request(method, key, exp, len, ct));
        let mut u = format!("{}{URL_PREFIX}{key}?op={op}&exp={exp}", self.base_url);
        if let Some(l) = len {
            u.push_str(&format!("&len={l}"));
        }
        if let Some(c) = ct {
            u.push_str(&format!("&ct={}", pct_encode(c)));
        }
        u.push_str(&format!("&sig={sig}"));
        u
    }

    /// A signed upload URL, valid until exactly `expires_at` (no clock involved; unlike S3 there
    /// is no 1 s ..= 7 days clamp).
    pub fn presign_put_url(
        &self,
        key: &str,
        content_type: &str,
        size: Option<u64>,
        expires_at: Millis,
    ) -> AppResult<PresignedPut> {
        self.path_of(key)?;
        validate_content_type(content_type)?;
        if let Some(n) = size.filter(|n| *n > MAX_BODY_BYTES) {
            return Err(AppError::PayloadTooLarge(format!(
                "object size {n} is over the local store's limit of {MAX_BODY_BYTES} bytes"
            )));
        }
        let mut headers = vec![("Content-Type".to_string(), content_type.to_string())];
        if let Some(n) = size {
            headers.push(("Content-Length".to_string(), n.to_string()));
        }
        Ok(PresignedPut {
            url: self.url("put", key, expires_at, size, Some(content_type)),
            method: "PUT",
            headers,
            expires_at,
        })
    }

    /// A signed download URL.
    pub fn presign_get_url(&self, key: &str, expires_at: Millis) -> AppResult<String> {
        self.path_of(key)?;
        Ok(self.url("get", key, expires_at, None, None))
    }

    /// Answer `PUT|GET /blobs/<key>?<signed query>` (what the runner receives at [`URL_PREFIX`]).
    /// `path_and_query` is the request target as sent (not decoded); `content_type` is the
    /// request's `Content-Type` header; `now_ms` the runner's clock.
    ///
    /// 200 `{"key"}` after a PUT, 200 with the bytes and stored content type for a GET; errors have
    /// a `{"error":{"code","message"}}` body: 400 a bad key, 403 a bad, expired or mismatched
    /// signature (wrong op or content type), 404 a missing object, 405 another method, 413 a body
    /// longer than [`MAX_BODY_BYTES`] or not of the signed length.
    pub async fn serve(
        &self,
        method: &str,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        now_ms: Millis,
    ) -> BlobHttpResponse {
        match self.serve_inner(method, path_and_query, content_type, body, now_ms).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(method, code = e.code().as_str(), error = %e, "blob request refused");
                BlobHttpResponse::error(&e)
            }
        }
    }

    async fn serve_inner(
        &self,
        method: &str,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        now_ms: Millis,
    ) -> AppResult<BlobHttpResponse> {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let key = path
            .strip_prefix(URL_PREFIX)
            .ok_or_else(|| AppError::not_found(format!("no blob route at '{}'", crate::ids::truncate(path, 80))))?;
        let data = self.path_of(key)?;
        let (op, http_method) = match method {
            "PUT" => ("put", "PUT"),
            "GET" => ("get", "GET"),
            other => {
                let e = AppError::validation(format!(
                    "method {} is not allowed on blobs (PUT or GET)",
                    crate::ids::truncate(other, 20)
                ));
                let mut r = BlobHttpResponse::error(&e);
                r.status = 405;
                return Ok(r);
            }
        };
        let q = parse_query(query)?;
        if q.op != op {
            return Err(forbidden(format!(
                "this URL is for op={}, not a {http_method}",
                crate::ids::truncate(&q.op, 10)
            )));
        }
        let canonical = canonical_request(http_method, key, q.exp, q.len, q.ct.as_deref());
        if !self.verify(&canonical, &q.sig) {
            return Err(forbidden("the URL's signature does not match"));
        }
        if now_ms > q.exp {
            return Err(forbidden(format!("the URL expired at {} (now {now_ms})", q.exp)));
        }
        if http_method == "GET" {
            let key_s = key.to_string();
            let found = blocking(move || {
                let Some(mut f) = open_object(&data).map_err(|e| io_error("reading", &key_s, e))? else {
                    return Ok(None);
                };
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(|e| io_error("reading", &key_s, e))?;
                Ok(Some((bytes, read_content_type(&data))))
            })
            .await?;
            return match found {
                Some((body, content_type)) => Ok(BlobHttpResponse { status: 200, content_type, body }),
                None => Err(AppError::not_found(format!("no object '{key}'"))),
            };
        }
        if let Some(ct) = &q.ct
            && content_type != Some(ct.as_str())
        {
            return Err(forbidden(format!(
                "Content-Type must be '{ct}' (signed), got '{}'",
                crate::ids::truncate(content_type.unwrap_or(""), 80)
            )));
        }
        let n = body.len() as u64;
        if n > MAX_BODY_BYTES {
            return Err(AppError::PayloadTooLarge(format!("body of {n} bytes is over the limit of {MAX_BODY_BYTES}")));
        }
        if let Some(len) = q.len
            && len != n
        {
            return Err(AppError::PayloadTooLarge(format!("body has {n} bytes; the URL was signed for exactly {len}")));
        }
        let stored_ct =
            q.ct.clone().or_else(|| content_type.map(str::to_string)).filter(|c| validate_content_type(c).is_ok());
        self.write(key, data, body, stored_ct.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string())).await?;
        Ok(BlobHttpResponse::json(200, &serde_json::json!({ "key": key })))
    }

    async fn write(&self, key: &str, data: PathBuf, bytes: Vec<u8>, content_type: String) -> AppResult<()> {
        let key = key.to_string();
        blocking(move || {
            // Clashes first, so that a refused write leaves no sidecar behind.
            if let Some(dir) = data.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io_error("writing", &key, e))?;
            }
            if data.is_dir() {
                return Err(io_error("writing", &key, std::io::Error::from(ErrorKind::IsADirectory)));
            }
            write_atomic(&meta_path(&data), format!("{content_type}\n").as_bytes())
                .and_then(|_| write_atomic(&data, &bytes))
                .map_err(|e| io_error("writing", &key, e))
        })
        .await
    }
}

impl BlobBackend for LocalBlobs {
    fn presign_put<'a>(
        &'a self,
        key: &'a str,
        content_type: &'a str,
        size: Option<u64>,
        expires_at: Millis,
    ) -> BoxFut<'a, AppResult<PresignedPut>> {
        Box::pin(async move { self.presign_put_url(key, content_type, size, expires_at) })
    }

    fn presign_get<'a>(&'a self, key: &'a str, expires_at: Millis) -> BoxFut<'a, AppResult<String>> {
        Box::pin(async move { self.presign_get_url(key, expires_at) })
    }

    fn size<'a>(&'a self, key: &'a str) -> BoxFut<'a, AppResult<Option<u64>>> {
        Box::pin(async move {
            let data = self.path_of(key)?;
            let k = key.to_string();
            blocking(move || file_size(&data).map_err(|e| io_error("reading", &k, e))).await
        })
    }

    fn digest<'a>(&'a self, key: &'a str) -> BoxFut<'a, AppResult<Option<ObjectInfo>>> {
        Box::pin(async move {
            let data = self.path_of(key)?;
            let k = key.to_string();
            blocking(move || {
                let Some(mut f) = open_object(&data).map_err(|e| io_error("reading", &k, e))? else {
                    return Ok(None);
                };
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; CHUNK];
                let mut size = 0u64;
                loop {
                    match f.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            hasher.update(&buf[..n]);
                            size += n as u64;
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(io_error("reading", &k, e)),
                    }
                }
                Ok(Some(ObjectInfo { size, sha256: hex::encode(hasher.finalize()) }))
            })
            .await
        })
    }

    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>, content_type: &'a str) -> BoxFut<'a, AppResult<()>> {
        Box::pin(async move {
            let data = self.path_of(key)?;
            validate_content_type(content_type)?;
            self.write(key, data, bytes, content_type.to_string()).await
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFut<'a, AppResult<()>> {
        Box::pin(async move {
            let data = self.path_of(key)?;
            let root = self.root.clone();
            let k = key.to_string();
            blocking(move || {
                if file_size(&data).map_err(|e| io_error("deleting", &k, e))?.is_none() {
                    return Ok(());
                }
                for p in [data.clone(), meta_path(&data)] {
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(io_error("deleting", &k, e)),
                    }
                }
                // Drop directories the delete left empty (never the root).
                let mut dir = data.parent().map(Path::to_path_buf);
                while let Some(d) = dir {
                    if d == root || !d.starts_with(&root) || std::fs::remove_dir(&d).is_err() {
                        break;
                    }
                    dir = d.parent().map(Path::to_path_buf);
                }
                Ok(())
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> LocalBlobs {
        LocalBlobs::new("/nonexistent-root", "http://127.0.0.1:8787/", [7u8; 32])
    }

    fn query_of(url: &str) -> &str {
        url.split_once('?').unwrap().1
    }

    #[test]
    fn signature_covers_every_part() {
        let s = store();
        let base = canonical_request("PUT", "a/b", 1000, Some(5), Some("text/plain"));
        let sig = s.sign(&base);
        assert!(s.verify(&base, &sig));
        for other in [
            canonical_request("GET", "a/b", 1000, Some(5), Some("text/plain")),
            canonical_request("PUT", "a/c", 1000, Some(5), Some("text/plain")),
            canonical_request("PUT", "a/b", 1001, Some(5), Some("text/plain")),
            canonical_request("PUT", "a/b", 1000, Some(6), Some("text/plain")),
            canonical_request("PUT", "a/b", 1000, None, Some("text/plain")),
            canonical_request("PUT", "a/b", 1000, Some(5), Some("text/html")),
            canonical_request("PUT", "a/b", 1000, Some(5), None),
        ] {
            assert!(!s.verify(&other, &sig), "{other:?}");
        }
        // Another key, a truncated or non-hex signature.
        assert!(!LocalBlobs::new("/r", "http://x", [8u8; 32]).verify(&base, &sig));
        assert!(!s.verify(&base, &sig[..62]));
        assert!(!s.verify(&base, "zz"));
        assert!(!s.verify(&base, ""));
    }

    #[test]
    fn urls_carry_the_signed_parameters() {
        let s = store();
        let p = s.presign_put_url("snap/x.tar", "text/plain; charset=utf-8", Some(12), 5000).unwrap();
        assert!(p.url.starts_with(
            "http://127.0.0.1:8787/blobs/snap/x.tar?op=put&exp=5000&len=12&ct=text%2Fplain%3B%20charset%3Dutf-8&sig="
        ));
        assert_eq!(
            p.headers,
            vec![("Content-Type".into(), "text/plain; charset=utf-8".into()), ("Content-Length".into(), "12".into())]
        );
        let q = parse_query(query_of(&p.url)).unwrap();
        assert_eq!(
            (q.op.as_str(), q.exp, q.len, q.ct.as_deref()),
            ("put", 5000, Some(12), Some("text/plain; charset=utf-8"))
        );
        assert!(s.verify(
            &canonical_request("PUT", "snap/x.tar", 5000, Some(12), Some("text/plain; charset=utf-8")),
            &q.sig
        ));

        let g = s.presign_get_url("snap/x.tar", 7000).unwrap();
        let q = parse_query(query_of(&g)).unwrap();
        assert_eq!((q.op.as_str(), q.exp, q.len, q.ct), ("get", 7000, None, None));
        assert!(s.verify(&canonical_request("GET", "snap/x.tar", 7000, None, None), &q.sig));
    }

    #[test]
    fn query_parsing_is_strict() {
        assert!(parse_query("op=get&exp=1&sig=00&exp=2").is_err());
        assert!(parse_query("op=get&sig=00").is_err());
        assert!(parse_query("op=get&exp=x&sig=00").is_err());
        assert!(parse_query("op=put&exp=1&len=-1&sig=00").is_err());
        assert!(parse_query("op=put&exp=1&ct=%zz&sig=00").is_err());
        // Unknown parameters are ignored (they are not signed and change nothing).
        assert_eq!(parse_query("op=get&exp=1&sig=00&x=1").unwrap().sig, "00");
    }

    #[test]
    fn percent_encoding_round_trips() {
        for s in ["application/vnd.api+json", "text/plain; charset=\"utf-8\"", "a%b&c=d", "plain"] {
            assert_eq!(pct_decode(&pct_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(pct_decode("%4"), None);
    }

    #[test]
    fn keys_and_content_types_are_checked() {
        let s = store();
        for bad in
            ["../x", "a/../../x", "/abs", "a//b", "./a", "a/.", "", "a b", "a\nb", ".blob-key", ".blob-key/x", "a@ct"]
        {
            assert!(s.presign_put_url(bad, "text/plain", None, 1).is_err(), "{bad:?}");
            assert!(s.presign_get_url(bad, 1).is_err(), "{bad:?}");
        }
        assert!(s.presign_get_url("dir/.blob-key", 1).is_ok());
        for bad in ["", "a\r\nb", "tëxt", " a", &"a".repeat(256)] {
            assert!(validate_content_type(bad).is_err(), "{bad:?}");
        }
        assert!(s.presign_put_url("a", "text/plain", Some(MAX_BODY_BYTES + 1), 1).is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        let d = format!("{:?}", store());
        assert!(d.contains("<redacted>") && !d.contains("7, 7"), "{d}");
    }
}
