//! The SAM template declares exactly the tables the code creates (schema.rs), and wires the
//! configuration the functions read.

use serde_json::{Value, json};
use shared::adapters::dynamo::schema::{
    AttrType, IndexDef, LEGACY_BY_STATUS, LEGACY_WORKERS_BY_STATUS, TABLES, TableDef,
};

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

fn schema_queue_gsis() -> &'static [IndexDef] {
    shared::adapters::dynamo::schema::table(shared::adapters::dynamo::schema::QUEUE).gsis
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

/// The template's conditional entries of a table's attribute definitions and indexes: the
/// queue table's must be exactly the legacy `byStatus` index and its `status` attribute, the
/// workers table's its legacy `byStatus` index and its `heartbeatAt` attribute, under the
/// condition `KeepLegacyStatusIndex` (the migrations to `byStatusShard` and `byStatusKey`), and
/// nothing else is conditional. Returns the properties as the default deploy (`false`) resolves them.
fn without_legacy(def: &TableDef, props: &Value) -> Value {
    let mut p = props.clone();
    let legacy = match def.resource {
        "QueueTable" => Some((json!({"AttributeName": "status", "AttributeType": "S"}), index(&LEGACY_BY_STATUS))),
        "WorkersTable" => {
            Some((json!({"AttributeName": "heartbeatAt", "AttributeType": "N"}), index(&LEGACY_WORKERS_BY_STATUS)))
        }
        _ => None,
    };
    for (i, list) in ["AttributeDefinitions", "GlobalSecondaryIndexes"].into_iter().enumerate() {
        let Some(entries) = p.get_mut(list).and_then(Value::as_array_mut) else { continue };
        let conditional: Vec<Value> = entries.iter().filter(|v| v.get("Fn::If").is_some()).cloned().collect();
        entries.retain(|v| v.get("Fn::If").is_none());
        let expected: Vec<Value> = match &legacy {
            Some((attr, ix)) => {
                let want = if i == 0 { attr.clone() } else { ix.clone() };
                vec![json!({"Fn::If": ["KeepLegacyStatusIndex", want, {"Ref": "AWS::NoValue"}]})]
            }
            None => vec![],
        };
        assert_eq!(conditional, expected, "{} {list}: conditional entries", def.resource);
    }
    p
}

#[test]
fn tables_in_the_template_match_the_code() {
    let t = template();
    for def in TABLES {
        let res = &t["Resources"][def.resource];
        assert_eq!(res["Type"], "AWS::DynamoDB::Table", "{} is a table", def.resource);
        let props = without_legacy(def, &res["Properties"]);
        assert_eq!(declared(&props), expected(def), "{} differs from schema.rs", def.resource);
    }
    // The legacy index stays only when asked for: off by default.
    let keep = &t["Parameters"]["KeepLegacyStatusIndex"];
    assert_eq!((keep["Default"].as_str(), &keep["AllowedValues"]), (Some("false"), &json!(["true", "false"])));
    assert_eq!(
        t["Conditions"]["KeepLegacyStatusIndex"],
        json!({"Fn::Equals": [{"Ref": "KeepLegacyStatusIndex"}, "true"]})
    );
    // The new index is a different one (CloudFormation adds it while the old one stays).
    let queue = schema_queue_gsis();
    assert!(queue.iter().all(|g| g.name != LEGACY_BY_STATUS.name));
    assert!(queue.iter().any(|g| g.hash == "statusPart" && g.range == LEGACY_BY_STATUS.range));
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
    let served: [(&str, Vec<&str>); 4] = [
        ("EnqueueFunction", enqueue::op_names()),
        ("AdminFunction", admin::op_names()),
        ("ApiFunction", api::op_names()),
        ("CleanupFunction", cleanup::op_names()),
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
    // The scheduled sweeps and the Fly cleanup invoke ops the cleanup function serves; enqueue
    // has no schedule any more.
    assert!(t["Resources"]["EnqueueFunction"]["Properties"].get("Events").is_none());
    let events = t["Resources"]["CleanupFunction"]["Properties"]["Events"].as_object().unwrap();
    for ev in events.values() {
        let input: serde_json::Value = serde_json::from_str(ev["Properties"]["Input"].as_str().unwrap()).unwrap();
        let op = input["op"].as_str().unwrap();
        assert!(cleanup::op_names().contains(&op), "scheduled op '{op}' is not served");
        assert!(!enqueue::op_names().contains(&op), "'{op}' moved to the cleanup function");
    }
    for name in ["LeaseSweep", "StorageSweep", "FlyCleanup"] {
        assert!(events.contains_key(name), "{name}");
    }
    assert_eq!(events["LeaseSweep"]["Properties"]["Schedule"], "rate(5 minutes)");
    assert_eq!(events["StorageSweep"]["Properties"]["Schedule"], "rate(1 hour)");
    assert_eq!(events["FlyCleanup"]["Properties"]["Schedule"], "cron(0 3 * * ? *)", "nightly");
    assert_eq!(events["FlyCleanup"]["Properties"]["State"], "DISABLED", "off by default");
    // The cleanup's time budget leaves the batch in flight and the report room in the timeout.
    let timeout = t["Resources"]["CleanupFunction"]["Properties"]["Timeout"].as_u64().unwrap();
    assert!(timeout >= 2 * shared::cleanup::ops::TIME_BUDGET.as_secs() + 60, "{timeout}");
    // Fly settings reach every function, under the names Config reads.
    let cfg = shared::Config::from_lookup(&|k| match k {
        "DEPLOYMENT_ID" => Some("dep-9".into()),
        "FLY_API_BASE" => Some("http://fly".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!((cfg.deployment_id.as_str(), cfg.fly_api_base.as_str()), ("dep-9", "http://fly"));
    assert_eq!(vars["FLY_API_BASE"], json!({"Ref": "FlyApiBase"}));
    assert_eq!(vars["FLY_APP_NAME"], json!({"Ref": "FlyAppName"}));
    assert_eq!(vars["DEPLOYMENT_ID"]["Fn::If"][1], json!({"Ref": "DeploymentId"}));
    // Least privilege: enqueue touches no blob; cleanup deletes snapshot and media objects and
    // reads one secret, the Fly token.
    let policies = |f: &str| t["Resources"][f]["Properties"]["Policies"].as_array().unwrap().clone();
    let enq = serde_json::to_string(&policies("EnqueueFunction")).unwrap();
    assert!(!enq.contains("S3") && !enq.contains("secretsmanager"), "{enq}");
    let statements: Vec<Value> = policies("CleanupFunction")
        .iter()
        .filter_map(|p| p.get("Statement"))
        .flat_map(|s| s.as_array().unwrap().clone())
        .collect();
    let cl = serde_json::to_string(&policies("CleanupFunction")).unwrap();
    assert!(!cl.contains("S3CrudPolicy") && !cl.contains("S3ReadPolicy"), "{cl}");
    let actions: Vec<&str> =
        statements.iter().flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap())).collect();
    assert_eq!(actions, vec!["s3:DeleteObject", "secretsmanager:GetSecretValue"]);
    let secret = statements[1]["Resource"]["Fn::Sub"].as_str().unwrap();
    assert!(secret.ends_with(":secret:${SecretsPrefix}fly.apiToken-??????"), "{secret}");
    let claim = &t["Resources"]["ClaimFunction"]["Properties"];
    let ev = claim["Events"].as_object().unwrap().values().next().unwrap();
    assert_eq!((ev["Type"].as_str(), ev["Properties"]["Path"].as_str()), (Some("HttpApi"), Some("/worker/{op}")));
    for (f, bin) in [
        ("EnqueueFunction", "enqueue"),
        ("AdminFunction", "admin"),
        ("ApiFunction", "api"),
        ("ClaimFunction", "claim"),
        ("CleanupFunction", "cleanup"),
        ("WebhookFunction", "webhook"),
    ] {
        assert_eq!(t["Resources"][f]["Metadata"]["BuildMethod"], "rust-cargolambda", "{f}");
        assert_eq!(t["Resources"][f]["Metadata"]["BuildProperties"]["Binary"], bin, "{f}");
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
    let adm = &t["Resources"]["AdminFunction"]["Properties"]["Environment"]["Variables"];
    assert!(adm["PUBLIC_BASE_URL"]["Fn::Sub"].as_str().unwrap().starts_with("https://${WorkerApi}"));
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"]["TELEGRAM_API_BASE"],
        json!({"Ref": "TelegramApiBase"})
    );
}
