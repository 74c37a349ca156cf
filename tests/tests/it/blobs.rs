//! The blob stores: S3 (against moto_server, `MOTO_ENDPOINT`) with presigned URLs used over real
//! HTTP, and the local runner's directory store through its framework-independent `serve`.

use integration_tests::{code, moto_endpoint};
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::adapters::blob_local::{BlobHttpResponse, LocalBlobs, MAX_BODY_BYTES};
use shared::adapters::s3::S3Blobs;
use shared::blob::{BlobBackend, ObjectInfo};
use std::path::PathBuf;

// ---------- helpers ----------

/// `n` bytes of deterministic noise (xorshift), different per `seed`.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What a store should report for `bytes`.
fn info(bytes: &[u8]) -> ObjectInfo {
    ObjectInfo { size: bytes.len() as u64, sha256: hex::encode(Sha256::digest(bytes)) }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().unwrap()
}

/// Send `body` to a presigned PUT with the given headers.
async fn upload(url: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, String) {
    let mut req = http().put(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.body(body).send().await.expect("PUT to the presigned URL");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// A store on a fresh bucket of moto_server.
async fn s3() -> S3Blobs {
    let bucket = format!("blobs-{:016x}", shared::ids::random_u128() as u64);
    let s = S3Blobs::connect(bucket, Some(&moto_endpoint())).await;
    s.ensure_bucket().await.expect("create the bucket");
    s.ensure_bucket().await.expect("ensure_bucket is idempotent");
    s
}

// ---------- S3 (moto_server) ----------

#[tokio::test]
async fn s3_presigned_put_get_digest_delete() {
    let s = s3().await;
    let key = "snapshots/conv-1/snap-1.tar.zst";
    // Larger than one read chunk, and not a multiple of any buffer size.
    let bytes = noise(300_001, 1);
    let p = s.presign_put(key, "application/zstd", Some(bytes.len() as u64), now_ms() + 300_000).await.unwrap();
    assert_eq!(p.method, "PUT");
    assert!(p.headers.contains(&("Content-Type".into(), "application/zstd".into())), "{:?}", p.headers);
    assert!(p.headers.contains(&("Content-Length".into(), bytes.len().to_string())), "{:?}", p.headers);
    assert!(p.url.contains("X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost"), "{}", p.url);
    assert!((p.expires_at - (now_ms() + 300_000)).abs() < 5_000, "{} vs now+300s", p.expires_at);

    let (status, text) = upload(&p.url, &p.headers, bytes.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(s.size(key).await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(s.digest(key).await.unwrap(), Some(info(&bytes)));

    let url = s.presign_get(key, now_ms() + 60_000).await.unwrap();
    let r = http().get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/zstd");
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());

    s.delete(key).await.unwrap();
    assert_eq!(s.size(key).await.unwrap(), None);
    assert_eq!(s.digest(key).await.unwrap(), None);
    s.delete(key).await.expect("deleting a missing object is fine");
}

#[tokio::test]
async fn s3_put_and_missing_objects() {
    let s = s3().await;
    assert_eq!(s.size("nope/x").await.unwrap(), None);
    assert_eq!(s.digest("nope/x").await.unwrap(), None);
    s.delete("nope/x").await.unwrap();

    let empty: Vec<u8> = Vec::new();
    s.put("media/empty", empty.clone(), "text/plain").await.unwrap();
    assert_eq!(s.digest("media/empty").await.unwrap(), Some(info(&empty)));
    let bytes = noise(2 * 1024 * 1024 + 17, 2);
    s.put("media/big.bin", bytes.clone(), "application/octet-stream").await.unwrap();
    assert_eq!(s.size("media/big.bin").await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(s.digest("media/big.bin").await.unwrap(), Some(info(&bytes)));

    assert_eq!(code(&s.put("../x", vec![1], "text/plain").await.unwrap_err()), "ValidationError");
    assert!(s.presign_get("a/../../x", now_ms() + 1000).await.is_err());
}

/// The URL signs the length (real S3 then refuses any other length with 403
/// SignatureDoesNotMatch). moto_server does not check SigV4 signatures of presigned URLs (nor
/// their expiry), so there the wrong-length upload is stored: this test pins that, so a moto that
/// starts enforcing shows up here.
#[tokio::test]
async fn s3_signed_length_and_what_moto_enforces() {
    let s = s3().await;
    let p = s.presign_put("m/a.bin", "application/octet-stream", Some(10), now_ms() + 60_000).await.unwrap();
    assert!(p.url.contains("X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost"), "{}", p.url);
    let no_len: Vec<_> = p.headers.iter().filter(|(k, _)| k != "Content-Length").cloned().collect();
    let (status, text) = upload(&p.url, &no_len, noise(11, 3)).await;
    assert_eq!(status, 200, "moto accepted nothing else so far: {text}");
    assert_eq!(s.size("m/a.bin").await.unwrap(), Some(11), "moto does not enforce the signed Content-Length");

    // A tampered signature and an expired URL: also accepted by moto (no SigV4 verification).
    let p = s.presign_put("m/b.bin", "text/plain", None, now_ms() + 60_000).await.unwrap();
    let tampered = p.url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    let (status, _) = upload(&tampered, &p.headers, b"x".to_vec()).await;
    assert_eq!(status, 200, "moto does not verify presigned signatures");
    let (url, _) = s.presign_get_at("m/b.bin", now_ms() - 3_600_000, now_ms() - 7_200_000).await.unwrap();
    assert_eq!(http().get(&url).send().await.unwrap().status().as_u16(), 200, "moto does not check expiry");
}

// ---------- local directory store ----------

const BASE: &str = "http://127.0.0.1:8787";
const T0: i64 = 1_700_000_000_000;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("blobs-test-{:032x}", shared::ids::random_u128()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn local() -> (LocalBlobs, TempDir) {
    let dir = TempDir::new();
    (LocalBlobs::open(dir.0.join("blobs"), BASE).expect("open the store"), dir)
}

fn target(url: &str) -> &str {
    url.strip_prefix(BASE).expect("URL under the base URL")
}

fn error_code(r: &BlobHttpResponse) -> String {
    assert_eq!(r.content_type, "application/json");
    let v: Value = serde_json::from_slice(&r.body).expect("JSON error body");
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"]["code"].as_str().expect("error code").to_string()
}

async fn put_via(s: &LocalBlobs, url: &str, ct: Option<&str>, body: &[u8], now: i64) -> BlobHttpResponse {
    s.serve("PUT", target(url), ct, body.to_vec(), now).await
}

async fn get_via(s: &LocalBlobs, url: &str, now: i64) -> BlobHttpResponse {
    s.serve("GET", target(url), None, Vec::new(), now).await
}

#[tokio::test]
async fn local_presigned_put_get_digest_delete() {
    let (s, _dir) = local();
    let key = "snapshots/conv-1/snap-1.tar.zst";
    let bytes = noise(200_003, 4);
    let p = s.presign_put(key, "application/zstd", Some(bytes.len() as u64), T0 + 60_000).await.unwrap();
    assert!(p.url.starts_with(&format!("{BASE}/blobs/{key}?op=put&exp={}", T0 + 60_000)), "{}", p.url);
    assert_eq!(p.expires_at, T0 + 60_000);
    assert_eq!(
        p.headers,
        vec![("Content-Type".into(), "application/zstd".into()), ("Content-Length".into(), bytes.len().to_string())]
    );

    let r = put_via(&s, &p.url, Some("application/zstd"), &bytes, T0).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["key"], key);
    assert_eq!(s.size(key).await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(s.digest(key).await.unwrap(), Some(info(&bytes)));
    assert!(s.root().join(key).is_file(), "objects are files at root/<key>");

    let url = s.presign_get(key, T0 + 60_000).await.unwrap();
    let r = get_via(&s, &url, T0 + 60_000).await; // valid up to and including its expiry
    assert_eq!((r.status, r.content_type.as_str()), (200, "application/zstd"));
    assert_eq!(r.body, bytes);

    // The same URL uploads again (replacing the object), as a presigned S3 URL does.
    let r = put_via(&s, &p.url, Some("application/zstd"), &noise(bytes.len(), 5), T0 + 1).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.digest(key).await.unwrap(), Some(info(&noise(bytes.len(), 5))));

    s.delete(key).await.unwrap();
    assert_eq!(s.size(key).await.unwrap(), None);
    assert_eq!(s.digest(key).await.unwrap(), None);
    let r = get_via(&s, &url, T0).await;
    assert_eq!((r.status, error_code(&r).as_str()), (404, "NotFound"));
    s.delete(key).await.expect("deleting a missing object is fine");
    assert!(!s.root().join("snapshots").exists(), "empty directories are removed");
    // Nothing left behind but the signing key.
    let left: Vec<_> = std::fs::read_dir(s.root()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from(".blob-key")]);
}

#[tokio::test]
async fn local_direct_put_and_unsized_upload() {
    let (s, _dir) = local();
    s.put("media/a.txt", b"hello".to_vec(), "text/plain; charset=utf-8").await.unwrap();
    assert_eq!(s.digest("media/a.txt").await.unwrap(), Some(info(b"hello")));
    let r = get_via(&s, &s.presign_get("media/a.txt", T0 + 1000).await.unwrap(), T0).await;
    assert_eq!(
        (r.status, r.content_type.as_str(), r.body.as_slice()),
        (200, "text/plain; charset=utf-8", &b"hello"[..])
    );

    // Without a signed size any length goes (up to the limit); the content type is still signed.
    let p = s.presign_put("media/b.bin", "application/octet-stream", None, T0 + 1000).await.unwrap();
    assert_eq!(p.headers, vec![("Content-Type".into(), "application/octet-stream".into())]);
    assert!(!p.url.contains("len="), "{}", p.url);
    let r = put_via(&s, &p.url, Some("application/octet-stream"), b"", T0).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.digest("media/b.bin").await.unwrap(), Some(info(b"")));
    let r = put_via(&s, &p.url, Some("text/plain"), b"abc", T0).await;
    assert_eq!((r.status, error_code(&r).as_str()), (403, "Forbidden"), "content type is signed");
    let r = put_via(&s, &p.url, None, b"abc", T0).await;
    assert_eq!(r.status, 403, "a missing content type does not match the signed one");
    assert_eq!(s.size("media/b.bin").await.unwrap(), Some(0), "refused uploads write nothing");
}

#[tokio::test]
async fn local_tampered_signature_is_403() {
    let (s, _dir) = local();
    let p = s.presign_put("a/b", "text/plain", Some(3), T0 + 1000).await.unwrap();
    let (head, sig) = p.url.rsplit_once("&sig=").unwrap();
    let flipped = format!("{head}&sig={}{}", if sig.starts_with('0') { "1" } else { "0" }, &sig[1..]);
    // Each signed part changed, or the signature mangled: refused, nothing written.
    for bad in [
        flipped,
        format!("{head}&sig="),
        format!("{head}&sig=xyz"),
        head.to_string(),
        p.url.replace("exp=", "exp=9"),
        p.url.replace("len=3", "len=4"),
        p.url.replace("&len=3", ""),
        p.url.replace("ct=text%2Fplain", "ct=text%2Fhtml"),
        p.url.replace("/blobs/a/b", "/blobs/a/c"),
        format!("{}&sig={sig}", p.url),
    ] {
        let r = put_via(&s, &bad, Some("text/plain"), b"abc", T0).await;
        assert_eq!((r.status, error_code(&r).as_str()), (403, "Forbidden"), "{bad}");
    }
    // A URL signed with another store's key.
    let other = LocalBlobs::new(s.root(), BASE, LocalBlobs::random_key());
    let r = put_via(
        &s,
        &other.presign_put("a/b", "text/plain", Some(3), T0 + 1000).await.unwrap().url,
        Some("text/plain"),
        b"abc",
        T0,
    )
    .await;
    assert_eq!(r.status, 403);
    let r = get_via(&other, &s.presign_get("a/b", T0 + 1000).await.unwrap(), T0).await;
    assert_eq!(r.status, 403);
    assert_eq!(s.size("a/b").await.unwrap(), None);
    // The genuine URL works.
    assert_eq!(put_via(&s, &p.url, Some("text/plain"), b"abc", T0).await.status, 200);
}

#[tokio::test]
async fn local_expired_url_is_403() {
    let (s, _dir) = local();
    let p = s.presign_put("a", "text/plain", None, T0 + 1000).await.unwrap();
    let r = put_via(&s, &p.url, Some("text/plain"), b"x", T0 + 1001).await;
    assert_eq!((r.status, error_code(&r).as_str()), (403, "Forbidden"));
    assert_eq!(s.size("a").await.unwrap(), None);
    assert_eq!(put_via(&s, &p.url, Some("text/plain"), b"x", T0 + 1000).await.status, 200);
    let g = s.presign_get("a", T0 + 1000).await.unwrap();
    assert_eq!(get_via(&s, &g, T0 + 1001).await.status, 403);
    assert_eq!(get_via(&s, &g, T0 + 999).await.status, 200);
}

#[tokio::test]
async fn local_wrong_length_is_413() {
    let (s, _dir) = local();
    let p = s.presign_put("a", "text/plain", Some(10), T0 + 1000).await.unwrap();
    for n in [0, 9, 11, 1000] {
        let r = put_via(&s, &p.url, Some("text/plain"), &noise(n, 6), T0).await;
        assert_eq!((r.status, error_code(&r).as_str()), (413, "PayloadTooLarge"), "{n} bytes");
    }
    assert_eq!(s.size("a").await.unwrap(), None);
    assert_eq!(put_via(&s, &p.url, Some("text/plain"), &noise(10, 6), T0).await.status, 200);
    // Sizes over the store's limit are refused when presigning.
    let e = s.presign_put("b", "text/plain", Some(MAX_BODY_BYTES + 1), T0 + 1000).await.unwrap_err();
    assert_eq!(code(&e), "PayloadTooLarge");
}

#[tokio::test]
async fn local_traversal_keys_are_refused() {
    let (s, dir) = local();
    for bad in ["../x", "a/../../x", "..", "/etc/passwd", "a//b", "./x", ".blob-key", "a\\..\\x", "%2e%2e/x"] {
        assert!(s.presign_put(bad, "text/plain", None, T0 + 1000).await.is_err(), "{bad}");
        assert!(s.presign_get(bad, T0 + 1000).await.is_err(), "{bad}");
        assert!(s.put(bad, b"x".to_vec(), "text/plain").await.is_err(), "{bad}");
        assert!(s.size(bad).await.is_err(), "{bad}");
        assert!(s.digest(bad).await.is_err(), "{bad}");
        assert!(s.delete(bad).await.is_err(), "{bad}");
    }
    // A request naming such a key (a URL forged from a good one) is refused before anything else.
    let p = s.presign_put("x", "text/plain", None, T0 + 1000).await.unwrap();
    for path in ["/blobs/../x", "/blobs/a/../../x", "/blobs/%2e%2e/x", "/blobs/.blob-key", "/blobs//etc/passwd"] {
        let forged = p.url.replacen("/blobs/x", path, 1);
        let r = put_via(&s, &forged, Some("text/plain"), b"x", T0).await;
        assert_eq!((r.status, error_code(&r).as_str()), (400, "ValidationError"), "{forged}");
        let r = s.serve("GET", target(&forged), None, Vec::new(), T0).await;
        assert_eq!(r.status, 400, "{forged}");
    }
    assert!(!dir.0.join("x").exists());
    let r = s.serve("GET", "/other/x?op=get", None, Vec::new(), T0).await;
    assert_eq!((r.status, error_code(&r).as_str()), (404, "NotFound"));
    let r = s.serve("DELETE", target(&p.url), None, Vec::new(), T0).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn local_op_mismatch_is_403() {
    let (s, _dir) = local();
    s.put("a", b"data".to_vec(), "text/plain").await.unwrap();
    let put = s.presign_put("a", "text/plain", None, T0 + 1000).await.unwrap();
    let r = get_via(&s, &put.url, T0).await;
    assert_eq!((r.status, error_code(&r).as_str()), (403, "Forbidden"), "GET with a put URL");
    // Even with op rewritten: the method is part of the signature.
    let r = get_via(&s, &put.url.replace("op=put", "op=get"), T0).await;
    assert_eq!(r.status, 403);
    let get = s.presign_get("a", T0 + 1000).await.unwrap();
    let r = put_via(&s, &get, Some("text/plain"), b"evil", T0).await;
    assert_eq!(r.status, 403, "PUT with a get URL");
    let r = put_via(&s, &get.replace("op=get", "op=put"), Some("text/plain"), b"evil", T0).await;
    assert_eq!(r.status, 403);
    assert_eq!(s.digest("a").await.unwrap(), Some(info(b"data")));
}

#[tokio::test]
async fn local_key_file_survives_reopen() {
    let dir = TempDir::new();
    let root = dir.0.join("blobs");
    let a = LocalBlobs::open(&root, BASE).unwrap();
    a.put("k", b"v".to_vec(), "text/plain").await.unwrap();
    let url = a.presign_get("k", T0 + 1000).await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join(".blob-key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A restarted runner (same directory) accepts the URLs it handed out before.
    let b = LocalBlobs::open(&root, BASE).unwrap();
    assert_eq!(get_via(&b, &url, T0).await.body, b"v");
    // A fresh directory means a fresh key.
    let other = TempDir::new();
    let c = LocalBlobs::open(&other.0, BASE).unwrap();
    assert_eq!(c.serve("GET", target(&url), None, Vec::new(), T0).await.status, 403);
    // A damaged key file is an error, not a silently new key.
    std::fs::write(root.join(".blob-key"), "not hex").unwrap();
    assert!(LocalBlobs::open(&root, BASE).is_err());
}

#[tokio::test]
async fn local_path_clashes_are_conflicts() {
    let (s, _dir) = local();
    s.put("a", b"1".to_vec(), "text/plain").await.unwrap();
    let e = s.put("a/b", b"2".to_vec(), "text/plain").await.unwrap_err();
    assert_eq!(code(&e), "Conflict", "{e}");
    s.put("c/d", b"3".to_vec(), "text/plain").await.unwrap();
    let e = s.put("c", b"4".to_vec(), "text/plain").await.unwrap_err();
    assert_eq!(code(&e), "Conflict", "{e}");
    // A directory is not an object.
    assert_eq!(s.size("c").await.unwrap(), None);
    assert_eq!(s.digest("c").await.unwrap(), None);
    s.delete("c").await.unwrap();
    assert_eq!(s.size("c/d").await.unwrap(), Some(1));
}
