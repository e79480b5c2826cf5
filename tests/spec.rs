//! Spec parsing and validation: golden error texts with file:line:col,
//! overrides, expansion, and "a bad spec writes nothing".

use fer_lab::spec::{self, OptimizerKind};

const GOOD: &str = r#"
[experiment]
name = "t"
seed = 3

[data]
root = "some/where"
image_size = 32

[train]
epochs = 2
lr = 0.001

[[backbone]]
name = "resnet10"

[[backbone]]
name = "resnet18"

[sweep.space]
lr = [0.001, 0.003]
batch_size = [8, 16]
"#;

fn error_text(text: &str, overrides: &[&str]) -> String {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    match spec::parse(text, "x.toml", &overrides) {
        Ok(_) => panic!("spec was accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_good_spec_expands_to_backbones_times_grid() {
    let spec = spec::parse(GOOD, "x.toml", &[]).expect("valid");
    let plans = spec::expand(&spec);
    assert_eq!(plans.len(), 2 * 2 * 2);
    let first = &plans[0];
    assert_eq!(first.backbone.name, "resnet10");
    assert_eq!((first.train.batch_size, first.train.lr), (8, 0.001));
    assert_eq!(first.params["lr"], serde_json::json!(0.001));
    let keys: std::collections::HashSet<String> = plans.iter().map(|p| p.key()).collect();
    assert_eq!(keys.len(), plans.len(), "every plan has its own key");
    // The key is a pure function of the plan.
    assert_eq!(spec::expand(&spec)[3].key(), plans[3].key());
}

#[test]
fn unknown_key_names_its_position() {
    let text = GOOD.replace("lr = 0.001\n", "lr = 0.001\nlearning_rate = 0.1\n");
    let err = error_text(&text, &[]);
    assert!(
        err.starts_with("x.toml:13:1: unknown field `learning_rate`, expected one of `epochs`"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_its_position_and_expectation() {
    let text = GOOD.replace("epochs = 2", "epochs = \"two\"");
    assert_eq!(
        error_text(&text, &[]),
        "x.toml:11:10: invalid type: string \"two\", expected usize"
    );
}

#[test]
fn unknown_enum_value_lists_the_choices() {
    let text = GOOD.replace("lr = 0.001\n", "lr = 0.001\noptimizer = \"adan\"\n");
    assert_eq!(
        error_text(&text, &[]),
        "x.toml:13:13: unknown variant `adan`, expected one of `adam`, `adamw`, `sgd`"
    );
}

#[test]
fn out_of_range_values_are_all_reported_with_positions() {
    let text = GOOD
        .replace("lr = 0.001\n", "lr = -0.1\n")
        .replace("image_size = 32", "image_size = 4");
    assert_eq!(
        error_text(&text, &[]),
        "x.toml:8:14: data.image_size must be in 16..=1024, got 4\n\
         x.toml:12:6: train.lr must be > 0 and <= 10, got -0.1"
    );
}

#[test]
fn unknown_backbone_lists_the_registry() {
    let text = GOOD.replace("name = \"resnet18\"", "name = \"resnet19\"");
    assert_eq!(
        error_text(&text, &[]),
        "x.toml:18:8: unknown backbone \"resnet19\", expected one of: resnet10, resnet18, resnet34, resnet50, resnet101, resnet152, vgg16, vgg16_bn, efficientnet_b0, efficientnet_lite0, densenet121"
    );
}

#[test]
fn bad_sweep_values_point_at_the_element() {
    let text = GOOD.replace("lr = [0.001, 0.003]", "lr = [0.001, -3.0]");
    assert_eq!(
        error_text(&text, &[]),
        "x.toml:21:14: train.lr must be > 0 and <= 10, got -3"
    );
    let text = GOOD.replace("batch_size = [8, 16]", "batch_sise = [8, 16]");
    let err = error_text(&text, &[]);
    assert!(err.starts_with("x.toml:22:14: sweep.space.batch_sise is not a train field; expected one of: augment, batch_size"), "{err}");
    let text = GOOD.replace("batch_size = [8, 16]", "batch_size = [8, \"big\"]");
    assert_eq!(
        error_text(&text, &[]),
        "x.toml:22:18: sweep.space.batch_size[1]: invalid type: string \"big\", expected usize"
    );
}

#[test]
fn syntax_errors_have_positions() {
    let text = GOOD.replace("seed = 3", "seed = = 3");
    assert!(
        error_text(&text, &[]).starts_with("x.toml:4:8: "),
        "{}",
        error_text(&text, &[])
    );
}

#[test]
fn missing_backbones_are_rejected() {
    let text = "[experiment]\nname = \"t\"\n";
    assert_eq!(
        error_text(text, &[]),
        "x.toml: at least one [[backbone]] is required, e.g. [[backbone]] name = \"resnet18\""
    );
}

#[test]
fn overrides_apply_and_are_blamed_for_their_errors() {
    let sets: Vec<String> = [
        "train.epochs=5",
        "data.root=/data/CK+48",
        "train.optimizer=sgd",
        "backbone.1.name=resnet34",
        "sweep.space.lr=[0.1]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let spec = spec::parse(GOOD, "x.toml", &sets).expect("overrides are valid");
    assert_eq!(spec.train.epochs, 5);
    assert_eq!(spec.data.root, "/data/CK+48");
    assert_eq!(spec.train.optimizer, OptimizerKind::Sgd);
    assert_eq!(spec.backbones[1].name, "resnet34");
    assert_eq!(spec::expand(&spec).len(), 2 * 2);

    assert_eq!(
        error_text(GOOD, &["train.lr=-1"]),
        "--set train.lr=-1: train.lr must be > 0 and <= 10, got -1"
    );
    assert_eq!(
        error_text(GOOD, &["train.epochs=many"]),
        "--set train.epochs=many: invalid type: string \"many\", expected usize"
    );
    assert!(
        error_text(GOOD, &["train.lrr=1"]).starts_with("--set train.lrr=1: unknown field `lrr`")
    );
    assert_eq!(
        error_text(GOOD, &["epochs"]),
        "--set epochs: expected KEY=VALUE, e.g. --set train.epochs=2"
    );
    assert_eq!(
        error_text(GOOD, &["backbone.7.name=resnet18"]),
        "--set backbone.7.name=resnet18: `backbone` has 2 entries; there is no index 7"
    );
}

#[test]
fn resolved_toml_round_trips() {
    let spec = spec::parse(GOOD, "x.toml", &[]).expect("valid");
    let again = spec::parse(&toml::to_string(&spec).expect("serialises"), "y.toml", &[])
        .expect("round trip");
    assert_eq!(spec, again);
}
