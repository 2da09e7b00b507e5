"""Score several predictions of the same test cells under both challenges' rules, one table. Taught in chapter 12.

Each context (cell type) is scored on its own, as both challenges do, and the table averages the contexts:

- 2025 (`vcell_lib.metrics`, cell-eval): the mean MAE, discrimination and DES over the test perturbations,
  and the challenge score against one of the predictions, named as the baseline (the cell mean);
- 2026 (`vcell_lib.vcc2026`, cell-eval2): the score of the six panel metrics, scaled between cell-eval2's
  context-mean baseline (0) and the split-half replicate of the real cells (1).

The 2026 rules score raw counts. A prediction is scored on `layers["counts"]` when it has that layer (real
cells, a resample of them); otherwise its log1p values become counts with `vcc2026.to_counts`, at the real
cells' median depth in that context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import metrics, vcc2026
from .data.loading import CELL_TYPE, CONTROL, PERT
from .data.splits import select_perturbations

__all__ = ["SCORE_COLUMNS", "leaderboard"]

SCORE_COLUMNS = (*metrics.VCC_METRICS, "score_2025", "score_2026")
"""The columns of `leaderboard`'s table: the three 2025 metrics, then the two scores."""


def _counts(adata: ad.AnnData, depth: float | None, seed: int) -> ad.AnnData:
    """The cells as integer counts: their counts layer, or counts drawn from their log1p values at `depth`."""
    if "counts" in adata.layers:
        return ad.AnnData(X=sp.csr_matrix(adata.layers["counts"]), obs=adata.obs, var=adata.var)
    if depth is None:
        raise ValueError("cells without layers['counts'] need a depth to draw counts at")
    return vcc2026.to_counts(adata, depth, seed=seed)


def _labels_only(adata: ad.AnnData, pert_col: str) -> ad.AnnData:
    """The cells with only the perturbation column in obs (the evaluators need nothing else)."""
    out = adata.copy()
    out.obs = out.obs[[pert_col]].astype(str)
    return out


def leaderboard(
    predictions: Mapping[str, ad.AnnData],
    real: ad.AnnData,
    *,
    baseline: str = "cell mean",
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str = CELL_TYPE,
    perturbations: Sequence[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per prediction: the 2025 metrics, the 2025 score and the 2026 score. Taught in chapter 12.

    Parameters
    ----------
    predictions
        Name -> predicted cells (log1p X), each with the test perturbations and control cells of every
        context of `real`, labelled in `pert_col` and `context_col`.
    real
        The observed test cells: log1p X and their raw counts in `layers["counts"]` (as `normalize_log1p`
        keeps them), with control cells in every context.
    baseline
        The name of the prediction that the 2025 score is scaled against (it scores 0).
    pert_col, control, context_col
        The perturbation column, the control label and the cell type column.
    perturbations
        Score only these perturbations (with the control cells), e.g. those never seen in training (chapter 13);
        default: every perturbation of `real`.
    seed
        Seed of the counts drawn for predictions without a counts layer.

    Returns
    -------
    A DataFrame indexed by prediction name with `SCORE_COLUMNS`: each the mean over contexts of that
    context's value (a metric's mean over perturbations, or a score). A context whose 2026 score is undefined
    (NaN: e.g. no perturbation with the 10 significant genes that the fold-change error needs, in small data)
    makes the average NaN rather than leaving that context out. `table.attrs["anchors_2026"]` holds the 2026
    anchors of each context, {(context, "baseline b" or "replicate r"): {metric: value}} (plain floats, so that
    tables still concatenate): `pd.DataFrame(table.attrs["anchors_2026"]).T` shows them.
    """
    if baseline not in predictions:
        raise ValueError(f"baseline={baseline!r} is not among the predictions {list(predictions)}: name one of them")
    if "counts" not in real.layers:
        raise ValueError("real has no layers['counts']: the 2026 metrics score raw counts (normalize_log1p keeps them)")
    for name, adata in {"real": real, **predictions}.items():
        missing = [c for c in (pert_col, context_col) if c not in adata.obs.columns]
        if missing:
            raise ValueError(f"{name}.obs lacks the columns {missing} (pert_col, context_col)")
    if perturbations is not None:
        if isinstance(perturbations, str):
            raise TypeError(f"perturbations must be a list of names, got the string {perturbations!r}")
        chosen = {}
        for name, adata in {"real": real, **predictions}.items():
            try:
                chosen[name] = select_perturbations(adata, perturbations, pert_col=pert_col, control=control)
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
        real = chosen.pop("real")
        predictions = chosen
    contexts = sorted(real.obs[context_col].astype(str).unique())
    rows: dict[str, list[pd.Series]] = {name: [] for name in predictions}
    anchor_rows: dict[tuple[str, str], dict[str, float]] = {}
    for context in contexts:
        in_context = real.obs[context_col].astype(str) == context
        real_c = real[in_context.to_numpy()]
        real_counts = _counts(real_c, depth=None, seed=seed)
        depth = float(np.median(np.asarray(real_counts.X.sum(axis=1)).ravel()))
        anchors = (vcc2026.evaluate_baseline(real_counts, pert_col=pert_col, control=control, seed=seed),
                   vcc2026.replicate(real_counts, pert_col=pert_col, control=control, seed=seed))  # fmt: skip
        for name, values in zip(("baseline b", "replicate r"), anchors):
            anchor_rows[(context, name)] = {metric: float(v) for metric, v in values.items()}
        tables, panels = {}, {}
        for name, pred in predictions.items():
            pred_c = pred[(pred.obs[context_col].astype(str) == context).to_numpy()]
            if pred_c.n_obs == 0:
                raise ValueError(f"prediction {name!r} has no cells of {context_col} {context!r}")
            tables[name] = metrics.evaluate(
                _labels_only(pred_c, pert_col), _labels_only(real_c, pert_col), pert_col=pert_col, control=control
            )
            panels[name] = vcc2026.evaluate(
                _labels_only(_counts(pred_c, depth, seed), pert_col),
                _labels_only(real_counts, pert_col),
                pert_col=pert_col,
                control=control,
            )
        for name, table in tables.items():
            values = table[list(metrics.VCC_METRICS)].mean()
            values["score_2025"] = metrics.score(table, tables[baseline])["avg_score"]
            values["score_2026"] = vcc2026.score(panels[name], *anchors)["mean"]
            rows[name].append(values)
    # skipna=False: a context whose score is undefined (NaN) makes the average undefined, not that of the others
    table = pd.DataFrame(
        {name: pd.concat(values, axis=1).mean(axis=1, skipna=False) for name, values in rows.items()}
    ).T[list(SCORE_COLUMNS)]
    table.attrs["anchors_2026"] = anchor_rows
    return table
