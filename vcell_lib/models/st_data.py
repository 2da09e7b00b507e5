"""The data side of ST: perturbation features, training sets of cells, and predictions for a template.

Taught in chapter 12. ST (`vcell_lib.models.st`) reads sets of S cells that share a cell type and a
perturbation, each cell paired with a control cell of its cell type; this module makes those sets from an
AnnData, as Arc's data module (`cell-load`: `PerturbationBatchSampler`, the `random` and `batch` mapping
strategies) does, and fills a challenge template with predictions, as `state tx infer` does.

- `perturbation_features`: the table perturbation -> vector that ST reads (one-hot, or gene features);
- `STSets`: training batches of sets, the control pairing redrawn every pass (an iterable for `train.fit`),
  and `st_loss`, the loss function to give `fit` with them;
- `predict`: every row of a template replaced by ST's prediction from a control cell of its cell type.

X is read a few rows at a time (`X[rows]`, then those rows made dense): a sparse, dense or backed
(`anndata.read_h5ad(path, backed="r")`) matrix of any size works, and none is made dense whole.
Where the reference falls back quietly (a log line at most) this module raises instead, and the docstring says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..data.loading import CELL_TYPE, CONTROL, PERT, _require_columns
from ..env import set_seed
from ..train import History, TrainConfig, fit
from ._matrix import gather_rows, log1p_matrix
from .st import StateTransition, STConfig

__all__ = ["PREDICTION_MAX", "STSets", "control_fallback", "perturbation_features", "predict", "st_loss", "train_st"]

PREDICTION_MAX = 14.0  # predictions are clipped to [0, 14], as `state tx infer` does (cell-eval rejects max >= 15)
_SETS_PER_FORWARD = 32  # predict: full windows of one group go through the model this many at a time


# --- perturbation features -----------------------------------------------------------------------------------
def perturbation_features(
    perturbations: Iterable[str],
    kind: str | Mapping[str, Any] | ad.AnnData = "onehot",
    *,
    control: str = CONTROL,
) -> pd.DataFrame:
    """The vector ST reads for each perturbation: a table, one row per perturbation. Taught in chapter 12.

    Parameters
    ----------
    perturbations
        The perturbations to encode, e.g. `train.obs["target_gene"].unique()`. The control is always added.
    kind
        "onehot": one column per perturbation, the control included, in sorted order (arc-state's
        `generate_onehot_map`; note that arc builds it over the perturbations of every file it is given,
        test ones included, which then have a column that training never sets). A one-hot encoding knows
        nothing about a perturbation it was not trained on: it cannot predict an unseen one.
        A mapping {gene: vector}, or an AnnData whose `varm["gene_features"]` holds one vector per gene
        (`var_names`; the simulator's perturbations are named after the genes they silence): gene features,
        which let a model say something about perturbations it never saw (the VCC recipe used ESM-2
        vectors of the silenced genes). The control gets its own vector if the mapping has one, else zeros.
    control
        The control label.

    Returns
    -------
    A float32 DataFrame indexed by perturbation name (str), one column per feature.

    Raises ValueError naming the perturbations that the mapping has no vector for. The reference gives them a
    vector of zeros in training (with a log line), and at inference falls back to the control's vector for a
    perturbation its table lacks (with a printed note), predicting "no effect"; here they are errors.
    """
    names = pd.Index(pd.unique(np.asarray([str(p) for p in perturbations] + [str(control)], dtype=object)))
    if isinstance(kind, str):
        if kind != "onehot":
            raise ValueError(f"kind must be 'onehot', a {{gene: vector}} mapping or an AnnData, got {kind!r}")
        names = names.sort_values()
        return pd.DataFrame(np.eye(len(names), dtype=np.float32), index=names, columns=names)
    if isinstance(kind, ad.AnnData):
        if "gene_features" not in kind.varm:
            raise ValueError(
                f"kind is an AnnData without varm['gene_features'] (it has {list(kind.varm)}): pass one "
                "simulated with n_gene_features > 0, or a {gene: vector} mapping"
            )
        kind = dict(zip(kind.var_names.astype(str), np.asarray(kind.varm["gene_features"], dtype=np.float32)))
    if not isinstance(kind, Mapping):
        raise TypeError(f"kind must be 'onehot', a mapping or an AnnData, got {type(kind).__name__}")
    vectors = {str(key): np.asarray(value, dtype=np.float32).ravel() for key, value in kind.items()}
    widths = {len(v) for v in vectors.values()}
    if len(widths) != 1:
        raise ValueError(f"the feature vectors must all have one length, got lengths {sorted(widths)[:5]}")
    missing = [p for p in names if p not in vectors and p != str(control)]
    if missing:
        raise ValueError(
            f"{len(missing)} perturbations have no feature vector: {missing[:5]}. Give them one, or leave their "
            "cells out (arc-state would use zeros, or the control's vector at inference)"
        )
    zeros = np.zeros(widths.pop(), dtype=np.float32)
    rows = np.stack([vectors.get(p, zeros) for p in names])
    return pd.DataFrame(rows, index=names, columns=[f"feature_{i}" for i in range(rows.shape[1])])


def control_fallback(features: pd.DataFrame, perturbations: Iterable[str], *, control: str = CONTROL) -> pd.DataFrame:
    """`features` with a row for every perturbation it lacks: the control's row. Taught in chapter 13.

    This is what `state tx infer` does, with a printed note, for a perturbation its table lacks: the model is told
    "no perturbation", so it predicts the control. `predict` refuses such perturbations; this makes the reference's
    behaviour explicit, e.g. to score a one-hot model on perturbations it never saw.
    """
    names = features.index.astype(str)
    if str(control) not in names:
        raise ValueError(f"features has no row for the control {control!r} to fall back to")
    missing = [p for p in pd.unique(np.asarray([str(p) for p in perturbations], dtype=object)) if p not in names]
    if missing:
        warnings.warn(
            f"{len(missing)} perturbations get the control's vector, so the model predicts no effect for them "
            f"(as state tx infer does): {missing[:5]}",
            stacklevel=2,
        )
    row = features.to_numpy()[names.get_loc(str(control))]
    fallback = pd.DataFrame(np.tile(row, (len(missing), 1)), index=missing, columns=features.columns)
    return pd.concat([features.set_axis(names), fallback.astype(features.dtypes.iloc[0])])


def _feature_positions(features: pd.DataFrame, labels: np.ndarray, where: str) -> np.ndarray:
    """Row position in `features` of each label (not the rows themselves: 5120-d ESM-2 vectors for 300,000
    cells would take 6 GB); labels it lacks are an error that names them."""
    position = features.index.astype(str).get_indexer(labels)
    if (position < 0).any():
        unknown = list(pd.unique(labels[position < 0]))
        raise ValueError(
            f"{len(unknown)} perturbations of {where} are not in features: {unknown[:5]}. The model cannot encode "
            "them (arc-state encodes them as zeros in training, as the control at inference): build features "
            "that include them "
            "(gene features can; a one-hot of the training perturbations cannot), or leave those cells out"
        )
    return position


def _embedding(adata: ad.AnnData, key: str, name: str) -> np.ndarray:
    """`adata.obsm[key]` as a float32 array (cells, width); a missing key or non-finite values are errors."""
    if key not in adata.obsm:
        raise ValueError(f"{name}.obsm has no {key!r} (embed_key); it has {list(adata.obsm)}: embed the cells first, "
                         "e.g. with models.se.embed_cells(model, adata, key=...)")  # fmt: skip
    embedding = np.asarray(adata.obsm[key], dtype=np.float32)
    if not np.isfinite(embedding).all():
        raise ValueError(f"{name}.obsm[{key!r}] has NaN or infinite values")
    return embedding


def _labels(adata: ad.AnnData, column: str) -> np.ndarray:
    return adata.obs[column].astype(str).to_numpy()


# --- training sets -------------------------------------------------------------------------------------------
class STSets:
    """Training batches of ST sets over an AnnData, redrawn every pass (an iterable for `train.fit`).

    Taught in chapter 12. Cells are grouped by (cell type, perturbation), or by (batch, cell type,
    perturbation) with `sets_by_batch`; control cells form groups too (control -> control), as in the
    reference. Each pass shuffles every group, cuts it into sets of `set_size` cells, fills a short last set
    by drawing its own cells again with replacement, pairs every cell of every set with a control cell of the
    same cell type drawn at random (with `controls_by_batch`: of the same cell type and batch when that batch
    has controls, else of the cell type: cell-load's `batch` mapping), shuffles the sets and yields them
    `sets_per_batch` at a time. Only the rows of a batch are read from X.

    Differences from cell-load, none of which changes what a set is: on one device, cell-load cuts the groups
    once and keeps that order of sets for every epoch (only the pairing and the filling are redrawn); it fills
    a short set by drawing all S cells with replacement from it (so some of its cells can be left out), here
    the set keeps its cells and only the missing places are drawn.

    Each batch is a dict of tensors: "basal" (sets, S, G) the control cells' log1p expression, "pert"
    (sets, S, P) the perturbation's features (the same row for every cell of a set), "target" (sets, S, G)
    the observed cells, "target_index" and "basal_index" (sets, S) their row positions in adata, and, when
    `batch_col` is given, "batch" (sets, S) the observed cells' batch codes, positions in `self.batches`. With
    `embed_key` the cells are their embeddings `obsm[embed_key]` (e.g. SE's), in "basal" and "target", and
    "target_genes" (sets, S, G) holds the observed cells' log1p expression, for a model with a gene decoder.
    Each pass draws anew from the object's own generator (seeded once, as `SEBatches`): a `fit` resumed from a
    checkpoint sees other draws than an uninterrupted one.

    Attributes: `groups` (a table of the groups: their keys, `n_cells` and `n_sets`), `n_sets` (sets per pass),
    `batches` (batch names in code order, with `batch_col`).

    Parameters
    ----------
    adata
        Cells in the book's standard form, X log1p-normalized (count-like X is normalized, with a warning):
        CSR, dense, or backed (then it must already be log1p).
    features
        The table of `perturbation_features`; every perturbation of adata needs a row.
    set_size
        S, cells per set (the model's `cell_set_len`).
    sets_per_batch
        Sets per batch (arc-state trains on 16).
    seed
        Seed of the draws; each pass draws anew from it.
    batch_col
        Obs column of each cell's batch, for "batch" codes (a model with `n_batches >= len(self.batches)`),
        and needed by `sets_by_batch` and `controls_by_batch`.
    sets_by_batch
        Sets also share a batch (cell-load's `use_batch`).
    controls_by_batch
        Controls come from the cell's batch when it has any (cell-load's `batch` mapping strategy).
    embed_key
        Read cells as `adata.obsm[embed_key]` (cell embeddings, chapter 13) rather than X; X (log1p) then gives
        "target_genes".
    pert_col, control, context_col
        The perturbation column, the control label and the cell type column.
    """

    def __init__(
        self,
        adata: ad.AnnData,
        features: pd.DataFrame,
        set_size: int,
        sets_per_batch: int = 16,
        *,
        seed: int = 0,
        batch_col: str | None = None,
        sets_by_batch: bool = False,
        controls_by_batch: bool = False,
        embed_key: str | None = None,
        pert_col: str = PERT,
        control: str = CONTROL,
        context_col: str = CELL_TYPE,
    ) -> None:
        for name, value in (("set_size", set_size), ("sets_per_batch", sets_per_batch)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if (sets_by_batch or controls_by_batch) and batch_col is None:
            raise ValueError("sets_by_batch and controls_by_batch need batch_col=... naming the batch column")
        batch_column = {"batch_col": batch_col} if batch_col else {}
        _require_columns(adata, pert_col=pert_col, context_col=context_col, **batch_column)
        self.X = log1p_matrix(adata, "adata")
        self.embedding = None if embed_key is None else _embedding(adata, embed_key, "adata")
        self.set_size, self.sets_per_batch = int(set_size), int(sets_per_batch)
        self.rng = np.random.default_rng(seed)
        perts, contexts = _labels(adata, pert_col), _labels(adata, context_col)
        self.features = features.to_numpy(np.float32)  # (perturbations, P)
        self.cell_feature = _feature_positions(features, perts, "adata")  # each cell's row of it
        batch = _labels(adata, batch_col) if batch_col else None
        self.batches: list[str] = sorted(set(batch)) if batch is not None else []
        self.cell_batch = None if batch is None else pd.Index(self.batches).get_indexer(batch)

        keys = {context_col: contexts, pert_col: perts} | ({batch_col: batch} if sets_by_batch else {})
        table = pd.DataFrame(keys)
        grouped = table.groupby(list(keys), sort=True).indices
        self.group_cells: list[np.ndarray] = list(grouped.values())
        self.groups = pd.DataFrame(list(grouped), columns=list(keys))
        self.groups["n_cells"] = [len(cells) for cells in self.group_cells]
        self.groups["n_sets"] = [math.ceil(n / self.set_size) for n in self.groups["n_cells"]]
        self.n_sets = int(self.groups["n_sets"].sum())
        self._pair_controls(contexts, perts == str(control), batch if controls_by_batch else None, context_col)

    def _pair_controls(
        self, contexts: np.ndarray, is_control: np.ndarray, batch: np.ndarray | None, context_col: str
    ) -> None:
        """Each cell's pool of controls, as (start, size) in one array of control rows: pools are drawn from
        with one vectorized step per pass."""
        pools: dict[tuple[str, ...], np.ndarray] = {}
        frame = pd.DataFrame({"context": contexts[is_control]})
        if batch is not None:
            frame["batch"] = batch[is_control]
        controls = np.flatnonzero(is_control)
        for key, rows in frame.groupby(list(frame.columns), sort=True).indices.items():
            pools[key if isinstance(key, tuple) else (key,)] = controls[rows]
        if batch is not None:  # the fallback: every control of the cell type
            for context, rows in frame.groupby("context", sort=True).indices.items():
                pools[(context,)] = controls[rows]
        lacking = sorted(set(contexts) - {key[0] for key in pools})
        if lacking:
            raise ValueError(
                f"no control cells for {context_col} {lacking[:5]}: every cell is paired with a control of its "
                "cell type; add control cells of those cell types, or leave their cells out"
            )
        names = list(pools)
        self.pool_rows = np.concatenate([pools[k] for k in names])
        sizes = np.array([len(pools[k]) for k in names])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        position = {key: i for i, key in enumerate(names)}
        if batch is None:
            pool = np.array([position[(c,)] for c in contexts])
        else:
            pool = np.array([position.get((c, b), position[(c,)]) for c, b in zip(contexts, batch)])
        self.cell_pool_start, self.cell_pool_size = starts[pool], sizes[pool]

    def __len__(self) -> int:
        return math.ceil(self.n_sets / self.sets_per_batch)

    def draw_sets(self) -> tuple[np.ndarray, np.ndarray]:
        """One pass's sets: (target rows, control rows), each (n_sets, S), in the order they will be batched."""
        rng, size = self.rng, self.set_size
        sets = []
        for cells in self.group_cells:
            order = rng.permutation(cells)
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                if len(chunk) < size:
                    chunk = np.concatenate([chunk, rng.choice(chunk, size - len(chunk))])
                sets.append(chunk)
        targets = np.stack(sets)[rng.permutation(len(sets))]
        offsets = rng.integers(0, self.cell_pool_size[targets])  # a control per place, of the cell's pool
        return targets, self.pool_rows[self.cell_pool_start[targets] + offsets]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        targets, basals = self.draw_sets()
        for start in range(0, len(targets), self.sets_per_batch):
            target, basal = targets[start : start + self.sets_per_batch], basals[start : start + self.sets_per_batch]
            batch = {"pert": torch.from_numpy(self.features[self.cell_feature[target]])}
            if self.embedding is None:
                rows = gather_rows(self.X, np.concatenate([target.ravel(), basal.ravel()]))
                batch["target"], batch["basal"] = torch.from_numpy(rows).view(2, *target.shape, -1)
            else:
                batch["basal"] = torch.from_numpy(self.embedding[basal])
                batch["target"] = torch.from_numpy(self.embedding[target])
                batch["target_genes"] = torch.from_numpy(gather_rows(self.X, target.ravel())).view(*target.shape, -1)
            batch["target_index"], batch["basal_index"] = torch.from_numpy(target), torch.from_numpy(basal)
            if self.cell_batch is not None:
                batch["batch"] = torch.from_numpy(self.cell_batch[target])
            yield batch


def st_loss(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """ST's loss on one `STSets` batch, the `loss_fn` for `train.fit`. Taught in chapter 12.

    The batch codes are given to a model that embeds batches (`n_batches > 0`) and left out otherwise; the
    observed expression ("target_genes") to a model with a gene decoder.
    """
    codes = batch.get("batch") if model.config.n_batches else None
    # target_genes (sets on embeddings) go to the loss even for a model without a decoder, which then says so
    return model.loss(model(batch["basal"], batch["pert"], codes), batch["target"], batch.get("target_genes"))


def train_st(
    adata: ad.AnnData,
    features: pd.DataFrame,
    *,
    steps: int = 800,
    lr: float = 1e-3,
    sets_per_batch: int = 8,
    embed_key: str | None = None,
    seed: int = 0,
    progress: bool = True,
    **changes: Any,
) -> tuple[StateTransition, History]:
    """Build and train the book's small ST on `adata` in one call; returns (model, history). Taught in chapter 13.

    Chapter 12's recipe: `STConfig.small` (with `changes`, e.g. `loss="mse"`), `STSets` of its `cell_set_len`
    cells, `sets_per_batch` sets per update, `train.fit` for `steps` updates with AdamW at `lr` (warm-up, then
    cosine), no validation. With `embed_key` the model reads and writes the cells' embeddings
    `adata.obsm[embed_key]` and decodes them to `adata`'s genes (a gene decoder of hidden widths 256, 256 unless
    `changes` says otherwise).
    """
    set_seed(seed)
    if embed_key is None:
        config = STConfig.small(adata.n_vars, features.shape[1], **changes)
    else:
        width = _embedding(adata, embed_key, "adata").shape[1]
        changes = {"decoder_genes": adata.n_vars, "decoder_hidden": (256, 256), **changes}
        config = STConfig.small(width, features.shape[1], **changes)
    model = StateTransition(config)
    sets = STSets(adata, features, config.cell_set_len, sets_per_batch, seed=seed, embed_key=embed_key)
    settings = TrainConfig(max_steps=steps, lr=lr, seed=seed, val_every=10**9, progress=progress)
    history = fit(model, sets, st_loss, settings)
    return model.eval(), history


# --- inference -----------------------------------------------------------------------------------------------
def _batch_codes(
    template: ad.AnnData, model: nn.Module, batch_col: str | None, batches: Sequence[str] | None
) -> np.ndarray | None:
    """The batch code of each template row, for a model with a batch embedding; None for one without."""
    n_batches = model.config.n_batches
    if not n_batches:
        if batch_col is not None:
            raise ValueError("batch_col is given but the model has no batch embedding (n_batches=0): leave it out")
        return None
    if batch_col is None or batches is None:
        raise ValueError(
            f"the model embeds batches (n_batches={n_batches}): pass batch_col=... (the template's batch column) "
            "and batches=... (the batch names in the training order, e.g. STSets.batches)"
        )
    if len(batches) > n_batches:
        raise ValueError(f"{len(batches)} batches for a model that embeds n_batches={n_batches}: pass its batches")
    _require_columns(template, batch_col=batch_col)
    labels = _labels(template, batch_col)
    position = pd.Index([str(b) for b in batches]).get_indexer(labels)
    if (position < 0).any():
        unknown = list(pd.unique(labels[position < 0]))
        raise ValueError(
            f"batch labels {unknown[:5]} of the template are not among the {len(batches)} training batches "
            f"(the model embeds {n_batches}; state tx infer would use batch 0): relabel them to a training batch"
        )
    return position


@torch.no_grad()
def predict(
    model: nn.Module,
    template: ad.AnnData,
    controls: ad.AnnData,
    features: pd.DataFrame,
    *,
    set_size: int | None = None,
    seed: int = 0,
    batch_col: str | None = None,
    batches: Sequence[str] | None = None,
    embed_key: str | None = None,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str = CELL_TYPE,
    progress: bool = True,
) -> ad.AnnData:
    """Fill a template with ST's predictions, as `state tx infer` does. Taught in chapter 12.

    The template's rows are grouped by (cell type, perturbation); each group is cut, in obs order, into windows
    of `set_size` cells, and each window is one set: control cells of that cell type drawn with replacement
    from `controls`, the group's perturbation, and the model's output written to the window's rows. Every row is
    predicted, controls included (a control row gets the model's "control" prediction). A set never mixes cell
    types, so a template of several cell types gives each the predictions it would get alone (the draws
    aside).

    Parameters
    ----------
    model
        A trained `StateTransition` (or any module with its `config` and `forward(basal, pert, batch)`).
    template
        The cells to predict: obs with `pert_col` (and `context_col`; without it, all rows are of the one cell
        type of `controls`), var the genes, in any order that `controls` has them all in.
    controls
        Cells to draw controls from, log1p (count-like X is normalized, with a warning; backed X must be log1p):
        its rows labelled `control` in `pert_col`, or every row if it has no such column.
    features
        The table of `perturbation_features` the model was trained with.
    set_size
        Cells per set (default: the model's `cell_set_len`).
    seed
        Seed of the control draws.
    batch_col, batches
        For a model with a batch embedding: the template's batch column and the training batch names in code
        order (`STSets.batches`).
    embed_key
        For a model on cell embeddings with a gene decoder (chapter 13): the controls' embeddings are
        `controls.obsm[embed_key]`, and the predicted embeddings are decoded to genes. The decoder writes the genes
        it was trained on, in their order: `controls` must be cells with those genes (the training cells, as
        `train_st` used them), and the template's genes, in any order, must be among them.
    pert_col, control, context_col
        The perturbation column, the control label and the cell type column.
    progress
        Show a progress bar over the groups.

    Returns
    -------
    An AnnData with the template's obs and var and a dense float32 X of log1p predictions, clipped to
    [0, PREDICTION_MAX] as the reference does (with a warning saying how many values were clipped).

    Raises ValueError for a perturbation that `features` lacks, a cell type without controls and a batch label
    outside `batches`, where `state tx infer` predicts the control (with a printed note), takes controls of any
    cell type (silently), or uses batch 0 (with a printed warning).
    """
    config = model.config
    size = config.cell_set_len if set_size is None else set_size
    if int(size) != size or size < 1:
        raise ValueError(f"set_size must be a positive integer, got {set_size!r}")
    size = int(size)
    _require_columns(template, pert_col=pert_col)
    if features.shape[1] != config.pert_dim:
        raise ValueError(f"features has {features.shape[1]} columns, the model reads pert_dim={config.pert_dim}")
    perts = _labels(template, pert_col)
    table, cell_feature = features.to_numpy(np.float32), _feature_positions(features, perts, "the template")
    if (embed_key is None) != (config.decoder_genes == 0):
        raise ValueError(
            "a model on cell embeddings (decoder_genes > 0) needs embed_key=... naming the controls' embedding, and "
            f"a model on expression none (decoder_genes={config.decoder_genes}, embed_key={embed_key!r})"
        )
    columns = controls.var_names.get_indexer(template.var_names)
    lacking = f"{int((columns < 0).sum())} genes of the template, e.g. {list(template.var_names[columns < 0][:5])}"
    decoded_columns = None
    if embed_key is None:
        if (columns < 0).any():
            raise ValueError(f"controls lack {lacking}: give controls with every template gene")
        if template.n_vars != config.n_genes:
            raise ValueError(f"the template has {template.n_vars} genes, the model predicts n_genes={config.n_genes}")
    else:
        if controls.n_vars != config.decoder_genes:
            raise ValueError(
                f"controls has {controls.n_vars} genes, the decoder writes {config.decoder_genes}: with embed_key, "
                "pass controls with the genes the model was trained on, in their order (the training cells)"
            )
        if (columns < 0).any():
            raise ValueError(f"{lacking} are not among the decoder's (controls' genes)")
        decoded_columns = torch.from_numpy(columns)  # the decoder's genes in the template's order
    codes = _batch_codes(template, model, batch_col, batches)
    if embed_key is None:
        X = log1p_matrix(controls, "controls")
    else:  # the embedding of the controls, read whole; the genes are the decoder's
        X = _embedding(controls, embed_key, "controls")
        if X.shape[1] != config.n_genes:
            raise ValueError(f"controls.obsm[{embed_key!r}] is {X.shape[1]} wide, the model reads {config.n_genes}")
        columns = None
    if columns is not None and np.array_equal(columns, np.arange(X.shape[1])):
        columns = None

    is_control = np.ones(controls.n_obs, dtype=bool)
    if pert_col in controls.obs:
        is_control = _labels(controls, pert_col) == str(control)
    if not is_control.any():
        raise ValueError(f"controls has no control cells ({pert_col} == {control!r})")
    pool_labels = _labels(controls, context_col) if context_col in controls.obs else np.full(controls.n_obs, "")
    pools = {c: np.flatnonzero(is_control & (pool_labels == c)) for c in pd.unique(pool_labels[is_control])}
    if context_col in template.obs:
        contexts = _labels(template, context_col)
    elif len(pools) == 1:
        contexts = np.full(template.n_obs, next(iter(pools)))
    else:
        raise ValueError(
            f"the template has no column {context_col!r} (context_col) and the controls hold several "
            f"cell types {sorted(pools)[:5]}: label the template's cells"
        )
    lacking = sorted(set(contexts) - set(pools))
    if lacking:
        raise ValueError(
            f"controls has no control cells of {context_col} {lacking[:5]} (state tx infer would "
            "take controls of any cell type): pass controls of every cell type of the template"
        )

    device = next(model.parameters()).device
    out = np.empty((template.n_obs, template.n_vars), dtype=np.float32)
    rng = np.random.default_rng(seed)
    clipped = 0

    def run(windows: list[np.ndarray], drawn: list[np.ndarray]) -> None:
        basal = torch.from_numpy(gather_rows(X, np.concatenate(drawn), columns)).view(len(windows), len(windows[0]), -1)
        rows = np.stack(windows)
        batch = None if codes is None else torch.from_numpy(codes[rows]).to(device)
        pert = torch.from_numpy(table[cell_feature[rows]])
        pred = model(basal.to(device), pert.to(device), batch)
        if embed_key is not None:
            pred = model.decode(pred)[..., decoded_columns.to(pred.device)]
        pred = pred.float().cpu().numpy().reshape(rows.size, -1)
        nonlocal clipped
        clipped += int(np.count_nonzero((pred < 0) | (pred > PREDICTION_MAX)))
        out[rows.ravel()] = np.clip(pred, 0.0, PREDICTION_MAX)

    groups = pd.DataFrame({"context": contexts, "pert": perts}).groupby(["context", "pert"], sort=True).indices
    training = model.training
    model.eval()
    try:
        items = groups.items()
        if progress:
            from tqdm.auto import tqdm

            items = tqdm(items, total=len(groups), desc="predicting", unit="group")
        for (context, _), rows in items:
            pool = pools[context]
            windows, drawn = [], []
            for start in range(0, len(rows), size):
                window = rows[start : start + size]
                if windows and (len(windows) == _SETS_PER_FORWARD or len(windows[0]) != len(window)):
                    run(windows, drawn)
                    windows, drawn = [], []
                windows.append(window)
                drawn.append(pool[rng.integers(0, len(pool), len(window))])
            run(windows, drawn)
    finally:
        model.train(training)
    if clipped:
        warnings.warn(
            f"{clipped} predicted values were outside [0, {PREDICTION_MAX}] and were clipped, as state tx infer does",
            stacklevel=3,  # predict's caller, past torch.no_grad's wrapper
        )
    return ad.AnnData(X=out, obs=template.obs.copy(), var=template.var.copy())
