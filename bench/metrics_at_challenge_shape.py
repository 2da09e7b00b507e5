"""vcell_lib.metrics.evaluate against cell-eval at the challenge's shape: time, peak memory, identical results.

The shape of one challenge context: 18,080 genes, 50 perturbations x 200 cells + 2,000 control cells on each
side ("real" and "pred"), sparse log1p data (about 12 % non-zero, float32 CSR). Counts come from a
gamma-Poisson (negative binomial) model with per-cell library sizes and per-perturbation effects; the
prediction is a second draw of cells from slightly mis-estimated effects (a good model's output). Both are
normalized as cell-eval does (normalize_total to the median library size, then log1p).

Each evaluator runs in its own subprocess (after a small untimed warm-up, so numba's compilation is not
counted), so the peak resident memory of each is its own. cell-eval runs its vcc profile with
num_threads = the number of cores; vcell_lib uses its defaults (also all cores). Prints each one's wall and
CPU time, its peak resident memory during the evaluation, the ratio, vcell_lib's wilcoxon_de alone, and
asserts that the per-perturbation mae, discrimination_score_l1 and overlap_at_N agree. On a shared machine
the times vary a lot: use --repeats and look at the CPU times too.
Run: .venv/bin/python bench/metrics_at_challenge_shape.py [--quick] [--data FOLDER] [--repeats R]   (not in CI)
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np
from _memory import memory_mib, peak_mib, reset_peak  # bench/_memory.py: both benchmarks' measurements

N_PERTS, CELLS, CONTROLS, GENES = 50, 200, 2000, 18080
CONTROL = "non-targeting"
METRICS = ("mae", "discrimination_score_l1", "overlap_at_N")


def simulate_pair(n_genes: int, seed: int = 0):
    """Real and predicted log1p AnnData (float32 CSR) with the challenge's shape."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    genes = np.array([f"G{g:05d}" for g in range(n_genes)])
    # Gene means (counts per cell at the median library size): log-normal, so most genes are rare.
    mu = np.exp(rng.normal(-2.9, 1.6, n_genes))
    targets = rng.choice(n_genes, N_PERTS, replace=False)
    perts = genes[targets]
    factors = np.ones((N_PERTS + 1, n_genes))  # row 0: control
    for p, target in enumerate(targets):
        affected = rng.choice(n_genes, 300, replace=False)
        factors[p + 1, affected] = np.exp(rng.normal(0.0, 0.6, affected.size))
        factors[p + 1, target] = 0.1  # CRISPRi knock-down
    # The prediction: the same experiment from effects estimated with some error.
    pred_factors = factors * np.exp(rng.normal(0.0, 0.15, factors.shape) * (factors != 1))
    labels = np.array([CONTROL] * CONTROLS + [p for p in perts for _ in range(CELLS)])
    codes = np.r_[np.zeros(CONTROLS, int), np.repeat(np.arange(1, N_PERTS + 1), CELLS)]

    def side(side_factors: np.ndarray, side_rng: np.random.Generator):
        library = np.exp(side_rng.normal(0.0, 0.35, len(labels)))
        blocks = []
        for start in range(0, len(labels), 1000):
            rows = slice(start, start + 1000)
            mean = library[rows, None] * mu[None, :] * side_factors[codes[rows]]
            theta = 2.0  # negative binomial as a gamma-Poisson mixture
            counts = side_rng.poisson(side_rng.gamma(theta, mean / theta)).astype(np.float32)
            blocks.append(sp.csr_matrix(counts))
        obs = pd.DataFrame({"target_gene": labels}, index=[f"cell{i}" for i in range(len(labels))])
        adata = ad.AnnData(X=sp.vstack(blocks).tocsr(), obs=obs, var=pd.DataFrame(index=genes))
        sc.pp.normalize_total(adata)
        sc.pp.log1p(adata)
        del adata.uns["log1p"]
        adata.X = adata.X.astype(np.float32)
        return adata

    return side(factors, np.random.default_rng(seed + 1)), side(pred_factors, np.random.default_rng(seed + 2))


def child(which: str, folder: str, repeats: int) -> None:
    """Load the pair, warm up, time the evaluation (best of `repeats`); write the table and the measurements."""
    import logging
    import warnings

    import anndata as ad

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ["TQDM_DISABLE"] = "1"  # pdex's progress bars
    real, pred = ad.read_h5ad(f"{folder}/real.h5ad"), ad.read_h5ad(f"{folder}/pred.h5ad")
    loaded = peak_mib()
    if which == "cell-eval":
        from cell_eval import MetricsEvaluator

        def run(p, r):
            evaluator = MetricsEvaluator(
                adata_pred=p,
                adata_real=r,
                pert_col="target_gene",
                control_pert=CONTROL,
                num_threads=os.cpu_count() or 1,
                outdir=f"{folder}/cell-eval-out",
            )
            results, _ = evaluator.compute(profile="vcc", write_csv=False)
            return results.to_pandas().set_index("perturbation")
    else:
        from vcell_lib.metrics import evaluate

        def run(p, r):
            return evaluate(p, r)

    warm_real, warm_pred = (
        a[a.obs["target_gene"].isin([CONTROL, *a.obs["target_gene"].iloc[-3:]]), :300].copy() for a in (real, pred)
    )
    run(warm_pred, warm_real)  # numba compiles once (cell-eval); not timed
    del warm_pred, warm_real
    before = memory_mib("VmRSS")
    reset_peak()
    times = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        table = run(pred, real)
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    seconds, cpu = min(times)
    during = memory_mib("VmHWM")
    measured = {"seconds": seconds, "cpu": cpu, "times": [t for t, _ in times], "peak_mib": peak_mib()}
    measured.update(loaded_mib=loaded, before=before, during=during)
    if which == "vcell_lib":  # the DE alone, and whether a top-k cut falls inside a block of equal |fold change|
        from vcell_lib.metrics import wilcoxon_de

        start = time.perf_counter()
        de_real, de_pred = wilcoxon_de(real), wilcoxon_de(pred)
        measured["de_seconds"] = time.perf_counter() - start
        measured["ties_at_cut"] = ties_at_cut(de_pred, de_real)
    with open(f"{folder}/{which}.pkl", "wb") as f:
        pickle.dump(table, f)
    with open(f"{folder}/{which}.json", "w") as f:
        json.dump(measured, f)


def ties_at_cut(de_pred, de_real) -> dict[str, int]:
    """Perturbations whose predicted significant genes, ranked by |log2 fold change|, tie across the top-k cut.

    k is the number of real significant genes (overlap_at_N); there the order of tied genes decides the
    overlap, and two implementations may legitimately differ. Also counts infinite fold changes among the
    significant genes (a gene switched fully off or on), the usual source of such ties.
    """
    counts = {"perturbations": 0, "tie_at_cut": 0, "infinite_lfc_significant": 0}
    for target, real in de_real.groupby("target", sort=False):
        pred = de_pred[de_pred["target"] == target]
        k = int((real["fdr"].to_numpy(np.float32) < np.float32(0.05)).sum())
        sig = pred[pred["fdr"].to_numpy(np.float32) < np.float32(0.05)]
        strength = np.sort(np.abs(sig["log2_fold_change"].to_numpy(np.float32)))[::-1]
        counts["perturbations"] += 1
        counts["tie_at_cut"] += int(0 < k < len(strength) and strength[k - 1] == strength[k])
        counts["infinite_lfc_significant"] += int(np.isinf(strength).sum())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 genes instead of 18,080 (a smoke run)")
    parser.add_argument("--data", help="a folder to keep the simulated pair in and reuse it from (default: temporary)")
    parser.add_argument("--repeats", type=int, default=1, help="time each evaluator this many times (best kept)")
    parser.add_argument("--child", choices=["cell-eval", "vcell_lib"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.folder, args.repeats)
        return

    n_genes = 2000 if args.quick else GENES
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.data or scratch
        start = time.perf_counter()
        if args.data and os.path.exists(f"{folder}/pred.h5ad"):
            import anndata as ad

            real, pred = ad.read_h5ad(f"{folder}/real.h5ad"), ad.read_h5ad(f"{folder}/pred.h5ad")
            assert real.n_vars == n_genes, f"{folder} holds {real.n_vars} genes, not {n_genes}"
        else:
            real, pred = simulate_pair(n_genes)
            os.makedirs(folder, exist_ok=True)
            real.write_h5ad(f"{folder}/real.h5ad")
            pred.write_h5ad(f"{folder}/pred.h5ad")
        density = real.X.nnz / np.prod(real.shape), pred.X.nnz / np.prod(pred.shape)
        print(
            f"{N_PERTS} perturbations x {CELLS} cells + {CONTROLS} controls per side, {n_genes} genes, "
            f"non-zero: real {density[0]:.1%}, pred {density[1]:.1%} (built in {time.perf_counter() - start:.0f} s); "
            f"{os.cpu_count()} cores"
        )
        del real, pred
        runs = {}
        for which in ("cell-eval", "vcell_lib"):
            cmd = [sys.executable, __file__, "--child", which, "--folder", folder, "--repeats", str(args.repeats)]
            subprocess.run(cmd, check=True)
            with open(f"{folder}/{which}.json") as f:
                runs[which] = json.load(f)
            with open(f"{folder}/{which}.pkl", "rb") as f:
                runs[which]["table"] = pickle.load(f)
            run = runs[which]
            print(
                f"  {which:10s} {run['seconds']:6.2f} s (CPU time {run['cpu']:6.2f} s); peak RSS during the evaluation "
                f"{run['during']:5.0f} MiB, {run['during'] - run['before']:+5.0f} MiB over the loaded data and "
                f"libraries ({run['before']:.0f} MiB); process peak {run['peak_mib']:.0f} MiB"
            )
            if args.repeats > 1:
                print(f"  {'':10s} all times: {', '.join(f'{t:.2f}' for t in run['times'])} s")
        print(f"  speed-up: {runs['cell-eval']['seconds'] / runs['vcell_lib']['seconds']:.1f}x (wall time)")
        print(f"  vcell_lib.metrics.wilcoxon_de alone, both sides: {runs['vcell_lib']['de_seconds']:.2f} s")
        print(f"  top-k cuts inside equal |log2 fold change| (vcell_lib's DE): {runs['vcell_lib']['ties_at_cut']}")

        ours, theirs = runs["vcell_lib"]["table"], runs["cell-eval"]["table"]
        assert sorted(theirs.index) == list(ours.index), "different perturbations"
        theirs = theirs.loc[ours.index]
        for metric in METRICS:
            diff = np.abs(ours[metric].to_numpy(float) - theirs[metric].to_numpy(float))
            print(f"  max |difference| {metric}: {diff.max():.2e}")
        differ = ours.index[~np.isclose(ours["overlap_at_N"], theirs["overlap_at_N"], rtol=0, atol=1e-6)]
        if len(differ):
            print(f"  overlap_at_N differs for {list(differ)}")
        for metric in METRICS:
            np.testing.assert_allclose(ours[metric], theirs[metric], rtol=0, atol=1e-6, err_msg=metric)
        print("  identical results (mae, discrimination_score_l1, overlap_at_N per perturbation, atol 1e-6)")


if __name__ == "__main__":
    main()
