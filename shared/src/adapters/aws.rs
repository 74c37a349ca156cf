//! AWS SDK configuration shared by the DynamoDB, Secrets Manager and S3 clients.

/// The SDK configuration: credentials and region from the environment (on Lambda: the function's
/// role and region), or, with `endpoint` (DynamoDB Local, dynoxide, moto_server), that endpoint
/// with dummy static credentials and `AWS_REGION` (default `us-east-1`).
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(ep) = endpoint {
        loader = loader
            .endpoint_url(ep)
            .region(aws_config::Region::new(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_string())))
            .credentials_provider(aws_credential_types::Credentials::new("local", "local", None, None, "static"));
    }
    loader.load().await
}

/// SDK configurations by endpoint, each loaded once: on Lambda every client shares one (one
/// credentials chain, one region lookup at cold start).
#[derive(Debug, Default)]
pub struct SdkConfigs(Vec<(Option<String>, aws_config::SdkConfig)>);

impl SdkConfigs {
    pub async fn get(&mut self, endpoint: Option<&str>) -> aws_config::SdkConfig {
        if let Some((_, c)) = self.0.iter().find(|(e, _)| e.as_deref() == endpoint) {
            return c.clone();
        }
        let c = sdk_config(endpoint).await;
        self.0.push((endpoint.map(str::to_string), c.clone()));
        c
    }
}
