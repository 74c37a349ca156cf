//! The DynamoDB tables, written down once.
//!
//! The local runner and the tests create tables from these definitions, and a test checks that
//! `infra/template.yaml` declares exactly the same keys, indexes, projections, TTL attribute and
//! stream. `docs/data-model.md` explains every attribute and access pattern.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, LocalSecondaryIndex, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
    TimeToLiveStatus,
};

/// Logical table: the queue (conversations, messages, idempotency keys, history entries).
pub const QUEUE: &str = crate::config::TableNames::QUEUE;
/// Logical table: worker rows.
pub const WORKERS: &str = crate::config::TableNames::WORKERS;
/// Logical table: agent profiles and runtime configuration.
pub const CONTROL: &str = crate::config::TableNames::CONTROL;

/// Local secondary index of the queue table: open messages of a conversation in claim order.
pub const IDX_OPEN: &str = "open";
/// Sparse global index of the queue table: conversations with open work, by `readyAt`;
/// partition `r<shard>` for unlocked conversations, `l<shard>` for locked ones.
pub const IDX_READY: &str = "ready";
/// Sparse global index of the queue table: conversations that were due when written (partition
/// `d<shard>`), by `dueRank` (priority, then due time, then insertion order). Unassigned claims
/// take the first claimable entry, so priority is global across the queue.
pub const IDX_DUE: &str = "due";
/// Global index of the queue table: messages by status shard (`statusPart` = `<status>#<nn>`,
/// 32 shards a status, `keys::STATUS_SHARDS`), then due time. Readers query every shard.
pub const IDX_BY_STATUS_SHARD: &str = "byStatusShard";
/// Sparse global index of the queue table (keys only): things that expire with a side effect,
/// by kind (`snapshot`, `snapshot_upload`, `media`), then deadline.
pub const IDX_EXPIRY: &str = "expiry";
/// Sparse global index of the control table (keys only): enabled recurring push jobs by
/// `nextRunAt` (partition `pushDueShard` = `due`; manual and disabled jobs lack it).
pub const IDX_PUSH_DUE: &str = "pushDue";
/// Global index of the workers table: workers by status, then heartbeat.
/// The workers of one status, by worker id, keys only: a row's heartbeat and load change with
/// every claim, lease call and complete, and none of that touches this index (only status
/// changes do), so no partition of it takes per-message writes.
pub const IDX_WORKERS_BY_STATUS: &str = "byStatusKey";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    S,
    N,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    pub name: &'static str,
    pub hash: &'static str,
    pub range: Option<&'static str>,
    /// `None` = ALL, `Some(&[])` = KEYS_ONLY, `Some(list)` = INCLUDE list.
    pub include: Option<&'static [&'static str]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// Logical name (`queue`, `workers`, `control`).
    pub logical: &'static str,
    /// Resource name in the SAM template.
    pub resource: &'static str,
    pub hash: &'static str,
    pub range: Option<&'static str>,
    pub attributes: &'static [(&'static str, AttrType)],
    pub lsis: &'static [IndexDef],
    pub gsis: &'static [IndexDef],
    pub ttl_attribute: Option<&'static str>,
    /// Stream view type (always NEW_AND_OLD_IMAGES when present).
    pub stream: bool,
}

const BY_STATUS_INCLUDE: &[&str] = &[
    "messageId",
    "conversationId",
    "agentKey",
    "priority",
    "scheduledFor",
    "attempts",
    "maxAttempts",
    "lastError",
    "leaseExpiresAt",
    "createdAt",
];

/// The queue table's index before `byStatusShard` (partition key `status`: one hot partition per
/// status). The code no longer reads it; `infra/template.yaml` keeps it, with its `status`
/// attribute definition, only while the parameter `KeepLegacyStatusIndex` is `true` (the first
/// of the two deploys of the migration, `docs/data-model.md`), since CloudFormation adds or drops
/// one index per update.
/// The workers table's index `byStatusKey` replaces (every attribute projected, sorted by the
/// heartbeat: each heartbeat rewrote it), kept only during the migration
/// (`KeepLegacyStatusIndex`).
pub const LEGACY_WORKERS_BY_STATUS: IndexDef =
    IndexDef { name: "byStatus", hash: "status", range: Some("heartbeatAt"), include: None };

pub const LEGACY_BY_STATUS: IndexDef =
    IndexDef { name: "byStatus", hash: "status", range: Some("statusKey"), include: Some(BY_STATUS_INCLUDE) };

/// What an unassigned claimer reads from the `due` index: which conversation, and whether a live
/// owner holds it (the query's filter). Nothing else, so the many writes to a conversation item
/// that change neither its rank nor its owner do not touch the index.
const DUE_INCLUDE: &[&str] = &["conversationId", "ownerId", "ownerUntil"];

pub const TABLES: &[TableDef] = &[
    TableDef {
        logical: QUEUE,
        resource: "QueueTable",
        hash: "pk",
        range: Some("sk"),
        attributes: &[
            ("pk", AttrType::S),
            ("sk", AttrType::S),
            ("openKey", AttrType::S),
            ("readyShard", AttrType::S),
            ("readyAt", AttrType::N),
            ("dueRank", AttrType::S),
            ("statusPart", AttrType::S),
            ("statusKey", AttrType::S),
            ("expiryKind", AttrType::S),
            ("expiryAt", AttrType::N),
        ],
        lsis: &[IndexDef { name: IDX_OPEN, hash: "pk", range: Some("openKey"), include: None }],
        gsis: &[
            IndexDef { name: IDX_READY, hash: "readyShard", range: Some("readyAt"), include: None },
            IndexDef { name: IDX_DUE, hash: "readyShard", range: Some("dueRank"), include: Some(DUE_INCLUDE) },
            IndexDef {
                name: IDX_BY_STATUS_SHARD,
                hash: "statusPart",
                range: Some("statusKey"),
                include: Some(BY_STATUS_INCLUDE),
            },
            IndexDef { name: IDX_EXPIRY, hash: "expiryKind", range: Some("expiryAt"), include: Some(&[]) },
        ],
        ttl_attribute: Some("ttl"),
        stream: true,
    },
    TableDef {
        logical: WORKERS,
        resource: "WorkersTable",
        hash: "workerId",
        range: None,
        attributes: &[("workerId", AttrType::S), ("status", AttrType::S)],
        lsis: &[],
        gsis: &[IndexDef { name: IDX_WORKERS_BY_STATUS, hash: "status", range: Some("workerId"), include: Some(&[]) }],
        ttl_attribute: Some("ttl"),
        stream: false,
    },
    TableDef {
        logical: CONTROL,
        resource: "ControlTable",
        hash: "pk",
        range: Some("sk"),
        attributes: &[
            ("pk", AttrType::S),
            ("sk", AttrType::S),
            ("pushDueShard", AttrType::S),
            ("nextRunAt", AttrType::N),
        ],
        lsis: &[],
        gsis: &[IndexDef { name: IDX_PUSH_DUE, hash: "pushDueShard", range: Some("nextRunAt"), include: Some(&[]) }],
        // Pairing codes and pairing-attempt counters expire by TTL.
        ttl_attribute: Some("ttl"),
        stream: false,
    },
];

pub fn table(logical: &str) -> &'static TableDef {
    TABLES.iter().find(|t| t.logical == logical).expect("known logical table")
}

fn key(name: &str, kt: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder().attribute_name(name).key_type(kt).build().expect("key schema")
}

fn keys(hash: &str, range: Option<&str>) -> Vec<KeySchemaElement> {
    let mut v = vec![key(hash, KeyType::Hash)];
    if let Some(r) = range {
        v.push(key(r, KeyType::Range));
    }
    v
}

fn projection(include: Option<&[&str]>) -> Projection {
    let b = Projection::builder();
    match include {
        None => b.projection_type(ProjectionType::All).build(),
        Some([]) => b.projection_type(ProjectionType::KeysOnly).build(),
        Some(list) => {
            let mut b = b.projection_type(ProjectionType::Include);
            for a in list {
                b = b.non_key_attributes(*a);
            }
            b.build()
        }
    }
}

/// Create one table (and set its TTL attribute) if it does not exist yet.
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    def: &TableDef,
    name: &str,
) -> Result<bool, aws_sdk_dynamodb::Error> {
    // Look first: emulators disagree on the error a second CreateTable returns.
    match client.describe_table().table_name(name).send().await {
        Ok(d) => {
            // A table made by an older version (a kept `--data-dir`): add the indexes it lacks.
            let have: Vec<String> = d
                .table
                .and_then(|t| t.global_secondary_indexes)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|g| g.index_name)
                .collect();
            for g in def.gsis.iter().filter(|g| !have.iter().any(|h| h == g.name)) {
                add_gsi(client, def, name, g).await?;
            }
            // And the TTL it lacks (the control table got one for pairing codes).
            if let Some(ttl) = def.ttl_attribute {
                let on =
                    client.describe_time_to_live().table_name(name).send().await?.time_to_live_description.is_some_and(
                        |d| {
                            d.attribute_name.as_deref() == Some(ttl)
                                && matches!(
                                    d.time_to_live_status,
                                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                                )
                        },
                    );
                if !on {
                    enable_ttl(client, name, ttl).await?;
                }
            }
            return Ok(false);
        }
        Err(e) => {
            let e = aws_sdk_dynamodb::Error::from(e);
            if !matches!(e, aws_sdk_dynamodb::Error::ResourceNotFoundException(_)) {
                return Err(e);
            }
        }
    }
    let mut req = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(keys(def.hash, def.range)));
    for (attr, ty) in def.attributes {
        let t = match ty {
            AttrType::S => ScalarAttributeType::S,
            AttrType::N => ScalarAttributeType::N,
        };
        req = req.attribute_definitions(
            AttributeDefinition::builder().attribute_name(*attr).attribute_type(t).build().expect("attr"),
        );
    }
    for l in def.lsis {
        req = req.local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name(l.name)
                .set_key_schema(Some(keys(l.hash, l.range)))
                .projection(projection(l.include))
                .build()
                .expect("lsi"),
        );
    }
    for g in def.gsis {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(g.name)
                .set_key_schema(Some(keys(g.hash, g.range)))
                .projection(projection(g.include))
                .build()
                .expect("gsi"),
        );
    }
    if def.stream {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .expect("stream"),
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) => {
            let e = aws_sdk_dynamodb::Error::from(e);
            if matches!(e, aws_sdk_dynamodb::Error::ResourceInUseException(_)) {
                return Ok(false);
            }
            return Err(e);
        }
    }
    if let Some(ttl) = def.ttl_attribute {
        enable_ttl(client, name, ttl).await?;
    }
    Ok(true)
}

async fn enable_ttl(client: &aws_sdk_dynamodb::Client, name: &str, ttl: &str) -> Result<(), aws_sdk_dynamodb::Error> {
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().attribute_name(ttl).enabled(true).build().expect("ttl"),
        )
        .send()
        .await?;
    Ok(())
}

/// Add one global secondary index to an existing table (DynamoDB backfills it).
async fn add_gsi(
    client: &aws_sdk_dynamodb::Client,
    def: &TableDef,
    name: &str,
    g: &IndexDef,
) -> Result<(), aws_sdk_dynamodb::Error> {
    use aws_sdk_dynamodb::types::{CreateGlobalSecondaryIndexAction, GlobalSecondaryIndexUpdate};
    let mut req = client.update_table().table_name(name);
    for (attr, ty) in def.attributes.iter().filter(|(a, _)| *a == g.hash || Some(*a) == g.range) {
        let t = match ty {
            AttrType::S => ScalarAttributeType::S,
            AttrType::N => ScalarAttributeType::N,
        };
        req = req.attribute_definitions(
            AttributeDefinition::builder().attribute_name(*attr).attribute_type(t).build().expect("attr"),
        );
    }
    let create = CreateGlobalSecondaryIndexAction::builder()
        .index_name(g.name)
        .set_key_schema(Some(keys(g.hash, g.range)))
        .projection(projection(g.include))
        .build()
        .expect("gsi");
    req.global_secondary_index_updates(GlobalSecondaryIndexUpdate::builder().create(create).build()).send().await?;
    Ok(())
}
