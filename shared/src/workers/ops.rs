//! Worker administration ops served through the op envelope.

use crate::AppResult;
use crate::app::App;
use crate::envelope::{OpTable, to_json};
use crate::op;
use crate::workers::model::WorkerItem;
use crate::workers::model::{MintTokenArgs, UpsertWorkerArgs};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerIdArgs {
    pub worker_id: String,
}

pub const TABLE: OpTable<App> = OpTable {
    domain: "workers",
    ops: &[
        op!(App, "upsertWorkerState", |app, a: UpsertWorkerArgs| worker_json(Some(
            app.store.upsert_worker_state(&a).await?
        ))?),
        op!(App, "getWorker", |app, a: WorkerIdArgs| worker_json(app.store.get_worker(&a.worker_id).await?)?),
        op!(App, "mintWorkerToken", |app, a: MintTokenArgs| app.store.mint_worker_token(&a).await?),
        op!(App, "revokeWorkerToken", |app, a: WorkerIdArgs| {
            let revoked = app.store.revoke_worker_token(&a.worker_id).await?;
            app.auth.clear();
            json!({ "workerId": a.worker_id, "revoked": revoked })
        }),
        op!(App, "getWorkerControlState", |app, a: WorkerIdArgs| app.store.worker_control_state(&a.worker_id).await?),
    ],
};

/// A worker row as ops show it: without `tokenHash` (not a secret, but nobody needs it).
fn worker_json(w: Option<WorkerItem>) -> AppResult<Value> {
    let mut v = to_json(w)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("tokenHash");
    }
    Ok(v)
}
