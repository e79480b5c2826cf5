//! Random search: `strategy = "random"` draws `samples` points from the
//! space's distributions, reproducibly, and rejects bad distributions with
//! golden error texts (file:line:col, as for the rest of the spec).

use fer_lab::spec::{self, OptimizerKind, TrialPlan};
use std::collections::HashSet;

/// Header lines 1..=14; the `[sweep]` text starts on line 15.
const HEADER: &str = r#"
[experiment]
name = "r"
seed = 3

[data]
root = "some/where"
image_size = 32

[train]
epochs = 2

[[backbone]]
name = "resnet10"
"#;

const SPACE: &str = r#"[sweep]
strategy = "random"
samples = 12

[sweep.space]
lr = { loguniform = [1e-4, 1e-2] }
momentum = { uniform = [0.5, 0.95] }
epochs = { int = [1, 5] }
batch_size = [8, 16, 32]
optimizer = { choice = ["adam", "sgd"] }
"#;

fn with_sweep(sweep: &str) -> String {
    format!("{HEADER}{sweep}")
}

fn plans(text: &str, overrides: &[&str]) -> Vec<TrialPlan> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let spec = spec::parse(text, "x.toml", &overrides).unwrap_or_else(|e| panic!("{e}"));
    spec::expand(&spec)
}

fn error_text(text: &str) -> String {
    match spec::parse(text, "x.toml", &[]) {
        Ok(_) => panic!("spec was accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn params(plans: &[TrialPlan]) -> Vec<String> {
    plans.iter().map(|p| p.params_json()).collect()
}

#[test]
fn a_random_spec_expands_to_samples_points_inside_their_ranges() {
    let plans = plans(&with_sweep(SPACE), &[]);
    assert_eq!(plans.len(), 12);
    let keys: HashSet<String> = plans.iter().map(|p| p.key()).collect();
    assert_eq!(keys.len(), 12, "every plan has its own key");
    for p in &plans {
        let t = &p.train;
        assert!((1e-4..=1e-2).contains(&t.lr), "lr {}", t.lr);
        assert!(
            (0.5..=0.95).contains(&t.momentum),
            "momentum {}",
            t.momentum
        );
        assert!((1..=5).contains(&t.epochs), "epochs {}", t.epochs);
        assert!([8, 16, 32].contains(&t.batch_size));
        assert!([OptimizerKind::Adam, OptimizerKind::Sgd].contains(&t.optimizer));
        // The drawn values are the plan's params, as the leaderboard shows them.
        assert_eq!(p.params["lr"], serde_json::json!(t.lr));
        assert_eq!(p.params["momentum"], serde_json::json!(t.momentum));
        assert!(
            p.params["epochs"].is_u64(),
            "int draws integers: {}",
            p.params["epochs"]
        );
        assert_eq!(p.params["epochs"], serde_json::json!(t.epochs));
        assert_eq!(p.params["batch_size"], serde_json::json!(t.batch_size));
        assert!(p.params["optimizer"].is_string());
        assert_eq!(p.params.len(), 5);
    }
    // loguniform spreads over the decades: some draws below 1e-3, some above.
    assert!(plans.iter().any(|p| p.train.lr < 1e-3));
    assert!(plans.iter().any(|p| p.train.lr > 1e-3));
}

#[test]
fn the_draw_is_reproducible_from_its_seed() {
    let text = with_sweep(SPACE);
    let first = plans(&text, &[]);
    let again = plans(&text, &[]);
    let keys = |ps: &[TrialPlan]| ps.iter().map(|p| p.key()).collect::<Vec<_>>();
    assert_eq!(keys(&first), keys(&again));
    // Without sweep.seed the draw is seeded by experiment.seed (3).
    assert_eq!(keys(&plans(&text, &["sweep.seed=3"])), keys(&first));
    let other = plans(&text, &["sweep.seed=4"]);
    assert_eq!(other.len(), 12);
    assert_ne!(params(&other), params(&first));
    // More samples keep the earlier points as a prefix (their trials are reused).
    let more = plans(&text, &["sweep.samples=20"]);
    assert_eq!(more.len(), 20);
    assert_eq!(keys(&more[..12]), keys(&first));
}

#[test]
fn duplicate_points_are_dropped() {
    let text = with_sweep(
        "[sweep]\nstrategy = \"random\"\nsamples = 50\n\n[sweep.space]\nbatch_size = [8, 16]\noptimizer = { choice = [\"adam\"] }\n",
    );
    let plans = plans(&text, &[]);
    assert_eq!(plans.len(), 2, "only two distinct points exist");
    let keys: HashSet<String> = plans.iter().map(|p| p.key()).collect();
    assert_eq!(keys.len(), 2);
    // An empty space has one point: the [train] section as written.
    let text = with_sweep("[sweep]\nstrategy = \"random\"\nsamples = 3\n");
    let empty = self::plans(&text, &[]);
    assert_eq!(empty.len(), 1);
    assert!(empty[0].params.is_empty());
}

#[test]
fn grid_behaviour_is_unchanged() {
    let text = with_sweep(
        "[sweep]\nstrategy = \"grid\"\n\n[sweep.space]\nlr = [0.001, 0.003]\nbatch_size = [8, 16]\n",
    );
    let plans = plans(&text, &[]);
    let got: Vec<(usize, f64)> = plans
        .iter()
        .map(|p| (p.train.batch_size, p.train.lr))
        .collect();
    assert_eq!(
        got,
        [(8, 0.001), (8, 0.003), (16, 0.001), (16, 0.003)],
        "the product in sorted key order"
    );
    // Grid is the default strategy.
    let text = with_sweep("[sweep.space]\nlr = [0.001, 0.003]\nbatch_size = [8, 16]\n");
    let default = self::plans(&text, &[]);
    assert_eq!(
        default.iter().map(|p| p.key()).collect::<Vec<_>>(),
        plans.iter().map(|p| p.key()).collect::<Vec<_>>()
    );
}

/// `[sweep]` with one space entry; the entry is on line 20.
fn random_entry(entry: &str) -> String {
    with_sweep(&format!(
        "[sweep]\nstrategy = \"random\"\nsamples = 4\n\n[sweep.space]\n{entry}\n"
    ))
}

#[test]
fn unknown_distribution_lists_the_choices() {
    assert_eq!(
        error_text(&random_entry("lr = { normal = [0.001, 0.01] }")),
        "x.toml:20:17: sweep.space.lr: unknown distribution `normal`, expected one of `choice`, `uniform`, `loguniform`, `int`"
    );
}

#[test]
fn a_range_needs_lo_below_hi() {
    assert_eq!(
        error_text(&random_entry("momentum = { uniform = [0.9, 0.5] }")),
        "x.toml:20:24: sweep.space.momentum.uniform needs lo < hi, got [0.9, 0.5]"
    );
    assert_eq!(
        error_text(&random_entry("epochs = { int = [5, 5] }")),
        "x.toml:20:18: sweep.space.epochs.int needs lo < hi, got [5, 5]"
    );
}

#[test]
fn loguniform_needs_a_positive_lower_bound() {
    assert_eq!(
        error_text(&random_entry("lr = { loguniform = [0, 0.01] }")),
        "x.toml:20:22: sweep.space.lr.loguniform needs lo > 0 (it draws on a log scale), got lo = 0"
    );
}

#[test]
fn range_bounds_must_be_valid_values_of_the_field() {
    // uniform can draw lr = 0, which train.lr rejects.
    assert_eq!(
        error_text(&random_entry("lr = { uniform = [0, 0.01] }")),
        "x.toml:20:19: train.lr must be > 0 and <= 10, got 0 (the lower bound of sweep.space.lr.uniform)"
    );
    assert_eq!(
        error_text(&random_entry("momentum = { uniform = [0.5, 1.5] }")),
        "x.toml:20:30: train.momentum must be >= 0 and < 1, got 1.5 (the upper bound of sweep.space.momentum.uniform)"
    );
    // uniform draws floats; an integer field needs `int`.
    assert_eq!(
        error_text(&random_entry("batch_size = { uniform = [8, 64] }")),
        "x.toml:20:27: sweep.space.batch_size.uniform[0]: invalid type: floating point `8.0`, expected usize"
    );
    assert_eq!(
        error_text(&random_entry("epochs = { int = [0, 5] }")),
        "x.toml:20:19: train.epochs must be in 1..=100000, got 0 (the lower bound of sweep.space.epochs.int)"
    );
}

#[test]
fn malformed_distributions_say_what_is_expected() {
    assert_eq!(
        error_text(&random_entry("epochs = { int = [1.5, 3] }")),
        "x.toml:20:18: sweep.space.epochs.int must be [lo, hi] with two integers, got [1.5, 3]"
    );
    assert_eq!(
        error_text(&random_entry("lr = { uniform = [0.001] }")),
        "x.toml:20:18: sweep.space.lr.uniform must be [lo, hi] with two finite numbers, got [0.001]"
    );
    assert_eq!(
        error_text(&random_entry(
            "lr = { uniform = [0.001, 0.01], int = [1, 2] }"
        )),
        "x.toml:20:6: sweep.space.lr must be one distribution such as { loguniform = [1e-4, 1e-2] }, got a table with 2 keys"
    );
    assert_eq!(
        error_text(&random_entry("lr = 0.001")),
        "x.toml:20:6: sweep.space.lr must be a list of values or a distribution such as { loguniform = [1e-4, 1e-2] }, got a float"
    );
    assert_eq!(
        error_text(&random_entry(
            "optimizer = { choice = [\"adam\", \"adan\"] }"
        )),
        "x.toml:20:33: sweep.space.optimizer.choice[1]: unknown variant `adan`, expected one of `adam`, `adamw`, `sgd`"
    );
    assert_eq!(
        error_text(&random_entry("batch_size = { choice = [] }")),
        "x.toml:20:25: sweep.space.batch_size.choice must list at least one value"
    );
}

#[test]
fn a_distribution_under_grid_is_rejected() {
    let text = with_sweep("[sweep.space]\nlr = { loguniform = [1e-4, 1e-2] }\n");
    assert_eq!(
        error_text(&text),
        "x.toml:16:6: sweep.space.lr: a distribution needs strategy = \"random\""
    );
}

#[test]
fn random_needs_samples() {
    let text = with_sweep("[sweep]\nstrategy = \"random\"\n\n[sweep.space]\nlr = [0.001]\n");
    assert_eq!(
        error_text(&text),
        "x.toml:15:1: sweep.samples must be >= 1 for strategy = \"random\""
    );
    let text = with_sweep("[sweep]\nstrategy = \"random\"\nsamples = 0\n");
    assert_eq!(
        error_text(&text),
        "x.toml:17:11: sweep.samples must be >= 1 for strategy = \"random\""
    );
}

#[test]
fn random_only_settings_under_grid_are_rejected() {
    let text = with_sweep("[sweep]\nsamples = 10\nseed = 1\n\n[sweep.space]\nlr = [0.001]\n");
    assert_eq!(
        error_text(&text),
        "x.toml:16:11: sweep.samples is only used by strategy = \"random\" (a grid runs every point); set sweep.strategy = \"random\" or remove it\n\
         x.toml:17:8: sweep.seed is only used by strategy = \"random\"; set sweep.strategy = \"random\" or remove it"
    );
}

#[test]
fn pruner_settings_are_checked() {
    let text = with_sweep("[scheduler]\npruner = \"asha\"\nreduction_factor = 1\nmin_epochs = 0\n");
    assert_eq!(
        error_text(&text),
        "x.toml:17:20: scheduler.reduction_factor must be >= 2, got 1\n\
         x.toml:18:14: scheduler.min_epochs must be >= 1 (the first rung's epoch), got 0"
    );
}
