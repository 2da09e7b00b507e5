"""simulate_perturbseq: speed, peak memory, and how well the data recover the stored truth.

Run: .venv/bin/python bench/simulate_perturbseq.py   (not run in CI)
"""

import time
import tracemalloc

import numpy as np

from vcell_lib.data import CONTROL, normalize_log1p, pseudobulk
from vcell_lib.simulate import simulate_perturbseq, true_effects

SIZES = {
    "book default (500 genes)": {},
    "challenge-like (2,000 genes)": {"n_genes": 2000, "n_perturbations": 50, "n_control_cells": 1000},
    "challenge genes (18,080 genes)": {
        "n_genes": 18080,
        "n_perturbations": 50,
        "n_control_cells": 1000,
        "n_contexts": 1,
    },
}


def timed(kwargs: dict) -> tuple[float, float, tuple[int, int]]:
    tracemalloc.start()
    start = time.perf_counter()
    adata = simulate_perturbseq(seed=0, **kwargs)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 2**20, adata.shape


def recovery(cells: int) -> float:
    """Median over (context, perturbation) of Pearson r between estimated and true effects."""
    adata = simulate_perturbseq(seed=1, n_genes=1000, cells_per_perturbation=cells)
    bulk = pseudobulk(normalize_log1p(adata), by=["cell_type", "target_gene"])
    rows = {tuple(k): x for k, x in zip(bulk.obs[["cell_type", "target_gene"]].to_numpy(), bulk.X)}
    truth = true_effects(adata)
    r = [np.corrcoef(rows[(c, p)] - rows[(c, CONTROL)], truth.loc[(c, p)])[0, 1] for c, p in truth.index]
    return float(np.median(r))


def main() -> None:
    for name, kwargs in SIZES.items():
        seconds, peak_mib, shape = timed(kwargs)
        print(f"{name:32s} {shape[0]:6d} cells x {shape[1]:5d} genes: {seconds:5.1f} s, peak {peak_mib:5.0f} MiB")
    print("truth recovery (1,000 genes, median Pearson r of pseudobulk vs true effect):")
    for cells in (10, 25, 50, 100, 200, 400):
        print(f"  {cells:4d} cells per perturbation: r = {recovery(cells):.3f}")


if __name__ == "__main__":
    main()
