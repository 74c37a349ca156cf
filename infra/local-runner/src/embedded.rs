//! The embedded DynamoDB (dynoxide) without a network port: the runner's DynamoDB client sends
//! its requests through an in-process HTTP connector that hands each one to the dynoxide
//! database directly. Nothing listens, so no other local process can read or write the tables,
//! whatever it signs its requests with.

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use dynoxide::DynoxideError;
use dynoxide::actions as a;

const TARGET_PREFIX: &str = "DynamoDB_20120810.";

/// An `HttpClient` for the AWS SDK that answers from an in-process dynoxide database.
#[derive(Clone)]
pub(crate) struct InProcess(pub(crate) dynoxide::Database);

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcess(dynoxide)")
    }
}

impl HttpClient for InProcess {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for InProcess {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let db = self.0.clone();
        let op = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.strip_prefix(TARGET_PREFIX))
            .map(str::to_string)
            .unwrap_or_default();
        let body = request.body().bytes().map(|b| String::from_utf8_lossy(b).into_owned());
        HttpConnectorFuture::new(async move {
            let Some(body) = body else {
                return Err(ConnectorError::user("the embedded DynamoDB takes only buffered bodies".into()));
            };
            // SQLite work blocks: keep it off the async worker threads.
            let (status, json) = tokio::task::spawn_blocking(move || match dispatch(&db, &op, &body) {
                Ok(json) => (200, json),
                Err(e) => (e.status_code(), e.to_json()),
            })
            .await
            .map_err(|e| ConnectorError::other(Box::new(e), None))?;
            let status = status.try_into().map_err(|e| ConnectorError::other(Box::new(e), None))?;
            let mut resp = HttpResponse::new(status, SdkBody::from(json));
            resp.headers_mut().insert("content-type", "application/x-amz-json-1.0");
            Ok(resp)
        })
    }
}

fn run<Req: serde::de::DeserializeOwned, Resp: serde::Serialize>(
    body: &str,
    f: impl FnOnce(Req) -> dynoxide::Result<Resp>,
) -> dynoxide::Result<String> {
    let req = serde_json::from_str(body).map_err(|e| DynoxideError::ValidationException(e.to_string()))?;
    serde_json::to_string(&f(req)?).map_err(|e| DynoxideError::InternalServerError(e.to_string()))
}

/// The operations the runner's store uses (an unknown one is refused as DynamoDB refuses it).
fn dispatch(db: &dynoxide::Database, op: &str, body: &str) -> dynoxide::Result<String> {
    match op {
        "CreateTable" => run(body, |r: a::create_table::CreateTableRequest| db.create_table(r)),
        "DescribeTable" => run(body, |r: a::describe_table::DescribeTableRequest| db.describe_table(r)),
        "UpdateTable" => run(body, |r: a::update_table::UpdateTableRequest| db.update_table(r)),
        "DeleteTable" => run(body, |r: a::delete_table::DeleteTableRequest| db.delete_table(r)),
        "ListTables" => run(body, |r: a::list_tables::ListTablesRequest| db.list_tables(r)),
        "UpdateTimeToLive" => run(body, |r: a::update_time_to_live::UpdateTimeToLiveRequest| db.update_time_to_live(r)),
        "DescribeTimeToLive" => {
            run(body, |r: a::describe_time_to_live::DescribeTimeToLiveRequest| db.describe_time_to_live(r))
        }
        "PutItem" => run(body, |r: a::put_item::PutItemRequest| db.put_item(r)),
        "GetItem" => run(body, |r: a::get_item::GetItemRequest| db.get_item(r)),
        "UpdateItem" => run(body, |r: a::update_item::UpdateItemRequest| db.update_item(r)),
        "DeleteItem" => run(body, |r: a::delete_item::DeleteItemRequest| db.delete_item(r)),
        "Query" => run(body, |r: a::query::QueryRequest| db.query(r)),
        "Scan" => run(body, |r: a::scan::ScanRequest| db.scan(r)),
        "BatchGetItem" => run(body, |r: a::batch_get_item::BatchGetItemRequest| db.batch_get_item(r)),
        "BatchWriteItem" => run(body, |r: a::batch_write_item::BatchWriteItemRequest| db.batch_write_item(r)),
        "TransactWriteItems" => {
            run(body, |r: a::transact_write_items::TransactWriteItemsRequest| db.transact_write_items(r))
        }
        "TransactGetItems" => run(body, |r: a::transact_get_items::TransactGetItemsRequest| db.transact_get_items(r)),
        other => Err(DynoxideError::ValidationException(format!("the embedded DynamoDB does not serve {other}"))),
    }
}
