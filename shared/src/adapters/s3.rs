//! The S3 blob store. Workers get presigned URLs (SigV4 in the query string); the functions use
//! the SDK directly for sizes, digests, server-side writes and deletes.
//!
//! Presigning is wall-clock based by nature (S3 checks `X-Amz-Date` + `X-Amz-Expires` against its
//! own clock), so the trait methods sign at `SystemTime::now()`; [`S3Blobs::presign_put_at`] and
//! [`S3Blobs::presign_get_at`] take "now" explicitly.

use crate::BoxFut;
use crate::adapters::blob_local::validate_content_type;
use crate::blob::{BlobBackend, ObjectInfo, PresignedPut, validate_key};
use crate::clock::Millis;
use crate::config::Config;
use crate::error::{AppError, AppResult};
use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest validity S3 accepts for a presigned URL (SigV4: 7 days).
pub const MAX_PRESIGN_SECS: i64 = 7 * 24 * 3600;

/// Objects in one bucket.
#[derive(Debug, Clone)]
pub struct S3Blobs {
    pub client: Client,
    pub bucket: String,
}

/// An S3 client. With an endpoint (moto_server) it uses dummy credentials, the region from
/// `AWS_REGION` (default `us-east-1`) and path-style addressing (`<endpoint>/<bucket>/<key>`).
pub async fn s3_client(endpoint: Option<&str>) -> Client {
    s3_client_with(&crate::adapters::aws::sdk_config(endpoint).await, endpoint.is_some())
}

/// An S3 client on a loaded SDK configuration; `path_style` for emulators.
pub fn s3_client_with(sdk: &aws_config::SdkConfig, path_style: bool) -> Client {
    Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(path_style).build())
}

/// An S3 call failed: an internal error naming the call and the object, with the SDK's full
/// error context (never credentials; the SDK's `Display` alone says only "service error").
fn s3_error<E, R>(what: &str, target: &str, e: SdkError<E, R>) -> AppError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    crate::adapters::sdk_error(&format!("S3 {what} of {target}"), e)
}

/// When a URL signed at `now_ms` for "until `expires_at`" really expires: SigV4 dates have whole
/// seconds and the validity is 1 s ..= 7 days. Returns (signing time, validity, effective expiry).
pub fn presign_window(now_ms: Millis, expires_at: Millis) -> (SystemTime, Duration, Millis) {
    let now_s = now_ms.max(0) / 1000;
    let secs = (expires_at - now_s * 1000).div_euclid(1000).clamp(1, MAX_PRESIGN_SECS);
    (UNIX_EPOCH + Duration::from_secs(now_s as u64), Duration::from_secs(secs as u64), (now_s + secs) * 1000)
}

/// The presigning configuration for a URL signed at `now_ms` to last until `expires_at`, and the
/// URL's effective expiry.
fn presigning(now_ms: Millis, expires_at: Millis) -> AppResult<(PresigningConfig, Millis)> {
    let (start, expires_in, effective) = presign_window(now_ms, expires_at);
    let cfg = PresigningConfig::builder()
        .start_time(start)
        .expires_in(expires_in)
        .build()
        .map_err(|e| AppError::internal(format!("presigning config: {e}")))?;
    Ok((cfg, effective))
}

fn wall_clock_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as Millis
}

/// `content-type` → `Content-Type`.
fn header_case(name: &str) -> String {
    name.split('-')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn presigned_headers(req: &PresignedRequest) -> Vec<(String, String)> {
    req.headers().map(|(k, v)| (header_case(k), v.to_string())).collect()
}

impl S3Blobs {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into() }
    }

    /// A store on `bucket`, talking to `endpoint` when given (moto_server), else to AWS.
    pub async fn connect(bucket: impl Into<String>, endpoint: Option<&str>) -> Self {
        Self::new(s3_client(endpoint).await, bucket)
    }

    /// From configuration: `BLOB_BUCKET` (required) and `S3_ENDPOINT` (optional), on `sdk` (the
    /// SDK configuration for that endpoint).
    pub fn from_config(cfg: &Config, sdk: &aws_config::SdkConfig) -> AppResult<Self> {
        let bucket = cfg
            .blob_bucket
            .clone()
            .ok_or_else(|| AppError::validation("BLOB_BUCKET is not set: the blob store needs a bucket"))?;
        Ok(Self::new(s3_client_with(sdk, cfg.s3_endpoint.is_some()), bucket))
    }

    fn target(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    /// Create the bucket when it does not exist (tests, local setups). In a region other than
    /// `us-east-1` the bucket is created there.
    pub async fn ensure_bucket(&self) -> AppResult<()> {
        let target = format!("bucket {}", self.bucket);
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
            Err(e) => return Err(s3_error("HeadBucket", &target, e)),
        }
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        if let Some(region) = self.client.config().region().map(|r| r.as_ref().to_string())
            && region != "us-east-1"
        {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()) =>
            {
                Ok(())
            }
            Err(e) => Err(s3_error("CreateBucket", &target, e)),
        }
    }

    /// [`BlobBackend::presign_put`] signed at `now_ms`. The URL is valid until the returned
    /// `expires_at` (the requested one rounded down to whole seconds, within 1 s ..= 7 days of now).
    pub async fn presign_put_at(
        &self,
        key: &str,
        content_type: &str,
        size: Option<u64>,
        expires_at: Millis,
        now_ms: Millis,
    ) -> AppResult<PresignedPut> {
        validate_key(key)?;
        validate_content_type(content_type)?;
        let (cfg, effective) = presigning(now_ms, expires_at)?;
        let mut req = self.client.put_object().bucket(&self.bucket).key(key).content_type(content_type);
        if let Some(n) = size {
            let n = i64::try_from(n).map_err(|_| AppError::PayloadTooLarge(format!("object size {n} is too large")))?;
            req = req.content_length(n);
        }
        let p = req.presigned(cfg).await.map_err(|e| s3_error("presigning PutObject", &self.target(key), e))?;
        Ok(PresignedPut {
            url: p.uri().to_string(),
            method: "PUT",
            headers: presigned_headers(&p),
            expires_at: effective,
        })
    }

    /// [`BlobBackend::presign_get`] signed at `now_ms` (see [`S3Blobs::presign_put_at`]); returns
    /// the URL and its effective expiry.
    pub async fn presign_get_at(&self, key: &str, expires_at: Millis, now_ms: Millis) -> AppResult<(String, Millis)> {
        validate_key(key)?;
        let (cfg, effective) = presigning(now_ms, expires_at)?;
        let p = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(cfg)
            .await
            .map_err(|e| s3_error("presigning GetObject", &self.target(key), e))?;
        Ok((p.uri().to_string(), effective))
    }

    async fn size_of(&self, key: &str) -> AppResult<Option<u64>> {
        validate_key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(s3_error("HeadObject", &self.target(key), e)),
        }
    }

    async fn digest_of(&self, key: &str) -> AppResult<Option<ObjectInfo>> {
        validate_key(key)?;
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(s3_error("GetObject", &self.target(key), e)),
        };
        let mut body = out.body;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) =
            body.try_next().await.map_err(|e| AppError::internal(format!("reading {}: {e}", self.target(key))))?
        {
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Some(ObjectInfo { size, sha256: hex::encode(hasher.finalize()) }))
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> AppResult<()> {
        validate_key(key)?;
        validate_content_type(content_type)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", &self.target(key), e))?;
        Ok(())
    }

    async fn delete_key(&self, key: &str) -> AppResult<()> {
        validate_key(key)?;
        // S3 answers 204 for a missing key too.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", &self.target(key), e))?;
        Ok(())
    }
}

impl BlobBackend for S3Blobs {
    fn presign_put<'a>(
        &'a self,
        key: &'a str,
        content_type: &'a str,
        size: Option<u64>,
        expires_at: Millis,
    ) -> BoxFut<'a, AppResult<PresignedPut>> {
        Box::pin(self.presign_put_at(key, content_type, size, expires_at, wall_clock_ms()))
    }

    fn presign_get<'a>(&'a self, key: &'a str, expires_at: Millis) -> BoxFut<'a, AppResult<String>> {
        Box::pin(async move { Ok(self.presign_get_at(key, expires_at, wall_clock_ms()).await?.0) })
    }

    fn size<'a>(&'a self, key: &'a str) -> BoxFut<'a, AppResult<Option<u64>>> {
        Box::pin(self.size_of(key))
    }

    fn digest<'a>(&'a self, key: &'a str) -> BoxFut<'a, AppResult<Option<ObjectInfo>>> {
        Box::pin(self.digest_of(key))
    }

    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>, content_type: &'a str) -> BoxFut<'a, AppResult<()>> {
        Box::pin(self.put_bytes(key, bytes, content_type))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFut<'a, AppResult<()>> {
        Box::pin(self.delete_key(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Millis = 1_700_000_000_000;

    #[test]
    fn window_rounds_to_seconds_and_clamps() {
        let (start, d, eff) = presign_window(T + 400, T + 60_000);
        assert_eq!(start, UNIX_EPOCH + Duration::from_millis(T as u64));
        assert_eq!(d, Duration::from_secs(60));
        assert_eq!(eff, T + 60_000);
        // A fraction of a second is dropped, never added.
        assert_eq!(presign_window(T, T + 1_999).1, Duration::from_secs(1));
        // In the past or now: the shortest validity S3 has.
        assert_eq!(presign_window(T, T - 5_000).1, Duration::from_secs(1));
        assert_eq!(presign_window(T, T - 5_000).2, T + 1_000);
        // Beyond a week: one week.
        let (_, d, eff) = presign_window(T, T + 30 * 86_400_000);
        assert_eq!(d.as_secs() as i64, MAX_PRESIGN_SECS);
        assert_eq!(eff, T + MAX_PRESIGN_SECS * 1000);
    }

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(header_case("content-type"), "Content-Type");
        assert_eq!(header_case("content-length"), "Content-Length");
        assert_eq!(header_case("x-amz-meta-a"), "X-Amz-Meta-A");
    }

    #[tokio::test]
    async fn presigned_put_signs_type_and_length() {
        // Presigning is local: no server is contacted.
        let s = S3Blobs::connect("bucket-a", Some("http://127.0.0.1:9")).await;
        let p = s.presign_put_at("snap/a.tar", "application/x-tar", Some(42), T + 300_000, T).await.unwrap();
        assert_eq!(p.method, "PUT");
        assert!(p.url.starts_with("http://127.0.0.1:9/bucket-a/snap/a.tar?"), "{}", p.url);
        assert!(p.url.contains("X-Amz-Expires=300"), "{}", p.url);
        assert!(p.url.contains("X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost"), "{}", p.url);
        assert!(p.headers.contains(&("Content-Type".to_string(), "application/x-tar".to_string())));
        assert!(p.headers.contains(&("Content-Length".to_string(), "42".to_string())));
        assert_eq!(p.expires_at, T + 300_000);

        let p = s.presign_put_at("snap/a.tar", "application/x-tar", None, T + 300_000, T).await.unwrap();
        assert!(p.url.contains("X-Amz-SignedHeaders=content-type%3Bhost"), "{}", p.url);
        assert_eq!(p.headers, vec![("Content-Type".to_string(), "application/x-tar".to_string())]);

        assert!(s.presign_put_at("../x", "a/b", None, T + 1000, T).await.is_err());
        assert!(s.presign_put_at("x", "a/b\r\nx: y", None, T + 1000, T).await.is_err());
        let (url, exp) = s.presign_get_at("snap/a.tar", T + 10_000_000_000, T).await.unwrap();
        assert!(url.contains("X-Amz-Expires=604800"), "{url}");
        assert_eq!(exp, T + 604_800_000);
    }
}
