"""PyTorch side of benches/depthwise.rs: depthwise 3x3 conv, 8x192x24x24,
forward and forward + backward of L = sum(y * r), at stride 1 (pad 1) and
stride 2 (TF-same [0, 1, 0, 1], and pad 1), 2 threads, 3 warm-ups then the
median / min / max of >= 10 timed iterations. Prints the same lines as the
Rust bench, plus the loss alone (the same loss and backward on a leaf y).

    /tmp/torch-venv/bin/python bench/depthwise_torch.py [--iters N] [--threads T]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

WARMUP = 3


def timed(iters, f):
    for _ in range(WARMUP):
        f()
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        f()
        ms.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ms), min(ms), max(ms)


def line(case, pas, who, t):
    med, lo, hi = t
    print(f"{case:<14} {pas:<8} {who:<7} median {med:9.3f} ms  min {lo:9.3f}  max {hi:9.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    iters = max(a.iters, 10)
    torch.set_num_threads(a.threads)
    n, c, h, k = 8, 192, 24, 3
    print(
        f"depthwise {k}x{k}, x {n}x{c}x{h}x{h}, w {c}x1x{k}x{k}, threads {torch.get_num_threads()}, "
        f"{WARMUP} warm-ups + {iters} timed (torch {torch.__version__})"
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, h, generator=g, requires_grad=True)
    w = torch.randn(c, 1, k, k, generator=g, requires_grad=True)
    cases = [("s1 pad1", 1, (1, 1, 1, 1)), ("s2 tf-same", 2, (0, 1, 0, 1)), ("s2 pad1", 2, (1, 1, 1, 1))]
    for case, stride, (top, bottom, left, right) in cases:

        def conv(x, w):
            if top == bottom == left == right:
                return F.conv2d(x, w, stride=stride, padding=top, groups=c)
            return F.conv2d(F.pad(x, (left, right, top, bottom)), w, stride=stride, groups=c)

        with torch.no_grad():
            r = torch.randn(conv(x, w).shape, generator=g)

        def fwd():
            with torch.no_grad():
                conv(x, w)

        def both():
            x.grad = None
            w.grad = None
            (conv(x, w) * r).sum().backward()

        line(case, "fwd", "torch", timed(iters, fwd))
        line(case, "fwd+bwd", "torch", timed(iters, both))
        y = torch.zeros(r.shape, requires_grad=True)

        def loss():
            y.grad = None
            (y * r).sum().backward()

        line(case, "loss", "torch", timed(iters, loss))


if __name__ == "__main__":
    main()
