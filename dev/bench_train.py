"""Training speed of our C trainers against their PyTorch peers, in one interleaved run.

Median milliseconds per whole training update (forward, backward, clip, AdamW step) of
./train_gpt_flow and ./train_vit_flow, from the "ms" field of their JSON-lines logs, and
of the PyTorch peers of dev/torch_peer.py (the same models written the way a PyTorch
user writes them for speed, and nanoGPT's softmax model), for:

  (a) the default tinyshakespeare run (4 layers, 128 channels, 4 heads, context 64, batch 12)
  (b) 6 layers, 384 channels, 6 heads, context 256, batch 8 (tinyshakespeare)
  (c) the paper's WikiText-103 model (configs/gpt_wikitext103_flow.json: 6 layers, 512
      channels, 8 heads, FFN 2048, ReLU, sinusoidal positions, embedding scale, tied,
      vocabulary 267,744, context 512, dropout 0.1) at batch 2, on a token shard made
      from WikiText-2 with the vocabulary padded to 267,744 words
  vit the Fashion-MNIST ViT (configs/vit_fashion_mnist.json, batch 32)

The runs alternate, C run, torch run, C run, ..., so that a change of load on the
machine hits both sides. The C trainers run with OMP_NUM_THREADS=2 (the figure the
speedup uses) and 1 (for information); the torch peers with torch.set_num_threads(1)
and (2), and the speedup is against the better of the two. Each run drops its first
updates (allocation, page faults, warm-up) and the median is taken over the timed
updates of all rounds.

    make bench-train                       # = .venv/bin/python dev/bench_train.py
    .venv/bin/python dev/bench_train.py --configs a,vit --rounds 2
    .venv/bin/python dev/bench_train.py --check        # only the peer's correctness check

Needs `make` (the trainers and data tools) and `make venv` (PyTorch in .venv/).
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "dev", "torch_peer.py")
DATA = os.environ.get("DATA", os.path.join(ROOT, "..", "shared", "data"))
WT_DIR = os.path.join(ROOT, "build", "bench", "wt2_267744")
FASHION_DIR = os.path.join(ROOT, "data", "fashion-mnist")

# ---------------------------------------------------------------------------
# the configurations: trainer settings, passed to the C trainer and the torch peer alike

GPT_B = dict(n_layer=6, n_embd=384, n_head=6, context=256, batch_size=8)


def wikitext103_settings():
    """configs/gpt_wikitext103_flow.json's model and optimizer, at batch 2, grad_accum 1."""
    with open(os.path.join(ROOT, "configs", "gpt_wikitext103_flow.json")) as f:
        cfg = json.load(f)
    keep = ["context", "n_layer", "n_head", "n_embd", "n_ffn", "clamp", "positions", "embed_scale", "tied",
            "activation", "dropout_embd", "dropout_attn", "dropout_hidden", "dropout_resid", "beta1", "beta2",
            "adam_eps", "weight_decay", "decay_embeddings", "grad_clip"]
    s = {k: cfg[k] for k in keep}
    s.update(vocab_size=267744, batch_size=2)
    return s


def vit_settings():
    with open(os.path.join(ROOT, "configs", "vit_fashion_mnist.json")) as f:
        cfg = json.load(f)
    return dict(image_size=cfg["image_size"], channels=cfg["channels"], num_classes=10,
                patch_size=cfg["patch_size"], dim=int(cfg["dims"]), depth=int(cfg["depths"]),
                heads=int(cfg["heads"]), mlp_ratio=cfg["mlp_ratio"], label_smoothing=cfg["label_smoothing"],
                batch_size=cfg["batch_size"], weight_decay=cfg["weight_decay"], grad_clip=cfg["grad_clip"])


def configurations():
    """name -> description, C command (without steps/log), torch peers with their settings,
    warm-up and timed updates per run, rounds, target speedup."""
    c_gpt = ["./train_gpt_flow", "--eval_interval", "0", "--val_data", "", "--sample_tokens", "0",
             "--checkpoint", "", "--log_interval", "1000000"]
    wt = wikitext103_settings()
    nano_wt = dict(vocab_size=wt["vocab_size"], context=wt["context"], n_layer=wt["n_layer"], n_head=wt["n_head"],
                   n_embd=wt["n_embd"], batch_size=wt["batch_size"], dropout=wt["dropout_resid"],
                   beta1=wt["beta1"], beta2=wt["beta2"], weight_decay=wt["weight_decay"],
                   grad_clip=wt["grad_clip"])
    return {
        "a": dict(title="(a) tinyshakespeare default: 4L 128C 4H T=64 B=12",
                  c=c_gpt, c_settings={}, peers=[("gpt", {}), ("nanogpt", {})],
                  warmup=3, steps=15, rounds=3, target=3.0, unit="tokens", per_update=12 * 64),
        "b": dict(title="(b) 6L 384C 6H T=256 B=8 (tinyshakespeare)",
                  c=c_gpt, c_settings=GPT_B, peers=[("gpt", GPT_B), ("nanogpt", GPT_B)],
                  warmup=1, steps=4, rounds=2, target=2.0, unit="tokens", per_update=8 * 256),
        "c": dict(title="(c) WikiText-103 model: 6L 512C 8H FFN 2048 V=267,744 T=512 B=2",
                  c=c_gpt + ["--config", "configs/gpt_wikitext103_flow.json",
                             "--train_data", os.path.join(WT_DIR, "train.bin"),
                             "--vocab", os.path.join(WT_DIR, "vocab.txt")],
                  c_settings=dict(batch_size=2, grad_accum=1),
                  peers=[("gpt", wt), ("nanogpt", nano_wt)],
                  warmup=1, steps=2, rounds=1, target=1.5, unit="tokens", per_update=2 * 512,
                  # a few updates of several seconds each: one timed update per 1-thread run,
                  # nanoGPT on one thread left out, to keep the whole benchmark near 10 minutes
                  steps_1thr=1, skip=[("nanogpt", 1)]),
        "vit": dict(title="ViT Fashion-MNIST: 6 blocks 128C 4H 16 tokens B=32",
                    c=["./train_vit_flow", "--config", "configs/vit_fashion_mnist.json", "--val_data", "",
                       "--checkpoint", "", "--log_interval", "1000000"],
                    c_settings={}, peers=[("vit", vit_settings())],
                    warmup=3, steps=15, rounds=3, target=2.0, unit="images", per_update=32),
    }


# ---------------------------------------------------------------------------
# running

def flag_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def as_flags(settings):
    out = []
    for k, v in settings.items():
        out += ["--" + k, flag_value(v)]
    return out


def run_c(cmd, settings, threads, warmup, steps, timeout):
    """Runs a C trainer for warmup + steps updates; the ms and the MFU of the timed updates."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "log.jsonl")
        args = cmd + as_flags(settings) + ["--steps", str(warmup + steps), "--log_file", log]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{shlex.join(args)} failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
        ms, mfu = {}, {}
        with open(log) as f:
            for line in f:
                rec = json.loads(line)
                if "ms" in rec and "step" in rec:
                    ms[rec["step"]], mfu[rec["step"]] = rec["ms"], rec["mfu"]
    timed = [s for s in sorted(ms) if s > warmup]
    return [ms[s] for s in timed], [mfu[s] for s in timed]


def run_torch(kind, settings, threads, warmup, steps, timeout):
    args = [sys.executable, PEER, kind, "--threads", str(threads), "--warmup", str(warmup), "--steps", str(steps),
            "--json"] + as_flags(settings)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])["ms"]


def schedule(cfg):
    """One round: C runs (2 threads, 1 thread, alternately) between the torch runs."""
    torch_runs = [(kind, t) for kind, _ in cfg["peers"] for t in (1, 2) if (kind, t) not in cfg.get("skip", [])]
    order, c_threads = [], [2, 1]
    for i, run in enumerate(torch_runs):
        order.append(("C", c_threads[i % 2]))
        order.append(run)
    if len(torch_runs) == 1:  # end with a C run on one thread, so both thread counts are measured
        order.append(("C", 1))
    return order


# ---------------------------------------------------------------------------
# machine and data

def cpu_info():
    model, flags, fields = platform.processor() or "?", set(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and model in ("?", "", "x86_64"):
                    model = value
                elif key in ("cpu family", "model", "stepping") and key not in fields:
                    fields[key] = value
                elif key == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    if fields:  # a hypervisor may hide the name: family 25 model 17 is AMD Zen 4 (Genoa)
        model += " (" + ", ".join(f"{k} {v}" for k, v in fields.items()) + ")"
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    return model, avx512


def ensure_data(names):
    """Builds the shards the configurations read, if missing."""
    def run(args):
        print("+ " + shlex.join(args), flush=True)
        subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    # the preparation programs create their output folder, not its parents
    for folder in (WT_DIR, FASHION_DIR):
        os.makedirs(os.path.dirname(folder), exist_ok=True)
    if {"a", "b"} & set(names) and not os.path.exists(os.path.join(ROOT, "data", "tinyshakespeare", "train.bin")):
        run(["make", "data/tinyshakespeare/train.bin"])
    if "c" in names and not os.path.exists(os.path.join(WT_DIR, "train.bin")):
        run(["build/prepare_text", "words", "--train", os.path.join(DATA, "wikitext-2", "valid.txt"),
             "--valid", os.path.join(DATA, "wikitext-2", "test.txt"), "--vocab-size", "267744", WT_DIR])
    if "vit" in names and not os.path.exists(os.path.join(FASHION_DIR, "train_000000.bin")):
        run(["build/prepare_fashion_mnist", os.path.join(DATA, "fashion-mnist"), FASHION_DIR])


# ---------------------------------------------------------------------------

def fmt(ms):
    return "-" if ms is None else (f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}")


def report(results, mfus, names, all_cfgs, info, model, avx512):
    """The table, the rates and the spread of every measurement; returns the summary."""
    med = lambda name, key: (statistics.median(results[name][key]) if results[name].get(key) else None)
    print(f"\n== median ms per training update (lower is better); machine: {model}, "
          f"AVX-512 {'yes' if avx512 else 'no'}; torch {info['torch']} ({info['blas_info']}) ==")
    header = (f"{'configuration':64s} {'C 2thr':>8s} {'(C 1thr)':>9s} {'flow 1thr':>10s} {'flow 2thr':>10s} "
              f"{'nano 1thr':>10s} {'nano 2thr':>10s} {'speedup':>8s} {'target':>7s} {'':6s} {'1thr/1thr':>9s}")
    print(header)
    print("-" * len(header))
    summary = {}
    for name in names:
        cfg = all_cfgs[name]
        peer_kind = cfg["peers"][0][0]
        c2, c1 = med(name, "C:2"), med(name, "C:1")
        f1, f2 = med(name, f"{peer_kind}:1"), med(name, f"{peer_kind}:2")
        n1, n2 = med(name, "nanogpt:1"), med(name, "nanogpt:2")
        best_flow = min(x for x in (f1, f2) if x is not None)
        speedup = best_flow / c2
        ok = speedup >= cfg["target"]
        print(f"{cfg['title']:64s} {fmt(c2):>8s} {fmt(c1):>9s} {fmt(f1):>10s} {fmt(f2):>10s} {fmt(n1):>10s} "
              f"{fmt(n2):>10s} {speedup:7.2f}x {'>=%.1fx' % cfg['target']:>7s} {'ok' if ok else 'MISSED':6s} "
              f"{(f1 / c1 if f1 and c1 else float('nan')):8.2f}x")
        summary[name] = dict(c2=c2, c1=c1, torch1=f1, torch2=f2, nano1=n1, nano2=n2, speedup=speedup,
                             target=cfg["target"], ok=ok)
        if any(x is not None for x in (n1, n2)):
            summary[name]["speedup_vs_nanogpt"] = min(x for x in (n1, n2) if x is not None) / c2
    print("speedup = best torch flow (1 or 2 threads) / C on 2 threads; 1thr/1thr = torch flow on 1 thread / "
          "C on 1 thread (for information: on a busy machine the 1-thread figures are the steadier ones)\n")
    for name in names:
        cfg, s = all_cfgs[name], summary[name]
        rate = cfg["per_update"] / (s["c2"] / 1e3)
        best_t = min(x for x in (s["torch1"], s["torch2"]) if x is not None)
        print(f"{name}: C {rate:,.0f} {cfg['unit']}/s against torch {cfg['per_update'] / (best_t / 1e3):,.0f} "
              f"{cfg['unit']}/s" + (f"; C Flow-Attention vs nanoGPT softmax (best torch): "
                                    f"{s['speedup_vs_nanogpt']:.2f}x" if "speedup_vs_nanogpt" in s else ""))
    for name in names:
        mfu = mfus.get(name, {}).get("C:2")
        if mfu:
            target = " (target >= 50%%) %s" % ("ok" if statistics.median(mfu) >= 0.5 else "MISSED") if name == "b" else ""
            print(f"{name}: C on 2 threads at {100 * statistics.median(mfu):.0f}% of the measured FMA peak (MFU, "
                  f"median){target}")
    if "a" in summary and "speedup_vs_nanogpt" in summary["a"]:
        s = summary["a"]["speedup_vs_nanogpt"]
        print(f"(a) our Flow-Attention model against the nanoGPT-style softmax model: {s:.2f}x "
              f"(target >= 2x) {'ok' if s >= 2 else 'MISSED'}")
    print("\nspread (timed updates: count, min / median / max ms):")
    for name in names:
        for key, v in results[name].items():
            if v:
                print(f"  {name:4s} {key:10s} n={len(v):3d}  {min(v):9.1f} / {statistics.median(v):9.1f} / "
                      f"{max(v):9.1f}")
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="a,b,c,vit", help="comma-separated subset of a,b,c,vit")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per configuration (0: each one's default)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply the timed updates per run")
    parser.add_argument("--check", action="store_true", help="only run the peer's correctness check")
    parser.add_argument("--no-check", action="store_true", help="skip the correctness check before timing")
    parser.add_argument("--json", default="", help="also write every measurement to this file")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed to one run")
    parser.add_argument("--from-json", default="", help="print the tables of a run saved with --json, run nothing")
    args = parser.parse_args()

    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        m = saved["machine"]
        print(f"{args.from_json}: " + ", ".join(f"{k} {v}" for k, v in saved.get("run", {}).items()))
        report(saved["results"], saved.get("mfu", {}), list(saved["results"]), configurations(), saved["torch"], m["cpu"], m["avx512"])
        return 0

    if args.check or not args.no_check:
        print("== correctness of the torch peer (dev/torch_peer.py check) ==", flush=True)
        p = subprocess.run([sys.executable, PEER, "check"], cwd=ROOT, capture_output=True, text=True)
        print(p.stdout.strip().splitlines()[-1] if p.returncode == 0 else p.stdout + p.stderr, flush=True)
        if p.returncode != 0 or args.check:
            if args.check:
                print(p.stdout, end="")
            return p.returncode

    t_start = time.time()
    model, avx512 = cpu_info()
    print(f"== machine ==\nCPU: {model}, {os.cpu_count()} logical cores; AVX-512: "
          f"{'yes (' + ' '.join(avx512) + ')' if avx512 else 'no'}")
    load = os.getloadavg()
    print("load average at start: %.2f %.2f %.2f" % load)
    if load[0] > 0.5:
        print(f"WARNING: the machine is busy (load {load[0]:.2f} on {os.cpu_count()} cores): the figures are "
              "noisy, 2-thread runs most of all (OpenMP threads stall when descheduled)")
    info_p = subprocess.run([sys.executable, PEER, "info", "--json"], cwd=ROOT, capture_output=True, text=True,
                            check=True)
    info = json.loads(info_p.stdout.strip().splitlines()[-1])
    print(f"== torch peer ==\ntorch {info['torch']}, CPU capability {info['cpu_capability']}, "
          f"BLAS_INFO={info['blas_info']}, LAPACK_INFO={info['lapack_info']}, MKL {info['mkl']}, "
          f"oneDNN {info['mkldnn']}; {'; '.join(info['parallel'])}")
    for line in info["config_lines"]:
        print("  " + line.lstrip("- "))
    print("sgemm 2048^3 (torch.matmul, float32): " +
          ", ".join(f"{t} thread{'s' if t != '1' else ''} {g:.0f} GFLOP/s" for t, g in info["sgemm_gflops"].items()))
    sys.stdout.flush()

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    all_cfgs = configurations()
    unknown = [n for n in names if n not in all_cfgs]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose among {list(all_cfgs)}")
    ensure_data(names)

    results, mfus = {}, {}
    for name in names:
        cfg = all_cfgs[name]
        rounds = args.rounds or cfg["rounds"]
        steps = max(1, round(cfg["steps"] * args.steps_scale))
        order = schedule(cfg)
        print(f"\n== {cfg['title']} == {rounds} round(s) of: "
              + ", ".join(f"{k} {t}thr" for k, t in order), flush=True)
        times = {run: [] for run in order}
        c_mfu = {}  # threads -> the C runs' MFU of each timed update
        peer_settings = dict(cfg["peers"])
        for r in range(rounds):
            for run in order:
                kind, threads = run
                t0 = time.time()
                n = cfg.get("steps_1thr", steps) if threads == 1 else steps
                if kind == "C":
                    ms, mfu = run_c(cfg["c"], cfg["c_settings"], threads, cfg["warmup"], n, args.timeout)
                    c_mfu.setdefault(threads, []).extend(mfu)
                else:
                    ms = run_torch(kind, peer_settings[kind], threads, cfg["warmup"], n, args.timeout)
                times[run] += ms
                print(f"  round {r + 1}: {kind:8s} {threads} thr: " + " ".join(fmt(x) for x in ms)
                      + f"  ({time.time() - t0:.0f} s)", flush=True)
        results[name] = {f"{k}:{t}": v for (k, t), v in times.items()}
        mfus[name] = {f"C:{t}": v for t, v in c_mfu.items()}

    summary = report(results, mfus, names, all_cfgs, info, model, avx512)
    print("load average at end: %.2f %.2f %.2f; %.1f minutes in all" % (os.getloadavg() + ((time.time() - t_start) / 60,)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=dict(cpu=model, avx512=avx512, cores=os.cpu_count()), torch=info,
                           run=dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), load_start=list(load),
                                    load_end=list(os.getloadavg()), minutes=(time.time() - t_start) / 60),
                           results=results, mfu=mfus, summary=summary), f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
