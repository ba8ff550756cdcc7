"""PyTorch reference of train_vit_flow.c's model, written from the project's own
specification (the Vision Transformer section of README.md, the model comment at
the top of train_vit_flow.c, and doc/FLOW_ATTENTION.md through
dev/attention_reference.py), not from another implementation. Computes in
float64 with autograd and saves a debug state that dev/test/test_vit.c matches in
float32 to 1e-4: parameters, images, soft targets, logits, loss, gradients, and
the losses of 6 AdamW steps (weight decay on weight matrices only, clipping).
Dropout and drop-path are off here (the float64 gradient test covers them).

    /usr/bin/python3 dev/vit_reference.py      # writes dev/ref/vit_*.bin

File layout (little-endian): int32[32] header, float32[16] settings, then float32
parameters (in the trainer's order), images (B,S,S,Cin), targets (B,K), logits
(B,K), loss, gradients, losses of the AdamW steps.
"""
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attention_reference import flow_normal, softmax_attention, linear_attention  # noqa: E402

MAGIC, VERSION = 20250303, 1
ATTENTION = {"flow": 0, "softmax": 1, "linear": 2}


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layout(c):
    """(name, shape, decays) of every tensor, in the trainer's memory order."""
    S, P, Cin, K = c["S"], c["P"], c["Cin"], c["K"]
    dims, depths = c["dims"], c["depths"]
    T0 = (S // P) ** 2 + c["cls"]
    out = [("patch_w", (dims[0], P, P, Cin), True), ("patch_b", (dims[0],), False)]
    if c["cls"]:
        out.append(("cls", (dims[0],), False))
    out.append(("pos", (T0, dims[0]), False))
    for s in range(1, len(dims)):
        out += [("merge_w%d" % s, (dims[s], 2, 2, dims[s - 1]), True), ("merge_b%d" % s, (dims[s],), False)]
    l = 0
    for s, depth in enumerate(depths):
        C, Fh = dims[s], c["ffn"][s]
        for _ in range(depth):
            out += [("ln1w%d" % l, (C,), False), ("ln1b%d" % l, (C,), False), ("qkvw%d" % l, (3 * C, C), True),
                    ("qkvb%d" % l, (3 * C,), False), ("projw%d" % l, (C, C), True), ("projb%d" % l, (C,), False)]
            if c["layerscale"] and c["layerscale_attn"]:
                out.append(("ls1%d" % l, (C,), False))
            out += [("ln2w%d" % l, (C,), False), ("ln2b%d" % l, (C,), False), ("fcw%d" % l, (Fh, C), True),
                    ("fcb%d" % l, (Fh,), False), ("fc2w%d" % l, (C, Fh), True), ("fc2b%d" % l, (C,), False)]
            if c["layerscale"]:
                out.append(("ls2%d" % l, (C,), False))
            l += 1
    Cl = dims[-1]
    out += [("lnfw", (Cl,), False), ("lnfb", (Cl,), False), ("headw", (K, Cl), True), ("headb", (K,), False)]
    return out


def attention(q, k, v, kind, clamp):
    if kind == "flow":
        return flow_normal(q, k, v, clamp)
    if kind == "softmax":
        return softmax_attention(q, k, v, False)
    return linear_attention(q, k, v, False)


def forward(Pm, c, images):
    """images (B,S,S,Cin) normalised; returns logits (B,K)."""
    B = images.shape[0]
    x = F.conv2d(images.permute(0, 3, 1, 2), Pm["patch_w"].permute(0, 3, 1, 2), Pm["patch_b"], stride=c["P"])
    side = x.shape[-1]
    x = x.flatten(2).transpose(1, 2)  # (B, N, C) in row-major patch order
    if c["cls"]:
        x = torch.cat([Pm["cls"].view(1, 1, -1).expand(B, 1, -1), x], 1)
    x = x + Pm["pos"]
    l = 0
    for s, depth in enumerate(c["depths"]):
        C, H = c["dims"][s], c["heads"][s]
        if s > 0:
            grid = x.transpose(1, 2).reshape(B, -1, side, side)
            x = F.conv2d(grid, Pm["merge_w%d" % s].permute(0, 3, 1, 2), Pm["merge_b%d" % s], stride=2)
            side = x.shape[-1]
            x = x.flatten(2).transpose(1, 2)
        T = x.shape[1]
        for _ in range(depth):
            h = F.layer_norm(x, (C,), Pm["ln1w%d" % l], Pm["ln1b%d" % l], eps=1e-5)
            qkv = h @ Pm["qkvw%d" % l].T + Pm["qkvb%d" % l]
            q, k, v = (t.reshape(B, T, H, C // H).transpose(1, 2) for t in qkv.split(C, -1))
            y = attention(q, k, v, c["attention"], c["clamp"]).transpose(1, 2).reshape(B, T, C)
            y = y @ Pm["projw%d" % l].T + Pm["projb%d" % l]
            if "ls1%d" % l in Pm:
                y = y * Pm["ls1%d" % l]
            x = x + y
            h = F.layer_norm(x, (C,), Pm["ln2w%d" % l], Pm["ln2b%d" % l], eps=1e-5)
            h = gelu_tanh(h @ Pm["fcw%d" % l].T + Pm["fcb%d" % l])
            y = h @ Pm["fc2w%d" % l].T + Pm["fc2b%d" % l]
            if "ls2%d" % l in Pm:
                y = y * Pm["ls2%d" % l]
            x = x + y
            l += 1
    x = F.layer_norm(x, (c["dims"][-1],), Pm["lnfw"], Pm["lnfb"], eps=1e-5)
    pooled = x[:, 0] if c["cls"] else x.mean(1)
    return pooled @ Pm["headw"].T + Pm["headb"]


def loss_of(logits, targets):
    return -(targets * torch.log_softmax(logits, -1)).sum(-1).mean()


def make_state(path, c, seed):
    g = torch.Generator().manual_seed(seed)
    Pm, decay = {}, {}
    for name, shape, dec in layout(c):
        t = 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)
        if name.startswith(("ln1w", "ln2w", "lnfw")):
            t = t + 1.0
        Pm[name] = t.float().double().requires_grad_(True)
        decay[name] = dec
    B, S, Cin, K = c["B"], c["S"], c["Cin"], c["K"]
    images = torch.randn(B, S, S, Cin, generator=g, dtype=torch.float64).float().double()
    labels = torch.randint(0, K, (B,), generator=g)
    smooth = 0.1
    targets = torch.full((B, K), smooth / K, dtype=torch.float64)
    targets[torch.arange(B), labels] += 1 - smooth
    targets = (0.75 * targets + 0.25 * targets.flip(0)).float().double()  # as mixup with lambda 0.75

    logits = forward(Pm, c, images)
    loss = loss_of(logits, targets)
    loss.backward()
    grads = {n: Pm[n].grad.detach().clone() for n in Pm}
    params0 = {n: Pm[n].detach().clone() for n in Pm}

    groups = [{"params": [Pm[n] for n in Pm if decay[n]], "weight_decay": c["weight_decay"]},
              {"params": [Pm[n] for n in Pm if not decay[n]], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=c["lr"], betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for _ in range(c["steps"]):
        opt.zero_grad()
        loss_i = loss_of(forward(Pm, c, images), targets)
        loss_i.backward()
        torch.nn.utils.clip_grad_norm_(list(Pm.values()), c["grad_clip"])
        opt.step()
        losses.append(loss_i.item())

    order = [n for n, _, _ in layout(c)]
    nparams = sum(params0[n].numel() for n in order)
    pad4 = lambda v: list(v) + [0] * (4 - len(v))
    header = [MAGIC, VERSION, S, Cin, K, c["P"], len(c["dims"])] + pad4(c["dims"]) + pad4(c["depths"]) + \
        pad4(c["heads"]) + pad4(c["ffn"]) + [ATTENTION[c["attention"]], c["cls"], int(c["layerscale_attn"]), B,
                                             nparams, c["steps"]]
    settings = [c["clamp"], c["layerscale"], c["lr"], c["weight_decay"], c["grad_clip"]]
    flat = lambda d: torch.cat([d[n].reshape(-1) for n in order]).float().numpy()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<32i", *(header + [0] * (32 - len(header)))))
        f.write(struct.pack("<16f", *(settings + [0.0] * (16 - len(settings)))))
        f.write(flat(params0).tobytes())
        f.write(images.float().numpy().tobytes())
        f.write(targets.float().numpy().tobytes())
        f.write(logits.detach().float().numpy().tobytes())
        f.write(struct.pack("<f", loss.item()))
        f.write(flat(grads).tobytes())
        f.write(struct.pack("<%df" % len(losses), *losses))
    os.replace(tmp, path)
    print("%s: %d parameters, loss %.6f, AdamW losses %s" % (path, nparams, loss.item(),
          " ".join("%.4f" % x for x in losses)))


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref")
    os.makedirs(out, exist_ok=True)
    base = dict(B=3, K=7, clamp=1.0, lr=3e-3, weight_decay=0.05, grad_clip=1.0, steps=6)
    cases = {
        # plain ViT: class token, LayerScale on both branches, Flow-Attention
        "vit_plain_cls_flow": dict(S=12, Cin=3, P=3, dims=[16], depths=[2], heads=[2], ffn=[32], attention="flow",
                                   cls=1, layerscale=1, layerscale_attn=1),
        # plain ViT: mean pooling, softmax attention
        "vit_plain_mean_softmax": dict(S=8, Cin=1, P=2, dims=[12], depths=[2], heads=[3], ffn=[24],
                                       attention="softmax", cls=0, layerscale=0, layerscale_attn=0),
        # hierarchical: 3 stages joined by 2x2 merges, LayerScale on the MLP branch, Flow-Attention
        "vit_hier_flow": dict(S=16, Cin=3, P=2, dims=[8, 16, 24], depths=[1, 2, 1], heads=[2, 2, 3],
                              ffn=[32, 64, 96], attention="flow", cls=0, layerscale=1, layerscale_attn=0),
    }
    for i, (name, c) in enumerate(cases.items()):
        make_state(os.path.join(out, name + ".bin"), dict(base, **c), 100 + i)


if __name__ == "__main__":
    main()
