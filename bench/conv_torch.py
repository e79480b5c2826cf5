"""PyTorch's times for the cases of `cargo bench --bench conv` (benches/conv.rs).

Run back to back with the Rust bench on the same machine:
    /tmp/torch-venv/bin/python bench/conv_torch.py [NAME-FILTER ...]

Same shapes, 2 threads (RAYON_NUM_THREADS overrides, as in the Rust bench),
3 warm-ups, CONV_BENCH_ITERS (default 10) timed iterations, median
[min-max] in ms. Backward is `y.backward(r)` for a random r; the stem's
input needs no gradient (an image batch), every other input does.
"""

import os
import sys
import time

import torch
import torch.nn.functional as F

# name, cin, cout, h (= w), k, stride, pad, input needs a gradient
CASES = [
    ("stem 3->64 7x7/2 @48", 3, 64, 48, 7, 2, 3, False),
    ("64->64 3x3 @12", 64, 64, 12, 3, 1, 1, True),
    ("64->128 3x3/2 @12", 64, 128, 12, 3, 2, 1, True),
    ("128->128 3x3 @6", 128, 128, 6, 3, 1, 1, True),
    ("256->256 3x3 @3", 256, 256, 3, 3, 1, 1, True),
    ("512->512 3x3 @2", 512, 512, 2, 3, 1, 1, True),
    ("down 64->128 1x1/2 @12", 64, 128, 12, 1, 2, 0, True),
    ("192->192 3x3 @24", 192, 192, 24, 3, 1, 1, True),
]
BATCH = 8


def stats(v):
    v = sorted(v)
    n = len(v)
    median = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return median, v[0], v[-1]


def main():
    threads = int(os.environ.get("RAYON_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    iters = max(1, int(os.environ.get("CONV_BENCH_ITERS", "10")))
    filters = [a for a in sys.argv[1:] if not a.startswith("-")]
    print(
        f"torch {torch.__version__}, threads: {torch.get_num_threads()}, "
        f"iterations: {iters} (+3 warm-up), times in ms: median [min-max]"
    )
    gen = torch.Generator().manual_seed(1)
    for name, cin, cout, hw, k, stride, pad, input_grad in CASES:
        if filters and not any(f in name for f in filters):
            continue
        ho = (hw + 2 * pad - k) // stride + 1
        gflop = 2 * BATCH * cout * ho * ho * cin * k * k / 1e9
        bwd_gflop = gflop * (2 if input_grad else 1)
        x = (torch.rand(BATCH, cin, hw, hw, generator=gen) * 2 - 1).requires_grad_(input_grad)
        w = (torch.rand(cout, cin, k, k, generator=gen) * 2 - 1).requires_grad_(True)
        r = torch.rand(BATCH, cout, ho, ho, generator=gen) * 2 - 1
        fwd, bwd, total = [], [], []
        for it in range(3 + iters):
            x.grad = None
            w.grad = None
            t0 = time.perf_counter()
            y = F.conv2d(x, w, stride=stride, padding=pad)
            t1 = time.perf_counter()
            y.backward(r)
            t2 = time.perf_counter()
            if it >= 3:
                fwd.append((t1 - t0) * 1e3)
                bwd.append((t2 - t1) * 1e3)
                total.append((t2 - t0) * 1e3)
        note = "" if input_grad else " (no input gradient)"
        print(
            f"\n{name}: x {BATCH}x{cin}x{hw}x{hw}, w {cout}x{cin}x{k}x{k}, stride {stride}, "
            f"pad {pad} -> {ho}x{ho}, fwd {gflop:.3f} GFLOP, bwd {bwd_gflop:.3f} GFLOP{note}"
        )
        for what, times, flop in (
            ("fwd", fwd, gflop),
            ("bwd", bwd, bwd_gflop),
            ("fwd+bwd", total, gflop + bwd_gflop),
        ):
            med, lo, hi = stats(times)
            print(f"  {what:8} torch {med:8.3f} [{lo:.3f}-{hi:.3f}] {flop / med * 1e3:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
