//! The end user a call acts for, and how the deployment authenticates end users.

use crate::error::{AppError, AppResult};

/// An end user's id in the consumer's system (`consumerUserId`): 1 to 256 bytes, no control
/// characters, no surrounding whitespace. Only [`ConsumerUserId::parse`] (and deserializing,
/// which calls it) makes one. Ops that act for one user take it as a parameter of the use case:
/// the `api` function passes the one of a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ConsumerUserId(String);

impl ConsumerUserId {
    pub const MAX_BYTES: usize = 256;

    pub fn parse(v: &str) -> AppResult<Self> {
        crate::ids::check_text("consumerUserId", v, Self::MAX_BYTES)?;
        if v.trim() != v {
            return Err(AppError::validation("consumerUserId must not start or end with whitespace"));
        }
        Ok(Self(v.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for ConsumerUserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for ConsumerUserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How `api` learns the end user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessPolicy {
    /// Secret ref of the HS256 key user tokens are signed with (`USER_TOKEN_SECRET_REF`). With
    /// neither this nor `jwks_url`: trusted-backend mode.
    pub user_token_secret_ref: Option<String>,
    /// URL of the JSON Web Key Set whose RS256/ES256 keys sign user tokens
    /// (`USER_TOKEN_JWKS_URL`), e.g. an identity provider's `/.well-known/jwks.json`.
    pub jwks_url: Option<String>,
    /// Required `iss` of user tokens (`USER_TOKEN_ISSUER`), when set.
    pub issuer: Option<String>,
    /// Required `aud` of user tokens (`USER_TOKEN_AUDIENCE`), when set.
    pub audience: Option<String>,
}

impl AccessPolicy {
    /// The mode's name, as readiness reports show it.
    pub fn mode(&self) -> &'static str {
        if self.verifies_tokens() { "userToken" } else { "trustedBackend" }
    }

    /// Whether `api` takes the user from verified tokens only.
    pub fn verifies_tokens(&self) -> bool {
        self.user_token_secret_ref.is_some() || self.jwks_url.is_some()
    }
}
