"""PyTorch reference of the attention operators, written from doc/FLOW_ATTENTION.md.

Computes outputs and, by autograd, the gradients of sum(out * dout) in float64,
and writes them to dev/ref/attention_<case>.bin for dev/test/test_attention.c,
so the C tests need no Python. Run with Debian's PyTorch:
    /usr/bin/python3 dev/attention_reference.py
File layout: int32 kind (0 flow, 1 softmax, 2 linear), causal, B, L, S, H, D, M;
float64 clamp; then float64 q, k, v, dout, out, dq, dk, dv, each (B, rows, H*head).
"""
import os
import struct

import torch

EPS = 1e-6


def flow_normal(q, k, v, clamp):
    # q (B,H,L,D), k (B,H,S,D), v (B,H,S,M)
    q, k = torch.sigmoid(q), torch.sigmoid(k)
    L, S = q.shape[2], k.shape[2]
    incoming = 1.0 / torch.einsum("bhld,bhd->bhl", q + EPS, k.sum(dim=2) + EPS)
    outgoing = 1.0 / torch.einsum("bhsd,bhd->bhs", k + EPS, q.sum(dim=2) + EPS)
    conserved_sink = torch.einsum("bhld,bhd->bhl", q + EPS, (k * outgoing[..., None]).sum(dim=2) + EPS)
    conserved_source = torch.einsum("bhsd,bhd->bhs", k + EPS, (q * incoming[..., None]).sum(dim=2) + EPS)
    conserved_source = torch.clamp(conserved_source, min=-clamp, max=clamp)
    allocation = torch.sigmoid(conserved_sink * (float(L) / float(S)))
    competition = torch.softmax(conserved_source, dim=-1) * float(S)
    kv = torch.einsum("bhsd,bhsm->bhdm", k, v * competition[..., None])
    return torch.einsum("bhld,bhdm->bhlm", q * incoming[..., None], kv) * allocation[..., None]


def causal_product_dense(q, k, v):
    """sum_{j<=i} (q_i . k_j) v_j through the masked T x T score matrix."""
    return torch.einsum("bhij,bhjm->bhim", torch.einsum("bhid,bhjd->bhij", q, k).tril(), v)


def causal_product_cumsum(q, k, v):
    """The same through prefix sums of the T x D x M outer products, as the authors' code does."""
    return torch.einsum("bhld,bhldm->bhlm", q, torch.einsum("bhld,bhlm->bhldm", k, v).cumsum(dim=2))


def flow_causal(q, k, v, clamp, causal_product=causal_product_dense):
    q, k = torch.sigmoid(q), torch.sigmoid(k)
    T = q.shape[2]
    n = torch.arange(1, T + 1, dtype=q.dtype)[None, None, :]
    incoming = 1.0 / torch.einsum("bhld,bhld->bhl", q + EPS, k.cumsum(dim=2) + EPS)
    outgoing = 1.0 / torch.einsum("bhld,bhld->bhl", k + EPS, q.cumsum(dim=2) + EPS)
    conserved_sink = torch.einsum("bhld,bhld->bhl", q + EPS,
                                  (k * (n * outgoing)[..., None]).cumsum(dim=2) + EPS) / n
    conserved_source = torch.einsum("bhld,bhld->bhl", k + EPS,
                                    (q * (n * incoming)[..., None]).cumsum(dim=2) + EPS) / n
    conserved_source = torch.clamp(conserved_source, min=-clamp, max=clamp)
    allocation = torch.sigmoid(conserved_sink)
    e = torch.exp(conserved_source)
    competition = e / e.cumsum(dim=-1) * n
    return causal_product(q, k, v * competition[..., None]) * (incoming * allocation)[..., None]


def softmax_attention(q, k, v, causal):
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / q.shape[-1] ** 0.5
    if causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhij,bhjm->bhim", torch.softmax(scores, dim=-1), v)


def linear_attention(q, k, v, causal):
    q, k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    scores = torch.einsum("bhid,bhjd->bhij", q, k)
    if causal:
        scores = scores.tril()
    return torch.einsum("bhij,bhjm->bhim", scores, v) / (scores.sum(dim=-1, keepdim=True) + EPS)


def write_case(path, kind, causal, B, L, S, H, D, M, clamp, scale, seed):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, s=1.0):
        # float32-representable values, so the float32 kernels see the same inputs
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * s).float().double()

    q = rand(B, H, L, D, s=scale).requires_grad_()
    k = rand(B, H, S, D, s=scale).requires_grad_()
    v = rand(B, H, S, M).requires_grad_()
    dout = rand(B, H, L, M)
    if kind == 0:
        out = flow_causal(q, k, v, clamp) if causal else flow_normal(q, k, v, clamp)
    elif kind == 1:
        out = softmax_attention(q, k, v, causal)
    else:
        out = linear_attention(q, k, v, causal)
    (out * dout).sum().backward()

    def rows(x):  # (B,H,T,X) -> (B,T,H*X)
        return x.detach().permute(0, 2, 1, 3).reshape(-1).numpy().tobytes()

    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<8i", kind, causal, B, L, S, H, D, M))
        f.write(struct.pack("<d", clamp))
        for x in (q, k, v, dout, out, q.grad, k.grad, v.grad):
            f.write(rows(x))
    os.replace(path + ".tmp", path)


def main():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref")
    os.makedirs(here, exist_ok=True)
    cases = [
        # name, kind, causal, B, L, S, H, D, M, clamp, input scale
        ("flow_causal", 0, 1, 1, 70, 70, 2, 8, 8, 1.0, 1.0),
        ("flow_causal_clamped", 0, 1, 1, 70, 70, 2, 8, 8, 0.3, 4.0),
        ("flow_normal", 0, 0, 2, 9, 13, 2, 8, 6, 1.0, 1.0),
        ("softmax_causal", 1, 1, 1, 70, 70, 2, 8, 8, 1.0, 1.0),
        ("softmax_normal", 1, 0, 2, 9, 13, 2, 8, 6, 1.0, 1.0),
        ("linear_causal", 2, 1, 1, 70, 70, 2, 8, 8, 1.0, 1.0),
        ("linear_normal", 2, 0, 2, 9, 13, 2, 8, 6, 1.0, 1.0),
    ]
    for i, (name, *spec) in enumerate(cases):
        path = os.path.join(here, f"attention_{name}.bin")
        write_case(path, *spec, seed=1234 + i)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
