//! The AWS Secrets Manager backend. A ref `r` is the secret named `<prefix><r>` (default prefix
//! `agent-factory/`, one per deployment).
//!
//! - **Versions.** A `put` on an existing secret is one `UpdateSecret` call: a new version that
//!   takes the `AWSCURRENT` stage, while the previous one keeps `AWSPREVIOUS` (Secrets Manager
//!   prunes old unlabeled versions by itself). A new ref is a `CreateSecret`. The version id is
//!   Secrets Manager's `VersionId`; `updatedAt` is that version's `CreatedDate`.
//! - **Metadata** (non-secret, e.g. `telegramBotId`) is the secret's `Description`, as a JSON
//!   object, written in the same call as the value. It is per secret, not per version: it always
//!   describes the current value. A `Description` holds 2048 characters.
//! - **Delete = deactivate.** `DeleteSecret` with a recovery window (default 30 days, the
//!   longest): the secret is "scheduled for deletion", `GetSecretValue` refuses it, `get` returns
//!   `None` and `info` says `hasActive: false`. A later `put` first `RestoreSecret`s it, then
//!   writes the new version, so the history survives re-imports within the window. Not
//!   `ForceDeleteWithoutRecovery`: on AWS that deletion is asynchronous, and a `CreateSecret` of
//!   the same name right after it can fail ("already scheduled for deletion"), and it would
//!   throw away the history. Both real AWS and moto implement this flow.
//! - **Values never leave through errors or logs.** Errors carry the operation, the ref and
//!   the service's message (with the value cut out, should a service ever echo it). The SDK
//!   logs requests at `TRACE` (`aws_smithy_runtime` "transmitting request", `aws_sigv4` "signing
//!   request"); today it redacts their bodies, but `LOG_SIGNABLE_BODY=true` (or another SDK
//!   version) prints them, so every call that carries a value (`GetSecretValue`, `UpdateSecret`,
//!   `CreateSecret`) runs with tracing switched off for its duration. Its own errors are still
//!   logged, by us, without the value.
//! - Names ending in `-` + 6 characters can be mistaken for partial ARNs by Secrets Manager;
//!   refs like `...-abcdef` should be avoided (AWS's own advice).

use crate::BoxFut;
use crate::clock::Millis;
use crate::error::{AppError, AppResult};
use crate::secrets::{SecretBackend, SecretInfo, SecretValue};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
use std::collections::BTreeMap;
use std::future::Future;
use tracing::instrument::WithSubscriber;

/// The default secret name prefix (`SECRETS_PREFIX`).
pub const DEFAULT_PREFIX: &str = "agent-factory/";
/// Days a deleted (deactivated) secret stays restorable; Secrets Manager allows 7 to 30.
pub const DEFAULT_RECOVERY_WINDOW_DAYS: i64 = 30;
/// The longest `Description` Secrets Manager accepts (where the metadata lives).
pub const MAX_DESCRIPTION_CHARS: usize = 2048;

const CURRENT: &str = "AWSCURRENT";

/// Secrets in AWS Secrets Manager (or moto_server, through an endpoint).
#[derive(Debug, Clone)]
pub struct SecretsManagerBackend {
    pub client: Client,
    /// Prepended to every ref to make the secret's name; characters allowed in names:
    /// `A-Z a-z 0-9 / _ + = . @ -`.
    pub prefix: String,
    /// Recovery window of `delete`, 7..=30 days.
    pub recovery_window_days: i64,
}

/// A Secrets Manager client. With an endpoint (moto_server) it uses dummy static credentials and
/// `AWS_REGION` (default `us-east-1`), like [`crate::adapters::dynamo::dynamo_client`].
pub async fn secrets_client(endpoint: Option<&str>) -> Client {
    let sdk = crate::adapters::aws::sdk_config(endpoint).await;
    Client::new(&sdk)
}

impl SecretsManagerBackend {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self { client, prefix: prefix.into(), recovery_window_days: DEFAULT_RECOVERY_WINDOW_DAYS }
    }

    /// A backend on AWS (credentials and region from the environment), or on the emulator at
    /// `endpoint`, with names `<prefix><ref>`.
    pub async fn from_env_or(endpoint: Option<&str>, prefix: &str) -> Self {
        Self::new(secrets_client(endpoint).await, prefix)
    }

    /// From configuration (`SECRETS_PREFIX`), on `sdk` (the SDK configuration for
    /// `SECRETSMANAGER_ENDPOINT`).
    pub fn from_config(cfg: &crate::config::Config, sdk: &aws_config::SdkConfig) -> Self {
        Self::new(Client::new(sdk), &cfg.secrets_prefix)
    }

    /// The Secrets Manager name of a ref.
    pub fn secret_name(&self, secret_ref: &str) -> String {
        format!("{}{}", self.prefix, secret_ref)
    }

    /// `DescribeSecret`, or `None` when there is no such secret.
    async fn describe(&self, name: &str, secret_ref: &str) -> AppResult<Option<DescribeSecretOutput>> {
        match self.client.describe_secret().secret_id(name).send().await {
            Ok(d) => Ok(Some(d)),
            Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(sm_error("DescribeSecret", secret_ref, e, None)),
        }
    }

    /// `CreatedDate` (epoch ms) of one version, when Secrets Manager lists it.
    async fn version_created_at(&self, name: &str, secret_ref: &str, version_id: &str) -> AppResult<Option<Millis>> {
        let mut next: Option<String> = None;
        loop {
            let page = self
                .client
                .list_secret_version_ids()
                .secret_id(name)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| sm_error("ListSecretVersionIds", secret_ref, e, None))?;
            if let Some(v) =
                page.versions.unwrap_or_default().into_iter().find(|v| v.version_id.as_deref() == Some(version_id))
            {
                return Ok(v.created_date.and_then(|d| d.to_millis().ok()));
            }
            match page.next_token {
                Some(t) if !t.is_empty() => next = Some(t),
                _ => return Ok(None),
            }
        }
    }

    /// Write a new current version (update, create, or restore then update); its VersionId.
    async fn write(&self, name: &str, secret_ref: &str, value: &SecretValue, description: &str) -> AppResult<String> {
        // Three rounds cover "created by someone else meanwhile" and "restored first".
        for _ in 0..3 {
            let updated = quiet(
                self.client
                    .update_secret()
                    .secret_id(name)
                    .secret_string(value.expose())
                    .description(description)
                    .send(),
            )
            .await;
            let e = match updated {
                Ok(o) => return version_of(o.version_id, "UpdateSecret", secret_ref),
                Err(e) => e,
            };
            match code(&e) {
                Some("ResourceNotFoundException") => {
                    let created = quiet(
                        self.client
                            .create_secret()
                            .name(name)
                            .secret_string(value.expose())
                            .description(description)
                            .send(),
                    )
                    .await;
                    match created {
                        Ok(o) => return version_of(o.version_id, "CreateSecret", secret_ref),
                        // Created concurrently: go round again as an update.
                        Err(e) if code(&e) == Some("ResourceExistsException") => continue,
                        Err(e) => return Err(sm_error("CreateSecret", secret_ref, e, Some(value))),
                    }
                }
                Some("InvalidRequestException") => {
                    // Refused because the secret is scheduled for deletion (deactivated)?
                    let deleted = self.describe(name, secret_ref).await?.is_some_and(|d| d.deleted_date.is_some());
                    if !deleted {
                        return Err(sm_error("UpdateSecret", secret_ref, e, Some(value)));
                    }
                    match self.client.restore_secret().secret_id(name).send().await {
                        Ok(_) => {
                            tracing::info!(secret_ref, "restored a deactivated secret before writing a new version");
                        }
                        Err(e) => return Err(sm_error("RestoreSecret", secret_ref, e, None)),
                    }
                }
                _ => return Err(sm_error("UpdateSecret", secret_ref, e, Some(value))),
            }
        }
        Err(AppError::internal(format!("writing secret '{secret_ref}' kept racing with other writers; try again")))
    }
}

impl SecretBackend for SecretsManagerBackend {
    fn get<'a>(&'a self, secret_ref: &'a str) -> BoxFut<'a, AppResult<Option<SecretValue>>> {
        Box::pin(async move {
            let name = self.secret_name(secret_ref);
            match quiet(self.client.get_secret_value().secret_id(&name).send()).await {
                Ok(o) => match o.secret_string {
                    Some(s) => Ok(Some(SecretValue::new(s))),
                    None => Err(AppError::internal(format!(
                        "secret '{secret_ref}' holds a binary value; only string secrets are supported"
                    ))),
                },
                Err(e) => match code(&e) {
                    Some("ResourceNotFoundException") => Ok(None),
                    // Scheduled for deletion (deactivated) → no active value.
                    Some("InvalidRequestException")
                        if self.describe(&name, secret_ref).await?.is_some_and(|d| d.deleted_date.is_some()) =>
                    {
                        Ok(None)
                    }
                    _ => Err(sm_error("GetSecretValue", secret_ref, e, None)),
                },
            }
        })
    }

    fn put<'a>(
        &'a self,
        secret_ref: &'a str,
        value: &'a SecretValue,
        metadata: &'a BTreeMap<String, String>,
    ) -> BoxFut<'a, AppResult<SecretInfo>> {
        Box::pin(async move {
            let name = self.secret_name(secret_ref);
            let description = metadata_to_description(metadata)?;
            let version = self.write(&name, secret_ref, value, &description).await?;
            let updated_at = self.version_created_at(&name, secret_ref, &version).await?;
            Ok(SecretInfo {
                secret_ref: secret_ref.to_string(),
                has_active: true,
                version: Some(version),
                updated_at,
                metadata: metadata.clone(),
            })
        })
    }

    fn info<'a>(&'a self, secret_ref: &'a str) -> BoxFut<'a, AppResult<SecretInfo>> {
        Box::pin(async move {
            let name = self.secret_name(secret_ref);
            let Some(d) = self.describe(&name, secret_ref).await? else {
                return Ok(SecretInfo::missing(secret_ref));
            };
            if d.deleted_date.is_some() {
                return Ok(SecretInfo::missing(secret_ref));
            }
            let Some(version) = current_version(&d) else {
                return Ok(SecretInfo::missing(secret_ref));
            };
            let updated_at = self.version_created_at(&name, secret_ref, &version).await?;
            Ok(SecretInfo {
                secret_ref: secret_ref.to_string(),
                has_active: true,
                version: Some(version),
                updated_at,
                metadata: description_to_metadata(d.description.as_deref()),
            })
        })
    }

    fn delete<'a>(&'a self, secret_ref: &'a str) -> BoxFut<'a, AppResult<bool>> {
        Box::pin(async move {
            let name = self.secret_name(secret_ref);
            let Some(d) = self.describe(&name, secret_ref).await? else {
                return Ok(false);
            };
            if d.deleted_date.is_some() {
                return Ok(false);
            }
            let had_value = current_version(&d).is_some();
            let res = self
                .client
                .delete_secret()
                .secret_id(&name)
                .recovery_window_in_days(self.recovery_window_days)
                .send()
                .await;
            match res {
                Ok(_) => Ok(had_value),
                // Gone or deactivated by someone else meanwhile.
                Err(e) if matches!(code(&e), Some("ResourceNotFoundException" | "InvalidRequestException")) => {
                    Ok(false)
                }
                Err(e) => Err(sm_error("DeleteSecret", secret_ref, e, None)),
            }
        })
    }
}

/// Run an SDK call with tracing switched off (see the module doc: request bodies in `TRACE` logs).
fn quiet<F: Future>(f: F) -> impl Future<Output = F::Output> {
    f.with_subscriber(tracing::subscriber::NoSubscriber::default())
}

fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

fn version_of(v: Option<String>, op: &str, secret_ref: &str) -> AppResult<String> {
    v.ok_or_else(|| AppError::internal(format!("Secrets Manager {op} for '{secret_ref}' returned no VersionId")))
}

/// The version holding `AWSCURRENT`.
fn current_version(d: &DescribeSecretOutput) -> Option<String> {
    d.version_ids_to_stages
        .as_ref()?
        .iter()
        .find(|(_, stages)| stages.iter().any(|s| s == CURRENT))
        .map(|(id, _)| id.clone())
}

/// Metadata as the secret's `Description` (a JSON object; `{}` when empty).
pub fn metadata_to_description(metadata: &BTreeMap<String, String>) -> AppResult<String> {
    let s = serde_json::to_string(metadata).map_err(|e| AppError::internal(format!("encoding metadata: {e}")))?;
    if s.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(AppError::validation(format!(
            "metadata is {} characters as JSON; Secrets Manager keeps at most {MAX_DESCRIPTION_CHARS}",
            s.chars().count()
        )));
    }
    Ok(s)
}

/// Metadata back from a `Description`; a description that is not ours reads as no metadata.
pub fn description_to_metadata(d: Option<&str>) -> BTreeMap<String, String> {
    d.and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default()
}

/// An SDK error as an internal error with its full context, the value cut out of it.
fn sm_error<E, R>(op: &str, secret_ref: &str, e: SdkError<E, R>, value: Option<&SecretValue>) -> AppError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let mut msg = aws_smithy_types::error::display::DisplayErrorContext(&e).to_string();
    if let Some(v) = value.map(SecretValue::expose).filter(|v| !v.is_empty()) {
        msg = msg.replace(v, "<redacted>");
    }
    AppError::internal_from(format!("Secrets Manager {op} for '{secret_ref}' failed"), std::io::Error::other(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_the_description() {
        let m =
            BTreeMap::from([("telegramBotId".to_string(), "7123".to_string()), ("u".to_string(), "é🔑".to_string())]);
        let d = metadata_to_description(&m).unwrap();
        assert_eq!(description_to_metadata(Some(&d)), m);
        assert_eq!(metadata_to_description(&BTreeMap::new()).unwrap(), "{}");
        assert!(description_to_metadata(Some("a human description")).is_empty());
        assert!(description_to_metadata(None).is_empty());
        let big = BTreeMap::from([("k".to_string(), "x".repeat(MAX_DESCRIPTION_CHARS))]);
        assert_eq!(metadata_to_description(&big).unwrap_err().code().as_str(), "ValidationError");
    }
}
