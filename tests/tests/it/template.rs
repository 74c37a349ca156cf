//! The SAM template declares exactly the tables the code creates (schema.rs), and wires the
//! configuration the functions read.

use serde_json::{Value, json};
use shared::adapters::dynamo::schema::{AttrType, IndexDef, TABLES, TableDef};

fn template() -> Value {
    let path = format!("{}/../infra/template.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("infra/template.yaml");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("template parses as plain YAML");
    serde_json::to_value(yaml).expect("template as JSON")
}

fn keys(hash: &str, range: Option<&str>) -> Value {
    let mut v = vec![json!({"AttributeName": hash, "KeyType": "HASH"})];
    if let Some(r) = range {
        v.push(json!({"AttributeName": r, "KeyType": "RANGE"}));
    }
    Value::Array(v)
}

fn index(i: &IndexDef) -> Value {
    let projection = match i.include {
        None => json!({"ProjectionType": "ALL"}),
        Some([]) => json!({"ProjectionType": "KEYS_ONLY"}),
        Some(list) => json!({"ProjectionType": "INCLUDE", "NonKeyAttributes": list}),
    };
    json!({"IndexName": i.name, "KeySchema": keys(i.hash, i.range), "Projection": projection})
}

/// What the code says a table is, in CloudFormation's words.
fn expected(t: &TableDef) -> Value {
    let mut attrs: Vec<Value> = t
        .attributes
        .iter()
        .map(|(n, ty)| json!({"AttributeName": n, "AttributeType": if *ty == AttrType::S { "S" } else { "N" }}))
        .collect();
    attrs.sort_by_key(|a| a["AttributeName"].as_str().unwrap().to_string());
    json!({
        "AttributeDefinitions": attrs,
        "KeySchema": keys(t.hash, t.range),
        "LocalSecondaryIndexes": t.lsis.iter().map(index).collect::<Vec<_>>(),
        "GlobalSecondaryIndexes": t.gsis.iter().map(index).collect::<Vec<_>>(),
        "TimeToLive": t.ttl_attribute,
        "Stream": t.stream.then_some("NEW_AND_OLD_IMAGES"),
        "BillingMode": "PAY_PER_REQUEST",
    })
}

/// What the template says, in the same shape.
fn declared(props: &Value) -> Value {
    let mut attrs = props["AttributeDefinitions"].as_array().cloned().unwrap_or_default();
    attrs.sort_by_key(|a| a["AttributeName"].as_str().unwrap_or_default().to_string());
    let list = |k: &str| props.get(k).cloned().unwrap_or_else(|| json!([]));
    let ttl = props["TimeToLiveSpecification"]
        .as_object()
        .filter(|t| t.get("Enabled") == Some(&json!(true)))
        .and_then(|t| t.get("AttributeName").cloned())
        .unwrap_or(Value::Null);
    json!({
        "AttributeDefinitions": attrs,
        "KeySchema": props["KeySchema"],
        "LocalSecondaryIndexes": list("LocalSecondaryIndexes"),
        "GlobalSecondaryIndexes": list("GlobalSecondaryIndexes"),
        "TimeToLive": ttl,
        "Stream": props["StreamSpecification"]["StreamViewType"],
        "BillingMode": props["BillingMode"],
    })
}

#[test]
fn tables_in_the_template_match_the_code() {
    let t = template();
    for def in TABLES {
        let res = &t["Resources"][def.resource];
        assert_eq!(res["Type"], "AWS::DynamoDB::Table", "{} is a table", def.resource);
        assert_eq!(declared(&res["Properties"]), expected(def), "{} differs from schema.rs", def.resource);
    }
    let tables_in_template =
        t["Resources"].as_object().unwrap().values().filter(|r| r["Type"] == "AWS::DynamoDB::Table").count();
    assert_eq!(tables_in_template, TABLES.len(), "no table in the template that the code does not know");
}

#[test]
fn functions_get_the_configuration_they_read() {
    let t = template();
    let vars = &t["Globals"]["Function"]["Environment"]["Variables"];
    for def in TABLES {
        let var = format!("{}_TABLE", def.logical.to_uppercase());
        assert_eq!(vars[&var], json!({"Ref": def.resource}), "{var}");
        // The variable is the one Config reads.
        let cfg = shared::Config::from_lookup(&|k| (k == var).then(|| "from-template".to_string())).unwrap();
        assert_eq!(cfg.tables.name_of(def.logical), "from-template");
    }
    for (var, want) in
        [("BLOB_BUCKET", json!({"Ref": "BlobBucket"})), ("SECRETS_PREFIX", json!({"Ref": "SecretsPrefix"}))]
    {
        assert_eq!(vars[var], want, "{var}");
    }
    let cfg = shared::Config::from_lookup(&|k| match k {
        "BLOB_BUCKET" => Some("b".into()),
        "SECRETS_PREFIX" => Some("p/".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!((cfg.blob_bucket.as_deref(), cfg.secrets_prefix.as_str()), (Some("b"), "p/"));
    assert_eq!(t["Resources"]["BlobBucket"]["Type"], "AWS::S3::Bucket");
    // The scheduled sweeps invoke ops the enqueue function serves.
    for ev in t["Resources"]["EnqueueFunction"]["Properties"]["Events"].as_object().unwrap().values() {
        let input: serde_json::Value = serde_json::from_str(ev["Properties"]["Input"].as_str().unwrap()).unwrap();
        let op = input["op"].as_str().unwrap();
        assert!(enqueue::op_names().contains(&op), "scheduled op '{op}' is not served");
    }
    let claim = &t["Resources"]["ClaimFunction"]["Properties"];
    let ev = claim["Events"].as_object().unwrap().values().next().unwrap();
    assert_eq!((ev["Type"].as_str(), ev["Properties"]["Path"].as_str()), (Some("HttpApi"), Some("/worker/{op}")));
    for f in ["EnqueueFunction", "ClaimFunction", "WebhookFunction"] {
        assert_eq!(t["Resources"][f]["Metadata"]["BuildMethod"], "rust-cargolambda", "{f}");
    }
    assert_eq!(t["Globals"]["Function"]["Runtime"], "provided.al2023");
}

/// The webhook function: its route, the stream that feeds its process stage (only new `TG#`
/// items, the key prefix the code writes), and secrets scoped to the Telegram refs.
#[test]
fn the_webhook_function_is_wired_with_least_privilege() {
    let t = template();
    let w = &t["Resources"]["WebhookFunction"]["Properties"];
    let route = &w["Events"]["TelegramUpdate"];
    assert_eq!(
        (route["Type"].as_str(), route["Properties"]["Path"].as_str()),
        (Some("HttpApi"), Some("/telegram/webhook"))
    );
    let stream = &w["Events"]["AcceptedUpdates"];
    assert_eq!(stream["Type"], "DynamoDB");
    assert_eq!(stream["Properties"]["Stream"]["Fn::GetAtt"], json!(["QueueTable", "StreamArn"]));
    let pattern: Value =
        serde_json::from_str(stream["Properties"]["FilterCriteria"]["Filters"][0]["Pattern"].as_str().unwrap())
            .unwrap();
    assert_eq!(pattern["dynamodb"]["Keys"]["pk"]["S"][0]["prefix"], shared::adapters::dynamo::keys::UPDATE_PK_PREFIX);
    assert_eq!(pattern["eventName"], json!(["INSERT"]));
    assert_eq!(stream["Properties"]["FunctionResponseTypes"], json!(["ReportBatchItemFailures"]));
    let text = serde_json::to_string(&w["Policies"]).unwrap();
    assert!(!text.contains("WorkersTable"), "the webhook never touches workers");
    assert!(!text.contains("secret:${SecretsPrefix}*"), "no access to every secret: {text}");
    assert!(text.contains("telegram.botToken.*") && text.contains("telegram.webhookSecret.*"));
    assert_eq!(shared::identity::rules::webhook_secret_ref("1"), "telegram.webhookSecret.1");
    assert_eq!(shared::identity::rules::token_ref("a"), "telegram.botToken.a");
    assert!(!text.contains("s3:GetObject") && !text.contains("S3CrudPolicy"), "media are only written");
    let enq = &t["Resources"]["EnqueueFunction"]["Properties"]["Environment"]["Variables"];
    assert!(enq["PUBLIC_BASE_URL"]["Fn::Sub"].as_str().unwrap().starts_with("https://${WorkerApi}"));
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"]["TELEGRAM_API_BASE"],
        json!({"Ref": "TelegramApiBase"})
    );
}
