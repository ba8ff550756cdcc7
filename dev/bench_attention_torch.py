"""PyTorch timing of the same attention operators as dev/bench_attention.c, for comparison.

Forward+backward in float32 on the CPU, B=1, H=8, D=64, with as many threads as
cores. Flow-Attention's causal product is done as the authors' code does it,
through prefix sums of the T x D x M outer products. Run with Debian's PyTorch:
    /usr/bin/python3 dev/bench_attention_torch.py [--max-t 4096]
"""
import argparse
import os
import resource
import time

import torch

from attention_reference import causal_product_cumsum, flow_causal, flow_normal, linear_attention, softmax_attention


def run(name, T):
    B, H, D = 1, 8, 64
    q, k, v = (torch.rand(B, H, T, D) * 2 - 1 for _ in range(3))
    q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    dout = torch.rand(B, H, T, D) * 2 - 1
    if name == "flow-causal":
        fn = lambda: flow_causal(q, k, v, 1.0, causal_product=causal_product_cumsum)
    elif name == "flow-normal":
        fn = lambda: flow_normal(q, k, v, 1.0)
    elif name == "softmax-causal":
        fn = lambda: softmax_attention(q, k, v, True)
    else:
        fn = lambda: linear_attention(q, k, v, True)
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        fn().backward(dout)
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-t", type=int, default=4096)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    print(f"PyTorch {torch.__version__} attention forward+backward, B=1 H=8 D=64, float32, {torch.get_num_threads()} threads")
    print(f"{'kernel':15s} {'T':>7s} {'fwd+bwd ms':>12s} {'us/token':>12s}")
    for name in ("flow-causal", "flow-normal", "softmax-causal", "linear-causal"):
        for T in (256, 1024, 4096, 16384):
            if T > args.max_t:
                continue
            s = run(name, T)
            print(f"{name:15s} {T:7d} {s * 1e3:12.1f} {s * 1e6 / T:12.2f}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of the whole run: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
