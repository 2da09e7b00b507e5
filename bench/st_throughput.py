"""Training throughput and peak memory of ST (`state_sm`) through the book's loop, on sets streamed from sparse data.

ST is `vcell_lib.models.st.StateTransition` at `STConfig.state_sm(G, P)` sizes (width 672, 4 Llama blocks of 8 heads,
SwiGLU 2688, the G -> G/8 -> G bottleneck of output_space "all"), trained by `vcell_lib.train.fit` (AdamW, gradient
clipping, bf16 autocast on Ampere+ GPUs, fp32 on CPU) with `st_loss` on batches of `vcell_lib.models.st_data.STSets`,
which reads only the rows of each batch from a sparse CSR X (or from an h5ad read backed, with --backed) and never
makes the matrix dense.

Data: a synthetic log1p matrix shaped like the challenge's training data: --cells cells (20,000) x G genes, --density
non-zero (12 %), values log1p(Gamma(1, 2)), one cell type, --perts perturbations (50, named after genes) and
"non-targeting" controls, the cells split evenly among the perturbations and the control. It is built by the parent
process and written to a temporary h5ad; each configuration then runs in its own subprocess that reads it (in memory,
or backed), so each peak resident memory is its own. Perturbation features: one-hot (P = perts + 1), or with
--pert-dim D random D-dim gene vectors (the VCC recipe reads 5,120-dim ESM-2 15B vectors: --pert-dim 5120).

Timing: `fit` runs --steps updates with `val_every=1` and an `on_validation` callback that marks the end of each update
(after a CUDA synchronize); the first --warmup updates are left out. Each `next()` on the sets is timed apart (the
share of a step spent building its batch: drawing sets, reading and densifying their rows). Cells per second counts
the predicted cells (sets x S per batch); each is read with one control cell. "RSS before" is the child's resident
memory with the data and the model loaded, "peak RSS" its peak during `fit` (optimizer state, activations, batches).

Run: .venv/bin/python bench/st_throughput.py [--quick] [--genes 2000 18080] [--set-size 128] [--sets-per-batch 4]
[--steps 8] [--warmup 2] [--device auto|cpu|cuda] [--backed] [--pert-dim onehot|5120] [--cells 20000]   (not in CI)

Measured on 2 shared cores and 23 GiB, no GPU (December 2026; torch 2.13.0+cpu, 2 threads, fp32; nothing else heavy
running, but run-to-run differences of up to 10 % were seen). 20,000 cells (the last row: 221,000, the size of the
VCC training set), 12 % non-zero; 6 timed steps after 2 warm-up ones (16-set and 221k rows: 3 after 1); s/step is the
mean of the timed steps; "batch" the share of a step spent in `next()` on the sets; P the perturbation features'
width (51 one-hot, 5,120 gene vectors); RSS of the training process. No CUDA column: no GPU was measured.

    genes   params  sets x S   P      X             s/step  cells/s  batch   RSS before  peak RSS
    2,000    35.3M   4 x 128   51     CSR            0.76     670    0.3 %   0.50 GiB    1.31 GiB
    18,080  137.7M   4 x 128   51     CSR            3.68     139    1.0 %   1.18 GiB    3.51 GiB
    2,000    35.3M   4 x 128   51     backed         0.82     628    3.1 %   0.47 GiB    1.28 GiB
    18,080  137.7M   4 x 128   51     backed         4.04     127    1.8 %   0.87 GiB    3.18 GiB
    2,000    38.8M   4 x 128   5,120  CSR            0.82     622    0.4 %   0.52 GiB    1.37 GiB
    18,080  141.1M   4 x 128   5,120  CSR            3.92     131    0.6 %   1.19 GiB    3.53 GiB
    2,000    35.3M  16 x 128   51     CSR            2.93     700    0.3 %   0.50 GiB    2.17 GiB
    18,080  137.7M  16 x 128   51     CSR           13.33     154    2.1 %   1.18 GiB    4.79 GiB
    18,080  137.7M   4 x 128   51     backed, 221k   4.41     116    2.9 %   0.90 GiB    3.18 GiB

(default; --backed; --pert-dim 5120; --sets-per-batch 16 --steps 4 --warmup 1; --genes 18080 --cells 221000 --backed
--steps 4 --warmup 1: each a run of about a minute, the last 1.7 min, 76 s of it building and writing the 3.6 GiB h5ad.)
At 18,080 genes the G -> G/8 -> G bottleneck is 81.7M of the 137.7M parameters; their weights, gradients and AdamW's
two moments take 2.05 GiB, most of the peak. Building batches is 0.3-3 % of a CPU step (0.03-0.07 s for 4 sets,
0.28 s for 16, 0.13 s for 4 sets from the 221k-cell backed file, which was in the page cache, just written): the
model dominates on CPU. Read backed, 221,000 cells need no more resident memory than 20,000 (0.90 vs 0.87 GiB before
training; the CSR in memory would be 3.6 GiB), and backed and in-memory runs see the same batches (the same losses).
At 139 cells/s one pass over 221,000 cells takes about 27 min on these 2 cores. About a sixth of the run's CPU time
is the kernel's (5.3 million minor page faults in the default run: large buffers freed and mapped again every step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from _memory import memory_mib, reset_peak  # bench/_memory.py: the benchmarks' shared measurements

CONTROL = "non-targeting"


def make_data(cells: int, genes: int, perts: int, density: float, seed: int = 0):
    """A sparse (CSR float32) log1p AnnData: `perts` perturbations named after genes plus controls, one cell type."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    names = np.array([f"G{g:05d}" for g in range(genes)])
    labels = np.r_[[CONTROL], names[rng.choice(genes, perts, replace=False)]]
    blocks = []
    for start in range(0, cells, 1000):  # blocks keep the dense intermediate small (1,000 x G)
        n = min(1000, cells - start)
        mask = rng.random((n, genes), dtype=np.float32) < density
        block = np.zeros((n, genes), dtype=np.float32)
        block[mask] = np.log1p(rng.gamma(1.0, 2.0, int(mask.sum()))).astype(np.float32)
        blocks.append(sp.csr_matrix(block))
    obs = pd.DataFrame(
        {"target_gene": labels[np.arange(cells) % len(labels)], "cell_type": "H1"},
        index=[f"cell{i}" for i in range(cells)],
    )
    return ad.AnnData(X=sp.vstack(blocks, format="csr"), obs=obs, var=pd.DataFrame(index=names))


class TimedSets:
    """An iterable over `sets` that records how long each `next()` takes (building one batch)."""

    def __init__(self, sets) -> None:
        self.sets, self.seconds = sets, []

    def __len__(self) -> int:
        return len(self.sets)

    def __iter__(self):
        batches = iter(self.sets)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.seconds.append(time.perf_counter() - start)
            yield batch


def child(args: argparse.Namespace) -> None:
    """Read the data, build ST and its sets, train `args.steps` updates; write the measurements as JSON."""
    import anndata as ad
    import torch

    from vcell_lib.models.st import StateTransition, STConfig
    from vcell_lib.models.st_data import STSets, perturbation_features, st_loss
    from vcell_lib.train import TrainConfig, fit

    warnings.filterwarnings("ignore")
    adata = ad.read_h5ad(args.file, backed="r" if args.backed else None)
    perts = sorted(set(adata.obs["target_gene"].astype(str)) - {CONTROL})
    if args.pert_dim == "onehot":
        features = perturbation_features(perts, "onehot")
    else:  # random stand-ins for gene vectors (ESM-2 15B: 5,120 dims); the control gets zeros
        rng = np.random.default_rng(1)
        features = perturbation_features(perts, {p: rng.normal(size=int(args.pert_dim)) for p in perts})
    start = time.perf_counter()
    sets = TimedSets(STSets(adata, features, args.set_size, args.sets_per_batch, seed=0))
    sets_seconds = time.perf_counter() - start
    torch.manual_seed(0)
    model = StateTransition(STConfig.state_sm(adata.n_vars, features.shape[1], cell_set_len=args.set_size))
    device = None if args.device == "auto" else args.device
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")

    marks = []

    def mark(step: int, _model) -> None:
        if cuda:
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    config = TrainConfig(max_steps=args.steps, val_every=1, progress=False, device=device, lr=1e-4)
    before = memory_mib("VmRSS")
    reset_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    marks.append(time.perf_counter())
    cpu = time.process_time()
    history = fit(model, sets, st_loss, config, on_validation=mark)
    cpu = time.process_time() - cpu
    steps = np.diff(marks)
    timed, loads = steps[args.warmup :], np.asarray(sets.seconds[: len(steps)])[args.warmup :]
    result = {
        "genes": adata.n_vars,
        "cells": adata.n_obs,
        "nnz": int(adata.X.nnz) if not args.backed else None,
        "pert_dim": features.shape[1],
        "params": sum(p.numel() for p in model.parameters()),
        "bottleneck": sum(p.numel() for p in model.final_down_then_up.parameters()),
        "sets_per_batch": args.sets_per_batch,
        "set_size": args.set_size,
        "steps": len(steps),
        "timed": len(timed),
        "step_seconds": steps.tolist(),
        "load_seconds": sets.seconds[: len(steps)],
        "seconds_per_step": float(timed.mean()),
        "median_step": float(np.median(timed)),
        "load_per_step": float(loads.mean()),
        "sets_seconds": sets_seconds,
        "cpu_per_step": cpu / len(steps),
        "loss": history.train_loss,
        "rss_before": before,
        "peak_rss": memory_mib("VmHWM"),
        "cuda_peak": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": str(next(model.parameters()).device),
        "threads": torch.get_num_threads(),
        "backed": args.backed,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genes", type=int, nargs="+", default=[2000, 18080], help="G, one run each")
    parser.add_argument("--cells", type=int, default=20000, help="cells in the synthetic data")
    parser.add_argument("--perts", type=int, default=50, help="perturbations (plus the controls)")
    parser.add_argument("--density", type=float, default=0.12, help="fraction of non-zero values")
    parser.add_argument("--set-size", type=int, default=128, help="S, cells per set (state_sm: 128)")
    parser.add_argument("--sets-per-batch", type=int, default=4, help="sets per batch (arc-state trains on 16)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer updates per configuration, warm-up included")
    parser.add_argument("--warmup", type=int, default=2, help="first updates left out of the timing")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--backed", action="store_true", help="read the h5ad backed (rows streamed from disk)")
    parser.add_argument("--pert-dim", default="onehot", help="'onehot' (P = perts + 1) or the width of gene vectors")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2,000 genes, 2,000 cells, 3 steps")
    parser.add_argument("--json", help="also write every configuration's measurements to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.pert_dim != "onehot" and not (args.pert_dim.isdigit() and int(args.pert_dim) > 0):
        parser.error(f"--pert-dim must be 'onehot' or a positive integer, got {args.pert_dim!r}")
    if args.quick:
        args.genes, args.cells, args.perts, args.steps, args.warmup = [2000], 2000, 10, 3, 1
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup}): some updates must be timed")

    print(
        f"{args.cells:,} cells, {args.perts} perturbations + controls, {args.density:.0%} non-zero; "
        f"{args.sets_per_batch} sets x S={args.set_size} per batch, {args.steps} steps ({args.warmup} warm-up); "
        f"{'backed h5ad' if args.backed else 'CSR in memory'}; pert features {args.pert_dim}; {os.cpu_count()} cores"
    )
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for genes in args.genes:
            start = time.perf_counter()
            adata = make_data(args.cells, genes, args.perts, args.density)
            path = f"{folder}/data_{genes}.h5ad"
            adata.write_h5ad(path)
            mib = (adata.X.data.nbytes + adata.X.indices.nbytes) / 2**20
            print(
                f"  G={genes:,}: data built and written in {time.perf_counter() - start:.0f} s ({mib:.0f} MiB CSR, "
                f"{os.path.getsize(path) / 2**20:.0f} MiB h5ad)"
            )
            del adata
            out = f"{folder}/result_{genes}.json"
            cmd = [sys.executable, __file__, "--child", "--file", path, "--out", out, "--device", args.device]
            cmd += ["--set-size", str(args.set_size), "--sets-per-batch", str(args.sets_per_batch)]
            cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--pert-dim", args.pert_dim]
            subprocess.run(cmd + (["--backed"] if args.backed else []), check=True)
            with open(out) as f:
                runs.append(json.load(f))
            os.remove(path)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)

    first = runs[0]
    print(f"device {first['device']}, torch threads {first['threads']}")
    header = (
        f"{'genes':>7} {'params':>8} {'sets x S':>9} {'steps':>7} {'s/step':>7} {'median':>7} "
        f"{'cells/s':>8} {'batch %':>7} {'RSS before':>10} {'peak RSS':>9} {'CUDA peak':>9}"
    )
    print(header)
    for run in runs:
        cells, seconds = run["sets_per_batch"] * run["set_size"], run["seconds_per_step"]
        cuda = "-" if run["cuda_peak"] is None else f"{run['cuda_peak'] / 1024:.2f} GiB"
        print(
            f"{run['genes']:>7,} {run['params'] / 1e6:>7.1f}M {run['sets_per_batch']:>3} x {run['set_size']:<3} "
            f"{run['timed']:>3} + {run['steps'] - run['timed']:<1} {seconds:>7.2f} {run['median_step']:>7.2f} "
            f"{cells / seconds:>8.0f} {100 * run['load_per_step'] / seconds:>6.1f}% "
            f"{run['rss_before'] / 1024:>6.2f} GiB {run['peak_rss'] / 1024:>5.2f} GiB {cuda:>9}"
        )
    for run in runs:
        print(
            f"  G={run['genes']:,}: bottleneck {run['bottleneck'] / 1e6:.1f}M params; building a batch "
            f"{run['load_per_step']:.3f} s, the model {run['seconds_per_step'] - run['load_per_step']:.2f} s per step; "
            f"CPU {run['cpu_per_step']:.1f} s per step; STSets built in {run['sets_seconds']:.2f} s; "
            f"step times {', '.join(f'{s:.2f}' for s in run['step_seconds'])} s; "
            f"loss {run['loss'][0]:.3f} -> {run['loss'][-1]:.3f}"
        )


if __name__ == "__main__":
    main()
