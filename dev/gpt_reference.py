"""PyTorch reference of train_gpt_flow.c's model, written from the project's own
specification (the model section of README.md and doc/FLOW_ATTENTION.md),
not from another implementation. Computes in float64 with autograd and saves a
debug state that dev/test/test_gpt.c matches in float32 to 1e-4:
parameters, a batch, logits, loss, gradients, and the losses of 10 AdamW steps.

    /usr/bin/python3 dev/gpt_reference.py      # writes dev/ref/gpt_*.bin

File layout (little-endian): int32[32] header, float32[16] settings, then
float32 parameters (in the trainer's order), int32 inputs (B*T), int32 targets
(B*T), float32 logits (B*T*V), float32 loss, float32 gradients, float32 losses
of the AdamW steps.
"""
import math
import os
import struct

import torch
import torch.nn.functional as F

MAGIC, VERSION = 20250202, 1
ATTENTION = {"flow": 0, "softmax": 1, "linear": 2}
EPS = 1e-6  # Flow-Attention's eps


def flow_attention_causal(q, k, v, clamp):
    """FLOW_ATTENTION.md, causal form. q, k: (B,H,T,D), v: (B,H,T,M)."""
    T = q.shape[2]
    q, k = torch.sigmoid(q), torch.sigmoid(k)
    n = torch.arange(1, T + 1, dtype=q.dtype).view(1, 1, T, 1)
    I = 1.0 / ((q + EPS) * (torch.cumsum(k, 2) + EPS)).sum(-1, keepdim=True)
    O = 1.0 / ((k + EPS) * (torch.cumsum(q, 2) + EPS)).sum(-1, keepdim=True)
    Ic = ((q + EPS) * (torch.cumsum(n * O * k, 2) + EPS)).sum(-1, keepdim=True) / n
    Oc = ((k + EPS) * (torch.cumsum(n * I * q, 2) + EPS)).sum(-1, keepdim=True) / n
    Oc = torch.clamp(Oc, -clamp, clamp)
    A = torch.sigmoid(Ic)
    Cc = n * torch.exp(Oc) / torch.cumsum(torch.exp(Oc), 2)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    scores = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0)
    return A * I * (scores @ (Cc * v))


def softmax_attention_causal(q, k, v):
    T, D = q.shape[2], q.shape[3]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    att = torch.softmax(att.masked_fill(~mask, float("-inf")), -1)
    return att @ v


def linear_attention_causal(q, k, v):
    """Katharopoulos et al. 2020: feature map elu(x) + 1, causal."""
    T = q.shape[2]
    q, k = F.elu(q) + 1, F.elu(k) + 1
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    scores = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0)
    return (scores @ v) / (scores.sum(-1, keepdim=True) + EPS)


def sinusoids(T, C):
    """fairseq's sinusoidal positions, positions numbered from 2."""
    half = C // 2
    step = math.log(10000.0) / (half - 1)
    freq = torch.exp(torch.arange(half, dtype=torch.float64) * -step)
    angle = (torch.arange(T, dtype=torch.float64) + 2).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(angle), torch.cos(angle)], 1)
    if C % 2:
        table = torch.cat([table, torch.zeros(T, 1, dtype=torch.float64)], 1)
    return table


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b",
         "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb", "lm_head"]


def shapes(c):
    V, T, L, C, Fh = c["V"], c["T"], c["L"], c["C"], c["F"]
    return {"wte": (V, C), "wpe": (T, C) if c["learned"] else None, "ln1w": (L, C), "ln1b": (L, C),
            "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C), "attprojw": (L, C, C), "attprojb": (L, C),
            "ln2w": (L, C), "ln2b": (L, C), "fcw": (L, Fh, C), "fcb": (L, Fh), "fcprojw": (L, C, Fh),
            "fcprojb": (L, C), "lnfw": (C,), "lnfb": (C,), "lm_head": None if c["tied"] else (V, C)}


def forward(P, c, idx):
    B, T = idx.shape
    C, H = c["C"], c["H"]
    D = C // H
    scale = math.sqrt(C) if c["embed_scale"] else 1.0
    pos = P["wpe"][:T] if c["learned"] else sinusoids(T, C)
    x = P["wte"][idx] * scale + pos
    for l in range(c["L"]):
        h = F.layer_norm(x, (C,), P["ln1w"][l], P["ln1b"][l], eps=1e-5)
        qkv = h @ P["qkvw"][l].T + P["qkvb"][l]
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in qkv.split(C, -1))
        if c["attention"] == "flow":
            y = flow_attention_causal(q, k, v, c["clamp"])
        elif c["attention"] == "softmax":
            y = softmax_attention_causal(q, k, v)
        else:
            y = linear_attention_causal(q, k, v)
        y = y.transpose(1, 2).reshape(B, T, C)
        x = x + y @ P["attprojw"][l].T + P["attprojb"][l]
        h = F.layer_norm(x, (C,), P["ln2w"][l], P["ln2b"][l], eps=1e-5)
        h = h @ P["fcw"][l].T + P["fcb"][l]
        h = F.relu(h) if c["relu"] else gelu_tanh(h)
        x = x + h @ P["fcprojw"][l].T + P["fcprojb"][l]
    x = F.layer_norm(x, (C,), P["lnfw"], P["lnfb"], eps=1e-5)
    return x @ (P["wte"] if c["tied"] else P["lm_head"]).T


def loss_of(logits, targets):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1)


def make_state(path, c, seed):
    g = torch.Generator().manual_seed(seed)
    P = {}
    for name in NAMES:
        shape = shapes(c)[name]
        if shape is None:
            continue
        t = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        if name.startswith("ln") and name.endswith("w"):
            t = t + 1.0
        # float32-representable values: both sides start from the same numbers
        P[name] = t.float().double().requires_grad_(True)
    B, T, V = c["B"], c["T"], c["V"]
    idx = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[0, 3] = -1  # an unscored position

    logits = forward(P, c, idx)
    loss = loss_of(logits, targets)
    loss.backward()
    grads = {n: P[n].grad.detach().clone() for n in P}
    params0 = {n: P[n].detach().clone() for n in P}

    decay = ["qkvw", "attprojw", "fcw", "fcprojw", "lm_head"] + (["wte", "wpe"] if c["decay_embeddings"] else [])
    groups = [{"params": [P[n] for n in P if n in decay], "weight_decay": c["weight_decay"]},
              {"params": [P[n] for n in P if n not in decay], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"])
    losses = []
    for _ in range(c["steps"]):
        opt.zero_grad()
        loss_i = loss_of(forward(P, c, idx), targets)
        loss_i.backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), c["grad_clip"])
        opt.step()
        losses.append(loss_i.item())

    nparams = sum(t.numel() for t in params0.values())
    header = [MAGIC, VERSION, V, T, c["L"], c["H"], c["C"], c["F"], B, ATTENTION[c["attention"]],
              int(c["learned"]), int(c["tied"]), int(c["relu"]), int(c["embed_scale"]), nparams,
              c["steps"], int(c["decay_embeddings"])]
    settings = [c["clamp"], c["lr"], c["beta1"], c["beta2"], c["eps"], c["weight_decay"], c["grad_clip"]]
    flat = lambda d: torch.cat([d[n].reshape(-1) for n in NAMES if n in d]).float().numpy()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<32i", *(header + [0] * (32 - len(header)))))
        f.write(struct.pack("<16f", *(settings + [0.0] * (16 - len(settings)))))
        f.write(flat(params0).tobytes())
        f.write(idx.to(torch.int32).numpy().tobytes())
        f.write(targets.to(torch.int32).numpy().tobytes())
        f.write(logits.detach().float().numpy().tobytes())
        f.write(struct.pack("<f", loss.item()))
        f.write(flat(grads).tobytes())
        f.write(struct.pack("<%df" % len(losses), *losses))
    os.replace(tmp, path)
    print("%s: %d parameters, loss %.6f, AdamW losses %s" % (path, nparams, loss.item(),
          " ".join("%.4f" % x for x in losses)))


if __name__ == "__main__":
    torch.manual_seed(0)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref")
    os.makedirs(out, exist_ok=True)
    base = dict(V=29, T=16, L=2, H=4, C=24, F=96, B=3, attention="flow", clamp=1.0, learned=True,
                tied=True, relu=False, embed_scale=False, decay_embeddings=True, lr=3e-3, beta1=0.9,
                beta2=0.99, eps=1e-8, weight_decay=0.1, grad_clip=1.0, steps=10)
    make_state(os.path.join(out, "gpt_flow_learned.bin"), base, 1)
    make_state(os.path.join(out, "gpt_flow_sinusoidal.bin"),
               dict(base, V=50, H=2, F=40, B=2, clamp=5.0, learned=False, tied=False, relu=True,
                    embed_scale=True, decay_embeddings=False, beta2=0.98, weight_decay=0.01), 2)
    make_state(os.path.join(out, "gpt_softmax_learned.bin"), dict(base, attention="softmax"), 3)
    make_state(os.path.join(out, "gpt_linear_sinusoidal.bin"),
               dict(base, attention="linear", learned=False, relu=True, embed_scale=True), 4)
