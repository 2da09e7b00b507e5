"""Inputs the metrics refuse, with errors that say what to fix (issue 8): each on a real malformed input."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from test_metrics import make_pair

from vcell_lib.data import ensure_log1p, pseudobulk
from vcell_lib.metrics import evaluate


def test_duplicate_gene_names_fail_before_the_de_runs(monkeypatch):
    pred, real = make_pair()
    names = list(real.var_names)
    names[3] = names[2]
    pred.var_names, real.var_names = names, names

    def no_de(*args, **kwargs):
        raise AssertionError("the DE ran before the input was checked")

    monkeypatch.setattr("vcell_lib.metrics.wilcoxon_de", no_de)
    with pytest.raises(ValueError, match=r"pred.var_names has 1 duplicated genes \(e.g. \['P2'\]\)"):
        evaluate(pred, real)


def test_an_all_zero_prediction_says_why_it_cannot_be_normalized():
    pred, real = make_pair()
    pred.X = np.zeros(pred.shape, dtype=np.float32)
    with pytest.raises(ValueError, match="looks like raw counts .* cells are all zero, so they cannot be normalized"):
        evaluate(pred, real)


def test_tiny_negative_values_say_how_to_clip():
    pred, real = make_pair()
    pred.X[0, :3] = -1e-7
    with pytest.raises(ValueError, match=r"3 negative values .* clip them, e.g. pred.X = np.clip\(pred.X, 0, None\)"):
        evaluate(pred, real)
    pred.X[0, 0] = -2.0  # not rounding noise: no advice to clip
    with pytest.raises(ValueError, match="negative values") as error:
        evaluate(pred, real)
    assert "clip" not in str(error.value)


def test_backed_anndata_says_to_load_it(tmp_path):
    pred, real = make_pair()
    real.X = sp.csr_matrix(real.X)
    real.write_h5ad(tmp_path / "real.h5ad")
    backed = ad.read_h5ad(tmp_path / "real.h5ad", backed="r")
    for call in (lambda: evaluate(pred, backed), lambda: ensure_log1p(backed, "real"), lambda: pseudobulk(backed)):
        with pytest.raises(ValueError, match=r"is backed .*to_memory\(\)"):
            call()
    backed.file.close()
