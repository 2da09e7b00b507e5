"""Splits by perturbation and by context, leakage checks, and disjoint halves of the cells. Taught in chapters 04-05."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from vcell_lib.data.loading import CELL_TYPE, CONTROL, PERT, _require_columns


def half_split(adata: ad.AnnData, seed: int = 0, *, pert_col: str = PERT) -> tuple[ad.AnnData, ad.AnnData]:
    """Two disjoint random halves of every label's cells (controls too), as cell-eval's data ceiling draws them.

    Each label contributes floor(n / 2) cells to each half (an odd cell out is left out); labels with
    fewer than 2 cells are dropped. One half can play "real" and the other "prediction": how well
    they agree is what the noise in the data allows. Taught in chapters 05 and 08.
    """
    _require_columns(adata, pert_col=pert_col)
    generator = np.random.default_rng(seed)
    first, second = [], []
    for _, cells in adata.obs.groupby(pert_col, observed=True).indices.items():
        order = generator.permutation(cells)
        half = len(order) // 2
        first.append(order[:half])
        second.append(order[half : 2 * half])
    first, second = np.concatenate(first), np.concatenate(second)
    if len(first) == 0:
        raise ValueError("no label has 2 or more cells: nothing to split")
    return adata[first].copy(), adata[second].copy()


@dataclass(frozen=True)
class Split:
    """Which (cell type, perturbation) pairs a model may train on, tune on and is tested on. Taught in chapter 04."""

    train: frozenset[tuple[str, str]]
    val: frozenset[tuple[str, str]]
    test: frozenset[tuple[str, str]]


def _pairs(adata: ad.AnnData, pert_col: str, control: str, context_col: str) -> list[tuple[str, str]]:
    """The (context, perturbation) pairs of the data, controls excluded, sorted."""
    _require_columns(adata, pert_col=pert_col, context_col=context_col)
    pairs = adata.obs[[context_col, pert_col]].astype(str).drop_duplicates()
    pairs = pairs[pairs[pert_col] != str(control)]
    return sorted(map(tuple, pairs.to_numpy()))


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def split_by_perturbation(
    adata: ad.AnnData,
    *,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str = CELL_TYPE,
) -> Split:
    """Hold out whole perturbations (in every cell type): unseen-perturbation generalization. Taught in chapter 04."""
    _check_fraction("val", val)
    _check_fraction("test", test)
    if val + test >= 1:
        raise ValueError(f"val + test must be < 1 to leave training perturbations, got {val + test}")
    pairs = _pairs(adata, pert_col, control, context_col)
    perts = np.array(sorted({p for _, p in pairs}))
    if len(perts) < 3:
        raise ValueError(f"need at least 3 perturbations to split, found {len(perts)}")
    order = np.random.default_rng(seed).permutation(perts)
    n_test = max(1, round(test * len(perts))) if test > 0 else 0  # a requested part is never empty
    n_val = max(1, round(val * len(perts))) if val > 0 else 0
    test_perts, val_perts = set(order[:n_test]), set(order[n_test : n_test + n_val])
    return Split(
        train=frozenset(x for x in pairs if x[1] not in test_perts | val_perts),
        val=frozenset(x for x in pairs if x[1] in val_perts),
        test=frozenset(x for x in pairs if x[1] in test_perts),
    )


def split_by_context(
    adata: ad.AnnData,
    held_out: str,
    *,
    few_shot: float = 0.0,
    val: float = 0.0,
    unseen: float = 0.0,
    seed: int = 0,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str = CELL_TYPE,
) -> Split:
    """Hold out one cell type; optionally train on a `few_shot` fraction of its perturbations. Taught in chapter 04.

    Every perturbation of the other cell types is in train. Of the held-out cell type's perturbations,
    a `few_shot` fraction goes to train, a `val` fraction to val and the rest to test, as in the
    challenge (a new cell type with a few of its perturbations shown). An `unseen` fraction of the test
    perturbations is left out of training in every cell type too (their other pairs are in no part):
    perturbations never seen anywhere, which only a model that reads what a gene is can predict (chapter 13).
    """
    _check_fraction("few_shot", few_shot)
    _check_fraction("val", val)
    if not 0 <= unseen <= 1:  # 1 is allowed: every test perturbation unseen anywhere
        raise ValueError(f"unseen must be in [0, 1], got {unseen!r}")
    if few_shot + val >= 1:
        raise ValueError(f"few_shot + val must be < 1 to leave test perturbations, got {few_shot + val}")
    pairs = _pairs(adata, pert_col, control, context_col)
    contexts = sorted({c for c, _ in pairs})
    if held_out not in contexts:
        raise ValueError(f"held_out={held_out!r} is not a cell type with perturbations; cell types: {contexts}")
    if len(contexts) < 2:
        raise ValueError("split_by_context needs at least two cell types")
    target = [x for x in pairs if x[0] == held_out]
    order = np.random.default_rng(seed).permutation(len(target))
    n_shot, n_val = round(few_shot * len(target)), round(val * len(target))
    shot = {target[i] for i in order[:n_shot]}
    tune = {target[i] for i in order[n_shot : n_shot + n_val]}
    test = [target[i] for i in order[n_shot + n_val :]]  # in random order: the first ones are never seen
    n_never = max(1, round(unseen * len(test))) if unseen > 0 else 0  # asked for: at least one
    never = {p for _, p in test[:n_never]}
    return Split(
        train=frozenset([x for x in pairs if x[0] != held_out and x[1] not in never] + sorted(shot)),
        val=frozenset(tune),
        test=frozenset(test),
    )


def train_test_cells(
    adata: ad.AnnData,
    split: Split,
    *,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str = CELL_TYPE,
) -> tuple[ad.AnnData, ad.AnnData]:
    """The training cells and the test cells of a split, as two AnnData. Taught in chapter 13.

    Training: the cells of the train pairs and every control cell (the challenge gives the controls of every cell
    type). Test: the cells of the test pairs and the control cells of the test's cell types, which the metrics
    compare against. Val pairs and pairs in no part are in neither.
    """
    labels = assign_split(adata, split, pert_col=pert_col, control=control, context_col=context_col).to_numpy()
    test_contexts = sorted({c for c, _ in split.test})
    in_test_context = adata.obs[context_col].astype(str).isin(test_contexts).to_numpy()
    train = adata[np.isin(labels, ["train", "control"])].copy()
    test = adata[(labels == "test") | ((labels == "control") & in_test_context)].copy()
    return train, test


def assign_split(
    adata: ad.AnnData,
    split: Split,
    *,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str = CELL_TYPE,
) -> pd.Series:
    """Label each cell "train", "val", "test" or "control" (controls serve every split). Taught in chapter 04."""
    check_split(adata, split, pert_col=pert_col, control=control, context_col=context_col)
    keys = list(zip(adata.obs[context_col].astype(str), adata.obs[pert_col].astype(str)))
    lookup = {x: "train" for x in split.train} | {x: "val" for x in split.val} | {x: "test" for x in split.test}
    labels = [("control" if p == str(control) else lookup.get((c, p), "unused")) for c, p in keys]
    return pd.Series(pd.Categorical(labels), index=adata.obs_names, name="split")


def check_split(
    adata: ad.AnnData,
    split: Split,
    *,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str = CELL_TYPE,
) -> None:
    """Raise if a (cell type, perturbation) pair is in two parts of the split, or unknown. Taught in chapter 04."""
    parts = {"train": split.train, "val": split.val, "test": split.test}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = parts[a] & parts[b]
        if shared:
            raise ValueError(
                f"leakage: {len(shared)} (cell type, perturbation) pairs are in both {a} and {b}, "
                f"e.g. {sorted(shared)[:3]}"
            )
    if not split.test:
        raise ValueError("the split has no test pairs")
    known = set(_pairs(adata, pert_col, control, context_col))
    unknown = (split.train | split.val | split.test) - known
    if unknown:
        raise ValueError(f"{len(unknown)} split pairs are not in the data, e.g. {sorted(unknown)[:3]}")


def select_perturbations(
    adata: ad.AnnData, perts: Iterable[str], *, pert_col: str = PERT, control: str = CONTROL
) -> ad.AnnData:
    """The cells of the given perturbations plus the control cells, as a new AnnData. Taught in chapter 05.

    The label column becomes a categorical of the labels kept (no unused categories), so that
    `value_counts()` counts only them.
    """
    _require_columns(adata, pert_col=pert_col)
    perts = [str(p) for p in perts]
    labels = adata.obs[pert_col].astype(str)
    unknown = sorted(set(perts) - set(labels))
    if unknown:
        raise ValueError(f"perts {unknown[:5]} have no cells in adata ({pert_col})")
    subset = adata[labels.isin([*perts, control]).to_numpy()].copy()
    subset.obs[pert_col] = subset.obs[pert_col].astype(str).astype("category")
    return subset
