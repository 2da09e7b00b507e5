"""What chapter 13 cannot afford to run: context generalization over few-shot fractions, context differences and SEs.

Chapter 13's task on the simulator (3 cell types, 40 perturbations, chapter 03's shared response, program shifts and
16 gene features): cell type C is held out; training sees every perturbation of A and B except the 40% of C's test
perturbations that are never seen anywhere, plus a few-shot share of C's own perturbations; the test is C's other
perturbations, split into a real half and a perfect resample. Each run scores, with `vcell_lib.compare.leaderboard`
(2025 score against the cell mean; 2026 score), on all test perturbations, on those seen in A and B ("seen
elsewhere") and on those never seen ("never seen"): the control mean, the cell mean (C's training profiles), the
transfer baseline (`perturbation_mean_baseline`: effects seen in A and B added to C's controls), the calibrated
transfer (`calibrated_transfer_baseline`: those effects rescaled per gene on C's few-shot perturbations), the linear
model on the gene features, ST on expression with gene features, ST with one-hot features (never-seen perturbations
get the control's vector, as `state tx infer` gives them), and the perfect resample.

- "few-shot": C's test perturbations are fixed (the 50% split); 0, 10, 25 or 50% of C's perturbations are shown.
- "context difference": at 50% few-shot, the contexts share more or less of their gene network (`edge_keep`: each
  edge is active in each cell type with this probability) or differ more or less in their basal expression
  (`context_sd`).
- "SE input": at 50% few-shot, ST on the embeddings of an SE trained on the training cells for 150 or 600 steps
  (chapter 13's recipe, `se.train_se`), against ST on expression.

Writes bench/results/context_experiments.csv (one row per model, subset and run) and .json (settings, time,
versions), which chapter 13 plots; the chapter checks that its settings are the ones used here.

Run: .venv/bin/python bench/context_experiments.py [--seeds 2] [--steps 800]
[--only few-shot|"context difference"|"SE input"]
(not in CI; --only reruns one experiment and keeps the other rows of the CSV)
Measured: the JSON's "seconds" per experiment (2 CPU cores, December 2026).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from vcell_lib.baselines import baseline_predictions
from vcell_lib.compare import leaderboard
from vcell_lib.data import PERT, Split, half_split, normalize_log1p, split_by_context, train_test_cells
from vcell_lib.env import versions
from vcell_lib.models import se
from vcell_lib.models.st import STConfig
from vcell_lib.models.st_data import control_fallback, perturbation_features, predict, train_st
from vcell_lib.simulate import SimulationParams, simulate_perturbseq

RESULTS = Path(__file__).parent / "results"
KNOBS = {"shared_response": 0.3, "program_shift": 0.3, "n_gene_features": 16}  # chapter 03's, as in chapters 12-13
PARAMS = SimulationParams(n_contexts=3, n_perturbations=40)  # chapter 13's screen
HELD_OUT = "context_C"
UNSEEN = 0.4  # share of C's test perturbations never seen in any cell type
FEW_SHOTS = (0.0, 0.1, 0.25, 0.5)
EDGE_KEEPS = (1.0, 0.75, 0.5, 0.25)
CONTEXT_SDS = (0.25, 1.0)  # with the default 0.5 (the edge_keep=0.75 run)
SE_STEPS = (150, 600)
SETS_PER_BATCH = 8
LR = 1e-3


def context_task(params: SimulationParams, few_shot: float, seed: int):
    """(training cells, real half, resample half, perturbations seen elsewhere, never seen, gene features)."""
    norm = normalize_log1p(simulate_perturbseq(params, seed=0, **KNOBS))
    split = split_by_context(norm, HELD_OUT, few_shot=max(FEW_SHOTS), unseen=UNSEEN, seed=seed)
    shots = sorted(x for x in split.train if x[0] == HELD_OUT)
    n_perts = len(shots) + len(split.test)
    kept = np.random.default_rng(seed).permutation(len(shots))[: round(few_shot * n_perts)]
    dropped = set(shots) - {shots[i] for i in kept}
    train, test = train_test_cells(norm, Split(split.train - dropped, split.val, split.test))
    real, resample = half_split(test, seed=seed)
    tests = sorted(p for _, p in split.test)
    trained = set(train.obs[PERT])
    features = perturbation_features(norm.obs[PERT].unique(), norm)
    return train, real, resample, [p for p in tests if p in trained], [p for p in tests if p not in trained], features


def scored(predictions: dict[str, ad.AnnData], real: ad.AnnData, elsewhere, never, **columns) -> pd.DataFrame:
    tables = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for subset, perts in (("all", None), ("seen elsewhere", elsewhere), ("never seen", never)):
            table = leaderboard(predictions, real, perturbations=perts)
            tables.append(table.rename_axis("model").reset_index().assign(subset=subset, **columns))
    return pd.concat(tables, ignore_index=True)


def contest(params: SimulationParams, few_shot: float, seed: int, steps: int, **columns) -> pd.DataFrame:
    """Every baseline, ST with gene features and with one-hot, and the perfect resample on one task."""
    train, real, resample, elsewhere, never, features = context_task(params, few_shot, seed)
    onehot = perturbation_features(train.obs[PERT].unique(), "onehot")
    template = real
    predictions = baseline_predictions(train, real, features=features, calibrated=True)
    predictions["transfer"] = predictions.pop("perturbation mean")
    for name, table in (("ST", features), ("ST one-hot", onehot)):
        model, _ = train_st(train, table, steps=steps, lr=LR, sets_per_batch=SETS_PER_BATCH, seed=seed, progress=False)
        table = control_fallback(table, never)  # only the one-hot table lacks them
        predictions[name] = predict(model, template, train, table, seed=seed, progress=False)
    predictions["perfect resample"] = resample
    return scored(predictions, real, elsewhere, never, seed=seed, few_shot=few_shot, **columns)


def few_shot_curve(seeds: int, steps: int) -> list[pd.DataFrame]:
    rows = []
    for seed in range(seeds):
        for few_shot in FEW_SHOTS:
            rows.append(contest(PARAMS, few_shot, seed, steps, experiment="few-shot"))
            print(rows[-1].query("subset == 'all'").round(3).to_string(index=False), flush=True)
    return rows


def context_difference(seeds: int, steps: int) -> list[pd.DataFrame]:
    settings = [{"edge_keep": keep} for keep in EDGE_KEEPS] + [{"context_sd": sd} for sd in CONTEXT_SDS]
    rows = []
    for seed in range(seeds):
        for changes in settings:
            params = replace(PARAMS, **changes)
            knob = {"edge_keep": params.edge_keep, "context_sd": params.context_sd}
            rows.append(contest(params, max(FEW_SHOTS), seed, steps, experiment="context difference", **knob))
            print(rows[-1].query("subset == 'all'").round(3).to_string(index=False), flush=True)
    return rows


def se_input(seeds: int, steps: int) -> list[pd.DataFrame]:
    rows = []
    for seed in range(seeds):
        train, real, resample, elsewhere, never, features = context_task(PARAMS, max(FEW_SHOTS), seed)
        cell_mean = baseline_predictions(train, real)["cell mean"]
        model, _ = train_st(train, features, steps=steps, lr=LR, sets_per_batch=SETS_PER_BATCH, seed=seed,
                            progress=False)  # fmt: skip
        predictions = {"cell mean": cell_mean, "ST": predict(model, real, train, features, seed=seed, progress=False)}
        for se_steps in SE_STEPS:
            encoder, _ = se.train_se(train, steps=se_steps, seed=seed, progress=False)
            for cells in (train, real):
                se.embed_cells(encoder, cells, key="X_se", progress=False)
            model, _ = train_st(train, features, steps=steps, lr=LR, sets_per_batch=SETS_PER_BATCH, seed=seed,
                                embed_key="X_se", progress=False)  # fmt: skip
            name = f"ST on SE ({se_steps} steps)"
            predictions[name] = predict(model, real, train, features, embed_key="X_se", seed=seed, progress=False)
        columns = {"seed": seed, "few_shot": max(FEW_SHOTS), "experiment": "SE input"}
        rows.append(scored(predictions, real, elsewhere, never, **columns))
        print(rows[-1].query("subset == 'all'").round(3).to_string(index=False), flush=True)
    return rows


EXPERIMENTS = {"few-shot": few_shot_curve, "context difference": context_difference, "SE input": se_input}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--only", choices=list(EXPERIMENTS), default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    path = RESULTS / "context_experiments.json"
    seconds = json.loads(path.read_text())["seconds"] if args.only and path.exists() else {}
    rows = []
    for name, run in EXPERIMENTS.items():
        if args.only in (None, name):
            start = time.perf_counter()
            rows += run(args.seeds, args.steps)
            seconds[name] = round(time.perf_counter() - start)
    if args.only is not None:  # keep the other experiments' rows
        kept = pd.read_csv(RESULTS / "context_experiments.csv")
        rows.append(kept[kept["experiment"] != args.only])
    RESULTS.mkdir(exist_ok=True)
    pd.concat(rows, ignore_index=True).to_csv(RESULTS / "context_experiments.csv", index=False, float_format="%.5g")
    settings = {
        "params": asdict(PARAMS), "knobs": KNOBS, "held_out": HELD_OUT, "unseen": UNSEEN, "few_shots": FEW_SHOTS,
        "edge_keeps": EDGE_KEEPS, "context_sds": CONTEXT_SDS, "se_steps": SE_STEPS,
        "model": asdict(STConfig.small(PARAMS.n_genes, KNOBS["n_gene_features"])), "steps": args.steps, "lr": LR,
        "sets_per_batch": SETS_PER_BATCH, "seeds": args.seeds, "seconds": seconds,
        "threads": torch.get_num_threads(), "versions": versions(),
    }  # fmt: skip
    path.write_text(json.dumps(settings, indent=1, default=str) + "\n")
    print(f"wrote {RESULTS / 'context_experiments.csv'}; seconds per experiment: {seconds}")


if __name__ == "__main__":
    main()
