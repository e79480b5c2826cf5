//! Pruners over fixture histories: the median rule and ASHA rungs.

use fer_lab::prune::{self, Decision};
use fer_lab::spec::{PrunerKind, SchedulerConfig};

fn pruned(d: &Decision) -> bool {
    d.is_prune()
}

/// Four completed trials; at epoch 3 their values are 0.5, 0.5, 0.75, 0.9
/// (exact in binary), so the median there is 0.625.
fn completed() -> Vec<Vec<f64>> {
    vec![
        vec![0.30, 0.40, 0.50, 0.55],
        vec![0.35, 0.50, 0.50, 0.62],
        vec![0.40, 0.55, 0.75, 0.70],
        vec![0.50, 0.80, 0.90, 0.95],
    ]
}

#[test]
fn median_condemns_a_trial_below_and_spares_one_above() {
    let slow = [0.2, 0.3, 0.412];
    match prune::median(&slow, &completed(), 2, 3) {
        Decision::Prune { reason } => assert_eq!(
            reason,
            "val acc 41.2% after epoch 3 is below the median 62.5% of 4 completed trials"
        ),
        Decision::Continue => panic!("a trial far below the median goes on"),
    }
    let good = [0.2, 0.3, 0.7];
    assert_eq!(prune::median(&good, &completed(), 2, 3), Decision::Continue);
}

#[test]
fn median_exactly_at_the_median_is_spared() {
    // Odd count: 0.5, 0.75, 0.9 -> median 0.75.
    let three = &completed()[1..];
    assert_eq!(
        prune::median(&[0.1, 0.1, 0.75], three, 0, 3),
        Decision::Continue
    );
    assert!(pruned(&prune::median(&[0.1, 0.1, 0.749], three, 0, 3)));
    // Even count: the mean of the middle two, (0.5 + 0.75) / 2.
    assert_eq!(
        prune::median(&[0.1, 0.1, 0.625], &completed(), 0, 3),
        Decision::Continue
    );
    assert!(pruned(&prune::median(
        &[0.1, 0.1, 0.624],
        &completed(),
        0,
        3
    )));
}

#[test]
fn median_never_prunes_during_warm_up() {
    for e in 1..=3 {
        let terrible = vec![0.0; e];
        assert_eq!(
            prune::median(&terrible, &completed(), 3, 1),
            Decision::Continue,
            "epoch {e} is within the 3 warm-up epochs"
        );
    }
    assert!(pruned(&prune::median(&[0.0; 4], &completed(), 3, 1)));
    assert_eq!(prune::median(&[], &completed(), 0, 1), Decision::Continue);
}

#[test]
fn median_needs_min_trials_completed_at_that_epoch() {
    let low = [0.0, 0.0, 0.0];
    assert_eq!(
        prune::median(&low, &completed()[..2], 0, 3),
        Decision::Continue
    );
    assert!(pruned(&prune::median(&low, &completed()[..3], 0, 3)));
    // Completed trials that stopped before epoch 3 do not count there.
    let short = vec![vec![0.9, 0.9], vec![0.9, 0.9], vec![0.9, 0.9], vec![0.9]];
    assert_eq!(prune::median(&low, &short, 0, 1), Decision::Continue);
    assert!(pruned(&prune::median(&low[..2], &short, 0, 3)));
    // No completed trials at all: nothing to compare with.
    assert_eq!(prune::median(&low, &[], 0, 1), Decision::Continue);
}

#[test]
fn median_handles_nan() {
    // A NaN current value is pruned after warm-up, never during it.
    match prune::median(&[0.5, f64::NAN], &[], 1, 3) {
        Decision::Prune { reason } => assert_eq!(reason, "val acc is NaN after epoch 2"),
        Decision::Continue => panic!("NaN goes on"),
    }
    assert_eq!(prune::median(&[f64::NAN], &[], 1, 3), Decision::Continue);
    // NaN in completed histories is ignored: it counts neither for the median nor for min_trials.
    let with_nan = vec![vec![f64::NAN], vec![f64::NAN], vec![0.4]];
    assert_eq!(prune::median(&[0.1], &with_nan, 0, 2), Decision::Continue);
    match prune::median(&[0.1], &with_nan, 0, 1) {
        Decision::Prune { reason } => assert_eq!(
            reason,
            "val acc 10.0% after epoch 1 is below the median 40.0% of 1 completed trial"
        ),
        Decision::Continue => panic!("below the only value"),
    }
}

#[test]
fn asha_rungs_are_min_epochs_times_powers_of_the_factor() {
    let rungs: Vec<usize> = (1..=30).filter(|&e| prune::is_rung(e, 3, 1)).collect();
    assert_eq!(rungs, [1, 3, 9, 27]);
    let rungs: Vec<usize> = (1..=40).filter(|&e| prune::is_rung(e, 2, 5)).collect();
    assert_eq!(rungs, [5, 10, 20, 40]);
    assert!(!prune::is_rung(0, 3, 1));
    assert!(!prune::is_rung(3, 1, 1), "factor 1 has no rungs");
    assert!(!prune::is_rung(3, 3, 0), "min_epochs 0 has no rungs");
}

/// Eight other trials at epoch 3 (values 0.1 ..= 0.8); with the current one, n = 9.
fn others_at_3() -> Vec<Vec<f64>> {
    (1..=8).map(|i| vec![0.05, 0.05, i as f64 / 10.0]).collect()
}

#[test]
fn asha_promotes_the_top_third_at_a_rung() {
    let others = others_at_3();
    // n = 9, keep 3: ranks 1..=3 go on.
    for (value, rank) in [(0.95, 1), (0.75, 2), (0.65, 3)] {
        assert_eq!(
            prune::asha(&[0.0, 0.0, value], &others, 3, 1),
            Decision::Continue,
            "rank {rank} of 9 goes on"
        );
    }
    match prune::asha(&[0.0, 0.0, 0.55], &others, 3, 1) {
        Decision::Prune { reason } => assert_eq!(
            reason,
            "val acc 55.0% at rung epoch 3 ranks 4 of 9; only the top 3 go on"
        ),
        Decision::Continue => panic!("rank 4 of 9 goes on"),
    }
    // A tie with the third value ranks alike: spared.
    assert_eq!(
        prune::asha(&[0.0, 0.0, 0.6], &others, 3, 1),
        Decision::Continue
    );
    // Trials that did not reach epoch 3, or recorded NaN there, do not count.
    let mut fewer = others[..2].to_vec(); // 0.1, 0.2
    fewer.push(vec![0.9, 0.9]);
    fewer.push(vec![0.9, 0.9, f64::NAN]);
    // n = 3, keep 1: only the best goes on.
    assert_eq!(
        prune::asha(&[0.0, 0.0, 0.25], &fewer, 3, 1),
        Decision::Continue
    );
    assert!(pruned(&prune::asha(&[0.0, 0.0, 0.15], &fewer, 3, 1)));
}

#[test]
fn asha_continues_off_rung() {
    let others = others_at_3();
    for e in [2, 4, 5, 8] {
        let worst = vec![0.0; e];
        assert_eq!(
            prune::asha(&worst, &others, 3, 1),
            Decision::Continue,
            "epoch {e} is not a rung"
        );
    }
    assert_eq!(prune::asha(&[], &others, 3, 1), Decision::Continue);
}

#[test]
fn asha_promotes_a_lone_trial() {
    assert_eq!(prune::asha(&[0.01], &[], 3, 1), Decision::Continue);
    assert_eq!(
        prune::asha(&[0.0, 0.0, 0.01], &[], 3, 1),
        Decision::Continue
    );
    // Two trials, factor 3: keep max(1, 2 / 3) = 1.
    assert!(pruned(&prune::asha(&[0.1], &[vec![0.2]], 3, 1)));
    // NaN at a rung is pruned even alone.
    assert!(pruned(&prune::asha(&[f64::NAN], &[], 3, 1)));
}

#[test]
fn decide_dispatches_on_the_pruner() {
    let cfg = SchedulerConfig {
        warmup_epochs: 0,
        min_trials: 1,
        reduction_factor: 3,
        min_epochs: 1,
        ..SchedulerConfig::default()
    };
    let current = [0.1];
    let completed = vec![vec![0.9]];
    let others: Vec<Vec<f64>> = Vec::new();
    assert_eq!(
        prune::decide(PrunerKind::None, &cfg, &current, &completed, &completed),
        Decision::Continue
    );
    // Median reads `completed` only.
    assert!(pruned(&prune::decide(
        PrunerKind::Median,
        &cfg,
        &current,
        &completed,
        &others
    )));
    // ASHA reads `others` only: alone at rung 1, it is promoted.
    assert_eq!(
        prune::decide(PrunerKind::Asha, &cfg, &current, &completed, &others),
        Decision::Continue
    );
    assert!(pruned(&prune::decide(
        PrunerKind::Asha,
        &cfg,
        &current,
        &others,
        &completed
    )));
}
