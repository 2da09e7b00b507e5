"""The dataset registry (sha256-checked downloads, cached) and loaders of the book's datasets. Taught in chapter 02."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import anndata as ad

from vcell_lib.data.loading import BATCH, PERT, _columns_hint, load_perturbation_data


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
# Symbols of the Papalexi 2021 screen that the HGNC has renamed since (old -> current); PROTEIN_FILE uses the
# current ones. Only renames checked by hand; taught in chapter 10.
PAPALEXI_RENAMED = {
    "MARCH8": "MARCHF8",
    "SEPT2": "SEPTIN2",
    "DARS": "DARS1",
    "MPP5": "PALS1",
    "C10orf11": "LRMDA",
    "FAM179B": "TOGARAM1",
    "TMEM194A": "NEMP1",
    "FAM160A2": "FHIP1B",
    "C20orf196": "SHLD1",
    "N6AMT2": "EEF1AKMT1",
    "KIAA1875": "WDR97",
}

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
    shipped = Path(__file__).resolve().parents[2] / "data" / filename
    return shipped if shipped.exists() else Path(fetch(dataset))


def repository_file(path: str) -> Path:
    """A file of the book's repository (e.g. a bench result): the checkout's copy, else the published one.

    Installed from pip (on Colab) the library has no checkout beside it: the file is downloaded from the
    repository's main branch into the cache. Not sha256-pinned: results are regenerated by their scripts.
    Taught in chapter 11.
    """
    local = Path(__file__).resolve().parents[2] / path
    if local.exists():
        return local
    import pooch

    try:
        return Path(pooch.retrieve(f"{REPOSITORY}/raw/main/{path}", known_hash=None, path=cache_dir() / "repository"))
    except Exception as error:  # offline, or the file moved
        message = f"{path} is not in a local checkout and could not be downloaded ({error})"
        raise DatasetUnavailableError(message) from error


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
