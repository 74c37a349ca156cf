//! Agent profiles and runtime configuration (control table).

use super::{Store, from_item, keys, to_item};
use crate::adapters::sdk_error;
use crate::agents::model::{AgentProfile, ConfigureAgentArgs, MessageConfig};
use crate::agents::rules::profile_secret_refs;
use crate::error::{AppError, AppResult};
use crate::queue::rules;

impl Store {
    /// One unconditional PutItem into the control table.
    pub(crate) async fn put_control(&self, item: super::Item, what: &str) -> AppResult<()> {
        self.client
            .put_item()
            .table_name(&self.tables.control)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error(what, e))?;
        Ok(())
    }

    pub async fn get_agent(&self, agent_key: &str) -> AppResult<Option<AgentProfile>> {
        rules::validate_agent_key(agent_key)?;
        self.get(&self.tables.control, keys::agent_profile_key(agent_key)).await?.map(from_item).transpose()
    }

    /// `configureAgent`: returns the stored profile.
    pub async fn configure_agent(&self, a: ConfigureAgentArgs) -> AppResult<AgentProfile> {
        rules::validate_agent_key(&a.agent_key)?;
        crate::ids::check_text("version", &a.version, 128)?;
        if let Some(Some(b)) = &a.bot_identity {
            crate::ids::check_text("botIdentity", b, 256)?;
        }
        if let Some(Some(b)) = &a.bridge_config {
            let fields = [
                ("bridgeConfig.baseUrl", &b.base_url),
                ("bridgeConfig.serviceId", &b.service_id),
                ("bridgeConfig.appKey", &b.app_key),
                ("bridgeConfig.serviceKeySecretRef", &b.service_key_secret_ref),
                ("bridgeConfig.appBaseUrlMapJsonSecretRef", &b.app_base_url_map_json_secret_ref),
            ];
            for (name, v) in fields {
                if v.as_ref().is_some_and(|v| v.len() > 2048) {
                    return Err(AppError::validation(format!("{name} is longer than 2048 bytes")));
                }
            }
        }
        if a.secrets_ref.len() > 100 {
            return Err(AppError::validation("secretsRef holds at most 100 refs"));
        }
        if let Some(bad) = a.secrets_ref.iter().find(|r| r.trim().is_empty() || r.len() > 256) {
            return Err(AppError::validation(format!(
                "secretsRef entries must be 1 to 256 characters, got '{}'",
                crate::ids::truncate(bad, 40)
            )));
        }
        // Read-modify-write under a condition: the write succeeds only if the row is still the one
        // read (`updatedAt` strictly grows with each write, so it is the row's version); a lost race
        // reads again, so two concurrent calls never drop each other's botIdentity or bridgeConfig.
        for attempt in 0..8 {
            let prev = self.get_agent(&a.agent_key).await?;
            let bot_identity = match &a.bot_identity {
                None => prev.as_ref().and_then(|p| p.bot_identity.clone()),
                Some(v) => v.clone(),
            };
            let bridge_config = match &a.bridge_config {
                None => prev.as_ref().and_then(|p| p.bridge_config.clone()),
                Some(v) => v.clone(),
            };
            let now = self.now();
            let profile = AgentProfile {
                secrets_ref: profile_secret_refs(&a.agent_key, &a.secrets_ref, bridge_config.as_ref()),
                agent_key: a.agent_key.clone(),
                version: a.version.clone(),
                enabled: a.enabled,
                bot_identity,
                bridge_config,
                updated_at: prev.as_ref().map_or(now, |p| now.max(p.updated_at + 1)),
            };
            let mut item = to_item(&profile)?;
            item.extend(keys::agent_profile_key(&profile.agent_key));
            let req = self.client.put_item().table_name(&self.tables.control).set_item(Some(item));
            let req = match &prev {
                None => req.condition_expression("attribute_not_exists(pk)"),
                Some(p) => req
                    .condition_expression("updatedAt = :seen")
                    .expression_attribute_values(":seen", super::n(p.updated_at)),
            };
            match req.send().await {
                Ok(_) => return Ok(profile),
                Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => {
                    super::conflict_pause(attempt).await;
                }
                Err(e) => return Err(sdk_error("PutItem agent", e)),
            }
        }
        Err(AppError::conflict(format!("agent '{}' keeps changing; try again", a.agent_key)))
    }

    /// The `message` runtime config, cached per process for a short time.
    pub async fn message_config(&self) -> AppResult<Option<MessageConfig>> {
        let now = self.now();
        if let Some(c) = self.cached_message_config(now) {
            return Ok(c);
        }
        let c = self
            .get(&self.tables.control, keys::message_config_key())
            .await?
            .and_then(|mut i| i.remove("messageConfig"))
            .map(|v| {
                serde_dynamo::from_attribute_value(v)
                    .map_err(|e| AppError::internal(format!("decoding messageConfig: {e}")))
            })
            .transpose()?;
        self.cache_message_config(now, c.clone());
        Ok(c)
    }

    /// `setMessageRuntimeConfig` (spec §7.3): normalise; both fields empty deletes the row.
    pub async fn set_message_config(&self, c: MessageConfig) -> AppResult<Option<MessageConfig>> {
        let norm = MessageConfig {
            system_prompt: c.system_prompt.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
            telegram_attachment_retention_ms: c.telegram_attachment_retention_ms.filter(|v| *v > 0),
        };
        let now = self.now();
        if norm.system_prompt.is_none() && norm.telegram_attachment_retention_ms.is_none() {
            self.client
                .delete_item()
                .table_name(&self.tables.control)
                .set_key(Some(keys::message_config_key()))
                .send()
                .await
                .map_err(|e| sdk_error("DeleteItem config", e))?;
            self.cache_message_config(now, None);
            return Ok(None);
        }
        let mut item = keys::message_config_key();
        item.insert(
            "messageConfig".into(),
            serde_dynamo::to_attribute_value(&norm).map_err(|e| AppError::internal(e.to_string()))?,
        );
        item.insert("updatedAt".into(), super::n(now));
        self.put_control(item, "PutItem config").await?;
        self.cache_message_config(now, Some(norm.clone()));
        Ok(Some(norm))
    }
}
