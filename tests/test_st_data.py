"""ST's data (vcell_lib.models.st_data): perturbation features, training sets, predictions for a template."""

import tracemalloc
from collections import Counter

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from vcell_lib.data import BATCH, CELL_TYPE, CONTROL, PERT
from vcell_lib.models import st
from vcell_lib.models.st_data import (
    PREDICTION_MAX,
    STSets,
    control_fallback,
    perturbation_features,
    predict,
    st_loss,
    train_st,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_GENES = 10


def screen(groups, *, seed=0, dense=False):
    """Cells of the given {(cell type, perturbation, batch): count}, in shuffled order. Column 0 of X is a key,
    (row + 1) / 1000, that names the row; the other columns are random log1p-like values."""
    labels = [key for key, n in groups.items() for _ in range(n)]
    rng = np.random.default_rng(seed)
    labels = [labels[i] for i in rng.permutation(len(labels))]
    obs = pd.DataFrame(labels, columns=[CELL_TYPE, PERT, BATCH], index=[f"c{i}" for i in range(len(labels))])
    X = rng.uniform(0.0, 3.0, (len(labels), N_GENES)).astype(np.float32)
    X[:, 0] = (np.arange(len(labels)) + 1) / 1000
    adata = ad.AnnData(X=X if dense else sp.csr_matrix(X), obs=obs.astype("category"))
    adata.var_names = [f"g{i}" for i in range(N_GENES)]
    return adata


def two_cell_types():
    return screen(
        {
            ("A", CONTROL, "b0"): 12,
            ("A", CONTROL, "b1"): 9,
            ("A", "P1", "b0"): 10,
            ("A", "P2", "b1"): 3,
            ("B", CONTROL, "b0"): 7,
            ("B", "P1", "b0"): 5,
            ("B", "P1", "b1"): 6,  # batch b1 of B has no controls: controls_by_batch falls back to B's
        }
    )


def one_pass(sets):
    batches = list(sets)
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}, batches


# --- perturbation features -----------------------------------------------------------------------------------
def test_onehot_covers_the_perturbations_and_the_control_in_sorted_order():
    table = perturbation_features(["P2", "P1", "P2"])
    assert list(table.index) == ["P1", "P2", CONTROL]  # arc-state's generate_onehot_map: sorted, control included
    assert table.dtypes.eq(np.float32).all()
    np.testing.assert_array_equal(table.to_numpy(), np.eye(3))


def test_gene_features_from_a_mapping_or_varm_and_unknown_genes_raise():
    vectors = {"P1": [1.0, 2.0], "P2": np.array([3.0, 4.0]), "P3": torch.tensor([5.0, 6.0])}
    table = perturbation_features(["P1", "P2"], vectors)
    assert list(table.index) == ["P1", "P2", CONTROL] and table.shape == (3, 2)
    np.testing.assert_array_equal(table.loc["P2"], [3.0, 4.0])
    np.testing.assert_array_equal(table.loc[CONTROL], [0.0, 0.0])  # a control without a vector gets zeros
    own = perturbation_features(["P1"], {**vectors, CONTROL: [7.0, 8.0]})
    np.testing.assert_array_equal(own.loc[CONTROL], [7.0, 8.0])

    genes = ad.AnnData(X=np.zeros((1, 3), np.float32), var=pd.DataFrame(index=list(vectors)))
    genes.varm["gene_features"] = np.array(list(vectors.values()), dtype=np.float32)
    pd.testing.assert_frame_equal(perturbation_features(["P1", "P2"], genes), table)

    with pytest.raises(ValueError, match="P9"):
        perturbation_features(["P1", "P9"], vectors)
    with pytest.raises(ValueError, match="gene_features"):
        perturbation_features(["P1"], ad.AnnData(X=np.zeros((1, 3), np.float32)))
    with pytest.raises(ValueError, match="onehot"):
        perturbation_features(["P1"], "one-hot")


# --- training sets -------------------------------------------------------------------------------------------
def test_sets_share_cell_type_and_perturbation_and_pair_controls_of_that_cell_type():
    adata = two_cell_types()
    features = perturbation_features(adata.obs[PERT].unique())
    sets = STSets(adata, features, set_size=4, sets_per_batch=3)
    seen, batches = one_pass(sets)
    assert len(sets.groups) == 5 and sets.n_sets == 15  # ceil(cells / 4) per (cell type, perturbation): 6+3+1+2+3
    assert len(batches) == len(sets) == 5 and all(b["basal"].shape == (3, 4, N_GENES) for b in batches)
    assert batches[0]["pert"].shape == (3, 4, 3) and "batch" not in batches[0]
    X = adata.X.toarray()
    obs = adata.obs.astype(str)
    for target, basal, pert, target_x, basal_x in zip(
        seen["target_index"], seen["basal_index"], seen["pert"], seen["target"], seen["basal"]
    ):
        group = obs.iloc[target.numpy()]
        assert len(group[[CELL_TYPE, PERT]].drop_duplicates()) == 1
        controls = obs.iloc[basal.numpy()]
        assert (controls[PERT] == CONTROL).all() and (controls[CELL_TYPE] == group[CELL_TYPE].iloc[0]).all()
        np.testing.assert_array_equal(pert, np.tile(features.loc[group[PERT].iloc[0]], (4, 1)))
        np.testing.assert_array_equal(target_x, X[target.numpy()])
        np.testing.assert_array_equal(basal_x, X[basal.numpy()])
    assert set(seen["target_index"].ravel().tolist()) == set(range(adata.n_obs))  # every cell, every pass
    control_sets = (obs[PERT].to_numpy()[seen["target_index"].numpy()] == CONTROL).all(axis=1)
    assert control_sets.sum() == 8  # controls form sets too (control -> control): ceil(21 / 4) + ceil(7 / 4)


def test_controls_by_batch_fall_back_to_the_cell_type_and_sets_by_batch_share_a_batch():
    adata = two_cell_types()
    features = perturbation_features(adata.obs[PERT].unique())
    sets = STSets(adata, features, 4, batch_col=BATCH, controls_by_batch=True, sets_by_batch=True)
    seen, _ = one_pass(sets)
    assert sets.batches == ["b0", "b1"] and len(sets.groups) == 7
    obs = adata.obs.astype(str)
    target, basal = obs.iloc[seen["target_index"].ravel().numpy()], obs.iloc[seen["basal_index"].ravel().numpy()]
    np.testing.assert_array_equal(seen["batch"].ravel(), (target[BATCH] == "b1").astype(int))
    assert (target[CELL_TYPE].to_numpy() == basal[CELL_TYPE].to_numpy()).all()
    fallback = ((target[CELL_TYPE] == "B") & (target[BATCH] == "b1")).to_numpy()
    assert (basal[BATCH].to_numpy()[~fallback] == target[BATCH].to_numpy()[~fallback]).all()
    assert fallback.sum() >= 6 and (basal[BATCH].to_numpy()[fallback] == "b0").all()  # B's only controls
    per_set = obs[BATCH].to_numpy()[seen["target_index"].numpy()]
    assert (per_set == per_set[:, :1]).all()
    with pytest.raises(ValueError, match="batch_col"):
        STSets(adata, features, 4, controls_by_batch=True)


def test_controls_and_sets_are_redrawn_every_pass():
    adata = two_cell_types()
    sets = STSets(adata, perturbation_features(adata.obs[PERT].unique()), 4, seed=1)
    first, second = (one_pass(sets)[0] for _ in range(2))
    pairs = [dict(zip(p["target_index"].ravel().tolist(), p["basal_index"].ravel().tolist())) for p in (first, second)]
    changed = np.mean([pairs[0][cell] != pairs[1][cell] for cell in range(adata.n_obs)])
    assert changed > 0.5, changed  # pools of 7 to 21 controls: about 90% of the cells change partner
    assert not torch.equal(first["target_index"], second["target_index"])  # new sets, in a new order
    again = STSets(adata, perturbation_features(adata.obs[PERT].unique()), 4, seed=1)
    assert torch.equal(one_pass(again)[0]["basal_index"], first["basal_index"])  # the seed fixes the draws


def test_short_groups_are_filled_by_resampling_their_own_cells():
    adata = screen({("A", CONTROL, "b0"): 5, ("A", "P1", "b0"): 7, ("A", "P2", "b0"): 10})
    sets = STSets(adata, perturbation_features(["P1", "P2"]), set_size=8)
    seen, _ = one_pass(sets)
    perts = adata.obs[PERT].astype(str).to_numpy()
    for name, n_cells in (("P1", 7), ("P2", 10)):
        rows = seen["target_index"][(perts[seen["target_index"].numpy()] == name).all(axis=1)]
        members = np.flatnonzero(perts == name)
        assert len(rows) == -(-n_cells // 8) and set(rows.ravel().tolist()) == set(members)
        counts = Counter(rows.ravel().tolist())
        assert sum(counts.values()) == 8 * len(rows) and sum(c - 1 for c in counts.values()) == 8 * len(rows) - n_cells


def test_the_matrix_is_never_made_dense(monkeypatch):
    n_cells, n_genes = 50_000, 4_000  # dense: 800 MB of float32; sparse: two values per cell
    rng = np.random.default_rng(0)
    rows, columns = np.repeat(np.arange(n_cells), 2), rng.integers(0, n_genes, 2 * n_cells)
    X = sp.csr_matrix((rng.uniform(0.1, 3.0, 2 * n_cells).astype(np.float32), (rows, columns)), (n_cells, n_genes))
    obs = pd.DataFrame(
        {CELL_TYPE: rng.choice(["A", "B"], n_cells), PERT: rng.choice([CONTROL, "P1", "P2", "P3"], n_cells)},
        index=[f"c{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(X=X, obs=obs)

    def refuse(*args, **kwargs):
        raise AssertionError("the whole matrix was made dense")

    for name in ("toarray", "todense", "__array__"):
        monkeypatch.setattr(adata.X, name, refuse, raising=False)
    tracemalloc.start()
    try:
        sets = STSets(adata, perturbation_features(["P1", "P2", "P3"]), set_size=64, sets_per_batch=16)
        batch = next(iter(sets))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sets.X is adata.X and sp.issparse(sets.X)
    assert batch["basal"].shape == (16, 64, n_genes)
    assert peak < 100e6, f"peak {peak / 1e6:.0f} MB"  # the batch's rows (2 x 16 x 64 x 4000 floats: 33 MB), twice


def test_backed_anndata_gives_the_same_sets_and_predictions(tmp_path):
    features = perturbation_features(["P1", "P2"])
    model = Additive(features.shape[1])
    for dense in (False, True):
        adata = two_cell_types()
        adata = adata[adata.obs[PERT] != "P1"].copy() if dense else adata  # P2 only (dense): another shape
        adata.X = adata.X.toarray() if dense else adata.X
        path = tmp_path / f"cells_{dense}.h5ad"
        adata.write_h5ad(path)
        backed = ad.read_h5ad(path, backed="r")
        assert backed.isbacked
        in_memory, on_disk = (one_pass(STSets(a, features, 4, 2, seed=3))[0] for a in (adata, backed))
        for key in in_memory:
            assert torch.equal(in_memory[key], on_disk[key]), key
        template = adata[adata.obs[PERT] != CONTROL]
        np.testing.assert_array_equal(
            predict(model, template, backed, features, progress=False).X,
            predict(model, template, adata, features, progress=False).X,
        )
        backed.file.close()
    counts = ad.AnnData(X=sp.csr_matrix(np.ones((4, N_GENES), np.float32)), obs=adata.obs.iloc[:4])
    counts.write_h5ad(tmp_path / "counts.h5ad")
    with pytest.raises(ValueError, match="raw counts"):
        STSets(ad.read_h5ad(tmp_path / "counts.h5ad", backed="r"), features, 4)


def test_unknown_perturbations_raise_in_sets_and_in_predict():
    adata = two_cell_types()
    known = perturbation_features(["P1"])  # no P2
    with pytest.raises(ValueError, match="P2"):
        STSets(adata, known, 4)
    template = screen({("A", "P1", "b0"): 2, ("A", "P7", "b0"): 2})
    with pytest.raises(ValueError, match="P7"):
        predict(Additive(known.shape[1]), template, adata, known, progress=False)


# --- predictions ---------------------------------------------------------------------------------------------
class Additive(nn.Module):
    """A stand-in for ST whose output is checkable: basal + shift(pert) (+ 100 * batch on the last gene), that
    records the sets it is given. Gene 0 is left as it is: it names the control cell a prediction came from."""

    def __init__(self, pert_dim, set_len=4, n_batches=0):
        super().__init__()
        self.config = st.STConfig.tiny(N_GENES, pert_dim, cell_set_len=set_len, n_batches=n_batches)
        shift = torch.arange(1, pert_dim + 1, dtype=torch.float32)[:, None] * torch.linspace(0, 1, N_GENES)
        shift[:, 0] = 0
        self.shift = nn.Parameter(shift / pert_dim)
        self.seen = []

    def forward(self, basal, pert, batch=None):
        self.seen.append((basal.clone(), pert.clone()))
        out = basal + pert @ self.shift
        if batch is not None:
            out[..., -1] += batch / 10
        return out


def test_predict_keeps_the_template_and_predicts_from_controls_of_each_cell_type():
    controls = two_cell_types()
    features = perturbation_features(controls.obs[PERT].unique())
    template = screen({("A", CONTROL, "b0"): 3, ("A", "P1", "b0"): 10, ("B", "P1", "b1"): 5, ("B", "P2", "b0"): 1})
    template.X = sp.csr_matrix(template.shape, dtype=np.float32)  # a template's X is not read
    model = Additive(features.shape[1], set_len=4)
    pred = predict(model, template, controls, features, progress=False)

    pd.testing.assert_frame_equal(pred.obs, template.obs)
    pd.testing.assert_frame_equal(pred.var, template.var)
    assert isinstance(pred.X, np.ndarray) and pred.X.dtype == np.float32
    assert (pred.obs.value_counts([CELL_TYPE, PERT]) == template.obs.value_counts([CELL_TYPE, PERT])).all()
    X = controls.X.toarray()
    source = np.rint(pred.X[:, 0] * 1000).astype(int) - 1  # gene 0 names the control row
    obs = controls.obs.astype(str)
    assert (obs[PERT].to_numpy()[source] == CONTROL).all()
    assert (obs[CELL_TYPE].to_numpy()[source] == template.obs[CELL_TYPE].astype(str).to_numpy()).all()
    shift = features.loc[template.obs[PERT].astype(str)].to_numpy() @ model.shift.detach().numpy()
    np.testing.assert_allclose(pred.X, X[source] + shift, rtol=0, atol=1e-6)

    set_sizes = sorted(basal.shape[1] for basal, _ in model.seen for _ in basal)
    assert set_sizes == [1, 1, 2, 3, 4, 4, 4]  # windows of 4 per group: 3 | 4 4 2 | 4 1 | 1
    for basal, pert in model.seen:
        for cells, perts in zip(basal, pert):  # each set: one cell type, one perturbation
            rows = np.rint(cells[:, 0].numpy() * 1000).astype(int) - 1
            assert obs[CELL_TYPE].iloc[rows].nunique() == 1 and len(torch.unique(perts, dim=0)) == 1
    model.train()  # predict evaluates in eval mode and gives the model back in the mode it had
    model.seen.clear()
    predict(model, template, controls, features, set_size=3, progress=False)
    assert model.training
    set_sizes = sorted(basal.shape[1] for basal, _ in model.seen for _ in basal)
    assert set_sizes == [1, 1, 2, 3, 3, 3, 3, 3]  # 3 | 3 3 3 1 | 3 2 | 1
    with pytest.raises(ValueError, match="set_size"):
        predict(model, template, controls, features, set_size=0, progress=False)


def test_predictions_are_clipped_to_what_cell_eval_accepts_with_a_warning():
    controls = two_cell_types()
    features = perturbation_features(["P1", "P2"])
    template = screen({("A", "P1", "b0"): 3, ("A", "P2", "b0"): 3})
    model = Additive(features.shape[1])
    with torch.no_grad():
        model.shift[0, 1:] = -10.0  # P1 drives every gene but gene 0 below 0
        model.shift[1, 1:] = 20.0  # P2 above PREDICTION_MAX
    with pytest.warns(UserWarning, match=r"\b54 predicted values were outside \[0, 14.0\]"):
        pred = predict(model, template, controls, features, progress=False)
    is_p1 = (template.obs[PERT] == "P1").to_numpy()
    assert (pred.X[is_p1, 1:] == 0).all() and (pred.X[~is_p1, 1:] == PREDICTION_MAX).all()
    assert (pred.X[:, 0] > 0).all()  # gene 0 was in range: untouched


def test_predict_with_batches_and_its_errors():
    controls = two_cell_types()
    features = perturbation_features(controls.obs[PERT].unique())
    template = screen({("A", "P1", "b0"): 3, ("A", "P1", "b1"): 3})
    model = Additive(features.shape[1], n_batches=2)
    pred = predict(model, template, controls, features, batch_col=BATCH, batches=["b0", "b1"], progress=False)
    source = np.rint(pred.X[:, 0] * 1000).astype(int) - 1
    shift = features.loc["P1"].to_numpy() @ model.shift.detach().numpy()
    codes = (template.obs[BATCH] == "b1").to_numpy()
    np.testing.assert_allclose(pred.X[:, -1], controls.X.toarray()[source, -1] + shift[-1] + codes / 10, atol=1e-6)

    with pytest.raises(ValueError, match="batches="):
        predict(model, template, controls, features, progress=False)
    with pytest.raises(ValueError, match="b1"):
        predict(model, template, controls, features, batch_col=BATCH, batches=["b0"], progress=False)
    with pytest.raises(ValueError, match="no batch embedding"):
        predict(Additive(features.shape[1]), template, controls, features, batch_col=BATCH, progress=False)
    no_b = controls[controls.obs[CELL_TYPE] != "B"].copy()
    with pytest.raises(ValueError, match="'B'"):
        predict(Additive(features.shape[1]), screen({("B", "P1", "b0"): 2}), no_b, features, progress=False)
    with pytest.raises(ValueError, match="pert_dim"):
        predict(Additive(2), template, controls, features, progress=False)


def test_a_tiny_st_trained_on_simulated_sets_lowers_its_loss():
    from vcell_lib.data import normalize_log1p
    from vcell_lib.simulate import SimulationParams, simulate_perturbseq
    from vcell_lib.train import TrainConfig, fit

    adata = normalize_log1p(simulate_perturbseq(SimulationParams(n_genes=50, n_perturbations=6), seed=0))
    features = perturbation_features(adata.obs[PERT].unique())
    sets = STSets(adata, features, set_size=16, sets_per_batch=8)
    held_out = list(STSets(adata, features, set_size=16, sets_per_batch=8, seed=1))[:4]  # other draws, fixed
    torch.manual_seed(0)
    model = st.StateTransition(st.STConfig.tiny(adata.n_vars, features.shape[1], cell_set_len=16))

    def held_out_loss():
        model.eval()
        with torch.no_grad():
            return np.mean([st_loss(model, batch).item() for batch in held_out])

    before = held_out_loss()
    fit(model, sets, st_loss, TrainConfig(max_steps=40, lr=3e-3, progress=False, device="cpu"))
    after = held_out_loss()
    assert after < 0.7 * before, (before, after)  # seen: 17.8 -> 9.9
    template = adata[adata.obs[PERT] != CONTROL][:50]
    pred = predict(model, template, adata, features, progress=False)
    assert pred.shape == template.shape and np.isfinite(pred.X).all() and pred.X.min() >= 0


def test_sets_and_predictions_on_cell_embeddings_with_a_gene_decoder():
    adata = two_cell_types()
    rng = np.random.default_rng(0)
    adata.obsm["X_emb"] = rng.normal(size=(adata.n_obs, 6)).astype(np.float32)  # an embedding of 6 dimensions
    features = perturbation_features(adata.obs[PERT].unique())
    sets = STSets(adata, features, set_size=4, sets_per_batch=3, embed_key="X_emb")
    seen, _ = one_pass(sets)
    assert seen["basal"].shape[-1] == 6 and seen["target_genes"].shape[-1] == N_GENES
    np.testing.assert_array_equal(seen["target"], adata.obsm["X_emb"][seen["target_index"].numpy()])
    np.testing.assert_array_equal(seen["basal"], adata.obsm["X_emb"][seen["basal_index"].numpy()])
    np.testing.assert_array_equal(seen["target_genes"], adata.X.toarray()[seen["target_index"].numpy()])

    torch.manual_seed(0)
    config = st.STConfig.tiny(8, features.shape[1], output_space="gene", cell_set_len=4)
    model = st.StateTransition(
        st.STConfig(**{**config.__dict__, "n_genes": 6, "decoder_genes": N_GENES, "decoder_hidden": (8,)})
    )
    batch = next(iter(sets))
    loss = st_loss(model, batch)
    pred = model(batch["basal"], batch["pert"])
    expected = model.loss(pred, batch["target"], batch["target_genes"])
    assert torch.allclose(loss, expected)
    plain = st.StateTransition(st.STConfig(**{**config.__dict__, "n_genes": 6}))
    with pytest.raises(ValueError, match="no gene decoder"):  # embedding sets need a model with a decoder
        st_loss(plain, batch)

    template = adata[adata.obs[PERT] != CONTROL].copy()
    out = predict(model, template, adata, features, embed_key="X_emb", progress=False)
    assert out.shape == template.shape and out.X.min() >= 0 and np.isfinite(out.X).all()
    reordered = template[:, template.var_names[::-1]].copy()  # the decoder's genes are found by name
    out_reordered = predict(model, reordered, adata, features, embed_key="X_emb", progress=False)
    np.testing.assert_allclose(out_reordered.X, out.X[:, ::-1], atol=1e-6)
    with pytest.raises(ValueError, match="not among the decoder's"):
        other = template.copy()
        other.var_names = [f"x{i}" for i in range(other.n_vars)]
        predict(model, other, adata, features, embed_key="X_emb", progress=False)
    with pytest.raises(ValueError, match="the decoder writes"):
        predict(model, template, adata[:, :5].copy(), features, embed_key="X_emb", progress=False)
    with pytest.raises(ValueError, match="needs embed_key"):
        predict(model, template, adata, features, progress=False)
    with pytest.raises(ValueError, match="obsm has no 'X_missing'"):
        predict(model, template, adata, features, embed_key="X_missing", progress=False)
    with pytest.raises(ValueError, match="obsm has no 'X_missing'"):
        STSets(adata, features, set_size=4, embed_key="X_missing")
    adata.obsm["X_emb"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        STSets(adata, features, set_size=4, embed_key="X_emb")


def test_control_fallback_gives_unknown_perturbations_the_controls_vector():
    features = perturbation_features(["P1", "P2"])
    with pytest.warns(UserWarning, match="2 perturbations get the control's vector"):
        table = control_fallback(features, ["P1", "P3", "P4", "P3"])
    assert list(table.index) == [*features.index, "P3", "P4"] and table.dtypes.eq(np.float32).all()
    pd.testing.assert_frame_equal(table.loc[list(features.index)], features)
    for p in ("P3", "P4"):
        np.testing.assert_array_equal(table.loc[p], features.loc[CONTROL])
    with pytest.raises(ValueError, match="no row for the control"):
        control_fallback(features.drop(index=CONTROL), ["P3"])


def test_train_st_in_one_call_on_expression_or_embeddings():
    adata = two_cell_types()
    features = perturbation_features(adata.obs[PERT].unique())
    sizes = dict(hidden_dim=16, n_heads=2, ffn_dim=32, cell_set_len=4)
    model, history = train_st(adata, features, steps=30, lr=3e-3, sets_per_batch=4, progress=False, **sizes)
    assert history.steps == 30 and not model.training and model.config.n_genes == N_GENES
    assert np.mean(history.train_loss[-5:]) < np.mean(history.train_loss[:5])
    again, _ = train_st(adata, features, steps=30, lr=3e-3, sets_per_batch=4, progress=False, **sizes)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)  # same seed, same model
    adata.obsm["X_emb"] = np.random.default_rng(0).normal(size=(adata.n_obs, 6)).astype(np.float32)
    on_embeddings, _ = train_st(adata, features, steps=2, embed_key="X_emb", progress=False, **sizes)
    assert (on_embeddings.config.n_genes, on_embeddings.config.decoder_genes) == (6, N_GENES)
    with pytest.raises(ValueError, match="obsm has no 'X_nope'"):
        train_st(adata, features, steps=2, embed_key="X_nope", progress=False)
