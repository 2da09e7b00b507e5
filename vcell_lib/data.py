"""Perturbation data: loading and validation, normalization, pseudobulk, control matching, splits, datasets.

Taught in chapters 02 and 04. The book's standard form of a perturbation dataset is an AnnData with
raw counts in `X` (CSR, float32), unique gene names in `var_names`, and three obs columns:
`target_gene` (the silenced gene; control cells are "non-targeting"), `batch` and `cell_type`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "BATCH",
    "CELL_TYPE",
    "CONTROL",
    "DATASETS",
    "PERT",
    "DatasetUnavailableError",
    "ensure_log1p",
    "assign_split",
    "check_split",
    "fetch",
    "half_split",
    "load_papalexi2021",
    "load_perturbation_data",
    "load_vcc_training",
    "match_controls",
    "normalize_log1p",
    "perturbation_effects",
    "pseudobulk",
    "split_by_context",
    "split_by_perturbation",
]

PERT = "target_gene"
CONTROL = "non-targeting"
BATCH = "batch"
CELL_TYPE = "cell_type"


# ----------------------------------------------------------------------------- loading and validation


def _columns_hint(adata: ad.AnnData) -> str:
    return f"obs columns are {list(adata.obs.columns)}"


def _check_counts(matrix, where: str) -> None:
    """Raise if `matrix` is not finite, non-negative and integer-valued (raw UMI counts)."""
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if values.size == 0:
        return
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(
            f"{where} has {int((~finite).sum())} NaN or infinite values: raw counts must be finite numbers; "
            "fix or drop the affected cells before loading"
        )
    if (values < 0).any():
        raise ValueError(
            f"{where} has {int((values < 0).sum())} negative values: expected raw UMI counts (>= 0); "
            "if these are scaled or centred data, load the raw counts instead (layer=...)"
        )
    fractional = values != np.round(values)
    if fractional.any():
        example = float(values[fractional][0])
        raise ValueError(
            f"{where} has non-integer values (e.g. {example:.4g}): expected raw UMI counts. "
            "If X holds normalized or log1p data, point to the raw counts with layer='counts' "
            "(or load adata.raw.to_adata())"
        )


def load_perturbation_data(
    source: str | os.PathLike | ad.AnnData,
    *,
    pert_col: str = PERT,
    control: str = CONTROL,
    batch_col: str | None = None,
    context_col: str | None = None,
    cell_type: str = "unknown",
    layer: str | None = None,
) -> ad.AnnData:
    """Read and validate a perturbation dataset and return it in the book's standard form. Taught in chapter 02.

    `source` is an .h5ad path or an AnnData (which is never modified: the result is a new object).
    `pert_col` names the perturbation column and `control` its control label; they become
    `target_gene` and "non-targeting". `batch_col` and `context_col` become `batch` and `cell_type`
    (a single batch "0" and the cell type `cell_type` when not given). Counts are read from `layer`
    (default `X`) and must be raw integer counts.
    """
    if isinstance(source, ad.AnnData):
        adata = source.copy()
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"source: no such file {str(path)!r}")
        adata = ad.read_h5ad(path)
    else:
        raise ValueError(f"source must be an AnnData or a path to an .h5ad file, got {type(source).__name__}")

    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"source is empty ({adata.n_obs} cells x {adata.n_vars} genes)")
    for name, column in (("pert_col", pert_col), ("batch_col", batch_col), ("context_col", context_col)):
        if column is not None and column not in adata.obs.columns:
            raise ValueError(f"{name}={column!r} is not a column of obs; {_columns_hint(adata)}")

    labels = adata.obs[pert_col]
    missing = labels.isna() | (labels.astype(str).str.strip() == "")
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} cells have no perturbation label in obs[{pert_col!r}]: "
            "drop them (adata[~mask]) or label them before loading"
        )
    labels = labels.astype(str)
    if control not in set(labels):
        counts = labels.value_counts()
        shown = ", ".join(f"{k!r} ({v})" for k, v in counts.head(15).items())
        raise ValueError(
            f"control label {control!r} not found in obs[{pert_col!r}]; labels (cells) are: {shown}"
            f"{' ...' if len(counts) > 15 else ''}. Pass control=... with the label of your control cells"
        )

    if not adata.var_names.is_unique:
        dupes = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"var_names has {len(dupes)} duplicated gene names (e.g. {list(dupes[:5])}): "
            "sum or drop duplicates, or call adata.var_names_make_unique() before loading"
        )
    if not adata.obs_names.is_unique:
        raise ValueError("obs_names (cell barcodes) are not unique: call adata.obs_names_make_unique() first")

    if layer is None:
        counts = adata.X
    elif layer in adata.layers:
        counts = adata.layers[layer]
    else:
        raise ValueError(f"layer={layer!r} not found; layers are {list(adata.layers)}")
    _check_counts(counts, "X" if layer is None else f"layers[{layer!r}]")

    obs = adata.obs.copy()
    obs[PERT] = pd.Categorical(np.where(labels == control, CONTROL, labels))
    obs[BATCH] = pd.Categorical(obs[batch_col].astype(str) if batch_col else np.full(adata.n_obs, "0"))
    obs[CELL_TYPE] = pd.Categorical(obs[context_col].astype(str) if context_col else np.full(adata.n_obs, cell_type))
    X = sp.csr_matrix(counts, dtype=np.float32)
    X.sort_indices()
    result = ad.AnnData(X=X, obs=obs, var=adata.var.copy(), uns=dict(adata.uns), obsm=dict(adata.obsm))
    result.uns["perturbation_data"] = {
        "pert_col": pert_col,
        "control": control,
        "batch_col": batch_col or "",
        "context_col": context_col or "",
    }
    return result


# ----------------------------------------------------------------------------- normalization and pseudobulk


def normalize_log1p(adata: ad.AnnData, target_sum: float | None = None) -> ad.AnnData:
    """Scale each cell to `target_sum` counts (default: the median library size), then log1p. Taught in chapter 02.

    This is what the challenge's evaluator does to count data. Returns a new AnnData whose `X` is
    log1p-normalized and whose `layers["counts"]` keeps the raw counts; the input is not modified.
    """
    import scanpy as sc

    if "log1p" in adata.uns:
        raise ValueError("adata is already log1p-transformed (uns['log1p'] is set): normalizing twice is wrong")
    _check_counts(adata.X, "X")
    if target_sum is not None and not (np.isfinite(target_sum) and target_sum > 0):
        raise ValueError(f"target_sum must be a positive number or None (median library size), got {target_sum!r}")
    result = adata.copy()
    result.layers["counts"] = result.X.copy()
    sc.pp.normalize_total(result, target_sum=target_sum)
    sc.pp.log1p(result)
    return result


def ensure_log1p(adata: ad.AnnData, name: str = "adata") -> ad.AnnData:
    """Return `adata` if X is log1p-normalized; normalize count-like X (with a warning), as cell-eval does. Ch. 05.

    Raises on NaN/inf, negative values, or fractional values up to 15 or more (not log1p data).
    """
    values = adata.X.data if sp.issparse(adata.X) else np.asarray(adata.X)
    if values.size and not np.isfinite(values).all():
        raise ValueError(f"{name}.X has {int((~np.isfinite(values)).sum())} NaN or infinite values")
    if values.size and values.min() < 0:
        raise ValueError(f"{name}.X has negative values (min {values.min():.4g}): expected log1p-normalized data >= 0")
    if values.size == 0 or np.all(values == np.round(values)):
        warnings.warn(
            f"{name}.X looks like raw counts (all values are integers): normalizing each cell to the median "
            "library size and applying log1p, as cell-eval does",
            stacklevel=3,
        )
        plain = ad.AnnData(X=adata.X.copy(), obs=adata.obs.copy(), var=adata.var[[]].copy())
        return normalize_log1p(plain)
    if values.max() >= 15:
        raise ValueError(
            f"{name}.X has values up to {values.max():.4g}: that is not log1p-normalized data (cell-eval rejects "
            "max >= 15); normalize with vcell_lib.data.normalize_log1p"
        )
    return adata


def pseudobulk(adata: ad.AnnData, by: str | Sequence[str] = PERT, *, layer: str | None = None) -> ad.AnnData:
    """Mean expression of the cells in each group (e.g. each perturbation). Taught in chapters 04 and 05.

    Returns an AnnData with one row per non-empty group, named "key1|key2" for several keys (obs holds
    the group keys and `n_cells`), and the same genes. Means are taken over whatever `X` (or `layer`)
    holds: counts or log1p values.
    """
    keys = [by] if isinstance(by, str) else list(by)
    if not keys:
        raise ValueError("by is empty: give at least one obs column")
    for key in keys:
        if key not in adata.obs.columns:
            raise ValueError(f"by: {key!r} is not a column of obs; {_columns_hint(adata)}")
    if adata.n_obs == 0:
        raise ValueError("adata has no cells")
    matrix = adata.X if layer is None else adata.layers[layer]
    codes, groups = pd.MultiIndex.from_frame(adata.obs[keys].astype(str)).factorize(sort=True)
    names = pd.Index(["|".join(group) for group in groups])  # "context_A|STAT1" for two keys
    if not names.is_unique:  # only possible if a label itself contains "|"
        names = pd.Index([f"{name}#{i}" for i, name in enumerate(names)])
    n_cells = np.bincount(codes, minlength=len(names))
    # A (groups x cells) averaging matrix: one sparse product does every group at once.
    averaging = sp.csr_matrix((1.0 / n_cells[codes], (codes, np.arange(adata.n_obs))), shape=(len(names), adata.n_obs))
    means = averaging @ matrix
    means = np.asarray(means.todense() if sp.issparse(means) else means, dtype=np.float64)
    obs = pd.DataFrame(list(groups), columns=keys, index=pd.Index(names, name="group"))
    obs["n_cells"] = n_cells
    return ad.AnnData(X=means, obs=obs, var=adata.var[[]].copy())


def perturbation_effects(adata: ad.AnnData, *, layer: str | None = None) -> pd.DataFrame:
    """Effect vectors: each (cell type, perturbation) pseudobulk minus its cell type's control. Ch. 03, 04.

    Returns a DataFrame indexed by (cell_type, target_gene), one column per gene, without control rows.
    Use it on log1p-normalized data (normalize_log1p) to get the challenge's delta = bulk_p - bulk_control.
    """
    for key in (PERT, CELL_TYPE):
        if key not in adata.obs.columns:
            raise ValueError(f"obs has no {key!r} column: load the data with load_perturbation_data first")
    bulk = pseudobulk(adata, by=[CELL_TYPE, PERT], layer=layer)
    table = pd.DataFrame(bulk.X, index=pd.MultiIndex.from_frame(bulk.obs[[CELL_TYPE, PERT]]), columns=adata.var_names)
    is_control = table.index.get_level_values(PERT) == CONTROL
    controls = table[is_control].droplevel(PERT)
    perturbed = table[~is_control]
    contexts = perturbed.index.get_level_values(CELL_TYPE)
    missing = sorted(set(contexts) - set(controls.index))
    if missing:
        raise ValueError(f"no control cells in cell type(s) {missing}: an effect needs controls of the same type")
    return perturbed - controls.loc[contexts].to_numpy()


# ----------------------------------------------------------------------------- control matching


def match_controls(adata: ad.AnnData, *, same_batch: bool = False, seed: int = 0) -> pd.Series:
    """For every perturbed cell, a random control cell of the same cell type (and batch). Taught in chapter 04.

    Returns a Series indexed by the perturbed cells' obs_names whose values are the matched control
    cells' obs_names. Controls are drawn with replacement; the same seed gives the same matching.
    """
    for key in (PERT, CELL_TYPE) + ((BATCH,) if same_batch else ()):
        if key not in adata.obs.columns:
            raise ValueError(f"obs has no {key!r} column: load the data with load_perturbation_data first")
    rng = np.random.default_rng(seed)
    keys = [CELL_TYPE, BATCH] if same_batch else [CELL_TYPE]
    obs = adata.obs[keys].astype(str)
    is_control = (adata.obs[PERT] == CONTROL).to_numpy()
    matched = pd.Series(index=adata.obs_names[~is_control], dtype=object)
    for group, rows in obs.groupby(keys, sort=True).indices.items():
        perturbed = rows[~is_control[rows]]
        controls = rows[is_control[rows]]
        if len(perturbed) == 0:
            continue
        if len(controls) == 0:
            where = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
            fix = "use same_batch=False" if same_batch else "add control cells of this cell type"
            raise ValueError(f"no control cells for {where} ({len(perturbed)} perturbed cells): {fix}")
        matched[adata.obs_names[perturbed]] = adata.obs_names[rng.choice(controls, size=len(perturbed))]
    return matched


def half_split(adata: ad.AnnData, seed: int = 0, *, pert_col: str = PERT) -> tuple[ad.AnnData, ad.AnnData]:
    """Two disjoint random halves of every label's cells (controls too), as cell-eval's data ceiling draws them.

    Each label contributes floor(n / 2) cells to each half (an odd cell out is left out); labels with
    fewer than 2 cells are dropped. One half can play "real" and the other "prediction": how well
    they agree is what the noise in the data allows. Taught in chapters 05 and 08.
    """
    if pert_col not in adata.obs.columns:
        raise ValueError(f"obs has no {pert_col!r} column; {_columns_hint(adata)}")
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


# ----------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Split:
    """Which (cell type, perturbation) pairs a model may train on, tune on and is tested on. Taught in chapter 04."""

    train: frozenset[tuple[str, str]]
    val: frozenset[tuple[str, str]]
    test: frozenset[tuple[str, str]]


def _pairs(adata: ad.AnnData) -> list[tuple[str, str]]:
    for key in (PERT, CELL_TYPE):
        if key not in adata.obs.columns:
            raise ValueError(f"obs has no {key!r} column: load the data with load_perturbation_data first")
    pairs = adata.obs[[CELL_TYPE, PERT]].astype(str).drop_duplicates()
    pairs = pairs[pairs[PERT] != CONTROL]
    return sorted(map(tuple, pairs.to_numpy()))


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def split_by_perturbation(adata: ad.AnnData, *, val: float = 0.15, test: float = 0.15, seed: int = 0) -> Split:
    """Hold out whole perturbations (in every cell type): unseen-perturbation generalization. Taught in chapter 04."""
    _check_fraction("val", val)
    _check_fraction("test", test)
    if val + test >= 1:
        raise ValueError(f"val + test must be < 1 to leave training perturbations, got {val + test}")
    pairs = _pairs(adata)
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
    adata: ad.AnnData, held_out: str, *, few_shot: float = 0.0, val: float = 0.0, seed: int = 0
) -> Split:
    """Hold out one cell type; optionally train on a `few_shot` fraction of its perturbations. Taught in chapter 04.

    Every perturbation of the other cell types is in train. Of the held-out cell type's perturbations,
    a `few_shot` fraction goes to train, a `val` fraction to val and the rest to test, as in the
    challenge (a new cell type with a few of its perturbations shown).
    """
    _check_fraction("few_shot", few_shot)
    _check_fraction("val", val)
    if few_shot + val >= 1:
        raise ValueError(f"few_shot + val must be < 1 to leave test perturbations, got {few_shot + val}")
    pairs = _pairs(adata)
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
    return Split(
        train=frozenset([x for x in pairs if x[0] != held_out] + sorted(shot)),
        val=frozenset(tune),
        test=frozenset(set(target) - shot - tune),
    )


def assign_split(adata: ad.AnnData, split: Split) -> pd.Series:
    """Label each cell "train", "val", "test" or "control" (controls serve every split). Taught in chapter 04."""
    check_split(adata, split)
    keys = list(zip(adata.obs[CELL_TYPE].astype(str), adata.obs[PERT].astype(str)))
    lookup = {x: "train" for x in split.train} | {x: "val" for x in split.val} | {x: "test" for x in split.test}
    labels = [("control" if p == CONTROL else lookup.get((c, p), "unused")) for c, p in keys]
    return pd.Series(pd.Categorical(labels), index=adata.obs_names, name="split")


def check_split(adata: ad.AnnData, split: Split) -> None:
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
    known = set(_pairs(adata))
    unknown = (split.train | split.val | split.test) - known
    if unknown:
        raise ValueError(f"{len(unknown)} split pairs are not in the data, e.g. {sorted(unknown)[:3]}")


# ----------------------------------------------------------------------------- datasets


class DatasetUnavailableError(RuntimeError):
    """A registered dataset could not be downloaded (offline, moved, or a changed file)."""


@dataclass(frozen=True)
class Dataset:
    """A downloadable file: where it lives, its sha256 (None = not pinned yet) and what it is."""

    url: str
    sha256: str | None
    description: str


REPOSITORY = "https://github.com/virtual-cell-book/virtual-cell-book"
PAPALEXI_FILE = "papalexi2021_thp1_eccite_lowmoi.h5ad"
PROTEIN_FILE = "human_proteins_canonical_by_hgnc.fasta.gz"

DATASETS: dict[str, Dataset] = {
    "papalexi2021_thp1": Dataset(
        url=f"{REPOSITORY}/raw/main/data/{PAPALEXI_FILE}",
        sha256="ec00db011ec123e5b9368bc5a44a11830a530610ae35bdc606dd97e1b0d5eb68",
        description="Papalexi et al. 2021 THP-1 ECCITE-seq CRISPR screen, 20,729 cells x 299 genes (shipped in data/)",
    ),
    "human_proteins": Dataset(
        url=f"{REPOSITORY}/raw/main/data/{PROTEIN_FILE}",
        sha256="71b6b2b171338d5e90b99b66e7ff4af1da680327855f3b6630dd02d963fa2c91",
        description="19,139 human proteins, one canonical Swiss-Prot sequence per HGNC gene (shipped in data/)",
    ),
    "vcc2025_support_set": Dataset(
        url="https://storage.googleapis.com/vcc_data_prod/datasets/state/competition_support_set.zip",
        sha256=None,
        description="Virtual Cell Challenge 2025 support set (training cells in H1 hESC, gene names, cell counts)",
    ),
}


def cache_dir() -> Path:
    """Where downloads are kept: $VCELL_DATA_DIR, or the user cache directory."""
    import pooch

    return Path(os.environ.get("VCELL_DATA_DIR") or pooch.os_cache("vcell_book"))


def fetch(name: str, *, processor=None, progress: bool = True) -> str:
    """Download a registered dataset once (sha256-checked where pinned) and return its local path. Taught in ch. 02.

    Later calls reuse the cached file. Offline, or if the file changed, raises DatasetUnavailableError
    with the URL, so you can download the file yourself and pass its path to the loader instead.
    """
    import pooch

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; registered datasets: {sorted(DATASETS)}")
    entry = DATASETS[name]
    if entry.sha256 is None:
        warnings.warn(
            f"{name}: no sha256 is pinned for {entry.url}, so the download cannot be verified; "
            "pooch logs the hash it computed",
            stacklevel=2,
        )
    try:
        return pooch.retrieve(
            entry.url,
            known_hash=None if entry.sha256 is None else f"sha256:{entry.sha256}",
            fname=Path(entry.url).name,
            path=cache_dir(),
            processor=processor,
            progressbar=progress,
        )
    except ValueError as error:  # pooch's hash mismatch
        raise DatasetUnavailableError(f"{name}: the downloaded file does not match its sha256 ({error})") from error
    except Exception as error:  # requests' connection errors, HTTP errors
        raise DatasetUnavailableError(
            f"could not download {name} from {entry.url} ({type(error).__name__}: {error}). "
            "If you are offline, download the file elsewhere and pass its path to the loader"
        ) from error


def load_papalexi2021(path: str | os.PathLike | None = None) -> ad.AnnData:
    """The shipped Papalexi 2021 THP-1 CRISPR data in standard form (bio_rep -> batch). Taught in chapter 02.

    Looks for the file at `path`, then in the repository's data/ folder, then downloads it (Colab).
    """
    path = shipped_file(PAPALEXI_FILE, "papalexi2021_thp1") if path is None else path
    return load_perturbation_data(path, batch_col="bio_rep", cell_type="THP-1")


def shipped_file(filename: str, dataset: str) -> Path:
    """A file of the repository's data/ folder, or (installed from pip, e.g. on Colab) its downloaded copy."""
    shipped = Path(__file__).resolve().parents[1] / "data" / filename
    return shipped if shipped.exists() else Path(fetch(dataset))


def load_vcc_training(path: str | os.PathLike | None = None) -> ad.AnnData:
    """The challenge's training cells (H1 hESC) in standard form; downloads the support set if no path. Ch. 02.

    `path` is the challenge's `adata_Training.h5ad` (or the support set's training .h5 file): raw counts,
    obs `target_gene`, `guide_id`, `batch`, controls labelled "non-targeting".
    """
    if path is None:
        import pooch

        members = fetch("vcc2025_support_set", processor=pooch.Unzip())
        candidates = [m for m in members if Path(m).suffix in {".h5ad", ".h5"} and "train" in Path(m).name.lower()]
        if len(candidates) != 1:
            raise DatasetUnavailableError(
                f"expected one training .h5ad/.h5 file in the support set, found {candidates}; files: {members}"
            )
        path = candidates[0]
    adata = ad.read_h5ad(path)
    missing = [c for c in (PERT, "guide_id", BATCH) if c not in adata.obs.columns]
    if missing:
        raise ValueError(f"not the challenge schema: obs lacks {missing}; {_columns_hint(adata)}")
    return load_perturbation_data(adata, batch_col=BATCH, cell_type="H1 hESC")
