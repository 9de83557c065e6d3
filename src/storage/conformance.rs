//! What every [`Storage`] backend must do when workers share a study, written once and run
//! against each backend: `pair` opens two independent connections to one fresh, empty
//! storage (as two worker processes would).

use std::time::Duration;

use super::{Lease, Storage, StorageError, StudyId};
use crate::space::Params;
use crate::trial::{Direction, EpisodeRecord, TrialState};

/// Two connections to one fresh, empty storage.
pub type Pair = Box<dyn Fn() -> (Box<dyn Storage>, Box<dyn Storage>)>;

fn lease(worker: &str, ms: u64) -> Option<Lease> {
    Some(Lease {
        worker: worker.into(),
        duration: Duration::from_millis(ms),
    })
}

fn params(x: f64) -> Params {
    [("x".to_string(), x)].into_iter().collect()
}

fn study(s: &dyn Storage) -> StudyId {
    s.create_study("shared", Direction::Maximize, "{}")
        .unwrap()
        .id
}

fn episode() -> EpisodeRecord {
    EpisodeRecord {
        episode: 0,
        episode_return: 1.0,
        steps: 10,
        status: "Completed".into(),
        seed: Some(u64::MAX - 1),
    }
}

/// A live worker's trial is never claimed, re-queued or written by another; once its lease
/// expires another worker takes it, and the first one's writes are refused.
pub fn leases_hand_a_trial_over_only_after_expiry(pair: &Pair) {
    let (mut a, mut b) = pair();
    a.bind_worker(lease("a", 300));
    b.bind_worker(lease("b", 300));
    let id = study(&*a);
    let n = a
        .create_running_within(id, &params(1.0), 10)
        .unwrap()
        .unwrap();
    assert_eq!(
        a.get_trial(id, n).unwrap().unwrap().worker.as_deref(),
        Some("a")
    );
    assert!(
        b.claim_waiting(id).unwrap().is_none(),
        "a live lease is not claimed"
    );
    assert!(b.requeue_running(id).unwrap().is_empty(), "nor re-queued");
    assert!(matches!(
        b.add_episode(id, n, &episode()),
        Err(StorageError::LeaseLost { .. })
    ));
    // Renewed, the lease outlives its first term.
    std::thread::sleep(Duration::from_millis(200));
    assert!(a.renew_lease(id, n).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    assert!(b.claim_waiting(id).unwrap().is_none(), "renewed: still a's");
    // a goes quiet; after its lease b takes the trial over.
    std::thread::sleep(Duration::from_millis(400));
    let taken = b
        .claim_waiting(id)
        .unwrap()
        .expect("an expired lease is claimed");
    assert_eq!((taken.number, taken.worker.as_deref()), (n, Some("b")));
    assert!(!a.renew_lease(id, n).unwrap());
    for refused in [
        a.add_episode(id, n, &episode()),
        a.report_intermediates(id, n, &[(10, 1.0)]),
        a.set_trial_state(id, n, TrialState::Complete, Some(1.0), None),
        a.set_trial_attr(id, n, "k", &serde_json::json!(1)),
        a.clear_trial_progress(id, n),
    ] {
        assert!(
            matches!(&refused, Err(StorageError::LeaseLost { holder, .. }) if holder == "b"),
            "{refused:?}"
        );
    }
    b.add_episode(id, n, &episode()).unwrap();
    b.set_trial_state(id, n, TrialState::Complete, Some(1.0), None)
        .unwrap();
    let done = a.get_trial(id, n).unwrap().unwrap();
    assert_eq!(
        (done.state, done.worker.as_deref()),
        (TrialState::Complete, Some("b"))
    );
    assert_eq!(done.episodes.len(), 1);
}

/// Workers creating trials together never exceed the limit, and numbers stay unique.
pub fn workers_never_exceed_the_limit(pair: &Pair) {
    let (mut a, mut b) = pair();
    a.bind_worker(lease("a", 60_000));
    b.bind_worker(lease("b", 60_000));
    let id = study(&*a);
    let mut numbers = Vec::new();
    for i in 0..5 {
        let s: &dyn Storage = if i % 2 == 0 { &*a } else { &*b };
        if let Some(n) = s.create_running_within(id, &params(i as f64), 3).unwrap() {
            numbers.push(n);
        }
    }
    assert_eq!(numbers, vec![0, 1, 2]);
    assert_eq!(a.list_trials(id).unwrap().len(), 3);
}

/// Re-queueing at startup touches only trials without a live lease.
pub fn requeue_spares_live_leases(pair: &Pair) {
    let (mut a, mut b) = pair();
    let id = study(&*a);
    // A trial started without a lease (a library user, or a crashed old version).
    let orphan = a
        .create_trial(id, TrialState::Running, &params(0.0))
        .unwrap();
    a.bind_worker(lease("a", 60_000));
    let live = a
        .create_running_within(id, &params(1.0), 10)
        .unwrap()
        .unwrap();
    b.bind_worker(lease("b", 60_000));
    assert_eq!(b.requeue_running(id).unwrap(), vec![orphan]);
    let t = b.get_trial(id, live).unwrap().unwrap();
    assert_eq!(t.state, TrialState::Running);
    let requeued = b.get_trial(id, orphan).unwrap().unwrap();
    assert_eq!(
        (requeued.state, requeued.worker),
        (TrialState::Waiting, None)
    );
}

/// A restarted worker (same host and robot, another process) takes back what its earlier
/// process left at once; another robot's trial waits for its lease.
pub fn a_restarted_worker_requeues_its_own_trials(pair: &Pair) {
    let (mut old, mut new) = pair();
    old.bind_worker(lease("lab:100:/dev/ttyACM0", 60_000));
    let id = study(&*old);
    let mine = old
        .create_running_within(id, &params(1.0), 10)
        .unwrap()
        .unwrap();
    let mut other = old;
    other.bind_worker(lease("lab:101:/dev/ttyACM1", 60_000));
    let theirs = other
        .create_running_within(id, &params(2.0), 10)
        .unwrap()
        .unwrap();
    new.bind_worker(lease("lab:200:/dev/ttyACM0", 60_000));
    assert_eq!(new.requeue_running(id).unwrap(), vec![mine]);
    assert_eq!(
        new.get_trial(id, theirs).unwrap().unwrap().state,
        TrialState::Running
    );
}

/// The operator's verdict changes a finished trial (and only a finished one).
pub fn a_verdict_changes_only_finished_trials(pair: &Pair) {
    let (a, _) = pair();
    let id = study(&*a);
    let done = a
        .create_trial(id, TrialState::Running, &params(1.0))
        .unwrap();
    a.set_trial_state(id, done, TrialState::Complete, Some(2.0), None)
        .unwrap();
    let running = a
        .create_trial(id, TrialState::Running, &params(2.0))
        .unwrap();
    assert!(matches!(
        a.set_verdict(id, running, TrialState::Fail, "no"),
        Err(StorageError::Invalid { .. })
    ));
    a.set_verdict(id, done, TrialState::Pruned, "unsafe")
        .unwrap();
    let t = a.get_trial(id, done).unwrap().unwrap();
    assert_eq!(
        (t.state, t.prune_reason.as_deref(), t.value),
        (TrialState::Pruned, Some("unsafe"), Some(2.0))
    );
    a.set_verdict(id, done, TrialState::Fail, "scraped a leg")
        .unwrap();
    let t = a.get_trial(id, done).unwrap().unwrap();
    assert_eq!((t.state, t.value), (TrialState::Fail, None));
    assert_eq!(t.attrs["fail_reason"], serde_json::json!("scraped a leg"));
    assert!(a.set_verdict(id, done, TrialState::Complete, "x").is_err());
}

/// A study can be deleted with its trials; others stay.
pub fn a_study_is_deleted_with_its_trials(pair: &Pair) {
    let (a, _) = pair();
    let id = study(&*a);
    let other = a
        .create_study("other", Direction::Minimize, "{}")
        .unwrap()
        .id;
    a.create_trial(id, TrialState::Waiting, &params(1.0))
        .unwrap();
    a.create_trial(other, TrialState::Waiting, &params(2.0))
        .unwrap();
    a.delete_study(id).unwrap();
    assert!(a.load_study("shared").unwrap().is_none());
    assert_eq!(a.list_trials(other).unwrap().len(), 1);
    assert!(matches!(
        a.delete_study(id),
        Err(StorageError::NotFound { .. })
    ));
}

/// Every check above, against one backend.
pub fn run_all(pair: Pair) {
    leases_hand_a_trial_over_only_after_expiry(&pair);
    workers_never_exceed_the_limit(&pair);
    requeue_spares_live_leases(&pair);
    a_restarted_worker_requeues_its_own_trials(&pair);
    a_verdict_changes_only_finished_trials(&pair);
    a_study_is_deleted_with_its_trials(&pair);
}
