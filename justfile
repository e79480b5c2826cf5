# fer-lab recipes; `just --list` shows them.
# Every command uses the database in $FER_LAB_DB (default runs/fer-lab.sqlite).

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

# The published ResNet-101 run (holdout 80/20 on CK+48), compared with its 99.49%.
# weights=FILE: ImageNet-pretrained ResNet-101 (torchvision/timm names, .safetensors or .pth);
# without it the Hugging Face cache is searched for timm/resnet101.tv_in1k, else it trains from scratch.
reproduce-resnet101 root="data/CK+48" weights="" *args:
    #!/usr/bin/env bash
    set -euo pipefail
    w="{{weights}}"
    if [ -z "$w" ]; then
        w=$(ls "${HF_HOME:-$HOME/.cache/huggingface}"/hub/models--timm--resnet101.tv_in1k/snapshots/*/model.safetensors 2>/dev/null | head -n 1 || true)
    fi
    extra=()
    if [ -n "$w" ]; then
        echo "pretrained weights: $w"
        extra=(--set "backbone.0.pretrained=$w")
    else
        echo "no pretrained weights given or cached: ResNet-101 trains from scratch"
    fi
    {{fer}} sweep experiments/reproduce-resnet101.toml --set "data.root={{root}}" "${extra[@]}" {{args}}
    {{fer}} report --sweep reproduce-resnet101 --out runs/reports/reproduce-resnet101

# The honest protocol: subject-independent 10-fold CV (ResNet-101 by default is days on a CPU;
# e.g. `just ckplus-subject-10fold --set backbone.0.name=resnet18`).
ckplus-subject-10fold root="data/CK+48" *args:
    {{fer}} sweep experiments/ckplus-subject-10fold.toml --set "data.root={{root}}" {{args}}
    {{fer}} leaderboard --sweep ckplus-subject-10fold --plot runs/reports/ckplus-subject-10fold.png
    {{fer}} report --sweep ckplus-subject-10fold --out runs/reports/ckplus-subject-10fold

# EfficientNet-Lite0 on CK+48: fine-tuned from ImageNet weights vs from scratch.
ckplus-lite0 root="data/CK+48" weights="../shared/weights/efficientnet-lite0.safetensors" *args:
    {{fer}} sweep experiments/ckplus-lite0.toml --set "data.root={{root}}" --set "backbone.0.pretrained={{weights}}" {{args}}
    {{fer}} leaderboard --sweep ckplus-lite0

# Training-step speed of the six shipped backbones (add --json for machine-readable rows).
bench *args:
    {{fer}} bench {{args}}

# fer-lab and PyTorch side by side (needs a Python with torch and torchvision).
bench-vs-pytorch python="python3" *args:
    cargo build --release
    {{python}} bench/vs_pytorch.py {{args}}

# Formatting and lints, as before every commit.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Compile-check the CUDA path on a machine without a GPU (needs ../shared/tools/cuda-toolchain.sh).
check-cuda:
    bash -c 'source ../shared/tools/cuda-toolchain.sh && cargo check --release --features cuda --all-targets'
