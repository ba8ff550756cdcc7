"""The PyTorch peer of our C trainers: the same models written the way a PyTorch user
writes them for speed (eager mode, nn.Linear/nn.LayerNorm, fused qkv, AdamW with its
fastest CPU implementation, in-place gradient clipping), timed per whole training
update (forward, backward, clip, optimizer step) on random data of the right shapes.
dev/bench_train.py runs this file once per measurement, interleaved with the C
trainers; it runs under the virtual environment's python (`make venv`).

    .venv/bin/python dev/torch_peer.py info                      # backend, sgemm GFLOP/s on 1 and 2 threads
    .venv/bin/python dev/torch_peer.py check                     # same loss/gradients as dev/gpt_reference.py
    .venv/bin/python dev/torch_peer.py gpt --threads 2           # the default tinyshakespeare model
    .venv/bin/python dev/torch_peer.py nanogpt --threads 2       # nanoGPT's model at the same size
    .venv/bin/python dev/torch_peer.py vit --threads 2           # the Fashion-MNIST ViT
    .venv/bin/python dev/torch_peer.py gpt --n_layer 6 --n_embd 384 --n_head 6 --context 256 --batch_size 8

Models:
- `gpt`: train_gpt_flow.c's model: token embedding (optionally scaled by sqrt(C)) plus
  learned or fairseq sinusoidal positions, pre-LN blocks with a fused qkv projection,
  causal Flow-Attention exactly as ../shared/FLOW_ATTENTION.md (sigmoid kernel,
  eps = 1e-6 on every component, normal counts n_i, clamp bound c), GELU (tanh form) or
  ReLU MLP, final LayerNorm, output layer tied to the token embedding (or not), the
  trainer's dropout sites; AdamW with weight decay on the weight matrices (and the
  embeddings with decay_embeddings), global gradient-norm clipping.
  The causal product sum_{j<=i} (q_i . k_j) w_j is a masked T x T matrix product at
  short contexts (up to 64) and a chunked scan (masked products inside chunks of 64, a carried
  D x M state across them) at long ones (`--causal_product`, "auto" picks by context).
- `nanogpt`: nanoGPT's model.py at the same size: softmax attention through
  F.scaled_dot_product_attention(is_causal=True), exact GELU, learned positions, tied
  output layer, no biases (nanoGPT's train.py default `bias = False`), nanoGPT's decay
  groups (every tensor of 2 or more dimensions).
- `vit`: train_vit_flow.c's plain ViT (7x7 patches as a stride-7 Conv2d, learned
  positions, pre-LN blocks, bidirectional Flow-Attention, GELU tanh MLP, mean pooling,
  linear head), cross-entropy with label smoothing, AdamW (decay on weight matrices),
  clipping 1.0.

Output: with --json, one JSON object on the last line of stdout:
{"model":..., "threads":..., "ms":[per-update ms of the timed updates], "median_ms":...}.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-6  # Flow-Attention's eps (FLOW_ATTENTION.md)
CHUNK = 64  # chunk length of the chunked causal product
DENSE_MAX_T = CHUNK  # "auto": the masked T x T product up to one chunk, chunks beyond (faster from T = 128 on)


# ---------------------------------------------------------------------------
# Flow-Attention (FLOW_ATTENTION.md), q, k: (B, H, T, D), v: (B, H, T, M)

def causal_product_dense(q, k, v):
    """sum_{j<=i} (q_i . k_j) v_j through the masked T x T score matrix."""
    return torch.matmul(torch.matmul(q, k.transpose(-1, -2)).tril_(), v)


def causal_product_chunked(q, k, v, chunk=CHUNK):
    """The same in chunks of `chunk` positions: a masked product inside each chunk, plus
    q times the D x M state sum_{j in earlier chunks} k_j v_j^T."""
    B, H, T, D = q.shape
    M = v.shape[-1]
    pad = (-T) % chunk
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    nc = (T + pad) // chunk
    qc, kc, vc = q.view(B, H, nc, chunk, D), k.view(B, H, nc, chunk, D), v.view(B, H, nc, chunk, M)
    inside = torch.matmul(torch.matmul(qc, kc.transpose(-1, -2)).tril_(), vc)
    state = torch.matmul(kc.transpose(-1, -2), vc)  # (B, H, nc, D, M) per chunk
    state = state.cumsum(2) - state  # exclusive: the chunks before
    out = (inside + torch.matmul(qc, state)).view(B, H, nc * chunk, M)
    return out[:, :, :T] if pad else out


def flow_attention_causal(q, k, v, clamp, causal_product="auto"):
    T = q.shape[2]
    q, k = torch.sigmoid(q), torch.sigmoid(k)
    n = torch.arange(1, T + 1, dtype=q.dtype, device=q.device).view(T, 1)
    qe, ke = q + EPS, k + EPS
    incoming = 1.0 / (qe * (k.cumsum(2) + EPS)).sum(-1, keepdim=True)  # I_i   (B,H,T,1)
    outgoing = 1.0 / (ke * (q.cumsum(2) + EPS)).sum(-1, keepdim=True)  # O_i
    sink = (qe * ((k * (n * outgoing)).cumsum(2) + EPS)).sum(-1, keepdim=True) / n  # Ic_i
    source = (ke * ((q * (n * incoming)).cumsum(2) + EPS)).sum(-1, keepdim=True) / n  # Oc_i
    source = source.clamp(-clamp, clamp)
    allocation = torch.sigmoid(sink)  # A_i
    e = source.exp()
    competition = e / e.cumsum(2) * n  # C_i
    if causal_product == "auto":
        causal_product = "dense" if T <= DENSE_MAX_T else "chunked"
    product = causal_product_dense if causal_product == "dense" else causal_product_chunked
    return product(q, k, v * competition) * (incoming * allocation)


def flow_attention_normal(q, k, v, clamp):
    L, S = q.shape[2], k.shape[2]
    q, k = torch.sigmoid(q), torch.sigmoid(k)
    qe, ke = q + EPS, k + EPS
    incoming = 1.0 / (qe * (k.sum(2, keepdim=True) + EPS)).sum(-1, keepdim=True)  # (B,H,L,1)
    outgoing = 1.0 / (ke * (q.sum(2, keepdim=True) + EPS)).sum(-1, keepdim=True)  # (B,H,S,1)
    sink = (qe * ((k * outgoing).sum(2, keepdim=True) + EPS)).sum(-1, keepdim=True)
    source = (ke * ((q * incoming).sum(2, keepdim=True) + EPS)).sum(-1, keepdim=True)
    source = source.clamp(-clamp, clamp)
    allocation = torch.sigmoid(sink * (L / S))
    competition = torch.softmax(source, dim=2) * S
    kv = torch.matmul(k.transpose(-1, -2), v * competition)  # (B,H,D,M)
    return torch.matmul(q * incoming, kv) * allocation


# ---------------------------------------------------------------------------
# train_gpt_flow.c's model

def sinusoids(T, C):
    """fairseq's sinusoidal positions, numbered from 2 (as train_gpt_flow.c), float64."""
    half = C // 2
    step = math.log(10000.0) / (half - 1)
    freq = torch.exp(torch.arange(half, dtype=torch.float64) * -step)
    angle = (torch.arange(T, dtype=torch.float64) + 2).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(angle), torch.cos(angle)], 1)
    if C % 2:
        table = torch.cat([table, torch.zeros(T, 1, dtype=torch.float64)], 1)
    return table


class FlowBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        C, Fh = c["n_embd"], c["n_ffn"] or 4 * c["n_embd"]
        self.H, self.clamp, self.causal_product = c["n_head"], c["clamp"], c["causal_product"]
        self.relu = c["activation"] == "relu"
        self.p_attn, self.p_hidden, self.p_resid = c["dropout_attn"], c["dropout_hidden"], c["dropout_resid"]
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, Fh)
        self.fc_proj = nn.Linear(Fh, C)

    def forward(self, x):
        B, T, C = x.shape
        H = self.H
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
        y = flow_attention_causal(q, k, v, self.clamp, self.causal_product)
        y = self.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + F.dropout(y, self.p_attn, self.training)
        h = self.fc(self.ln2(x))
        h = F.relu(h) if self.relu else F.gelu(h, approximate="tanh")
        h = self.fc_proj(F.dropout(h, self.p_hidden, self.training))
        return x + F.dropout(h, self.p_resid, self.training)


class FlowGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        V, T, C, L = c["vocab_size"], c["context"], c["n_embd"], c["n_layer"]
        self.c = c
        self.wte = nn.Embedding(V, C)
        self.learned = c["positions"] == "learned"
        if self.learned:
            self.wpe = nn.Embedding(T, C)
        else:
            self.register_buffer("pos_table", sinusoids(T, C).float(), persistent=False)
        self.scale = math.sqrt(C) if c["embed_scale"] else 1.0
        self.blocks = nn.ModuleList(FlowBlock(c) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        self.lm_head = None if c["tied"] else nn.Linear(C, V, bias=False)
        # train_gpt_flow.c's initialisation (GPT-2's; fairseq's token embedding scale)
        std, resid_std = c["init_std"], c["init_std"] / math.sqrt(2 * L)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln" in name:
                nn.init.ones_(p)
            elif name == "wte.weight":
                nn.init.normal_(p, std=C ** -0.5 if c["embed_scale"] else std)
            else:
                nn.init.normal_(p, std=resid_std if name.endswith(("proj.weight", "fc_proj.weight")) else std)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        pos = self.wpe.weight[:T] if self.learned else self.pos_table[:T]
        x = self.wte(idx) * self.scale + pos if self.scale != 1.0 else self.wte(idx) + pos
        x = F.dropout(x, self.c["dropout_embd"], self.training)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        logits = F.linear(x, self.wte.weight if self.lm_head is None else self.lm_head.weight)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)

    def param_groups(self, weight_decay, decay_embeddings):
        """train_gpt_flow.c's groups: decay on weight matrices, embeddings if asked."""
        decay, rest = [], []
        for name, p in self.named_parameters():
            matrix = p.dim() == 2 and not name.startswith(("wte", "wpe"))
            (decay if matrix or (decay_embeddings and name.startswith(("wte", "wpe"))) else rest).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------
# nanoGPT's model.py (Karpathy), same structure and calls, trimmed to training

class NanoLayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class NanoAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        C, self.n_head, self.dropout = c["n_embd"], c["n_head"], c["dropout"]
        self.c_attn = nn.Linear(C, 3 * C, bias=c["bias"])
        self.c_proj = nn.Linear(C, C, bias=c["bias"])
        self.resid_dropout = nn.Dropout(c["dropout"])

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                           dropout_p=self.dropout if self.training else 0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class NanoMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        C = c["n_embd"]
        self.c_fc = nn.Linear(C, 4 * C, bias=c["bias"])
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * C, C, bias=c["bias"])
        self.dropout = nn.Dropout(c["dropout"])

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class NanoBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = NanoLayerNorm(c["n_embd"], c["bias"])
        self.attn = NanoAttention(c)
        self.ln_2 = NanoLayerNorm(c["n_embd"], c["bias"])
        self.mlp = NanoMLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        V, T, C = c["vocab_size"], c["context"], c["n_embd"]
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(V, C), wpe=nn.Embedding(T, C), drop=nn.Dropout(c["dropout"]),
            h=nn.ModuleList([NanoBlock(c) for _ in range(c["n_layer"])]), ln_f=NanoLayerNorm(C, c["bias"])))
        self.lm_head = nn.Linear(C, V, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c["n_layer"]))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)

    def param_groups(self, weight_decay, decay_embeddings=True):
        """nanoGPT's configure_optimizers: decay every tensor of 2 or more dimensions."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


# ---------------------------------------------------------------------------
# train_vit_flow.c's plain ViT (one stage, mean pooling)

class VitBlock(nn.Module):
    def __init__(self, C, H, Fh, clamp):
        super().__init__()
        self.H, self.clamp = H, clamp
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc1 = nn.Linear(C, Fh)
        self.fc2 = nn.Linear(Fh, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.H, C // self.H).permute(2, 0, 3, 1, 4).unbind(0)
        y = flow_attention_normal(q, k, v, self.clamp)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class FlowViT(nn.Module):
    def __init__(self, c):
        super().__init__()
        S, P, C = c["image_size"], c["patch_size"], c["dim"]
        self.patch = nn.Conv2d(c["channels"], C, P, stride=P)
        self.pos = nn.Parameter(torch.zeros(1, (S // P) ** 2, C))
        self.blocks = nn.ModuleList(VitBlock(C, c["heads"], c["mlp_ratio"] * C, c["clamp"])
                                    for _ in range(c["depth"]))
        self.ln_f = nn.LayerNorm(C)
        self.head = nn.Linear(C, c["num_classes"])
        self.label_smoothing = c["label_smoothing"]
        for name, p in self.named_parameters():  # DeiT's (train_vit_flow.c's) initialisation
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln" in name:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, std=c["init_std"])

    def forward(self, images, labels):
        x = self.patch(images).flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x).mean(1))
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def param_groups(self, weight_decay, decay_embeddings=False):
        """train_vit_flow.c's groups: decay on the weight matrices (patch, qkv, proj, MLP, head)."""
        decay, rest = [], []
        for name, p in self.named_parameters():
            (decay if name.endswith("weight") and p.dim() >= 2 else rest).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------
# settings: train_gpt_flow's and train_vit_flow's defaults (configs/gpt_shakespeare.json,
# configs/vit_fashion_mnist.json)

GPT_DEFAULTS = dict(vocab_size=65, context=64, n_layer=4, n_head=4, n_embd=128, n_ffn=0, clamp=1.0,
                    positions="learned", embed_scale=False, tied=True, activation="gelu", init_std=0.02,
                    dropout_embd=0.0, dropout_attn=0.0, dropout_hidden=0.0, dropout_resid=0.0,
                    batch_size=12, lr=1e-3, beta1=0.9, beta2=0.99, adam_eps=1e-8, weight_decay=0.1,
                    decay_embeddings=True, grad_clip=1.0, causal_product="auto",
                    dropout=0.0, bias=False)  # the last two: nanoGPT's
VIT_DEFAULTS = dict(image_size=28, channels=1, num_classes=10, patch_size=7, dim=128, depth=6, heads=4,
                    mlp_ratio=3, clamp=1.0, init_std=0.02, label_smoothing=0.1, batch_size=32, lr=1e-3,
                    beta1=0.9, beta2=0.999, adam_eps=1e-8, weight_decay=0.05, grad_clip=1.0)


def make_optimizer(groups, c, impl):
    kw = dict(lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["adam_eps"])
    if impl == "fused":
        return torch.optim.AdamW(groups, fused=True, **kw)
    if impl == "foreach":
        return torch.optim.AdamW(groups, foreach=True, **kw)
    return torch.optim.AdamW(groups, foreach=False, **kw)


def build(kind, c, seed=1337):
    """Model, optimizer, and a function that draws one batch of random data."""
    torch.manual_seed(seed)
    if kind == "vit":
        model = FlowViT(c)
        B, S = c["batch_size"], c["image_size"]

        def batch():
            return torch.randn(B, c["channels"], S, S), torch.randint(0, c["num_classes"], (B,))
    else:
        model = FlowGPT(c) if kind == "gpt" else NanoGPT(c)
        B, T, V = c["batch_size"], c["context"], c["vocab_size"]

        def batch():
            return torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    model.train()
    opt = make_optimizer(model.param_groups(c["weight_decay"], c.get("decay_embeddings", True)), c, c["adamw"])
    return model, opt, batch


def train_update(model, opt, params, inputs, targets, grad_clip):
    """One whole update, as the C trainers do it: forward, backward, clip, AdamW step."""
    opt.zero_grad(set_to_none=True)
    loss = model(inputs, targets)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    opt.step()
    return loss.item()


def time_training(kind, c, threads, warmup, steps):
    torch.set_num_threads(threads)
    model, opt, batch = build(kind, c)
    params = [p for p in model.parameters() if p.requires_grad]
    times, losses = [], []
    for i in range(warmup + steps):
        inputs, targets = batch()  # drawn outside the timed region, as the C trainers read theirs inside it
        t0 = time.perf_counter()
        losses.append(train_update(model, opt, params, inputs, targets, c["grad_clip"]))
        ms = (time.perf_counter() - t0) * 1e3
        if i >= warmup:
            times.append(ms)
    nparams = sum(p.numel() for p in params)
    return dict(model=kind, threads=threads, params=nparams, ms=times,
                median_ms=statistics.median(times) if times else None, losses=losses)


# ---------------------------------------------------------------------------
# information: backend and sgemm speed

def backend_info(threads_list=(1, 2), n=2048, reps=3):
    """torch's version, CPU kernels and BLAS (torch.__config__.show()), and the float32
    GFLOP/s of an n x n x n matmul on each thread count (best of reps)."""
    import re
    shown = torch.__config__.show()
    lines = [l.strip().lstrip("- ") for l in shown.splitlines()]
    settings = dict(re.findall(r"(\w+)=([^,\n]*)", shown))
    info = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": torch.backends.mkl.is_available(), "mkldnn": torch.backends.mkldnn.is_available(),
            "blas_info": settings.get("BLAS_INFO", "?"), "lapack_info": settings.get("LAPACK_INFO", "?"),
            "config_lines": [l for l in lines if any(w in l for w in ("Math Kernel", "MKL-DNN", "oneDNN", "OpenBLAS",
                                                                       "BLAS", "CPU capability", "OpenMP"))
                             and not l.startswith("Build settings")],
            "parallel": [l.strip() for l in torch.__config__.parallel_info().splitlines() if "backend" in l],
            "sgemm_gflops": {}}
    torch.manual_seed(0)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for t in threads_list:
        torch.set_num_threads(t)
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
        info["sgemm_gflops"][str(t)] = 2.0 * n ** 3 / best / 1e9
    return info


# ---------------------------------------------------------------------------
# check: the same model as dev/gpt_reference.py (and dev/vit_reference.py)

def _load_gpt(model, P, L):
    """Copies gpt_reference.py's parameter dict into FlowGPT."""
    with torch.no_grad():
        model.wte.weight.copy_(P["wte"])
        if "wpe" in P:
            model.wpe.weight.copy_(P["wpe"])
        for l, b in enumerate(model.blocks):
            for mod, w, bias in ((b.ln1, "ln1w", "ln1b"), (b.qkv, "qkvw", "qkvb"), (b.proj, "attprojw", "attprojb"),
                                 (b.ln2, "ln2w", "ln2b"), (b.fc, "fcw", "fcb"), (b.fc_proj, "fcprojw", "fcprojb")):
                mod.weight.copy_(P[w][l])
                mod.bias.copy_(P[bias][l])
        model.ln_f.weight.copy_(P["lnfw"])
        model.ln_f.bias.copy_(P["lnfb"])
        if model.lm_head is not None:
            model.lm_head.weight.copy_(P["lm_head"])


def _gpt_grads(model):
    """FlowGPT's gradients in gpt_reference.py's names and shapes."""
    g = {"wte": model.wte.weight.grad}
    if model.learned:
        g["wpe"] = model.wpe.weight.grad
    stack = lambda f: torch.stack([f(b) for b in model.blocks])
    for name, f in (("ln1w", lambda b: b.ln1.weight), ("ln1b", lambda b: b.ln1.bias), ("qkvw", lambda b: b.qkv.weight),
                    ("qkvb", lambda b: b.qkv.bias), ("attprojw", lambda b: b.proj.weight),
                    ("attprojb", lambda b: b.proj.bias), ("ln2w", lambda b: b.ln2.weight),
                    ("ln2b", lambda b: b.ln2.bias), ("fcw", lambda b: b.fc.weight), ("fcb", lambda b: b.fc.bias),
                    ("fcprojw", lambda b: b.fc_proj.weight), ("fcprojb", lambda b: b.fc_proj.bias)):
        g[name] = stack(lambda b: f(b).grad)
    g["lnfw"], g["lnfb"] = model.ln_f.weight.grad, model.ln_f.bias.grad
    if model.lm_head is not None:
        g["lm_head"] = model.lm_head.weight.grad
    return g


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def check():
    """Same weights and inputs as dev/gpt_reference.py's float64 model give the same loss
    (float64 to 1e-12, float32 to 1e-5), gradients and 10 AdamW steps with clipping;
    the chunked causal product equals the dense one; the ViT matches dev/vit_reference.py."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import gpt_reference as ref
    import vit_reference as vref
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    failures = 0

    def report(name, value, tol):
        nonlocal failures
        ok = value <= tol
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}: {value:.2e} (tolerance {tol:.0e})")

    base = dict(V=29, T=16, L=2, H=4, C=24, F=96, B=3, attention="flow", clamp=1.0, learned=True, tied=True,
                relu=False, embed_scale=False, decay_embeddings=True, lr=3e-3, beta1=0.9, beta2=0.99, eps=1e-8,
                weight_decay=0.1, grad_clip=1.0, steps=10)
    cases = {"learned/gelu/tied, clamp 1": base,
             "sinusoidal/relu/untied/embed-scale, clamp 5": dict(
                 base, V=50, H=2, F=40, B=2, clamp=5.0, learned=False, tied=False, relu=True, embed_scale=True,
                 decay_embeddings=False, beta2=0.98, weight_decay=0.01),
             "long context T=200, chunked product": dict(base, T=200, B=2, clamp=5.0)}
    for case, rc in cases.items():
        g = torch.Generator().manual_seed(7)
        P = {}
        for name in ref.NAMES:
            shape = ref.shapes(rc)[name]
            if shape is None:
                continue
            t = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
            if name.startswith("ln") and name.endswith("w"):
                t = t + 1.0
            P[name] = t.float().double().requires_grad_(True)
        idx = torch.randint(0, rc["V"], (rc["B"], rc["T"]), generator=g)
        targets = torch.randint(0, rc["V"], (rc["B"], rc["T"]), generator=g)
        targets[0, 3] = -1
        ref_loss = ref.loss_of(ref.forward(P, rc, idx), targets)
        ref_loss.backward()
        ref_grads = {n: P[n].grad.detach().clone() for n in P}

        c = dict(GPT_DEFAULTS, vocab_size=rc["V"], context=rc["T"], n_layer=rc["L"], n_head=rc["H"], n_embd=rc["C"],
                 n_ffn=rc["F"], clamp=rc["clamp"], positions="learned" if rc["learned"] else "sinusoidal",
                 embed_scale=rc["embed_scale"], tied=rc["tied"], activation="relu" if rc["relu"] else "gelu",
                 lr=rc["lr"], beta1=rc["beta1"], beta2=rc["beta2"], adam_eps=rc["eps"],
                 weight_decay=rc["weight_decay"], decay_embeddings=rc["decay_embeddings"], grad_clip=rc["grad_clip"])
        products = ("dense", "chunked") if rc["T"] > CHUNK else ("dense",)
        for product in products:
            for dtype in (torch.float64, torch.float32):
                cc = dict(c, causal_product=product)
                model = FlowGPT(cc).to(dtype)
                if not rc["learned"]:
                    model.pos_table = sinusoids(rc["T"], rc["C"]).to(dtype)
                _load_gpt(model, {n: t.detach() for n, t in P.items()}, rc["L"])
                loss = model(idx, targets)
                loss.backward()
                tag = f"{case}, {product}, {'float64' if dtype == torch.float64 else 'float32'}"
                report(f"loss {tag}", abs(loss.item() - ref_loss.item()), 1e-12 if dtype == torch.float64 else 1e-5)
                grads = _gpt_grads(model)
                worst = max(_rel(grads[n], ref_grads[n]) for n in ref_grads)
                report(f"gradients {tag} (max relative)", worst, 1e-9 if dtype == torch.float64 else 1e-4)
                if dtype == torch.float64 and product == "dense":
                    # 10 AdamW steps with clipping: the peer's optimizer set-up against the reference's
                    decay = ["qkvw", "attprojw", "fcw", "fcprojw", "lm_head"] + \
                        (["wte", "wpe"] if rc["decay_embeddings"] else [])
                    Pr = {n: t.detach().clone().requires_grad_(True) for n, t in P.items()}
                    ropt = torch.optim.AdamW(
                        [{"params": [Pr[n] for n in Pr if n in decay], "weight_decay": rc["weight_decay"]},
                         {"params": [Pr[n] for n in Pr if n not in decay], "weight_decay": 0.0}],
                        lr=rc["lr"], betas=(rc["beta1"], rc["beta2"]), eps=rc["eps"])
                    opt = make_optimizer(model.param_groups(cc["weight_decay"], cc["decay_embeddings"]), cc, "foreach")
                    params = list(model.parameters())
                    worst = 0.0
                    for _ in range(rc["steps"]):
                        ropt.zero_grad()
                        rl = ref.loss_of(ref.forward(Pr, rc, idx), targets)
                        rl.backward()
                        torch.nn.utils.clip_grad_norm_(list(Pr.values()), rc["grad_clip"])
                        ropt.step()
                        ml = train_update(model, opt, params, idx, targets, cc["grad_clip"])
                        worst = max(worst, abs(ml - rl.item()))
                    report(f"10 AdamW steps with clipping, {case} (max loss difference)", worst, 1e-9)

    # the optimizer implementation the benchmark uses gives the same steps as the plain one
    for impl in ("fused", "foreach"):
        torch.manual_seed(3)
        c = dict(GPT_DEFAULTS, vocab_size=29, context=16, n_layer=2, n_head=4, n_embd=24, batch_size=3)
        losses = []
        for which in (impl, "for-loop"):
            model = FlowGPT(c)
            torch.manual_seed(4)
            idx, targets = torch.randint(0, 29, (3, 16)), torch.randint(0, 29, (3, 16))
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
            opt = make_optimizer(model.param_groups(0.1, True), c, which)
            params = list(model.parameters())
            losses.append([train_update(model, opt, params, idx, targets, 1.0) for _ in range(5)])
        report(f"AdamW {impl} against for-loop AdamW, 5 steps (max loss difference)",
               max(abs(a - b) for a, b in zip(*losses)), 1e-5)

    # the ViT against dev/vit_reference.py
    vc = dict(S=28, Cin=1, P=7, dims=[32], depths=[2], heads=[4], ffn=[96], K=10, cls=0, layerscale=0,
              layerscale_attn=0, attention="flow", clamp=1.0)
    g = torch.Generator().manual_seed(11)
    Pm = {}
    for name, shape, _ in vref.layout(vc):
        t = 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)
        if name.startswith(("ln1w", "ln2w", "lnfw")):
            t = t + 1.0
        Pm[name] = t.float().double()
    images = torch.randn(4, 28, 28, 1, generator=g, dtype=torch.float64).float().double()
    labels = torch.randint(0, 10, (4,), generator=g)
    soft = torch.full((4, 10), 0.1 / 10, dtype=torch.float64)
    soft[torch.arange(4), labels] += 0.9
    ref_loss = vref.loss_of(vref.forward(Pm, vc, images), soft).item()
    for dtype in (torch.float64, torch.float32):
        model = FlowViT(dict(VIT_DEFAULTS, dim=32, depth=2, heads=4, mlp_ratio=3)).to(dtype)
        with torch.no_grad():
            model.patch.weight.copy_(Pm["patch_w"].permute(0, 3, 1, 2))
            model.patch.bias.copy_(Pm["patch_b"])
            model.pos.copy_(Pm["pos"].unsqueeze(0))
            for l, b in enumerate(model.blocks):
                for mod, key in ((b.ln1, "ln1"), (b.qkv, "qkv"), (b.proj, "proj"), (b.ln2, "ln2"), (b.fc1, "fc"),
                                 (b.fc2, "fc2")):
                    mod.weight.copy_(Pm[f"{key}w{l}"])
                    mod.bias.copy_(Pm[f"{key}b{l}"])
            model.ln_f.weight.copy_(Pm["lnfw"])
            model.ln_f.bias.copy_(Pm["lnfb"])
            model.head.weight.copy_(Pm["headw"])
            model.head.bias.copy_(Pm["headb"])
        loss = model(images.permute(0, 3, 1, 2).to(dtype), labels).item()
        report(f"ViT loss against vit_reference.py, {'float64' if dtype == torch.float64 else 'float32'}",
               abs(loss - ref_loss), 1e-12 if dtype == torch.float64 else 1e-5)

    print(f"{failures} failed" if failures else "all checks passed")
    return failures


# ---------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["gpt", "nanogpt", "vit", "info", "check"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates first")
    parser.add_argument("--steps", type=int, default=10, help="timed updates")
    parser.add_argument("--adamw", choices=["fused", "foreach", "for-loop"], default="fused",
                        help="AdamW implementation (fused: torch's fused CPU kernel)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    for key, value in list(GPT_DEFAULTS.items()) + list(VIT_DEFAULTS.items()):
        if any(a.dest == key for a in parser._actions):  # settings both models have
            continue
        kind = {bool: lambda s: s.lower() in ("1", "true", "yes"), int: int, float: float, str: str}[type(value)]
        parser.add_argument("--" + key, type=kind, default=None)
    args = parser.parse_args()

    if args.what == "info":
        info = backend_info()
        print(json.dumps(info) if args.json else "\n".join(f"{k}: {v}" for k, v in info.items()))
        return 0
    if args.what == "check":
        return 1 if check() else 0

    defaults = VIT_DEFAULTS if args.what == "vit" else GPT_DEFAULTS
    c = dict(defaults, adamw=args.adamw)
    for key in defaults:
        if getattr(args, key, None) is not None:
            c[key] = getattr(args, key)
    r = time_training(args.what, c, args.threads, args.warmup, args.steps)
    r["torch"] = torch.__version__
    r["adamw"] = args.adamw
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{args.what}: {r['params']} parameters, {args.threads} thread(s), AdamW {args.adamw}: "
              f"median {r['median_ms']:.1f} ms per update over {args.steps} (after {args.warmup} warm-up); "
              f"losses {' '.join('%.4f' % x for x in r['losses'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
