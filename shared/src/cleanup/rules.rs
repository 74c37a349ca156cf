//! Pure decisions of Fly cleanup: what is in scope, what verification found, concurrency.

use super::model::MAX_CONCURRENCY;
use crate::reconcile::provider::{DEPLOYMENT_TAG, Machine, MachineState, Volume, WORKER_TAG};
use std::collections::BTreeSet;

/// Whether cleanup may touch this machine: with `all_in_app`, every machine; otherwise only the
/// ones tagged with `deployment` (untagged machines and other deployments' are never touched).
pub fn machine_in_scope(m: &Machine, deployment: &str, all_in_app: bool) -> bool {
    all_in_app || m.tagged_for(deployment)
}

/// Whether cleanup may delete this volume: with `all_in_app`, every volume; otherwise volumes
/// tagged with `deployment`, and volumes attached to or mounted by an in-scope machine.
pub fn volume_in_scope(
    v: &Volume,
    deployment: &str,
    all_in_app: bool,
    scoped_machines: &BTreeSet<String>,
    scoped_mounts: &BTreeSet<String>,
) -> bool {
    all_in_app
        || v.metadata.get(DEPLOYMENT_TAG).map(String::as_str) == Some(deployment)
        || v.attached_machine.as_ref().is_some_and(|m| scoped_machines.contains(m))
        || scoped_mounts.contains(&v.id)
}

/// The worker a machine was created for (its `WORKER_TAG`), when it has one.
pub fn worker_of(m: &Machine) -> Option<&str> {
    m.metadata.get(WORKER_TAG).map(String::as_str).filter(|w| !w.is_empty())
}

/// Of `targets`, the machines a verification listing still shows alive (any state but `Gone`).
pub fn machines_remaining(targets: &[String], listing: &[Machine]) -> Vec<String> {
    let alive: BTreeSet<&str> =
        listing.iter().filter(|m| m.state != MachineState::Gone).map(|m| m.id.as_str()).collect();
    targets.iter().filter(|id| alive.contains(id.as_str())).cloned().collect()
}

/// Of `targets`, the volumes a verification listing still shows.
pub fn volumes_remaining(targets: &[String], listing: &[Volume]) -> Vec<String> {
    let present: BTreeSet<&str> = listing.iter().map(|v| v.id.as_str()).collect();
    targets.iter().filter(|id| present.contains(id.as_str())).cloned().collect()
}

/// A requested concurrency: absent → `default`; otherwise 1..=32.
pub fn concurrency(requested: Option<u32>, default: u32) -> usize {
    requested.unwrap_or(default).clamp(1, MAX_CONCURRENCY) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn m(id: &str, state: MachineState, tags: &[(&str, &str)]) -> Machine {
        Machine {
            id: id.into(),
            name: id.into(),
            region: "ams".into(),
            image: "i".into(),
            state,
            raw_state: String::new(),
            metadata: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            volume_ids: vec![],
        }
    }

    fn v(id: &str, attached: Option<&str>, dep: Option<&str>) -> Volume {
        Volume {
            id: id.into(),
            name: id.into(),
            region: "ams".into(),
            attached_machine: attached.map(str::to_string),
            metadata: dep.map(|d| BTreeMap::from([(DEPLOYMENT_TAG.to_string(), d.to_string())])).unwrap_or_default(),
        }
    }

    #[test]
    fn scope_is_the_deployment_tag_unless_the_whole_app_is_asked_for() {
        let mine = m("a", MachineState::Active, &[(DEPLOYMENT_TAG, "d1"), (WORKER_TAG, "w1")]);
        let other = m("b", MachineState::Active, &[(DEPLOYMENT_TAG, "d2")]);
        let untagged = m("c", MachineState::Stopped, &[]);
        assert!(machine_in_scope(&mine, "d1", false));
        assert!(!machine_in_scope(&other, "d1", false) && !machine_in_scope(&untagged, "d1", false));
        assert!(machine_in_scope(&other, "d1", true) && machine_in_scope(&untagged, "d1", true));
        assert_eq!(worker_of(&mine), Some("w1"));
        assert_eq!(worker_of(&other), None);

        let scoped = BTreeSet::from(["a".to_string()]);
        let mounts = BTreeSet::from(["vm".to_string()]);
        assert!(volume_in_scope(&v("v1", None, Some("d1")), "d1", false, &scoped, &mounts));
        assert!(volume_in_scope(&v("v2", Some("a"), None), "d1", false, &scoped, &mounts));
        assert!(volume_in_scope(&v("vm", None, None), "d1", false, &scoped, &mounts));
        assert!(!volume_in_scope(&v("v3", Some("b"), Some("d2")), "d1", false, &scoped, &mounts));
        assert!(!volume_in_scope(&v("v4", None, None), "d1", false, &scoped, &mounts));
        assert!(volume_in_scope(&v("v4", None, None), "d1", true, &scoped, &mounts));
    }

    #[test]
    fn verification_and_concurrency() {
        let listing = vec![
            m("a", MachineState::Stopping, &[]),
            m("b", MachineState::Gone, &[]),
            m("x", MachineState::Active, &[]),
        ];
        let targets = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(machines_remaining(&targets, &listing), vec!["a"]);
        assert_eq!(volumes_remaining(&["v1".into(), "v2".into()], &[v("v2", None, None)]), vec!["v2"]);
        assert_eq!(concurrency(None, 6), 6);
        assert_eq!(concurrency(Some(0), 6), 1);
        assert_eq!(concurrency(Some(1_000), 6), 32);
    }
}
