//! Writes per partition key, for the scaling benchmark (issue 12): derived from the keys each
//! write puts, moves or removes, read back from the table's stream (NEW_AND_OLD_IMAGES).
//!
//! For every stream record (one item written): one write to the item's partition of the base
//! table; for each index, what DynamoDB does to it — nothing when the item is in neither image's
//! index, one write to the partition it enters or leaves, one in place when it stays under the
//! same keys and a projected attribute changed, two (a delete and a put, maybe in two partitions)
//! when its index keys change. Local secondary indexes count under the base partition (they share
//! its throughput). A refused conditional write consumes capacity but leaves no record: these are
//! the writes that happened, not the attempts.

use serde_json::{Map, Value, json};
use shared::adapters::dynamo::schema::{IndexDef, TableDef};
use std::collections::BTreeMap;

/// One item image in DynamoDB JSON (`{"attr": {"S": "..."}}`).
pub type Image = Map<String, Value>;

/// One stream record: the item before and after the write (`None` for an insert / a removal).
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub old: Option<Image>,
    pub new: Option<Image>,
}

/// Writes per (index, partition key value); the base table's index name is `table`.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub writes: BTreeMap<(String, String), u64>,
}

/// The value of a key attribute (S or N) as text.
fn scalar(img: &Image, attr: &str) -> Option<String> {
    let v = img.get(attr)?;
    v.get("S").or_else(|| v.get("N")).and_then(Value::as_str).map(str::to_string)
}

/// The item's (partition, sort) keys in an index, or `None` when the item is not in it (sparse).
fn index_keys(img: &Image, hash: &str, range: Option<&str>) -> Option<(String, Option<String>)> {
    let h = scalar(img, hash)?;
    match range {
        Some(r) => Some((h, Some(scalar(img, r)?))),
        None => Some((h, None)),
    }
}

fn projected_changed(ix: &IndexDef, old: &Image, new: &Image) -> bool {
    match ix.include {
        None => old != new,
        Some(list) => list.iter().any(|a| old.get(*a) != new.get(*a)),
    }
}

impl Tally {
    fn add(&mut self, index: &str, partition: String) {
        *self.writes.entry((index.to_string(), partition)).or_default() += 1;
    }

    /// Count `changes` of a table defined by `def`.
    pub fn count(&mut self, def: &TableDef, changes: &[Change]) {
        let empty = Image::new();
        for c in changes {
            let (old, new) = (c.old.as_ref(), c.new.as_ref());
            let Some(pk) = new.or(old).and_then(|i| scalar(i, def.hash)) else { continue };
            self.add("table", pk.clone());
            let lsis = def.lsis.iter().map(|l| (l, true));
            for (ix, local) in lsis.chain(def.gsis.iter().map(|g| (g, false))) {
                let label = if local { format!("lsi:{}", ix.name) } else { ix.name.to_string() };
                let ok = old.and_then(|i| index_keys(i, ix.hash, ix.range));
                let nk = new.and_then(|i| index_keys(i, ix.hash, ix.range));
                let part = |k: &(String, Option<String>)| if local { pk.clone() } else { k.0.clone() };
                match (&ok, &nk) {
                    (None, None) => {}
                    (Some(o), None) => self.add(&label, part(o)),
                    (None, Some(n)) => self.add(&label, part(n)),
                    (Some(o), Some(n)) if o == n => {
                        if projected_changed(ix, old.unwrap_or(&empty), new.unwrap_or(&empty)) {
                            self.add(&label, part(n));
                        }
                    }
                    (Some(o), Some(n)) => {
                        self.add(&label, part(o));
                        self.add(&label, part(n));
                    }
                }
            }
        }
    }

    /// Per index: its hottest partition key and that key's writes, hottest index first.
    pub fn hottest(&self) -> Vec<(String, String, u64)> {
        let mut best: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
        for ((ix, part), n) in &self.writes {
            let e = best.entry(ix.as_str()).or_insert((part.as_str(), 0));
            if *n > e.1 {
                *e = (part.as_str(), *n);
            }
        }
        let mut v: Vec<_> = best.into_iter().map(|(i, (p, n))| (i.to_string(), p.to_string(), n)).collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Total writes to one index (or `table`).
    pub fn total(&self, index: &str) -> u64 {
        self.writes.iter().filter(|((i, _), _)| i == index).map(|(_, n)| n).sum()
    }
}

/// Reads a table's whole stream from DynamoDB Local's Streams API (raw JSON over HTTP: the
/// emulator does not check signatures, so no SDK crate is needed for it).
pub struct StreamReader {
    http: reqwest::Client,
    endpoint: String,
}

impl StreamReader {
    pub fn new(endpoint: &str) -> Self {
        Self { http: reqwest::Client::new(), endpoint: endpoint.trim_end_matches('/').to_string() }
    }

    async fn call(&self, target: &str, body: Value) -> Value {
        let r = self
            .http
            .post(&self.endpoint)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", target)
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
            )
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        let status = r.status();
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("{target}: {e}"));
        assert!(status.is_success(), "{target}: HTTP {status}: {v}");
        v
    }

    /// Every record of `table`'s stream so far, shard by shard, oldest first.
    pub async fn changes(&self, table: &str) -> Vec<Change> {
        let d = self.call("DynamoDB_20120810.DescribeTable", json!({"TableName": table})).await;
        let arn = d["Table"]["LatestStreamArn"].as_str().unwrap_or_else(|| panic!("{table} has no stream")).to_string();
        let mut shards = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let mut req = json!({"StreamArn": arn});
            if let Some(l) = &last {
                req["ExclusiveStartShardId"] = json!(l);
            }
            let d = self.call("DynamoDBStreams_20120810.DescribeStream", req).await;
            let desc = &d["StreamDescription"];
            for s in desc["Shards"].as_array().into_iter().flatten() {
                shards.push(s["ShardId"].as_str().unwrap_or_default().to_string());
            }
            match desc["LastEvaluatedShardId"].as_str() {
                Some(l) => last = Some(l.to_string()),
                None => break,
            }
        }
        let mut out = Vec::new();
        for shard in shards {
            let it = self
                .call(
                    "DynamoDBStreams_20120810.GetShardIterator",
                    json!({"StreamArn": arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}),
                )
                .await;
            let mut iter = it["ShardIterator"].as_str().map(str::to_string);
            while let Some(i) = iter.take() {
                let r =
                    self.call("DynamoDBStreams_20120810.GetRecords", json!({"ShardIterator": i, "Limit": 1000})).await;
                let records = r["Records"].as_array().cloned().unwrap_or_default();
                for rec in &records {
                    let img = |k: &str| rec["dynamodb"][k].as_object().cloned();
                    out.push(Change { old: img("OldImage"), new: img("NewImage") });
                }
                // An open shard always hands out a next iterator: stop when it has nothing more.
                if !records.is_empty() {
                    iter = r["NextShardIterator"].as_str().map(str::to_string);
                }
            }
        }
        out
    }
}
