//! Every key of the DynamoDB tables, and its parsing, in one place (data model:
//! `docs/data-model.md`). Domains never see these formats: they name things by id.

use super::Item;
use crate::clock::Millis;
use crate::queue::model::{MessageKeys, MessageStatus};
use std::collections::HashMap;

/// The conversation item's sort key.
pub const CONV_SK: &str = "CONV";
/// Sorts before every `Q#…` key, so the `open` index returns the conversation first.
pub const CONV_OPEN_KEY: &str = "!CONV";
pub const LEASE_EXPIRED_ERROR: &str = "Lease expired while processing";
pub const MAX_ERROR_MESSAGE_CHARS: usize = 4_000;

pub fn conversation_pk(conversation_id: &str) -> String {
    format!("C#{conversation_id}")
}
pub fn message_sk(ulid: &str) -> String {
    format!("M#{ulid}")
}
pub fn dedupe_sk(external_message_id: &str) -> String {
    format!("X#{external_message_id}")
}
pub fn history_sk(ulid: &str) -> String {
    format!("H#{ulid}")
}
/// Place of an open message in its conversation: due time given at enqueue, then creation.
pub fn open_key(enqueued_for: Millis, ulid: &str) -> String {
    format!("Q#{enqueued_for:013}#{ulid}")
}
pub fn status_key(scheduled_for: Millis, ulid: &str) -> String {
    format!("{scheduled_for:013}#{ulid}")
}
/// Partitions of each status in the `byStatusShard` index (constant: a message keeps its shard
/// for life, and the readers query every shard).
pub const STATUS_SHARDS: u32 = 32;

/// `statusPart`, the partition key of the `byStatusShard` index: `<status>#<nn>`, nn = the
/// message's shard (FNV-1a of its ULID modulo [`STATUS_SHARDS`]), the same in every status.
pub fn status_part(status: MessageStatus, ulid: &str) -> String {
    status_partition(status, shard_of(ulid, STATUS_SHARDS))
}

/// The `byStatusShard` partition `<status>#<nn>` of shard `shard` (what the readers query).
pub fn status_partition(status: MessageStatus, shard: u32) -> String {
    format!("{}#{shard:02}", status.as_str())
}

/// DynamoDB TTL wants epoch seconds.
pub fn ttl_seconds(at_ms: Millis) -> i64 {
    at_ms.div_euclid(1000)
}

/// The shard of a conversation (FNV-1a of its id modulo `shards`).
pub fn shard_of(conversation_id: &str, shards: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in conversation_id.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

/// The shard of one move of a conversation into a `ready`/`due` partition: a fresh random one
/// of `shards` at every move. Nothing looks a conversation up by its shard (claimers, promotion,
/// the sweep and the demand read go through the partitions), so any shard is right, and a
/// random one spreads even a few busy conversations evenly over the shards: the writes of one
/// conversation land on one key no more often than anyone else's.
pub fn pick_shard(shards: u32) -> u32 {
    (crate::ids::random_u128() % u128::from(shards.max(1))) as u32
}

/// The `ready` index partition of an unlocked conversation not due when written: `r<shard>`.
pub fn ready_shard(shard: u32) -> String {
    format!("r{shard}")
}

/// The `ready` index partition of a locked conversation: `l<shard>`. Busy conversations sit
/// apart, so the partition unassigned claimers read holds only conversations that wait.
pub fn locked_shard(shard: u32) -> String {
    format!("l{shard}")
}

/// The `ready`/`due` partition of an unlocked conversation that was due when it was written:
/// `d<shard>`. Its `dueRank` orders it in the `due` index (priority, due time, insertion order).
pub fn due_shard(shard: u32) -> String {
    format!("d{shard}")
}

/// The partition of an unlocked conversation whose head is due at `due`, written at `now`:
/// `d<shard>` when due, `r<shard>` (waiting for promotion) when not.
pub fn unlocked_shard(shard: u32, due: Millis, now: Millis) -> String {
    if due <= now { due_shard(shard) } else { ready_shard(shard) }
}

/// `dueRank`: the `due` index sort key of a conversation whose head has `priority`, is due at
/// `due` and has ULID `ulid`. Ascending order = highest priority first, then the earlier due
/// time, then insertion order. Priorities are finite and non-negative (enqueue clamps them), so
/// their IEEE bits sort like their values; the bits are inverted so higher sorts first.
pub fn due_rank(priority: f64, due: Millis, ulid: &str) -> String {
    let bits = if priority.is_finite() && priority > 0.0 { priority.to_bits() } else { 0 };
    format!("{:016x}#{:013}#{ulid}", u64::MAX - bits, due.max(0))
}

/// The keys of a new message: its item, its place among the conversation's open messages and
/// in the `byStatusShard` index (queued).
pub fn message_keys(conversation_id: &str, ulid: &str, due: Millis) -> MessageKeys {
    MessageKeys {
        pk: conversation_pk(conversation_id),
        sk: message_sk(ulid),
        open_key: open_key(due, ulid),
        status_key: status_key(due, ulid),
        status_part: status_part(MessageStatus::Queued, ulid),
    }
}

/// The prefix of every message item's sort key.
pub const MESSAGE_PREFIX: &str = "M#";
/// The prefix of every history entry's sort key.
pub const HISTORY_PREFIX: &str = "H#";

/// The conversation id of a conversation partition key (`C#<conversationId>`).
pub fn conversation_id_of(pk: &str) -> &str {
    pk.strip_prefix("C#").unwrap_or(pk)
}

/// The ULID of a message item's sort key (`M#<ULID>`).
pub fn message_ulid(sk: &str) -> &str {
    sk.strip_prefix("M#").unwrap_or(sk)
}

pub fn snapshot_sk(ulid: &str) -> String {
    format!("S#{ulid}")
}

/// The prefix of every snapshot item of a conversation (newest first by ULID).
pub const SNAPSHOT_PREFIX: &str = "S#";

/// A reply record: part `part` of the reply to the message with ULID `ulid` (`R#<ULID>#<part:03>`).
pub fn reply_sk(ulid: &str, part: u32) -> String {
    format!("R#{ulid}#{part:03}")
}

/// Partitions of the `expiry` index's `media` kind: one attachment per inbound photo or voice
/// note would put every message with media on one key.
pub const MEDIA_EXPIRY_SHARDS: u32 = 16;

/// The `expiryKind` of a ready attachment: `media#<nn>`, nn = FNV-1a(storageId) mod
/// [`MEDIA_EXPIRY_SHARDS`].
pub fn media_expiry_kind(storage_id: &str) -> String {
    format!("media#{:02}", shard_of(storage_id, MEDIA_EXPIRY_SHARDS))
}

/// Every `expiryKind` partition of a kind the sweep asks for: `media` is the unsharded partition
/// of attachments written before the shards, then its [`MEDIA_EXPIRY_SHARDS`]; the snapshot
/// kinds are one partition each (one per drain, never per message).
pub fn expiry_partitions(kind: &str) -> Vec<String> {
    if kind == "media" {
        std::iter::once(kind.to_string()).chain((0..MEDIA_EXPIRY_SHARDS).map(|n| format!("media#{n:02}"))).collect()
    } else {
        vec![kind.to_string()]
    }
}

pub fn attachment_sk(storage_id: &str) -> String {
    format!("A#{storage_id}")
}

/// The claim of a storage id for one conversation (`pk = MEDIA#<storageId>`, `sk = MEDIA`).
pub fn storage_claim_key(storage_id: &str) -> Item {
    key(format!("MEDIA#{storage_id}"), "MEDIA")
}

/// An agent profile in the control table.
pub fn agent_profile_key(agent_key: &str) -> Item {
    key(format!("AGENT#{agent_key}"), AGENT_PROFILE_SK)
}

/// The message runtime config in the control table.
pub fn message_config_key() -> Item {
    key("CONFIG", "message")
}

/// The stored scaling policy in the control table.
pub fn scaling_policy_key() -> Item {
    key("CONFIG", "scaling")
}

/// The stored provider runtime config in the control table.
pub fn provider_config_key() -> Item {
    key("CONFIG", "provider")
}

/// The ready hint in the control table: the `ready`/`due` shards with claimable work, as
/// reconcile last saw them (`queue::shards`).
pub fn ready_hint_key() -> Item {
    key("QUEUE", "READY_HINT")
}

/// Reconcile's single-flight lease and coalescing flag in the control table.
pub fn reconcile_state_key() -> Item {
    key("RECONCILE", "STATE")
}

/// The partition of warm (stopped, kept) machines in the control table.
pub const WARM_PK: &str = "WARM";

/// A warm machine's item.
pub fn warm_key(machine_id: &str) -> Item {
    key(WARM_PK, machine_id)
}

/// A bootstrap code, by the SHA-256 of the code (the code itself is never stored).
pub fn bootstrap_key(code_hash: &str) -> Item {
    key(format!("BOOT#{code_hash}"), "BOOT")
}

/// A worker row.
pub fn worker_key(worker_id: &str) -> Item {
    HashMap::from([("workerId".to_string(), super::s(worker_id))])
}

/// A `pk`/`sk` key.
pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_string(), super::s(pk)), ("sk".to_string(), super::s(sk))])
}

// ---------- identity (control table) and Telegram updates (queue table) ----------

/// A bot and the agent it belongs to: the bot's uniqueness record.
pub fn bot_key(bot_identity: &str) -> Item {
    key(format!("BOT#{bot_identity}"), "OWNER")
}

/// The webhook hook of a secret, keyed by the secret's SHA-256 (hex).
pub fn hook_key(secret_sha256: &str) -> Item {
    key(format!("HOOK#{secret_sha256}"), "HOOK")
}

pub fn user_pk(consumer_user_id: &str) -> String {
    format!("USER#{consumer_user_id}")
}

/// The consumer's active binding (one per consumer).
pub fn binding_pointer_key(consumer_user_id: &str) -> Item {
    key(user_pk(consumer_user_id), BINDING_SK)
}

/// The prefix of a consumer's binding history rows.
pub const BINDING_HISTORY_PREFIX: &str = "BH#";

/// One binding's history row: by time, then id.
pub fn binding_history_key(consumer_user_id: &str, bound_at: Millis, binding_id: &str) -> Item {
    key(user_pk(consumer_user_id), format!("{BINDING_HISTORY_PREFIX}{bound_at:013}#{binding_id}"))
}

/// The prefix of a consumer's latest-code pointers (one per agent).
pub const USER_PAIRING_PREFIX: &str = "PAIRING#";

/// The consumer's latest pairing code for an agent.
pub fn user_pairing_key(consumer_user_id: &str, agent_key: &str) -> Item {
    key(user_pk(consumer_user_id), format!("{USER_PAIRING_PREFIX}{agent_key}"))
}

pub fn pairing_key(code: &str) -> Item {
    key(format!("PAIR#{code}"), PAIRING_SK)
}

pub fn bot_bindings_pk(bot_identity: &str) -> String {
    format!("BOTB#{bot_identity}")
}

/// A bot's pairing codes (one pointer per code, kept until the code's TTL): what a bot change
/// expires.
pub fn bot_pairing_key(bot_identity: &str, code: &str) -> Item {
    key(bot_pairings_pk(bot_identity), code)
}

pub fn bot_pairings_pk(bot_identity: &str) -> String {
    format!("BOTP#{bot_identity}")
}

/// A binding uniqueness item: (bot, Telegram user) or (bot, chat), under the bot's partition.
pub fn guard_key(g: &crate::identity::rules::Guard) -> Item {
    use crate::identity::rules::Guard;
    match g {
        Guard::TgUser { bot, user } => key(bot_bindings_pk(bot), format!("U#{user}")),
        Guard::TgChat { bot, chat } => key(bot_bindings_pk(bot), format!("C#{chat}")),
    }
}

/// A pairing-attempt counter: `scope` is `chat` or `bot`, one item per window.
pub fn attempt_key(scope: &str, id: &str, window: i64) -> Item {
    key(format!("RL#{scope}#{id}"), format!("W#{window}"))
}

/// An accepted Telegram update (queue table; its stream feeds the process stage).
pub fn update_key(bot_identity: &str, update_id: i64) -> Item {
    key(format!("{UPDATE_PK_PREFIX}{bot_identity}"), format!("U#{update_id}"))
}

/// The partition prefix of accepted updates (the stream filter matches on it).
pub const UPDATE_PK_PREFIX: &str = "TG#";

/// The sort key of an agent profile (`AGENT#<agentKey>`).
pub const AGENT_PROFILE_SK: &str = "PROFILE";
/// The sort key of a consumer's active-binding pointer (`USER#<id>`).
pub const BINDING_SK: &str = "BINDING";
/// The sort key of a pairing code (`PAIR#<code>`).
pub const PAIRING_SK: &str = "CODE";

// ---------- message templates and push templates (control table) ----------

/// The partition of one company's templates and broadcasts.
pub fn company_pk(company_id: &str) -> String {
    format!("CO#{company_id}")
}

/// The prefix of a company's message template items.
pub const MESSAGE_TEMPLATE_PREFIX: &str = "MTPL#";

/// A message template item (`CO#<companyId>` / `MTPL#<ULID>`).
pub fn message_template_key(company_id: &str, ulid: &str) -> Item {
    key(company_pk(company_id), format!("{MESSAGE_TEMPLATE_PREFIX}{ulid}"))
}

/// The prefix of a company's message template key guards.
pub const MESSAGE_TEMPLATE_KEY_PREFIX: &str = "MTKEY#";

/// The uniqueness guard of a message template key within its company.
pub fn message_template_key_guard(company_id: &str, template_key: &str) -> Item {
    key(company_pk(company_id), format!("{MESSAGE_TEMPLATE_KEY_PREFIX}{template_key}"))
}

/// The prefix of a company's push template items.
pub const PUSH_TEMPLATE_PREFIX: &str = "PTPL#";

/// A push template item (`CO#<companyId>` / `PTPL#<ULID>`).
pub fn push_template_key(company_id: &str, ulid: &str) -> Item {
    key(company_pk(company_id), format!("{PUSH_TEMPLATE_PREFIX}{ulid}"))
}

/// The uniqueness guard of a push template key within its company.
pub fn push_template_key_guard(company_id: &str, template_key: &str) -> Item {
    key(company_pk(company_id), format!("PTKEY#{template_key}"))
}

// ---------- global skills (control table) ----------

/// The partition of every skill row (sorted by slug): listing and the manifest are one Query.
pub const SKILLS_PK: &str = "SKILLS";

/// A skill row, by slug.
pub fn skill_key(slug: &str) -> Item {
    key(SKILLS_PK, slug)
}

/// The partition of a skill's versions and release history.
pub fn skill_pk(slug: &str) -> String {
    format!("SKILL#{slug}")
}

/// The prefix of a skill's version rows.
pub const SKILL_VERSION_PREFIX: &str = "V#";
/// The prefix of a skill's release history rows.
pub const SKILL_RELEASE_PREFIX: &str = "R#";

/// One immutable version of a skill.
pub fn skill_version_key(slug: &str, version: &str) -> Item {
    key(skill_pk(slug), format!("{SKILL_VERSION_PREFIX}{version}"))
}

/// One release history row of a skill (ULID: activation order).
pub fn skill_release_key(slug: &str, release_id: &str) -> Item {
    key(skill_pk(slug), format!("{SKILL_RELEASE_PREFIX}{release_id}"))
}

// ---------- usage metering (control table) ----------

/// The once-per-message usage record (its conditional put makes the aggregation count once).
pub fn usage_marker_key(message_id: &str) -> Item {
    key(format!("USAGE#M#{message_id}"), "USAGE")
}

/// The partition of one counter shard of an agent's usage; one item per UTC day (`D#<day>`).
pub fn usage_agent_pk(agent_key: &str, shard: u32) -> String {
    format!("USAGE#A#{agent_key}#{shard}")
}

/// The prefix of a day's sort key in usage partitions.
pub const USAGE_DAY_PREFIX: &str = "D#";

/// An agent's usage counter item for one shard and day.
pub fn usage_agent_key(agent_key: &str, shard: u32, day: &str) -> Item {
    key(usage_agent_pk(agent_key, shard), format!("{USAGE_DAY_PREFIX}{day}"))
}

/// The partition of one consumer user's usage: one item per (agent, UTC day).
pub fn usage_user_pk(consumer_user_id: &str) -> String {
    format!("USAGE#U#{consumer_user_id}")
}

/// The sort key prefix of a (user, agent) pair's days: `A#<agentKey>#D#`.
pub fn usage_user_agent_prefix(agent_key: &str) -> String {
    format!("A#{agent_key}#{USAGE_DAY_PREFIX}")
}

/// A consumer user's usage counter item for one agent and day.
pub fn usage_user_key(consumer_user_id: &str, agent_key: &str, day: &str) -> Item {
    key(usage_user_pk(consumer_user_id), format!("{}{day}", usage_user_agent_prefix(agent_key)))
}

// ---------- push jobs, dispatch records and broadcasts (control table; `getUserAgentPushStats` reads them too) ----------

/// The partition of one user's push jobs.
pub fn push_user_pk(consumer_user_id: &str) -> String {
    format!("PJ#{consumer_user_id}")
}

/// The prefix of a user's push job items.
pub const PUSH_JOB_PREFIX: &str = "JOB#";

/// A push job item (`PJ#<consumerUserId>` / `JOB#<ULID>`).
pub fn push_job_key(consumer_user_id: &str, ulid: &str) -> Item {
    key(push_user_pk(consumer_user_id), format!("{PUSH_JOB_PREFIX}{ulid}"))
}

/// The `pushDue` index partition of enabled recurring jobs (sparse: others lack the attribute).
pub const PUSH_DUE_SHARD: &str = "due";

/// The partition of one job's dispatch records and run-key guards.
pub fn push_dispatch_pk(job_id: &str) -> String {
    format!("PJD#{job_id}")
}

/// The prefix of a job's dispatch records (newest last: by creation time).
pub const PUSH_DISPATCH_PREFIX: &str = "D#";

/// One dispatch record of a job, by creation time then id.
pub fn push_dispatch_key(job_id: &str, created_at: Millis, ulid: &str) -> Item {
    key(push_dispatch_pk(job_id), format!("{PUSH_DISPATCH_PREFIX}{created_at:013}#{ulid}"))
}

/// The (jobId, runKey) guard: at most one dispatch per run key.
pub fn push_run_guard_key(job_id: &str, run_key: &str) -> Item {
    key(push_dispatch_pk(job_id), format!("R#{run_key}"))
}

/// A broadcast of a company, by its idempotency key.
pub fn broadcast_key(company_id: &str, idempotency_key: &str) -> Item {
    key(company_pk(company_id), format!("BC#{idempotency_key}"))
}

/// The prefix of a company's broadcasts.
pub const BROADCAST_PREFIX: &str = "BC#";

/// The partition of one broadcast's dispatch rows.
pub fn broadcast_dispatch_pk(broadcast_id: &str) -> String {
    format!("PBC#{broadcast_id}")
}

/// A broadcast's dispatch row for one agent.
pub fn broadcast_dispatch_key(broadcast_id: &str, agent_key: &str) -> Item {
    key(broadcast_dispatch_pk(broadcast_id), format!("A#{agent_key}"))
}

/// The prefix of a company's agent roster entries.
pub const COMPANY_AGENT_PREFIX: &str = "CAGENT#";

/// An agent of a company's roster (the broadcast's targets).
pub fn company_agent_key(company_id: &str, agent_key: &str) -> Item {
    key(company_pk(company_id), format!("{COMPANY_AGENT_PREFIX}{agent_key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_and_keys() {
        assert_eq!(ready_shard(0), "r0");
        assert_eq!(due_shard(3), "d3");
        assert_eq!(unlocked_shard(1, 10, 10), "d1");
        assert_eq!(unlocked_shard(1, 11, 10), "r1");
        assert_eq!(locked_shard(7), "l7");
        assert_eq!(pick_shard(1), 0);
        let picked: std::collections::BTreeSet<u32> = (0..2_000).map(|_| pick_shard(8)).collect();
        assert_eq!(picked, (0..8).collect(), "every shard, none beyond");
        assert!(shard_of("abc", 8) < 8);
        assert!(open_key(5, "B") < open_key(10, "A"));
        assert!(CONV_OPEN_KEY < open_key(0, "0").as_str());
        assert_eq!(ttl_seconds(12_345), 12);
    }

    #[test]
    fn media_expiry_kinds_spread_and_the_sweep_reads_them_all() {
        let kinds: std::collections::BTreeSet<String> =
            (0..500).map(|i| media_expiry_kind(&format!("st-{i}"))).collect();
        assert_eq!(kinds.len(), MEDIA_EXPIRY_SHARDS as usize);
        let read = expiry_partitions("media");
        assert!(kinds.iter().all(|k| read.contains(k)));
        assert_eq!(read[0], "media", "the partition of older attachments");
        assert_eq!(expiry_partitions("snapshot"), vec!["snapshot".to_string()]);
    }

    #[test]
    fn message_keys_parse_back() {
        let k = message_keys("c", "01ARZ3NDEKTSV4RRFFQ69G5FAV", 7);
        assert_eq!(k.pk, "C#c");
        assert_eq!(message_ulid(&k.sk), "01ARZ3NDEKTSV4RRFFQ69G5FAV");
        assert!(k.open_key.starts_with("Q#0000000000007#"));
    }

    #[test]
    fn a_message_keeps_its_status_shard_and_messages_spread_over_the_shards() {
        let u = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        let nn = |st| status_part(st, u).split_once('#').unwrap().1.to_string();
        assert_eq!(nn(MessageStatus::Queued), nn(MessageStatus::Done));
        assert_eq!(nn(MessageStatus::Processing), nn(MessageStatus::DeadLetter));
        assert_eq!(message_keys("c", u, 7).status_part, status_part(MessageStatus::Queued, u));
        assert!(status_part(MessageStatus::DeadLetter, u).starts_with("dead_letter#"));
        assert_eq!(status_partition(MessageStatus::Done, 3), "done#03");
        // ULIDs made in the same millisecond (same prefix) still spread over the shards.
        let mut seen = std::collections::BTreeMap::<String, u32>::new();
        for i in 0..640 {
            *seen
                .entry(status_part(MessageStatus::Queued, &crate::ids::ulid(1_700_000_000_000 + i / 64)))
                .or_default() += 1;
        }
        assert_eq!(seen.len(), STATUS_SHARDS as usize, "{seen:?}");
        assert!(seen.values().all(|n| *n <= 60), "no shard takes 3x its share: {seen:?}");
    }

    #[test]
    fn due_rank_orders_priority_then_due_time_then_insertion() {
        let mut v = [
            due_rank(50.0, 10, "01B"),
            due_rank(100.0, 99, "01Z"),
            due_rank(50.0, 10, "01A"),
            due_rank(50.5, 500, "01C"),
            due_rank(0.0, 1, "01D"),
            due_rank(50.0, 5, "01E"),
            due_rank(-3.0, 0, "01F"),
        ];
        v.sort();
        let order: Vec<&str> = v.iter().map(|r| r.rsplit('#').next().unwrap()).collect();
        assert_eq!(order, vec!["01Z", "01C", "01E", "01A", "01B", "01F", "01D"]);
        assert_eq!(due_rank(7.25, 3, "u").len(), 16 + 1 + 13 + 1 + 1);
    }
}
