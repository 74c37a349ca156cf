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
    // The scheduled sweeps invoke ops the function they are attached to serves.
    let served: [(&str, Vec<&str>); 3] = [
        ("EnqueueFunction", enqueue::op_names()),
        ("AdminFunction", admin::op_names()),
        ("ApiFunction", api::op_names()),
    ];
    for (f, ops) in &served {
        let events = t["Resources"][f]["Properties"]["Events"].as_object().cloned().unwrap_or_default();
        for ev in events.values().filter(|e| e["Type"] == "Schedule") {
            let input: serde_json::Value = serde_json::from_str(ev["Properties"]["Input"].as_str().unwrap()).unwrap();
            let op = input["op"].as_str().unwrap();
            assert!(ops.contains(&op), "{f}: scheduled op '{op}' is not served");
        }
    }
    // The end-user function gets the user-token setting, and only it.
    assert_eq!(
        t["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]["USER_TOKEN_SECRET_REF"],
        json!({"Ref": "UserTokenSecretRef"})
    );
    assert_eq!(
        t["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]["USER_TOKEN_JWKS_URL"],
        json!({"Ref": "UserTokenJwksUrl"})
    );
    assert!(vars.get("USER_TOKEN_SECRET_REF").is_none() && vars.get("USER_TOKEN_JWKS_URL").is_none());
    let cfg = shared::Config::from_lookup(&|k| match k {
        "USER_TOKEN_SECRET_REF" => Some("api.userTokenKey".into()),
        "USER_TOKEN_JWKS_URL" => Some("https://idp.example/jwks".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(cfg.policy.access.user_token_secret_ref.as_deref(), Some("api.userTokenKey"));
    assert_eq!(cfg.policy.access.jwks_url.as_deref(), Some("https://idp.example/jwks"));
    let claim = &t["Resources"]["ClaimFunction"]["Properties"];
    let ev = claim["Events"].as_object().unwrap().values().next().unwrap();
    assert_eq!((ev["Type"].as_str(), ev["Properties"]["Path"].as_str()), (Some("HttpApi"), Some("/worker/{op}")));
    for f in ["EnqueueFunction", "AdminFunction", "ApiFunction", "ClaimFunction"] {
        assert_eq!(t["Resources"][f]["Metadata"]["BuildMethod"], "rust-cargolambda", "{f}");
    }
    assert_eq!(t["Globals"]["Function"]["Runtime"], "provided.al2023");
}

#[test]
fn reconcile_runs_once_at_a_time_on_the_stream_the_schedule_and_ops() {
    let t = template();
    let f = &t["Resources"]["ReconcileFunction"];
    assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda");
    let p = &f["Properties"];
    assert_eq!(p["ReservedConcurrentExecutions"], 1, "single flight, with the lease item");
    assert_eq!(p["Environment"]["Variables"]["DEPLOYMENT_ID"], json!({"Ref": "AWS::StackName"}));
    let ev = &p["Events"]["QueueStream"];
    assert_eq!(ev["Type"], "DynamoDB");
    let sp = &ev["Properties"];
    assert_eq!(sp["Stream"], json!({"Fn::GetAtt": ["QueueTable", "StreamArn"]}));
    assert_eq!(sp["BisectBatchOnFunctionError"], true);
    assert_eq!(sp["FunctionResponseTypes"], json!(["ReportBatchItemFailures"]));
    assert!(sp["BatchSize"].as_u64().unwrap() >= 10);
    assert_eq!(sp["DestinationConfig"]["OnFailure"]["Type"], "SQS");
    assert_eq!(t["Resources"]["ReconcileStreamFailures"]["Type"], "AWS::SQS::Queue");
    // The filter lets through exactly what the handler's own check accepts.
    let pattern: Value = serde_json::from_str(sp["FilterCriteria"]["Filters"][0]["Pattern"].as_str().unwrap()).unwrap();
    assert_eq!(pattern["eventName"], json!(["INSERT", "MODIFY"]));
    let img = &pattern["dynamodb"]["NewImage"];
    assert_eq!(img["sk"]["S"], json!(["CONV"]));
    assert_eq!(img["readyShard"]["S"], json!([{"prefix": "d"}, {"prefix": "r"}]));
    assert_eq!(img["readyAt"]["N"], json!([{"exists": true}]));
    let sched = &p["Events"]["Cycle"];
    assert_eq!(
        (sched["Type"].as_str(), sched["Properties"]["Schedule"].as_str()),
        (Some("Schedule"), Some("rate(5 minutes)"))
    );
    // Least privilege: no table-wide CRUD policy, no Scan, no secret but the Fly token.
    let text = serde_json::to_string(&p["Policies"]).unwrap();
    assert!(!text.contains("CrudPolicy") && !text.contains("Scan"), "{text}");
    let tables = serde_json::to_string(&p["Policies"][0]["Statement"][0]).unwrap();
    assert!(
        tables.contains("QueueTable") && !tables.contains("DeleteItem"),
        "no deletes in the queue and workers tables"
    );
    assert!(text.contains("fly.apiToken"), "{text}");
    for op in ["startWorkers", "reconcileWorkerPool", "checkIdleShutdowns", "listWorkers", "getWorkerStats"] {
        assert!(reconcile::op_names().contains(&op), "{op}");
    }
}
