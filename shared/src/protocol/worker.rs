//! The worker protocol: `POST /worker/<op>` with `Authorization: Bearer <worker token>`, JSON in
//! and out (README, "Worker protocol"). Request and response bodies of the job loop, and the
//! error body every non-2xx response carries.

pub use crate::conversations::model::HistoryRole;
pub use crate::error::{ErrorCode, LeaseRefusal};
pub use crate::hydration::model::{
    BridgeRuntimeConfig, ConversationState, HydrationArgs, HydrationBundle, ProfileView,
};
pub use crate::queue::model::{Attachment, AttachmentKind, AttachmentStatus, ClaimedJob, Payload};
pub use crate::queue::{
    AppendArgs, AppendResult, ClaimArgs, ConversationArgs, FailArgs, FailResult, HeartbeatResult, LeaseArgs,
    NewHistoryEntry,
};
pub use crate::usage::model::{CompleteArgs, Usage};
pub use crate::workers::model::ControlState;
use serde::{Deserialize, Serialize};

/// Every non-2xx response: `{"error": {"code", "message", "reason"?}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<LeaseRefusal>,
}
