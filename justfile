# fer-lab recipes; `just --list` shows them.

fer := "cargo run --release --quiet --"

# Run the tests (what CI runs).
test:
    cargo test --release

# The main job on synthetic data: 4 small trials, then the leaderboard.
smoke:
    {{fer}} sweep experiments/smoke.toml
    {{fer}} leaderboard --sweep smoke

# Run any spec, e.g. `just sweep experiments/backbones.toml --set train.epochs=2`.
sweep spec *args:
    {{fer}} sweep {{spec}} {{args}}

# Show the leaderboard, e.g. `just leaderboard --format csv`.
leaderboard *args:
    {{fer}} leaderboard {{args}}

# ResNet-18 on CK+48 (holdout 80/20); set root=... if CK+48 is elsewhere.
ckplus-resnet18 root="data/CK+48":
    {{fer}} sweep experiments/ckplus-resnet18.toml --set data.root={{root}}
    {{fer}} leaderboard --sweep ckplus-resnet18-holdout

# Formatting and lints, as before every commit.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Compile-check the CUDA path on a machine without a GPU (needs ../shared/tools/cuda-toolchain.sh).
check-cuda:
    bash -c 'source ../shared/tools/cuda-toolchain.sh && cargo check --release --features cuda --all-targets'
