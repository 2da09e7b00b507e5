"""What chapter 12 cannot afford to run: ST's ablations over several seeds, longer training, and a learning curve.

Two experiments on the simulator with chapter 12's knobs (the shared response and program shifts of chapter 03,
16 gene features), each scored with `vcell_lib.compare.leaderboard` (both challenges' scores; the 2025 score
against the cell mean):

- "ablation": chapter 12's data (500 genes, 30 perturbations, 2 cell types; 30% of the perturbations held out in
  both cell types) and its model (`STConfig.small`, --steps updates), once per seed for each variant: the
  chapter's recipe, one-hot features, MSE loss, sets of 8 and of 128 cells (the same cells per update), no
  residual, Arc's gene-space residual with its bottleneck (`output_space="all"`), and 4x the steps. The
  baselines and the perfect resample (the other half of the test cells) are scored once.
- "learning curve": the same screen with 60 perturbations, whose 12 test perturbations (20%) stay fixed while
  ST, the linear model on the same gene features, the perturbation mean and the cell mean are trained on 6, 12,
  24 or all 48 of the others; the perfect resample is the ceiling.

Writes bench/results/st_experiments.csv (one row per model and run) and .json (settings, time, versions), which
chapter 12 plots; the chapter checks that its data and model are the ones used here.

Run: .venv/bin/python bench/st_experiments.py [--seeds 3] [--steps 800] [--only ablation|"learning curve"|baselines]
(not in CI; --only reruns one experiment, or only the ablation's baseline rows, and keeps the other rows of the CSV)
Measured: the JSON's "seconds" per experiment (about 20 minutes in all on 2 CPU cores, December 2026).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from vcell_lib.baselines import baseline_predictions
from vcell_lib.compare import leaderboard
from vcell_lib.data import CONTROL, PERT, assign_split, half_split, normalize_log1p, split_by_perturbation
from vcell_lib.env import versions
from vcell_lib.models.st import STConfig
from vcell_lib.models.st_data import perturbation_features, predict, train_st
from vcell_lib.simulate import SimulationParams, simulate_perturbseq

RESULTS = Path(__file__).parent / "results"
KNOBS = {"shared_response": 0.3, "program_shift": 0.3, "n_gene_features": 16}  # chapter 03's, as in chapter 12
PARAMS = SimulationParams()  # chapter 12's screen: the simulator's defaults
CURVE_PARAMS = SimulationParams(n_perturbations=60)
TEST_FRACTION = 0.3  # chapter 12's held-out share of the perturbations
SETS_PER_BATCH = 8  # sets of 32 cells: 256 cells per update
LR = 1e-3
VARIANTS = {  # name -> (STConfig changes, features, sets per batch, steps multiplier)
    "ST": ({}, "gene", SETS_PER_BATCH, 1),
    "ST, one-hot": ({}, "onehot", SETS_PER_BATCH, 1),
    "ST, MSE loss": ({"loss": "mse"}, "gene", SETS_PER_BATCH, 1),
    "ST, sets of 8": ({"cell_set_len": 8}, "gene", 4 * SETS_PER_BATCH, 1),
    "ST, sets of 128": ({"cell_set_len": 128}, "gene", SETS_PER_BATCH // 4, 1),
    "ST, no residual": ({"residual": False}, "gene", SETS_PER_BATCH, 1),
    "ST, Arc's gene-space residual": ({"output_space": "all"}, "gene", SETS_PER_BATCH, 1),
    "ST, 4x steps": ({}, "gene", SETS_PER_BATCH, 4),
}


def held_out_screen(params: SimulationParams, test: float) -> tuple[ad.AnnData, ad.AnnData, ad.AnnData, ad.AnnData]:
    """Chapter 12's data: (simulated counts, training cells, real half of the test cells, the other half)."""
    simulated = simulate_perturbseq(params, seed=0, **KNOBS)
    norm = normalize_log1p(simulated)
    part = assign_split(norm, split_by_perturbation(norm, val=0.0, test=test, seed=0)).to_numpy()
    train = norm[np.isin(part, ["train", "control"])].copy()
    real, resample = half_split(norm[np.isin(part, ["test", "control"])].copy(), seed=0)
    return simulated, train, real, resample


def scored(predictions: dict[str, ad.AnnData], real: ad.AnnData, **columns) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = leaderboard(predictions, real)
    return table.rename_axis("model").reset_index().assign(**columns)


def ablation_baselines() -> list[pd.DataFrame]:
    """The ablation's fixed rows (seed NaN): every baseline and the perfect resample on chapter 12's data."""
    simulated, train, real, resample = held_out_screen(PARAMS, TEST_FRACTION)
    features = perturbation_features(simulated.obs[PERT].unique(), simulated)
    fixed = baseline_predictions(train, real, features=features) | {"perfect resample": resample}
    return [scored(fixed, real, experiment="ablation", seed=np.nan)]


def ablations(seeds: int, steps: int) -> list[pd.DataFrame]:
    simulated, train, real, resample = held_out_screen(PARAMS, TEST_FRACTION)
    tables = {kind: perturbation_features(simulated.obs[PERT].unique(), simulated if kind == "gene" else kind)
              for kind in ("gene", "onehot")}  # fmt: skip
    cell_mean = baseline_predictions(train, real)["cell mean"]
    rows = ablation_baselines()
    for seed in range(seeds):
        for name, (changes, kind, per_batch, factor) in VARIANTS.items():
            start = time.perf_counter()
            model, _ = train_st(train, tables[kind], steps=steps * factor, lr=LR, sets_per_batch=per_batch, seed=seed,
                                progress=False, **changes)  # fmt: skip
            pred = predict(model, real, train, tables[kind], seed=seed, progress=False)
            row = scored({"cell mean": cell_mean, name: pred}, real, experiment="ablation", seed=seed)
            rows.append(row[row["model"] == name].assign(seconds=time.perf_counter() - start))
            print(rows[-1].round(3).to_string(header=False, index=False), flush=True)
    return rows


def learning_curve(seeds: int, steps: int, sizes: tuple[int, ...] = (6, 12, 24, 48)) -> list[pd.DataFrame]:
    simulated, train_all, real, resample = held_out_screen(CURVE_PARAMS, 0.2)
    features = perturbation_features(simulated.obs[PERT].unique(), simulated)
    perts = np.array(sorted(set(train_all.obs[PERT]) - {CONTROL}))
    cell_mean = baseline_predictions(train_all, real)["cell mean"]
    rows = [scored({"cell mean": cell_mean, "perfect resample": resample}, real, experiment="learning curve",
                   seed=np.nan, n_train_perturbations=len(perts))]  # fmt: skip
    for seed in range(seeds):
        for size in sizes:
            chosen = np.random.default_rng(seed).choice(perts, size, replace=False)
            train = train_all[train_all.obs[PERT].isin([*chosen, CONTROL]).to_numpy()].copy()
            model, _ = train_st(train, features, steps=steps, lr=LR, sets_per_batch=SETS_PER_BATCH, seed=seed,
                                progress=False)  # fmt: skip
            baselines = baseline_predictions(train, real, features=features)
            predictions = {"ST": predict(model, real, train, features, seed=seed, progress=False)} | {
                name: baselines[name] for name in ("cell mean", "perturbation mean", "linear")
            }
            row = scored(predictions, real, experiment="learning curve", seed=seed, n_train_perturbations=size)
            rows.append(row)
            print(row.round(3).to_string(header=False, index=False), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--only", choices=["ablation", "learning curve", "baselines"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    path = RESULTS / "st_experiments.json"
    seconds = json.loads(path.read_text())["seconds"] if args.only and path.exists() else {}
    rows = []
    for name, run in (("ablation", ablations), ("learning curve", learning_curve)):
        if args.only in (None, name):
            start = time.perf_counter()
            rows += run(args.seeds if name == "ablation" else min(args.seeds, 2), args.steps)
            seconds[name] = round(time.perf_counter() - start)
    if args.only == "baselines":  # the ablation's fixed rows only, e.g. after a change to a baseline
        kept = pd.read_csv(RESULTS / "st_experiments.csv")
        rows = ablation_baselines() + [kept[(kept["experiment"] != "ablation") | kept["seed"].notna()]]
    elif args.only is not None:  # keep the other experiment's rows
        kept = pd.read_csv(RESULTS / "st_experiments.csv")
        rows.append(kept[kept["experiment"] != args.only])
    RESULTS.mkdir(exist_ok=True)
    pd.concat(rows, ignore_index=True).to_csv(RESULTS / "st_experiments.csv", index=False, float_format="%.5g")
    settings = {
        "params": asdict(PARAMS), "curve_params": asdict(CURVE_PARAMS), "knobs": KNOBS,
        "model": asdict(STConfig.small(PARAMS.n_genes, KNOBS["n_gene_features"])), "steps": args.steps, "lr": LR,
        "sets_per_batch": SETS_PER_BATCH, "seeds": args.seeds, "seconds": seconds,
        "threads": torch.get_num_threads(), "versions": versions(),
    }  # fmt: skip
    (RESULTS / "st_experiments.json").write_text(json.dumps(settings, indent=1, default=str) + "\n")
    print(f"wrote {RESULTS / 'st_experiments.csv'}; seconds per experiment: {seconds}")


if __name__ == "__main__":
    main()
