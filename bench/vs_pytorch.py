"""fer-lab's training step next to PyTorch's, on this machine, in one run.

For each backbone, runs `fer-lab bench --json` and then the same step in
PyTorch (torchvision's model, random init, 7 classes, AdamW lr 1e-4, a fixed
batch of grey noise replicated to 3 channels, median of the timed steps after
3 warm-ups, evaluation forward at batch 64), one after the other with the same
thread count, and prints both with the ratio. With `--rounds R` the two
alternate R times per backbone (this machine's speed drifts by 10% and more
from minute to minute) and the table shows each side's median round and the
ratio of every round. Not part of CI (needs torch):

    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch torchvision
    cargo build --release
    /tmp/torch-venv/bin/python bench/vs_pytorch.py --threads 2 --size 48 --batch 8 --rounds 3
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F
import torchvision

DEFAULT = "resnet18,resnet50,resnet101,vgg16,efficientnet_b0,densenet121"


def torch_step(name, size, batch, warmup, steps, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=7)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, size, size, generator=gen).repeat(1, 3, 1, 1)
    y = torch.randint(0, 7, (batch,), generator=gen)
    total, fw, bw, op = [], [], [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= warmup:
            total.append((t3 - t0) * 1e3)
            fw.append((t1 - t0) * 1e3)
            bw.append((t2 - t1) * 1e3)
            op.append((t3 - t2) * 1e3)
    model.eval()
    xe = torch.randn(64, 1, size, size, generator=gen).repeat(1, 3, 1, 1)
    ev = []
    with torch.no_grad():
        for i in range(7):
            t0 = time.perf_counter()
            model(xe)
            if i >= 2:
                ev.append((time.perf_counter() - t0) * 1e3)
    med = statistics.median(total)
    return {
        "train_ms_median": med,
        "train_ms_min": min(total),
        "train_ms_max": max(total),
        "train_images_per_sec": batch / (med / 1e3),
        "fwd_ms": statistics.median(fw),
        "bwd_ms": statistics.median(bw),
        "opt_ms": statistics.median(op),
        "eval_images_per_sec": 64 / (statistics.median(ev) / 1e3),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", default=DEFAULT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--fer-lab", default="target/release/fer-lab")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate fer-lab and torch this many times per backbone; the table "
                         "shows each side's median round and the ratio of every round")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    rows = []
    def median_run(runs):
        return sorted(runs, key=lambda r: r["train_images_per_sec"])[(len(runs) - 1) // 2]

    for name in args.backbones.split(","):
        ours_runs, ref_runs = [], []
        for _ in range(args.rounds):
            out = subprocess.run(
                [args.fer_lab, "bench", "--json", "--backbone", name, "--size", str(args.size),
                 "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)],
                check=True, capture_output=True, text=True, env=env).stdout
            ours_runs.append(json.loads(out.strip().splitlines()[-1]))
            ref_runs.append(torch_step(name, args.size, args.batch, 3, args.steps, args.threads))
        ours, ref = median_run(ours_runs), median_run(ref_runs)
        ratios = [o["train_images_per_sec"] / t["train_images_per_sec"] for o, t in zip(ours_runs, ref_runs)]
        rows.append({"backbone": name, "fer_lab": ours, "torch": ref, "round_ratios": ratios,
                     "fer_lab_rounds": ours_runs, "torch_rounds": ref_runs})
        print(f"{name}: fer-lab {ours['train_images_per_sec']:.1f} img/s, "
              f"torch {ref['train_images_per_sec']:.1f} img/s, rounds "
              + " ".join(f"{r:.2f}x" for r in ratios), flush=True)
    print()
    print(f"threads {args.threads}, {args.size}x{args.size}x3, batch {args.batch}, "
          f"median of {args.steps} steps after 3 warm-ups, {args.rounds} alternating round(s); "
          f"torch {torch.__version__}; "
          f"matmul in fer-lab's run: {rows[0]['fer_lab']['matmul_gflops']:.0f} GFLOP/s")
    print("| backbone | fer-lab ms/step (min-max) | torch ms/step (min-max) | fer-lab img/s | torch img/s "
          "| speed vs torch | fer-lab fwd/bwd/opt ms | torch fwd/bwd/opt ms | fer-lab eval img/s | torch eval img/s "
          "| fer-lab GFLOP/s | ratio per round |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o, t = r["fer_lab"], r["torch"]
        print(f"| {r['backbone']} | {o['train_ms_median']:.0f} ({o['train_ms_min']:.0f}-{o['train_ms_max']:.0f}) "
              f"| {t['train_ms_median']:.0f} ({t['train_ms_min']:.0f}-{t['train_ms_max']:.0f}) "
              f"| {o['train_images_per_sec']:.1f} | {t['train_images_per_sec']:.1f} "
              f"| {o['train_images_per_sec'] / t['train_images_per_sec']:.2f}x "
              f"| {o['fwd_ms']:.0f}/{o['bwd_ms']:.0f}/{o['opt_ms']:.0f} | {t['fwd_ms']:.0f}/{t['bwd_ms']:.0f}/{t['opt_ms']:.0f} "
              f"| {o['eval_images_per_sec']:.0f} | {t['eval_images_per_sec']:.0f} | {o['achieved_gflops']:.1f} "
              f"| {' '.join(f'{x:.2f}' for x in r['round_ratios'])} |")
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
