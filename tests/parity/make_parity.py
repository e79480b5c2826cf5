"""Writes the numerical-parity fixtures for tests/parity.rs with PyTorch.

For every backbone, the reference model (below) and fer-lab's model get the
same weights and the same input; the fixture records what the reference
computes, so the Rust test needs no torch. Full-size weights are too large to
commit, so both sides compute them from this formula:

Weights. For every tensor of the reference's state dict (skipping
`num_batches_tracked`), with name k, shape s and n elements:

    h     = FNV-1a-32 of the UTF-8 bytes of k
            (offset basis 0x811c9dc5, prime 0x01000193, arithmetic mod 2^32)
    z_i   = splitmix64(h + (i + 1) * 0x9E3779B97F4A7C15 mod 2^64), i = 0..n-1
            where splitmix64(z): z ^= z >> 30; z *= 0xBF58476D1CE4E5B9;
                                 z ^= z >> 27; z *= 0x94D049BB133111EB;
                                 z ^= z >> 31            (all mod 2^64)
    v_i   = 2 * ((z_i >> 11) * 2^-53) - 1                (float64, in [-1, 1))

over the row-major flattening; then, with "norm" meaning that the tensor's
module (k up to its last dot) also has a `running_var` in the state dict,
the first rule that applies (float64, then rounded once to float32):

    last name part `running_var`    1 + 0.25 v
    last name part `running_mean`   0.1 v
    `bias` of a norm (beta)         1 + 0.05 v
    any other `bias`                0.05 v
    rank >= 2                       v * sqrt(6 / fan_in), fan_in = prod(s[1:])
    `weight` of a norm (gamma)      0.5 + 0.1 v

Every step is exact or correctly rounded IEEE arithmetic, so both sides get
the same float32 bits (tests/parity.rs checks a few against this script).

Why these numbers. The rank >= 2 scale gives variance 2 / fan_in (Kaiming
fan-in). A sine of the flat index, sin(a i + b), was the first design; it
makes every output channel's filter a mix of sin(a j) and cos(a j) of the
same in-channel index j (rank-2 layers whose channels all look alike), so a
hash stream is used instead. With norm gamma 1 + 0.1 v and beta 0.05 v,
ResNet-101's eval logits reached 8e5 (fixed running statistics do not stop
the residual sum from growing), and in train mode -- batch statistics,
half the ReLU inputs negative -- the deep nets were chaotic: torch's own
float32 gradients were 5 % (ResNet-101) and 0.1 % (DenseNet-121) away from
its float64 ones, so no float32 implementation could be held to 1e-3.
Gamma 0.5 and beta 1 (about 2 % of a norm's outputs below zero in train
mode) bring every model's eval logits to O(1 .. 40) and torch's float32
error to <= 1e-5 everywhere recorded.

Input. A batch (N, C, H, W) = (4, 3, 64, 64), float32, x = v of the same
stream keyed by the name `input` (uniform in [-1, 1)), row-major. 64 x 64
keeps every family's last feature map at 2 x 2 (at 48 DenseNet's and VGG's
are 1 x 1, a batch norm over 4 numbers).

Eval. `model.eval()`, logits (4 x 10) of the input.

Train. Dropout and stochastic depth off (torch: every nn.Dropout p = 0 and
torchvision's StochasticDepth p = 0; lukemelas: dropout_rate = 0 and
drop_connect_rate = 0), `model.train()` (batch norm with batch statistics),
labels [0, 1, 2, 3], loss = mean cross-entropy, then `loss.backward()`. The
train pass runs after the eval one (it moves the running statistics). For a
few parameters per model (the first conv weight, the middle batch-norm
weight -- the middle conv bias for plain VGG --, the last conv weight, the
classifier weight and bias) the fixture keeps the gradient's L2 norm, sum,
L1 norm, and its values at 32 evenly spaced flat indices
floor(j * n / 32), j = 0..31 (distinct ones: all 10 of a 10-class bias).

torch's own float32 error. Each model is also run in float64 from the same
(float32) weights and input; the fixture's `torch_f32_vs_f64` says how far
torch's float32 answers are from that, which is the scale of error one can
ask of a second float32 implementation.

References: torchvision.models.<name>(num_classes=10) for resnet18,
resnet101, vgg16, vgg16_bn, densenet121 and efficientnet_b0;
efficientnet_lite_pytorch.EfficientNet.from_name('efficientnet-lite0',
num_classes=10, image_size=64, dropout_rate=0, drop_connect_rate=0) for
efficientnet_lite0 (lukemelas' layout). That package pads TF-"same"
statically, from the image_size it is built with; fer-lab pads from the
actual input, so it is built with the size that is fed.

Run from the crate root (CPU, one thread, deterministic; VGG-16 needs a few
GB of memory):

    /tmp/torch-venv/bin/python tests/parity/make_parity.py [backbone ...]

It writes tests/fixtures/parity/<backbone>.json and prints each model's
logit scale and torch's float32-vs-float64 error. `--values` prints the
first weight values of a few names (the hard-typed numbers in
tests/parity.rs) and exits.
"""

import argparse
import json
import math
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import StochasticDepth

import efficientnet_lite_pytorch

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "parity"

BACKBONES = [
    "resnet18",
    "resnet101",
    "vgg16",
    "vgg16_bn",
    "densenet121",
    "efficientnet_b0",
    "efficientnet_lite0",
]
NUM_CLASSES = 10
INPUT_SHAPE = (4, 3, 64, 64)
LABELS = [0, 1, 2, 3]
SAMPLES = 32

GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
CHUNK = 1 << 22
# Norm layers' gamma and beta centres: see "Why these numbers" above.
GAMMA0 = 0.5
BETA0 = 1.0

FORMULA = (
    "h = FNV-1a-32(name bytes); z_i = splitmix64(h + (i+1)*0x9E3779B97F4A7C15 mod 2^64); "
    "v_i = 2*((z_i >> 11)*2^-53) - 1 (f64, row-major i); first rule that applies: "
    "running_var: 1 + 0.25 v; running_mean: 0.1 v; bias of a norm (its module has a running_var): "
    "1 + 0.05 v; other bias: 0.05 v; rank >= 2: v*sqrt(6/fan_in), fan_in = prod(shape[1:]); "
    "weight of a norm: 0.5 + 0.1 v; rounded once to f32 (see tests/parity/make_parity.py)"
)
INPUT_FORMULA = "x = v of the stream keyed by 'input' (uniform in [-1, 1)), f32, row-major (N, C, H, W)"


def fnv1a32(name: str) -> int:
    h = 0x811C9DC5
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def stream(name: str, n: int) -> np.ndarray:
    """v_0..v_{n-1} (float64 in [-1, 1)) of the stream keyed by `name`."""
    h = np.uint64(fnv1a32(name))
    out = np.empty(n, dtype=np.float64)
    with np.errstate(over="ignore"):
        for start in range(0, n, CHUNK):
            i = np.arange(start + 1, min(n, start + CHUNK) + 1, dtype=np.uint64)
            z = h + i * np.uint64(GOLDEN)
            z ^= z >> np.uint64(30)
            z *= np.uint64(MIX1)
            z ^= z >> np.uint64(27)
            z *= np.uint64(MIX2)
            z ^= z >> np.uint64(31)
            u = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
            out[start : start + len(i)] = 2.0 * u - 1.0
    return out


def weight_values(name: str, shape, norms=frozenset()) -> np.ndarray:
    """The float32 tensor the formula gives `name` of `shape`; `norms` are
    the module prefixes (`layer1.0.bn1.`) that own a `running_var`."""
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    v = stream(name, n)
    module, _, leaf = name.rpartition(".")
    is_norm = (module + ".") in norms if module else False
    if leaf == "running_var":
        w = 1.0 + 0.25 * v
    elif leaf == "running_mean":
        w = 0.1 * v
    elif leaf == "bias" and is_norm:
        w = BETA0 + 0.05 * v
    elif leaf == "bias":
        w = 0.05 * v
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        w = v * math.sqrt(6.0 / fan_in)
    elif leaf == "weight" and is_norm:
        w = GAMMA0 + 0.1 * v
    else:
        raise ValueError(f"no formula for tensor {name} of shape {list(shape)}")
    return w.astype(np.float32).reshape(shape)


def norm_modules(names) -> frozenset:
    """Module prefixes (with the trailing dot) that own a `running_var`."""
    return frozenset(k[: -len("running_var")] for k, _ in names if k.endswith(".running_var"))


def build(name: str) -> torch.nn.Module:
    """The reference model, dropout and stochastic depth off."""
    if name == "efficientnet_lite0":
        return efficientnet_lite_pytorch.EfficientNet.from_name(
            "efficientnet-lite0",
            num_classes=NUM_CLASSES,
            image_size=INPUT_SHAPE[2],
            dropout_rate=0.0,
            drop_connect_rate=0.0,
        )
    model = getattr(torchvision.models, name)(num_classes=NUM_CLASSES)
    for m in model.modules():
        if isinstance(m, (torch.nn.Dropout, StochasticDepth)):
            m.p = 0.0
        # DenseNet's layers call F.dropout with their drop_rate (0 by default).
        assert float(getattr(m, "drop_rate", 0.0)) == 0.0, f"{name}: drop_rate {m.drop_rate}"
    return model


def tensors_of(model: torch.nn.Module):
    """(name, shape) of every state-dict tensor but num_batches_tracked, in order."""
    return [
        (k, list(t.shape))
        for k, t in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    ]


def load_formula(model: torch.nn.Module, names, dtype) -> None:
    state = model.state_dict()
    norms = norm_modules(names)
    for k, shape in names:
        state[k] = torch.from_numpy(weight_values(k, shape, norms)).to(dtype)
    missing = model.load_state_dict(state, strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys, missing


def recorded(names, params):
    """Reference names whose gradients the fixture keeps: the first conv
    weight, the middle norm weight (plain VGG: the middle conv bias), the
    last conv weight, the classifier (last rank-2 weight) and its bias."""
    norms = norm_modules(names)
    conv = [k for k, s in names if len(s) == 4 and k.endswith(".weight")]
    gammas = [k for k, s in names if k.endswith(".weight") and k[: -len("weight")] in norms]
    conv_bias = [k for k, s in names if k.endswith(".bias") and k[: -len("bias")] + "weight" in conv]
    middle = gammas[len(gammas) // 2] if gammas else conv_bias[len(conv_bias) // 2]
    head = [k for k, s in names if len(s) == 2 and k.endswith(".weight")][-1]
    out = [conv[0], middle, conv[-1], head, head[: -len("weight")] + "bias"]
    for k in out:
        assert k in params, f"{k} is not a parameter"
    return out


def sample_indices(n: int):
    """floor(j * n / 32), j = 0..31, without repeats (all of a smaller tensor)."""
    return sorted({(j * n) // SAMPLES for j in range(SAMPLES)})


def run(name: str, names, dtype, x):
    """Eval logits, train logits, loss and the recorded gradients (float64 numpy)."""
    torch.manual_seed(0)
    model = build(name).to(dtype)
    load_formula(model, names, dtype)
    x = x.to(dtype)
    model.eval()
    with torch.no_grad():
        eval_logits = model(x)
    model.train()
    model.zero_grad(set_to_none=True)
    train_logits = model(x)
    loss = F.cross_entropy(train_logits, torch.tensor(LABELS))
    loss.backward()
    params = dict(model.named_parameters())
    grads = {}
    for k in recorded(names, params):
        g = params[k].grad
        assert g is not None, f"{name}: {k} has no gradient"
        grads[k] = g.detach().to(torch.float64).numpy().copy()
    return {
        "eval": eval_logits.detach().to(torch.float64).numpy(),
        "train": train_logits.detach().to(torch.float64).numpy(),
        "loss": float(loss.detach()),
        "grads": grads,
    }


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def fixture(name: str) -> dict:
    model = build(name)
    names = tensors_of(model)
    del model
    x = torch.from_numpy(stream("input", int(np.prod(INPUT_SHAPE))).astype(np.float32).reshape(INPUT_SHAPE))
    f32 = run(name, names, torch.float32, x)
    f64 = run(name, names, torch.float64, x)

    grads = []
    grad_norm_err = 0.0
    grad_value_err = 0.0
    for k, g in f32["grads"].items():
        flat = g.reshape(-1)
        idx = sample_indices(flat.size)
        norm = float(np.linalg.norm(flat))
        g64 = f64["grads"][k].reshape(-1)
        norm_err = abs(norm - np.linalg.norm(g64)) / np.linalg.norm(g64)
        scale = max(np.max(np.abs(g64[idx])), np.linalg.norm(g64) / math.sqrt(g64.size))
        value_err = float(np.max(np.abs(flat[idx] - g64[idx])) / scale)
        full_err = float(np.linalg.norm(flat - g64) / np.linalg.norm(g64))
        print(f"  {k}: torch f32 vs f64: norm {norm_err:.2g}, values {value_err:.2g}, whole {full_err:.2g}")
        grad_norm_err = max(grad_norm_err, norm_err)
        grad_value_err = max(grad_value_err, value_err)
        grads.append(
            {
                "name": k,
                "shape": list(g.shape),
                "norm": norm,
                "sum": float(np.sum(flat)),
                "abs_sum": float(np.sum(np.abs(flat))),
                "indices": idx,
                "values": [float(flat[i]) for i in idx],
                "torch_f32_vs_f64": {"norm": float(norm_err), "values": value_err},
            }
        )
    first, first_shape = names[0]
    check = weight_values(first, first_shape, norm_modules(names)).reshape(-1)[:4]

    out = {
        "backbone": name,
        "reference": (
            "efficientnet_lite_pytorch.EfficientNet.from_name('efficientnet-lite0', num_classes=10, "
            f"image_size={INPUT_SHAPE[2]}, dropout_rate=0.0, drop_connect_rate=0.0)"
            if name == "efficientnet_lite0"
            else f"torchvision.models.{name}(num_classes=10), dropout and stochastic depth p = 0"
        ),
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "efficientnet_lite_pytorch": efficientnet_lite_pytorch.__version__,
            "numpy": np.__version__,
        },
        "generator": "tests/parity/make_parity.py",
        "formula": FORMULA,
        "formula_check": {"name": first, "first_values": [float(v) for v in check]},
        "input": {"formula": INPUT_FORMULA, "shape": list(INPUT_SHAPE)},
        "labels": LABELS,
        "eval_logits": [[float(v) for v in row] for row in f32["eval"]],
        "train_logits": [[float(v) for v in row] for row in f32["train"]],
        "train_loss": f32["loss"],
        "grads": grads,
        "torch_f32_vs_f64": {
            "eval_logits": rel(f32["eval"], f64["eval"]),
            "train_logits": rel(f32["train"], f64["train"]),
            "train_loss": abs(f32["loss"] - f64["loss"]) / abs(f64["loss"]),
            "grad_norm": float(grad_norm_err),
            "grad_values": float(grad_value_err),
        },
        "tensors": [[k, s] for k, s in names],
    }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("backbones", nargs="*", default=BACKBONES)
    ap.add_argument("--values", action="store_true", help="print formula check values and exit")
    ap.add_argument("--dry-run", action="store_true", help="compute and print, write nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.values:
        print(f"fnv1a32('conv1.weight') = {fnv1a32('conv1.weight'):#010x}")
        print(f"fnv1a32('') = {fnv1a32(''):#010x}")
        for k, s in [
            ("conv1.weight", [64, 3, 7, 7]),
            ("bn1.running_var", [64]),
            ("bn1.running_mean", [64]),
            ("bn1.weight", [64]),
            ("fc.bias", [10]),
        ]:
            w = weight_values(k, s, frozenset({"bn1."})).reshape(-1)[:3]
            print(k, [f"{v:.9e}" for v in w], [f"{int(v.view(np.uint32)):#010x}" for v in w])
        x = stream("input", 3).astype(np.float32)
        print("input", [f"{v:.9e}" for v in x], [f"{int(v.view(np.uint32)):#010x}" for v in x])
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.backbones:
        if name not in BACKBONES:
            print(f"unknown backbone {name}; expected one of {BACKBONES}", file=sys.stderr)
            return 2
        f = fixture(name)
        text = json.dumps(f, indent=None, separators=(",", ":")) + "\n"
        path = OUT / f"{name}.json"
        if not args.dry_run:
            path.write_text(text)
        e = np.array(f["eval_logits"])
        print(
            f"{name}: {len(f['tensors'])} tensors, |eval logits| max {np.max(np.abs(e)):.4g} "
            f"std {np.std(e):.4g}, loss {f['train_loss']:.6g}, "
            f"torch f32 vs f64 {f['torch_f32_vs_f64']}, {len(text) / 1024:.1f} KB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
