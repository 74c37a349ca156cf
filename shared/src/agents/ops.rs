//! Agent profile and runtime configuration ops served through the op envelope.

use crate::agents::model::ConfigureAgentArgs;
use crate::agents::model::MessageConfig;
use crate::app::App;
use crate::envelope::{NoArgs, OpTable};
use crate::op;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentKeyArgs {
    pub agent_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageConfigArgs {
    pub message_config: MessageConfig,
}

pub const TABLE: OpTable<App> = OpTable {
    domain: "agents",
    ops: &[
        op!(App, "configureAgent", |app, a: ConfigureAgentArgs| app.store.configure_agent(a).await?),
        op!(App, "getAgentProfile", |app, a: AgentKeyArgs| app.store.get_agent(&a.agent_key).await?),
        op!(App, "setMessageRuntimeConfig", |app, a: MessageConfigArgs| app
            .store
            .set_message_config(a.message_config)
            .await?),
        op!(App, "messageRuntimeConfig", |app, _a: NoArgs| app.store.message_config().await?),
    ],
};
