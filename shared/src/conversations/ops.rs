//! Conversation ops served through the op envelope.

use crate::app::App;
use crate::envelope::OpTable;
use crate::op;
use crate::queue::AppendArgs;

pub const TABLE: OpTable<App> = OpTable {
    domain: "conversations",
    ops: &[
        // The administrative path: no lease needed (the worker route needs the live lock).
        op!(App, "appendConversationMessages", |app, a: AppendArgs| app.store.append_messages(a).await?),
    ],
};
