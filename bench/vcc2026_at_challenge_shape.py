"""vcell_lib.vcc2026.evaluate against cell-eval2 0.20.0 (CPU, pdex DE) on simulated counts: time, memory, agreement.

The 2026 challenge's shape is 18,533 genes and 300 perturbations x 400 cells per context; the default here is
smaller (set --perts, --cells, --genes, --controls) because both evaluators hold more than the cells in memory.
Both sides ("real" and "pred") are raw integer counts (float32 CSR), one context, controls "non-targeting", every
perturbation named after one of the genes (a CRISPRi knock-down of it). Counts come from a gamma-Poisson model
with per-cell library sizes around a median depth (--depth, 20,000 by default) and per-perturbation effects on 300
genes; the prediction is a second draw of cells from slightly mis-estimated effects.

Each evaluator runs in its own subprocess after a small untimed warm-up (numba and imports), so each one's peak
resident memory is its own; cell-eval2 uses its defaults (num_threads -1 = all cores). Prints each one's wall and
CPU time, its peak resident memory during the evaluation, the ratio, and the largest |difference| per metric of
the six panel values, and asserts agreement to 1e-6. On a shared machine the times vary: read the CPU times too.
--profile also writes a cProfile of vcell_lib's evaluation (top functions by cumulative time).
Run: .venv/bin/python bench/vcc2026_at_challenge_shape.py [--quick] [--perts P --cells C --genes G --controls N]
(not in CI)

Measured on 2 shared cores and 24 GiB (December 2026; other jobs beside it, so wall times vary; CPU times steadier),
18,533 genes, median depth 20,000, 33.7 % non-zero; seconds wall / CPU, peak RSS of the evaluating process:

    perts x cells + controls   cell-eval2                  vcell_lib                   six values: max |diff|
    50 x 100 + 1,000            98.7 /  67.8 s,  2.6 GiB    28.8 /  19.0 s,  2.9 GiB    1.9e-15
    100 x 200 + 2,000          281.2 / 258.5 s,  7.5 GiB    80.6 /  79.2 s,  9.4 GiB    5.0e-16
    150 x 200 + 2,000          194.0 / 329.5 s, 10.7 GiB   100.6 / 115.8 s, 13.5 GiB    9.7e-16

The challenge's 300 x 400 (+ controls) is about 4x the largest of these in cells: from the growth between the last
two rows (about 0.42 MiB per cell per side for vcell_lib, 0.33 for cell-eval2) it would need some 50 and 40 GiB; the
pair alone is about 6 GiB per side in float32 CSR. vcell_lib's memory is what limits the shape here first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from _memory import memory_mib, peak_mib, reset_peak  # bench/_memory.py: both benchmarks' measurements

CONTROL = "non-targeting"


def simulate_pair(n_genes: int, n_perts: int, cells: int, controls: int, depth: float, seed: int = 0):
    """Real and predicted raw-count AnnData (integer values in float32 CSR), perturbations named after genes."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    genes = np.array([f"G{g:05d}" for g in range(n_genes)])
    # Gene fractions of a cell's library: log-normal, so most genes are rare (as in single-cell data).
    share = np.exp(rng.normal(0.0, 1.6, n_genes))
    share /= share.sum()
    targets = rng.choice(n_genes, n_perts, replace=False)
    perts = genes[targets]
    factors = np.ones((n_perts + 1, n_genes))  # row 0: control
    for p, target in enumerate(targets):
        affected = rng.choice(n_genes, 300, replace=False)
        factors[p + 1, affected] = np.exp(rng.normal(0.0, 0.6, affected.size))
        factors[p + 1, target] = 0.1  # CRISPRi knock-down of the named gene
    pred_factors = factors * np.exp(rng.normal(0.0, 0.15, factors.shape) * (factors != 1))
    labels = np.array([CONTROL] * controls + [p for p in perts for _ in range(cells)])
    codes = np.r_[np.zeros(controls, int), np.repeat(np.arange(1, n_perts + 1), cells)]

    def side(side_factors: np.ndarray, side_rng: np.random.Generator):
        library = depth * np.exp(side_rng.normal(0.0, 0.35, len(labels)))
        blocks = []
        for start in range(0, len(labels), 500):  # blocks keep the dense intermediate small
            rows = slice(start, start + 500)
            mean = library[rows, None] * share[None, :] * side_factors[codes[rows]]
            theta = 2.0  # negative binomial as a gamma-Poisson mixture
            counts = side_rng.poisson(side_rng.gamma(theta, mean / theta)).astype(np.float32)
            blocks.append(sp.csr_matrix(counts))
        obs = pd.DataFrame({"target_gene": labels}, index=[f"cell{i}" for i in range(len(labels))])
        return ad.AnnData(X=sp.vstack(blocks).tocsr(), obs=obs, var=pd.DataFrame(index=genes))

    return side(factors, np.random.default_rng(seed + 1)), side(pred_factors, np.random.default_rng(seed + 2))


def child(which: str, folder: str, profile: bool) -> None:
    """Load the pair, warm up, time one evaluation; write the six values and the measurements."""
    import logging
    import warnings

    import anndata as ad
    import pandas as pd

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ["TQDM_DISABLE"] = "1"
    real, pred = ad.read_h5ad(f"{folder}/real.h5ad"), ad.read_h5ad(f"{folder}/pred.h5ad")
    loaded = peak_mib()
    if which == "cell-eval2":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
        from test_vcc2026 import official  # the tests' cell-eval2 call: the vcc2026 preset, pdex DE

        run = official
    else:
        from vcell_lib.vcc2026 import evaluate

        run = evaluate

    def small(a):
        labels = a.obs["target_gene"].astype(str).to_numpy()
        control = labels == CONTROL
        # 200 controls and the last two perturbations, all genes (on fewer, the reference's effect can vanish)
        keep = (control & (np.cumsum(control) <= 200)) | np.isin(labels, [labels[~control][0], labels[-1]])
        return a[keep].copy()

    run(small(pred), small(real))  # compile and import once; not timed
    before = memory_mib("VmRSS")
    reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        values = profiler.runcall(run, pred, real)
        pstats.Stats(profiler, stream=open(f"{folder}/{which}.prof.txt", "w")).sort_stats("cumulative").print_stats(40)
    else:
        values = run(pred, real)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    measured = {"seconds": seconds, "cpu": cpu, "peak_mib": peak_mib(), "loaded_mib": loaded}
    measured.update(before=before, during=memory_mib("VmHWM"), values=pd.Series(values).to_dict())
    with open(f"{folder}/{which}.json", "w") as f:
        json.dump(measured, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perts", type=int, default=50, help="perturbations (challenge: 300)")
    parser.add_argument("--cells", type=int, default=100, help="cells per perturbation (challenge: 400)")
    parser.add_argument("--genes", type=int, default=18533, help="genes (challenge: 18,533)")
    parser.add_argument("--controls", type=int, default=1000, help="control cells per side")
    parser.add_argument("--depth", type=float, default=20000, help="median counts per cell")
    parser.add_argument("--quick", action="store_true", help="2,000 genes, 10 x 50 cells + 200 controls (a smoke run)")
    parser.add_argument("--only", choices=["cell-eval2", "vcell_lib"], help="run one evaluator only")
    parser.add_argument("--profile", action="store_true", help="cProfile vcell_lib's evaluation (prints the top)")
    parser.add_argument("--data", help="a folder to keep the simulated pair in and reuse it from (default: temporary)")
    parser.add_argument("--child", choices=["cell-eval2", "vcell_lib"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.folder, args.profile)
        return
    if args.quick:
        args.genes, args.perts, args.cells, args.controls = 2000, 10, 50, 200

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.data or scratch
        start = time.perf_counter()
        if args.data and os.path.exists(f"{folder}/pred.h5ad"):
            import anndata as ad

            real, pred = ad.read_h5ad(f"{folder}/real.h5ad"), ad.read_h5ad(f"{folder}/pred.h5ad")
            shape = (args.controls + args.perts * args.cells, args.genes)
            assert real.shape == shape, f"{folder} holds {real.shape}, not {shape}"
        else:
            real, pred = simulate_pair(args.genes, args.perts, args.cells, args.controls, args.depth)
            os.makedirs(folder, exist_ok=True)
            real.write_h5ad(f"{folder}/real.h5ad")
            pred.write_h5ad(f"{folder}/pred.h5ad")
        depth = np.median(np.asarray(real.X.sum(axis=1)).ravel())
        density = real.X.nnz / np.prod(real.shape)
        print(
            f"{args.perts} perturbations x {args.cells} cells + {args.controls} controls per side, {args.genes} genes, "
            f"median depth {depth:.0f}, non-zero {density:.1%}, {real.X.data.nbytes / 2**20:.0f} MiB of values per "
            f"side (built in {time.perf_counter() - start:.0f} s); {os.cpu_count()} cores"
        )
        del real, pred
        runs = {}
        for which in [args.only] if args.only else ["cell-eval2", "vcell_lib"]:
            cmd = [sys.executable, __file__, "--child", which, "--folder", folder]
            subprocess.run(cmd + (["--profile"] if args.profile and which == "vcell_lib" else []), check=True)
            with open(f"{folder}/{which}.json") as f:
                runs[which] = run = json.load(f)
            print(
                f"  {which:10s} {run['seconds']:7.1f} s (CPU time {run['cpu']:7.1f} s); peak RSS during the evaluation "
                f"{run['during']:6.0f} MiB, {run['during'] - run['before']:+6.0f} MiB over the loaded data and "
                f"libraries ({run['before']:.0f} MiB)"
            )
            if args.profile and which == "vcell_lib":
                with open(f"{folder}/{which}.prof.txt") as f:
                    print(f.read())
        if len(runs) < 2:
            return
        ours, theirs = runs["vcell_lib"], runs["cell-eval2"]
        print(
            f"  vcell_lib / cell-eval2: wall {ours['seconds'] / theirs['seconds']:.2f}x, "
            f"CPU {ours['cpu'] / theirs['cpu']:.2f}x, peak RSS {ours['during'] / theirs['during']:.2f}x"
        )
        worst = 0.0
        for metric, value in theirs["values"].items():
            diff = abs(ours["values"][metric] - value)
            worst = max(worst, diff)
            print(f"  {metric:42s} cell-eval2 {value:.6f}  vcell_lib {ours['values'][metric]:.6f}  |diff| {diff:.1e}")
        assert worst < 1e-6, f"a metric differs by {worst:.1e}"
        print("  the six panel values agree (atol 1e-6)")


if __name__ == "__main__":
    main()
