"""Speed and agreement of vcell_lib.metrics.evaluate against cell-eval's MetricsEvaluator.

Same input, same thread count (1 by default: NUMBA_NUM_THREADS / OMP / BLAS pinned), several repeats.
Prints the best time of each, their ratio, and the largest difference in every shared metric.
Run: .venv/bin/python bench/metrics_vs_celleval.py [--threads N] [--repeats R]   (not run in CI)
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--repeats", type=int, default=3)
args = parser.parse_args()
for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)  # before numpy / numba load

import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vcell_lib.data import normalize_log1p  # noqa: E402
from vcell_lib.metrics import evaluate  # noqa: E402
from vcell_lib.simulate import simulate_perturbseq  # noqa: E402

CASES = {
    "50 perts x 100 cells + 1,000 controls, 2,000 genes": {"n_genes": 2000},
    "50 perts x 100 cells + 1,000 controls, 18,080 genes": {"n_genes": 18080},
}


def challenge_pair(n_genes: int) -> tuple:
    """Real and predicted cells in one context: the same simulated experiment, sampled twice.

    Perturbations and the network are drawn before the cells, so changing the cell numbers keeps them
    and gives new cells: a stand-in for a good model's prediction.
    """
    shape = {"n_genes": n_genes, "n_perturbations": 50, "n_contexts": 1}
    real = normalize_log1p(simulate_perturbseq(seed=0, cells_per_perturbation=100, n_control_cells=1000, **shape))
    pred = normalize_log1p(simulate_perturbseq(seed=0, cells_per_perturbation=90, n_control_cells=900, **shape))
    for adata in (real, pred):
        adata.obs = adata.obs[["target_gene"]].astype(str)
        del adata.uns["log1p"], adata.layers["counts"]
    return pred, real


def best_time(func, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def cell_eval_table(pred, real, outdir: str) -> pd.DataFrame:
    from cell_eval import MetricsEvaluator

    evaluator = MetricsEvaluator(
        adata_pred=pred.copy(),
        adata_real=real.copy(),
        pert_col="target_gene",
        control_pert="non-targeting",
        num_threads=args.threads,
        outdir=outdir,
    )
    results, _ = evaluator.compute(profile="vcc", write_csv=False)
    return results.to_pandas().set_index("perturbation")


def main() -> None:
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    print(f"threads: {args.threads}, repeats: {args.repeats}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as outdir:
        warm_pred, warm_real = challenge_pair(200)
        cell_eval_table(warm_pred, warm_real, outdir)  # numba compiles once; not timed
        for name, case in CASES.items():
            pred, real = challenge_pair(case["n_genes"])
            ours_s, ours = best_time(lambda p=pred, r=real: evaluate(p, r), args.repeats)
            theirs_s, theirs = best_time(lambda p=pred, r=real: cell_eval_table(p, r, outdir), args.repeats)
            print(f"\n{name}")
            print(f"  vcell_lib.evaluate (all metrics): {ours_s:6.2f} s")
            print(f"  cell-eval (vcc profile):          {theirs_s:6.2f} s")
            print(f"  speed-up: {theirs_s / ours_s:.1f}x")
            for metric in theirs.columns:
                diff = np.abs(ours.loc[theirs.index, metric].to_numpy(float) - theirs[metric].to_numpy(float))
                print(f"  max |difference| {metric}: {np.nanmax(diff):.2e}")


if __name__ == "__main__":
    main()
