"""Plots and tables of scripts/run_results.sh's runs: reads results/<part>/ and writes
results/plots/*.png and results/summary.md (the tables of the README's Results).

    .venv/bin/python dev/plot_results.py results      (make venv installs matplotlib)
"""
import glob
import json
import math
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KINDS = ["flow", "softmax", "linear"]
COLOURS = {"flow": "tab:red", "softmax": "tab:blue", "linear": "tab:green"}


def read_log(path):
    """The update lines and the evaluation lines of a JSON-lines log."""
    updates, evals = [], []
    if not os.path.exists(path):
        return updates, evals
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if "loss" in row:
                updates.append(row)
            elif "val_loss" in row:
                evals.append(row)
    return updates, evals


def peak_mib(out_path):
    """Peak resident memory from the GNU time file beside a run's output."""
    try:
        with open(out_path + ".time") as f:
            m = re.search(r"peak_rss_kb (\d+)", f.read())
        return int(m.group(1)) / 1024 if m else float("nan")
    except FileNotFoundError:
        return float("nan")


def wall_s(out_path):
    try:
        with open(out_path + ".time") as f:
            m = re.search(r"wall_s ([\d.]+)", f.read())
        return float(m.group(1)) if m else float("nan")
    except FileNotFoundError:
        return float("nan")


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def loss_curves(root, part, prefix, title, out, lines):
    """Training loss against update and against wall time, one line per kind."""
    logs = {k: read_log(os.path.join(root, part, f"{prefix}{k}.jsonl")) for k in KINDS}
    if not any(updates for updates, _ in logs.values()):
        return []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = []
    for k in KINDS:
        updates, evals = logs[k]
        if not updates:
            continue
        steps = [u["step"] for u in updates]
        losses = [u["loss"] for u in updates]
        seconds, t = [], 0.0
        for u in updates:
            t += u["ms"] / 1e3
            seconds.append(t)
        axes[0].plot(steps, losses, color=COLOURS[k], alpha=0.35, linewidth=0.7)
        axes[1].plot(seconds, losses, color=COLOURS[k], alpha=0.35, linewidth=0.7)
        if evals:
            axes[0].plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o-", color=COLOURS[k],
                         label=f"{k} (validation)")
            step_time = {u["step"]: s for u, s in zip(updates, seconds)}
            axes[1].plot([step_time.get(e["step"], 0.0) for e in evals], [e["val_loss"] for e in evals], "o-",
                         color=COLOURS[k], label=f"{k} (validation)")
        rate_key = "tok_s" if "tok_s" in updates[0] else "img_s"
        rows.append((k, evals[-1] if evals else None, median([u[rate_key] for u in updates[1:]]),
                     median([u["ms"] for u in updates[1:]]), median([u.get("mfu", float("nan")) for u in updates[1:]]),
                     peak_mib(os.path.join(root, part, f"{prefix}{k}.out")),
                     wall_s(os.path.join(root, part, f"{prefix}{k}.out"))))
    axes[0].set_xlabel("update")
    axes[1].set_xlabel("seconds of training")
    for ax in axes:
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    lines.append(f"\n### {title}\n")
    return rows


def lm_table(root, part, prefix, rows, lines, window_suffix, window_label):
    lines.append(f"| attention | validation loss | perplexity | {window_label} | tokens/s | ms/update | MFU | "
                 "peak memory | wall time |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, last, rate, ms, mfu, mib, wall in rows:
        _, win = read_log(os.path.join(root, part, f"{prefix}{k}{window_suffix}.jsonl"))
        win_text = f"{win[-1]['val_loss']:.4f} (ppl {math.exp(win[-1]['val_loss']):.2f})" if win else "-"
        lines.append(f"| {k} | {last['val_loss']:.4f} | {math.exp(last['val_loss']):.2f} | {win_text} | "
                     f"{rate:.0f} | {ms:.1f} | {100 * mfu:.0f}% | {mib:.0f} MiB | {wall:.0f} s |")


def context_part(root, plots, lines):
    table = {}
    for path in glob.glob(os.path.join(root, "context", "T*_*.jsonl")):
        m = re.match(r"T(\d+)_(\w+)\.jsonl", os.path.basename(path))
        T, k = int(m.group(1)), m.group(2)
        updates, evals = read_log(path)
        if updates:
            table[(T, k)] = (median([u["tok_s"] for u in updates[1:]]),
                             peak_mib(path[: -len(".jsonl")] + ".out"), evals[-1]["val_loss"] if evals else float("nan"))
    if not table:
        return
    contexts = sorted({T for T, _ in table})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k in KINDS:
        xs = [T for T in contexts if (T, k) in table]
        axes[0].plot(xs, [table[(T, k)][0] for T in xs], "o-", color=COLOURS[k], label=k)
        axes[1].plot(xs, [table[(T, k)][1] for T in xs], "o-", color=COLOURS[k], label=k)
    for ax, label in zip(axes, ["tokens/s (training)", "peak memory (MiB)"]):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens), 8192 tokens per update")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(plots, "context.png"), dpi=110)
    plt.close(fig)
    lines.append("\n### Context length\n")
    lines.append("| context | attention | tokens/s | peak memory | validation loss (300 updates) |")
    lines.append("| --- | --- | --- | --- | --- |")
    for T in contexts:
        for k in KINDS:
            if (T, k) in table:
                rate, mib, loss = table[(T, k)]
                lines.append(f"| {T} | {k} | {rate:.0f} | {mib:.0f} MiB | {loss:.4f} |")


def kernels_part(root, plots, lines):
    """bench_attention's rows: kernel, T, fwd+bwd ms, us/token, GFLOP/s, % peak, extra MiB, q,k,v MiB
    (a row of a run it skipped says so instead of numbers)."""
    path = os.path.join(root, "kernels", "bench_attention.txt")
    if not os.path.exists(path):
        return
    rows = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) == 8 and fields[1].isdigit() and fields[5].endswith("%"):
                rows.append((fields[0], int(fields[1]), float(fields[2]), float(fields[6])))
    if not rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == name]
        style = "-" if "causal" in name else "--"
        colour = COLOURS.get(name.split("-")[0], "black")
        axes[0].plot([r[1] for r in mine], [r[2] for r in mine], style, marker="o", color=colour, label=name)
        axes[1].plot([r[1] for r in mine], [r[3] for r in mine], style, marker="o", color=colour, label=name)
    for ax, label in zip(axes, ["forward+backward ms (B=1, H=8, D=64)", "extra memory MiB"]):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(plots, "kernels.png"), dpi=110)
    plt.close(fig)


def raw_table(root, part, name, title, lines):
    """A benchmark's printed table, as it came, in a code block."""
    path = os.path.join(root, part, name)
    if os.path.exists(path):
        with open(path) as f:
            lines += [f"\n### {title}\n", "```", f.read().rstrip(), "```"]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "results"
    plots = os.path.join(root, "plots")
    os.makedirs(plots, exist_ok=True)
    lines = ["# Results (made by scripts/run_results.sh and dev/plot_results.py)"]
    rows = loss_curves(root, "lm", "shakespeare_", "tinyshakespeare, characters", os.path.join(plots, "lm.png"),
                       lines)
    if rows:
        lm_table(root, "lm", "shakespeare_", rows, lines, "_window32", "window 32")
    rows = loss_curves(root, "wikitext2", "", "WikiText-2, words (valid trains, test evaluates)",
                       os.path.join(plots, "wikitext2.png"), lines)
    if rows:
        lm_table(root, "wikitext2", "", rows, lines, "_test", "test, window 64")
    context_part(root, plots, lines)
    rows = loss_curves(root, "vision", "fashion_", "Fashion-MNIST, 4 epochs", os.path.join(plots, "vision.png"),
                       lines)
    if rows:
        lines.append("| attention | top-1 | top-5 | validation loss | images/s | ms/update | MFU | peak memory | wall time |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for k, last, rate, ms, mfu, mib, wall in rows:
            lines.append(f"| {k} | {last['top1']:.2f}% | {last['top5']:.2f}% | {last['val_loss']:.4f} | {rate:.0f} | "
                         f"{ms:.1f} | {100 * mfu:.0f}% | {mib:.0f} MiB | {wall:.0f} s |")
    kernels_part(root, plots, lines)
    raw_table(root, "kernels", "bench_attention.txt", "Attention kernels (make bench)", lines)
    raw_table(root, "generate", "bench_generate.txt", "Generation (make bench-generate)", lines)
    raw_table(root, "speed", "bench_train.txt", "Training step against PyTorch (make bench-train)", lines)
    raw_table(root, "speed", "bench_matmul.txt", "Matrix multiply against OpenBLAS (make bench-matmul)", lines)
    with open(os.path.join(root, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
