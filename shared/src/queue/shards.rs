//! Which shards of the `ready`/`due` indexes an unassigned claim probes (issue 12).
//!
//! With `READY_SHARDS` partitions no partition key takes more than its share of the queue's
//! writes, but a claimer can no longer read "the queue" in one Query. Reading every shard on every
//! poll would make an idle worker's poll grow with the shard count, so a claim probes at most
//! [`HINTED_PROBES`] shards that the **ready hint** lists, plus one shard of its own rotation:
//!
//! - reconcile writes the hint once per cycle (one item, so its write rate is bounded by the cycle
//!   rate, never by the message rate) from the demand read it does anyway: the shards holding a due
//!   conversation that no live worker owns, a conversation whose backoff or schedule ran out, or an
//!   expired lock;
//! - a claimer reads it at most once per [`HINT_CACHE_MS`] and skips the shards it found empty
//!   itself since the hint was written;
//! - the rotation shard finds work the hint does not list yet (written after the last cycle)
//!   without waiting for the next one.
//!
//! Without a usable hint (never written: a new deployment before its first cycle; older than
//! [`HINT_MAX_AGE_MS`]: reconcile is not running; written for another shard count) the claim
//! scans every shard, as with one shard: correct first, cheap when reconcile runs.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Hinted shards one claim probes at most.
pub const HINTED_PROBES: usize = 2;
/// How long a claimer keeps the hint it read.
pub const HINT_CACHE_MS: Millis = 1_000;
/// A hint older than this is ignored (reconcile's schedule runs every 5 minutes; twice that).
pub const HINT_MAX_AGE_MS: Millis = 600_000;

/// The ready hint: which shards had claimable work when reconcile last looked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyHint {
    /// When it was observed.
    pub at: Millis,
    /// The `READY_SHARDS` it was observed with.
    pub shards: u32,
    /// Shards with a due (or promotable) conversation no live worker owns.
    pub due: Vec<u32>,
    /// Shards with an expired lock (recoverable by a claim).
    pub expired: Vec<u32>,
}

/// The three kinds of `ready`/`due` partitions (`d<n>`, `r<n>`, `l<n>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    Due,
    Waiting,
    Locked,
}

/// Builds a [`ReadyHint`] from the conversations a demand read returns.
#[derive(Debug, Clone, Default)]
pub struct HintBuilder {
    due: BTreeSet<u32>,
    expired: BTreeSet<u32>,
}

impl HintBuilder {
    /// One conversation seen in partition `kind` of `shard`: `ready_at` is its `readyAt`,
    /// `owner_until` its sticky owner's claim (a due conversation a live worker owns is not work
    /// for unassigned claimers).
    pub fn observe(
        &mut self,
        kind: PartKind,
        shard: u32,
        ready_at: Option<Millis>,
        owner_until: Option<Millis>,
        now: Millis,
    ) {
        let come = ready_at.is_some_and(|t| t <= now);
        let foreign_owner = owner_until.is_some_and(|t| t > now);
        match kind {
            PartKind::Due if !foreign_owner => {
                self.due.insert(shard);
            }
            PartKind::Waiting if come && !foreign_owner => {
                self.due.insert(shard);
            }
            PartKind::Locked if come => {
                self.expired.insert(shard);
            }
            _ => {}
        }
    }

    pub fn build(self, shards: u32, now: Millis) -> ReadyHint {
        ReadyHint { at: now, shards, due: self.due.into_iter().collect(), expired: self.expired.into_iter().collect() }
    }
}

/// One shard to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub shard: u32,
    /// Also look for expired locks (`l<n>`).
    pub locked: bool,
    /// Promote newly due conversations when `d<n>` has nothing (a hinted shard: its work may
    /// still wait in `r<n>`).
    pub promote: bool,
}

/// What an unassigned claim reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePlan {
    /// No usable hint: every shard, from a random one (promotion at once where `d<n>` is empty).
    pub scan: bool,
    pub probes: Vec<Probe>,
}

/// The shards an unassigned claim probes, in order. `start` is random per call, `rotation` the
/// claimer's own rotating shard, `empty_at` when this claimer last found a shard empty.
pub fn plan_probes(
    shards: u32,
    hint: Option<&ReadyHint>,
    empty_at: &HashMap<u32, Millis>,
    start: u32,
    rotation: u32,
    now: Millis,
) -> ProbePlan {
    let shards = shards.max(1);
    let usable = hint.filter(|h| h.shards == shards && now - h.at <= HINT_MAX_AGE_MS);
    let Some(h) = usable.filter(|_| shards as usize > HINTED_PROBES + 1) else {
        let probes = (0..shards).map(|i| Probe { shard: (start + i) % shards, locked: true, promote: true }).collect();
        return ProbePlan { scan: true, probes };
    };
    let listed: BTreeSet<u32> = h.due.iter().chain(&h.expired).copied().filter(|s| *s < shards).collect();
    // Skip what this claimer found empty after the hint was observed.
    let fresh: Vec<u32> = listed.into_iter().filter(|s| empty_at.get(s).is_none_or(|t| *t < h.at)).collect();
    let mut probes: Vec<Probe> = Vec::with_capacity(HINTED_PROBES + 1);
    if !fresh.is_empty() {
        let from = start as usize % fresh.len();
        for i in 0..fresh.len().min(HINTED_PROBES) {
            let shard = fresh[(from + i) % fresh.len()];
            probes.push(Probe { shard, locked: h.expired.contains(&shard), promote: true });
        }
    }
    let own = rotation % shards;
    if probes.iter().all(|p| p.shard != own) {
        probes.push(Probe { shard: own, locked: false, promote: false });
    }
    ProbePlan { scan: false, probes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(at: Millis, due: &[u32], expired: &[u32]) -> ReadyHint {
        ReadyHint { at, shards: 64, due: due.to_vec(), expired: expired.to_vec() }
    }

    #[test]
    fn without_a_usable_hint_every_shard_is_scanned_from_the_start() {
        let none = HashMap::new();
        let p = plan_probes(64, None, &none, 10, 0, 1_000);
        assert!(p.scan);
        assert_eq!(p.probes.len(), 64);
        assert_eq!(p.probes[0], Probe { shard: 10, locked: true, promote: true });
        assert_eq!(p.probes[63].shard, 9);
        // Too old, or for another shard count.
        let old = hint(0, &[1], &[]);
        assert!(plan_probes(64, Some(&old), &none, 0, 0, HINT_MAX_AGE_MS + 1).scan);
        assert!(!plan_probes(64, Some(&old), &none, 0, 0, HINT_MAX_AGE_MS).scan);
        let other = ReadyHint { shards: 32, ..hint(0, &[1], &[]) };
        assert!(plan_probes(64, Some(&other), &none, 0, 0, 5).scan);
        // Few shards: scanning them is as cheap as probing.
        assert!(plan_probes(3, Some(&ReadyHint { shards: 3, ..old }), &none, 0, 0, 5).scan);
    }

    #[test]
    fn a_hint_bounds_the_probes_whatever_the_shard_count() {
        let none = HashMap::new();
        for shards in [8u32, 64, 1024] {
            let h = ReadyHint { shards, ..hint(100, &(0..shards).collect::<Vec<_>>(), &[]) };
            let p = plan_probes(shards, Some(&h), &none, 7, 3, 200);
            assert!(!p.scan);
            assert!(p.probes.len() <= HINTED_PROBES + 1, "{shards}: {:?}", p.probes);
        }
        // An empty hint: the claimer's own rotation shard only.
        let p = plan_probes(64, Some(&hint(100, &[], &[])), &none, 7, 70, 200);
        assert_eq!(p.probes, vec![Probe { shard: 6, locked: false, promote: false }]);
    }

    #[test]
    fn hinted_shards_come_first_from_a_random_start_and_expired_ones_read_locks() {
        let none = HashMap::new();
        let h = hint(100, &[4, 9, 20], &[9, 30]);
        let p = plan_probes(64, Some(&h), &none, 1, 50, 200);
        assert_eq!(
            p.probes,
            vec![
                Probe { shard: 9, locked: true, promote: true },
                Probe { shard: 20, locked: false, promote: true },
                Probe { shard: 50, locked: false, promote: false }
            ]
        );
        // The rotation shard is not probed twice.
        let p = plan_probes(64, Some(&h), &none, 0, 4, 200);
        assert_eq!(p.probes.iter().map(|p| p.shard).collect::<Vec<_>>(), vec![4, 9]);
    }

    #[test]
    fn shards_found_empty_since_the_hint_are_skipped_until_a_newer_hint() {
        let h = hint(100, &[4, 9], &[]);
        let empty = HashMap::from([(4, 150), (9, 90)]);
        let p = plan_probes(64, Some(&h), &empty, 0, 60, 200);
        assert_eq!(p.probes.iter().map(|p| p.shard).collect::<Vec<_>>(), vec![9, 60]);
        let newer = hint(160, &[4, 9], &[]);
        let p = plan_probes(64, Some(&newer), &empty, 0, 60, 200);
        assert_eq!(p.probes.iter().map(|p| p.shard).collect::<Vec<_>>(), vec![4, 9, 60]);
    }

    #[test]
    fn the_hint_lists_only_work_an_unassigned_claimer_can_take() {
        let now = 1_000;
        let mut b = HintBuilder::default();
        b.observe(PartKind::Due, 1, Some(900), None, now);
        b.observe(PartKind::Due, 2, Some(900), Some(now + 10), now); // a live owner's
        b.observe(PartKind::Due, 3, Some(900), Some(now), now); // the owner's claim ran out
        b.observe(PartKind::Waiting, 4, Some(now), None, now); // promotable
        b.observe(PartKind::Waiting, 5, Some(now + 1), None, now); // not yet
        b.observe(PartKind::Locked, 6, Some(now - 1), None, now); // expired lock
        b.observe(PartKind::Locked, 7, Some(now + 1), None, now); // live lock
        let h = b.build(64, now);
        assert_eq!(h, ReadyHint { at: now, shards: 64, due: vec![1, 3, 4], expired: vec![6] });
    }
}
