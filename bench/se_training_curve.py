"""How a small SE's embedding improves with training: chapter 11's model and data, trained 10x longer.

Trains `SEConfig.small` on chapter 11's simulated cells (3 cell types, 2 batches, 64 gene features) for --steps
updates (3,000 by default, one warm-up + cosine schedule over all of them) and, at a few points along the way,
embeds the held-out cells and scores them as the chapter does: kNN accuracy of cell type, perturbation and batch,
and the MAE of masked-gene prediction. PCA of log1p, the gene mean and the cell type's gene mean are the references
(step = NaN). Writes bench/results/se_training_curve.csv (and .json: the simulation, the model, the time), which
chapter 11 plots; the chapter checks that its data are the ones used here.

Run: .venv/bin/python bench/se_training_curve.py [--steps 3000]   (not in CI)
Measured: 694 s for 3,000 steps on 2 shared CPU cores (December 2026).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA

from vcell_lib.data import BATCH, CELL_TYPE, PERT, normalize_log1p
from vcell_lib.env import set_seed
from vcell_lib.models import se
from vcell_lib.simulate import SimulationParams, simulate_perturbseq
from vcell_lib.train import TrainConfig, fit

RESULTS = Path(__file__).parent / "results"
# Chapter 11's data (full mode); the chapter asserts that they match the JSON written here.
PARAMS = SimulationParams(
    n_contexts=3, n_batches=2, n_perturbations=30, cells_per_perturbation=60, n_control_cells=300, n_gene_features=64
)
LABELS = [CELL_TYPE, PERT, BATCH]
SCORED = ["kNN cell_type", "kNN target_gene", "kNN batch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    checkpoints = sorted({s for s in (100, 300, 1000, 2000, 3000, args.steps) if s <= args.steps})

    rng = set_seed(0)
    simulated = normalize_log1p(simulate_perturbseq(PARAMS, seed=0))
    held_out = rng.random(simulated.n_obs) < 0.2  # as in the chapter: the same generator, the same draw
    train_cells, test_cells = simulated[~held_out].copy(), simulated[held_out].copy()
    X_train, X_test = train_cells.X.toarray(), test_cells.X.toarray()
    hidden = np.random.default_rng(1).random(X_test.shape) < 0.15
    rows = []

    pca = PCA(64, random_state=0).fit(X_train)
    scores = se.judge_embedding(pca.transform(X_train), pca.transform(X_test), train_cells.obs[LABELS],
                                test_cells.obs[LABELS])  # fmt: skip
    rows.append({"model": "PCA of log1p", "step": np.nan, **scores[SCORED]})
    type_means = pd.DataFrame(X_train).groupby(train_cells.obs[CELL_TYPE].to_numpy()).mean()
    type_mean = type_means.loc[test_cells.obs[CELL_TYPE].to_numpy()].to_numpy()
    rows.append({"model": "gene mean", "step": np.nan, "masked MAE": np.abs(X_train.mean(0) - X_test)[hidden].mean()})
    rows.append({"model": "gene mean of the cell's type", "step": np.nan,
                 "masked MAE": np.abs(type_mean - X_test)[hidden].mean()})  # fmt: skip

    config = se.SEConfig.small(token_dim=simulated.varm["gene_features"].shape[1], n_datasets=PARAMS.n_batches)
    set_seed(0)
    model = se.StateEmbedding(config, list(simulated.var_names), simulated.varm["gene_features"])

    def score(step: int, trained: se.StateEmbedding) -> None:
        if step not in checkpoints:
            return
        train_emb = se.embed_cells(trained, train_cells, key=None, progress=False)[:, : config.output_dim]
        test_emb = se.embed_cells(trained, test_cells, key=None, progress=False)[:, : config.output_dim]
        judged = se.judge_embedding(train_emb, test_emb, train_cells.obs[LABELS], test_cells.obs[LABELS])
        predicted = se.predict_masked_genes(trained, X_test, np.arange(simulated.n_vars), hidden)
        masked = np.abs(predicted - X_test)[hidden].mean()
        rows.append({"model": "SE", "step": step, **judged[SCORED], "masked MAE": masked})
        print(f"step {step}: {dict(judged[SCORED].round(3))}, masked MAE {masked:.4f}", flush=True)

    start = time.perf_counter()
    settings = TrainConfig(max_steps=args.steps, lr=3e-3, val_every=100, progress=True)
    fit(model, se.SEBatches(train_cells, model, batch_size=64, dataset_col=BATCH, seed=0), lambda m, b: m.loss(b),
        settings, on_validation=score)  # fmt: skip
    seconds = time.perf_counter() - start

    RESULTS.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(RESULTS / "se_training_curve.csv", index=False)
    meta = {"simulation": asdict(PARAMS), "model": asdict(config), "steps": args.steps, "batch_size": 64,
            "seconds": round(seconds), "threads": torch.get_num_threads(),
            "command": "python bench/se_training_curve.py --steps " + str(args.steps)}  # fmt: skip
    (RESULTS / "se_training_curve.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(pd.DataFrame(rows).round(4).to_string())
    print(f"trained {args.steps} steps in {seconds:.0f} s")


if __name__ == "__main__":
    main()
