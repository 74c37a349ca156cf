//! Who may call what: the end user a user-scoped op acts for.
//!
//! The `api` function serves ops that act for one end user (`consumerUserId`). When the
//! deployment configures a user-token key (`USER_TOKEN_SECRET_REF`, an HS256 secret in the secret
//! store), the user is taken only from a verified token passed with the call (its `sub`), never
//! from the arguments; otherwise `api` runs in trusted-backend mode (the caller's IAM role is the
//! only check, and the backend names the user in `args.consumerUserId`).

pub mod model;
#[cfg(feature = "aws")]
pub mod ops;
pub mod rules;
#[cfg(feature = "aws")]
pub mod token;
