"""Perturbation data: loading and validation, normalization, pseudobulk, control matching, splits, datasets.

Taught in chapters 02 and 04. The book's standard form of a perturbation dataset is an AnnData with
raw counts in `X` (CSR, float32), unique gene names in `var_names`, and three obs columns:
`target_gene` (the silenced gene; control cells are "non-targeting"), `batch` and `cell_type`.

One idea per module, every public name re-exported here (`from vcell_lib.data import pseudobulk`):

- `loading`: the standard form's column names and `load_perturbation_data`
- `normalize`: `normalize_log1p`, `ensure_log1p`
- `profiles`: `pseudobulk`, `perturbation_effects`, `profile_table`
- `controls`: `match_controls`
- `splits`: `split_by_perturbation`, `split_by_context`, `check_split`, `assign_split`, `half_split`,
  `select_perturbations`
- `datasets`: the registry (`DATASETS`, `fetch`) and the loaders of the book's datasets
"""

from vcell_lib.data.controls import match_controls
from vcell_lib.data.datasets import (
    DATASETS,
    PAPALEXI_FILE,
    PAPALEXI_RENAMED,
    PROTEIN_FILE,
    REPOSITORY,
    Dataset,
    DatasetUnavailableError,
    cache_dir,
    fetch,
    load_papalexi2021,
    load_vcc_training,
    repository_file,
    shipped_file,
)
from vcell_lib.data.loading import BATCH, CELL_TYPE, CONTROL, PERT, load_perturbation_data
from vcell_lib.data.normalize import ensure_log1p, normalize_log1p
from vcell_lib.data.profiles import perturbation_effects, profile_table, pseudobulk
from vcell_lib.data.splits import (
    Split,
    assign_split,
    check_split,
    half_split,
    select_perturbations,
    split_by_context,
    split_by_perturbation,
    train_test_cells,
)

__all__ = [
    "BATCH",
    "CELL_TYPE",
    "CONTROL",
    "DATASETS",
    "PAPALEXI_FILE",
    "PAPALEXI_RENAMED",
    "PERT",
    "PROTEIN_FILE",
    "REPOSITORY",
    "Dataset",
    "DatasetUnavailableError",
    "Split",
    "assign_split",
    "cache_dir",
    "check_split",
    "ensure_log1p",
    "fetch",
    "half_split",
    "load_papalexi2021",
    "load_perturbation_data",
    "load_vcc_training",
    "match_controls",
    "normalize_log1p",
    "perturbation_effects",
    "profile_table",
    "pseudobulk",
    "select_perturbations",
    "repository_file",
    "shipped_file",
    "split_by_context",
    "split_by_perturbation",
    "train_test_cells",
]
