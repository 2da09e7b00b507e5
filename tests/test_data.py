"""Unit tests of vcell_lib.data (chapters 02 and 04): every validation error with a real malformed input."""

import functools
import hashlib
import http.server
import threading
from dataclasses import replace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from vcell_lib import data
from vcell_lib.data import (
    CONTROL,
    DatasetUnavailableError,
    Split,
    assign_split,
    check_split,
    half_split,
    load_papalexi2021,
    load_perturbation_data,
    load_vcc_training,
    match_controls,
    normalize_log1p,
    perturbation_effects,
    profile_table,
    pseudobulk,
    select_perturbations,
    split_by_context,
    split_by_perturbation,
    train_test_cells,
)


def raw_adata(n_cells=60, n_genes=8, seed=0, control="NT") -> ad.AnnData:
    """A small dataset as a user might have it: own column names, own control label."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, size=(n_cells, n_genes)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "guide_target": rng.choice([control, "GENE1", "GENE2", "GENE3"], n_cells),
            "rep": rng.choice(["r1", "r2"], n_cells),
            "line": rng.choice(["K562", "RPE1"], n_cells),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    obs.iloc[:8, 0] = control  # at least a few controls
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


def standard(**kwargs) -> ad.AnnData:
    return load_perturbation_data(
        raw_adata(**kwargs), pert_col="guide_target", control="NT", batch_col="rep", context_col="line"
    )


# ----------------------------------------------------------------------------- loading


def test_standard_form_and_caller_object_untouched():
    raw = raw_adata()
    before_obs, before_x = raw.obs.copy(), raw.X.copy()
    std = load_perturbation_data(raw, pert_col="guide_target", control="NT", batch_col="rep", context_col="line")
    pd.testing.assert_frame_equal(raw.obs, before_obs)
    assert (raw.X != before_x).nnz == 0
    assert sp.isspmatrix_csr(std.X) and std.X.dtype == np.float32
    assert set(std.obs["target_gene"].cat.categories) == {CONTROL, "GENE1", "GENE2", "GENE3"}
    assert (std.obs["target_gene"] == CONTROL).sum() == (raw.obs["guide_target"] == "NT").sum()
    assert list(std.obs["batch"].cat.categories) == ["r1", "r2"]
    assert set(std.obs["cell_type"]) == {"K562", "RPE1"}
    assert std.uns["perturbation_data"]["control"] == "NT"


def test_defaults_single_batch_and_named_cell_type(tmp_path):
    raw = raw_adata(control=CONTROL)
    raw.obs = raw.obs.rename(columns={"guide_target": "target_gene"})
    path = tmp_path / "x.h5ad"
    raw.write_h5ad(path)
    std = load_perturbation_data(path, cell_type="HEK293")
    assert set(std.obs["batch"]) == {"0"} and set(std.obs["cell_type"]) == {"HEK293"}


def test_unused_categories_are_dropped():
    raw = raw_adata()
    labels = raw.obs["guide_target"]
    raw.obs["guide_target"] = pd.Categorical(labels, categories=[*sorted(set(labels)), "GENE4"])
    assert (raw.obs["guide_target"] == "GENE4").sum() == 0  # an empty group, as after filtering cells
    std = load_perturbation_data(raw, pert_col="guide_target", control="NT")
    assert "GENE4" not in std.obs["target_gene"].cat.categories
    assert (pseudobulk(std).obs["n_cells"] > 0).all()


def test_reads_counts_from_a_layer():
    raw = raw_adata()
    raw.layers["counts"] = raw.X.copy()
    raw.X = sp.csr_matrix(np.log1p(raw.X.toarray()))
    with pytest.raises(ValueError, match="layer='counts'"):
        load_perturbation_data(raw, pert_col="guide_target", control="NT")
    std = load_perturbation_data(raw, pert_col="guide_target", control="NT", layer="counts")
    assert (std.X != raw.layers["counts"]).nnz == 0
    with pytest.raises(ValueError, match="layer='spliced' not found"):
        load_perturbation_data(raw, pert_col="guide_target", control="NT", layer="spliced")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pert_col": "perturbation"}, r"pert_col='perturbation' is not a column of obs; obs columns are"),
        ({"batch_col": "lane"}, r"batch_col='lane' is not a column"),
        ({"context_col": "celltype"}, r"context_col='celltype' is not a column"),
        ({"control": "non-targeting"}, r"control label 'non-targeting' not found .* labels \(cells\) are: .*'NT'"),
    ],
)
def test_wrong_columns_and_unknown_control(kwargs, message):
    args = {"pert_col": "guide_target", "control": "NT", **kwargs}
    with pytest.raises(ValueError, match=message):
        load_perturbation_data(raw_adata(), **args)


def _corrupt(value):
    raw = raw_adata()
    dense = raw.X.toarray()
    dense[3, 2] = value
    raw.X = sp.csr_matrix(dense)
    return raw


@pytest.mark.parametrize(
    ("value", "message"),
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-2.0, "negative values"), (0.5, "non-integer")],
)
def test_bad_count_values(value, message):
    with pytest.raises(ValueError, match=message):
        load_perturbation_data(_corrupt(value), pert_col="guide_target", control="NT")


def test_dense_counts_are_checked_too():
    raw = _corrupt(-1.0)
    raw.X = raw.X.toarray()
    with pytest.raises(ValueError, match="negative"):
        load_perturbation_data(raw, pert_col="guide_target", control="NT")


@pytest.mark.filterwarnings("ignore:.* names are not unique")  # anndata's own warning on the bad input
def test_duplicate_genes_and_cells():
    raw = raw_adata()
    raw.var_names = ["g0", "g1", "g1"] + [f"h{j}" for j in range(5)]
    with pytest.raises(ValueError, match=r"duplicated gene names \(e.g. \['g1'\]\).*var_names_make_unique"):
        load_perturbation_data(raw, pert_col="guide_target", control="NT")
    raw = raw_adata()
    raw.obs_names = ["same"] * raw.n_obs
    with pytest.raises(ValueError, match="obs_names_make_unique"):
        load_perturbation_data(raw, pert_col="guide_target", control="NT")


@pytest.mark.parametrize("missing", [np.nan, "", "  "])
def test_cells_without_a_perturbation_label(missing):
    raw = raw_adata()
    raw.obs["guide_target"] = raw.obs["guide_target"].astype(object)
    raw.obs.iloc[10, 0] = missing
    with pytest.raises(ValueError, match="1 cells have no perturbation label"):
        load_perturbation_data(raw, pert_col="guide_target", control="NT")


def test_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_perturbation_data(tmp_path / "missing.h5ad")
    with pytest.raises(ValueError, match="source must be"):
        load_perturbation_data(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="empty"):
        load_perturbation_data(raw_adata()[:0].copy(), pert_col="guide_target", control="NT")


# ----------------------------------------------------------------------------- normalization, pseudobulk


def test_normalize_log1p_matches_the_definition():
    std = standard()
    norm = normalize_log1p(std)
    counts = std.X.toarray()
    size = counts.sum(1, keepdims=True)
    expected = np.log1p(counts / size * np.median(size))
    np.testing.assert_allclose(norm.X.toarray(), expected, rtol=1e-5)
    assert (norm.layers["counts"] != std.X).nnz == 0
    assert "log1p" not in std.uns  # input untouched
    np.testing.assert_allclose(
        normalize_log1p(std, target_sum=1e4).X.toarray(), np.log1p(counts / size * 1e4), rtol=1e-5
    )
    with pytest.raises(ValueError, match="already log1p"):
        normalize_log1p(norm)
    with pytest.raises(ValueError, match="target_sum"):
        normalize_log1p(std, target_sum=-1)
    with pytest.raises(ValueError, match="non-integer"):
        normalize_log1p(ad.AnnData(X=np.full((2, 2), 0.3)))


def test_pseudobulk_equals_groupby_mean_and_scanpy():
    std = normalize_log1p(standard())
    bulk = pseudobulk(std)
    frame = (
        pd.DataFrame(std.X.toarray(), columns=std.var_names)
        .groupby(std.obs["target_gene"].astype(str).to_numpy())
        .mean()
    )
    np.testing.assert_allclose(bulk.X, frame.loc[bulk.obs_names].to_numpy(), rtol=1e-6)
    assert bulk.obs["n_cells"].sum() == std.n_obs
    scanpy_bulk = sc.get.aggregate(std, by="target_gene", func="mean")
    np.testing.assert_allclose(bulk.X, scanpy_bulk[bulk.obs_names].layers["mean"], rtol=1e-5)

    two = pseudobulk(std, by=["cell_type", "target_gene"])
    assert set(two.obs.columns) == {"cell_type", "target_gene", "n_cells"}
    assert all(name == f"{c}|{p}" for name, c, p in zip(two.obs_names, two.obs["cell_type"], two.obs["target_gene"]))
    row = two.obs.iloc[0]
    mask = (std.obs["cell_type"] == row["cell_type"]) & (std.obs["target_gene"] == row["target_gene"])
    np.testing.assert_allclose(two.X[0], std.X[mask.to_numpy()].toarray().mean(0), rtol=1e-6)
    dense = std.copy()
    dense.X = dense.X.toarray()
    np.testing.assert_allclose(pseudobulk(dense).X, bulk.X)
    np.testing.assert_allclose(
        pseudobulk(std, layer="counts").X[0],
        std.layers["counts"][std.obs["target_gene"].to_numpy() == bulk.obs_names[0]].toarray().mean(0),
        rtol=1e-6,
    )  # noqa: E501
    with pytest.raises(ValueError, match="'donor' is not a column"):
        pseudobulk(std, by="donor")
    with pytest.raises(ValueError, match="by is empty"):
        pseudobulk(std, by=[])


def test_profile_table_is_pseudobulk_as_a_table():
    std = normalize_log1p(standard())
    bulk = pseudobulk(std)
    table = profile_table(std)
    assert list(table.index) == list(bulk.obs["target_gene"]) and table.index.name == "target_gene"
    assert table.columns.equals(std.var_names)
    np.testing.assert_array_equal(table.to_numpy(), bulk.X)
    two = profile_table(std, by=["cell_type", "target_gene"], layer="counts")
    assert two.index.names == ["cell_type", "target_gene"]
    rows = ((std.obs["cell_type"] == "RPE1") & (std.obs["target_gene"] == CONTROL)).to_numpy()
    np.testing.assert_allclose(two.loc[("RPE1", CONTROL)], std.layers["counts"][rows].toarray().mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="'donor' is not a column"):
        profile_table(std, by="donor")


def test_perturbation_effects_subtract_the_same_cell_types_controls():
    std = normalize_log1p(standard(n_cells=300, seed=7))
    effects = perturbation_effects(std)
    assert CONTROL not in effects.index.get_level_values("target_gene")
    assert len(effects) == 2 * 3  # two cell types x three perturbations
    dense = std.X.toarray().astype(np.float64)  # the library averages in float64
    for (cell_type, pert), row in effects.iloc[[0, 4]].iterrows():
        in_type = (std.obs["cell_type"] == cell_type).to_numpy()
        pert_mean = dense[in_type & (std.obs["target_gene"] == pert).to_numpy()].mean(0)
        control_mean = dense[in_type & (std.obs["target_gene"] == CONTROL).to_numpy()].mean(0)
        np.testing.assert_allclose(row.to_numpy(), pert_mean - control_mean, rtol=1e-5, atol=1e-7)
    no_controls = std[~((std.obs["cell_type"] == "RPE1") & (std.obs["target_gene"] == CONTROL))].copy()
    with pytest.raises(ValueError, match=r"no control cells in cell_type \['RPE1'\]"):
        perturbation_effects(no_controls)


def test_half_split_is_disjoint_balanced_and_reproducible():
    std = standard(n_cells=101, seed=8)
    first, second = half_split(std, seed=3)
    assert not set(first.obs_names) & set(second.obs_names)
    sizes = std.obs["target_gene"].value_counts()
    for label, n in sizes.items():
        assert (first.obs["target_gene"] == label).sum() == (second.obs["target_gene"] == label).sum() == n // 2
    again, _ = half_split(std, seed=3)
    assert list(again.obs_names) == list(first.obs_names)
    assert list(half_split(std, seed=4)[0].obs_names) != list(first.obs_names)
    with pytest.raises(ValueError, match="no label has 2 or more cells"):
        half_split(std[:1].copy())
    with pytest.raises(ValueError, match="'guide'"):
        half_split(std, pert_col="guide")


# ----------------------------------------------------------------------------- control matching


def test_select_perturbations_keeps_them_and_the_controls():
    std = standard(n_cells=80, seed=9)
    chosen = select_perturbations(std, ["GENE2"])
    labels = std.obs["target_gene"].astype(str)
    assert list(chosen.obs_names) == list(std.obs_names[labels.isin(["GENE2", CONTROL]).to_numpy()])
    assert set(chosen.obs["target_gene"].cat.categories) == {"GENE2", CONTROL}  # no unused categories
    assert std.obs["target_gene"].nunique() == 4  # the input is untouched
    with pytest.raises(ValueError, match=r"perts \['GENE9'\] have no cells"):
        select_perturbations(std, ["GENE2", "GENE9"])
    with pytest.raises(ValueError, match="pert_col='guide'"):
        select_perturbations(std, ["GENE2"], pert_col="guide")


def test_match_controls_respects_context_and_batch():
    std = standard(n_cells=400, seed=3)
    obs = std.obs
    for same_batch in (False, True):
        matched = match_controls(std, same_batch=same_batch, seed=1)
        assert set(matched.index) == set(obs_names := obs.index[obs["target_gene"] != CONTROL])
        assert (obs.loc[matched.to_numpy(), "target_gene"] == CONTROL).all()
        assert (obs.loc[matched.to_numpy(), "cell_type"].to_numpy() == obs.loc[obs_names, "cell_type"].to_numpy()).all()
        if same_batch:
            assert (obs.loc[matched.to_numpy(), "batch"].to_numpy() == obs.loc[obs_names, "batch"].to_numpy()).all()
    pd.testing.assert_series_equal(match_controls(std, seed=5), match_controls(std, seed=5))
    assert not match_controls(std, seed=5).equals(match_controls(std, seed=6))


def test_match_controls_without_controls_in_a_context():
    std = standard(n_cells=200, seed=4)
    no_rpe1_controls = std[~((std.obs["cell_type"] == "RPE1") & (std.obs["target_gene"] == CONTROL))].copy()
    with pytest.raises(ValueError, match=r"no control cells for \{'cell_type': 'RPE1'\}"):
        match_controls(no_rpe1_controls)
    with pytest.raises(ValueError, match="load_perturbation_data"):
        match_controls(raw_adata())


# ----------------------------------------------------------------------------- splits


def many_perts(n_perts=20, contexts=("A", "B", "C")) -> ad.AnnData:
    rng = np.random.default_rng(0)
    rows = [(c, p) for c in contexts for p in [CONTROL] + [f"P{i}" for i in range(n_perts)] for _ in range(3)]
    obs = pd.DataFrame(rows, columns=["cell_type", "target_gene"], index=[f"c{i}" for i in range(len(rows))])
    return ad.AnnData(X=sp.csr_matrix(rng.poisson(1, (len(rows), 5)).astype(np.float32)), obs=obs)


def test_split_by_perturbation_is_disjoint_and_complete():
    adata = many_perts()
    split = split_by_perturbation(adata, val=0.15, test=0.25, seed=0)
    perts = {name: {p for _, p in getattr(split, name)} for name in ("train", "val", "test")}
    assert not (perts["train"] & perts["test"]) and not (perts["train"] & perts["val"])
    assert len(perts["test"]) == 5 and len(perts["val"]) == 3 and len(perts["train"]) == 12
    assert split.test == {(c, p) for c in "ABC" for p in perts["test"]}  # held out in every cell type
    assert split_by_perturbation(adata, seed=0) == split_by_perturbation(adata, seed=0)
    labels = assign_split(adata, split)
    assert set(labels[adata.obs["target_gene"] == CONTROL]) == {"control"}
    assert labels.value_counts()["test"] == 5 * 3 * 3
    for bad in ({"val": -0.1}, {"test": 1.0}, {"val": 0.5, "test": 0.5}):
        with pytest.raises(ValueError, match="val|test"):
            split_by_perturbation(adata, **bad)


def test_split_by_context_with_few_shot():
    adata = many_perts()
    split = split_by_context(adata, "C", few_shot=0.25, val=0.1, seed=1)
    assert all(c == "C" for c, _ in split.test | split.val)
    shots = {x for x in split.train if x[0] == "C"}
    assert len(shots) == 5 and len(split.val) == 2 and len(split.test) == 13
    assert {x for x in split.train if x[0] != "C"} == {(c, f"P{i}") for c in "AB" for i in range(20)}
    zero_shot = split_by_context(adata, "C")
    assert len(zero_shot.test) == 20 and not any(c == "C" for c, _ in zero_shot.train)
    with pytest.raises(ValueError, match="held_out='D'"):
        split_by_context(adata, "D")
    with pytest.raises(ValueError, match="few_shot"):
        split_by_context(adata, "C", few_shot=1.2)


def test_split_by_context_with_perturbations_never_seen():
    adata = many_perts()
    plain = split_by_context(adata, "C", few_shot=0.5, seed=1)
    split = split_by_context(adata, "C", few_shot=0.5, unseen=0.4, seed=1)
    assert split.test == plain.test and len(split.test) == 10  # the same test pairs, only train changes
    never = {p for _, p in plain.test} - {p for _, p in split.train}
    assert len(never) == 4  # 40% of the 10 test perturbations: in no cell type's training
    assert plain.train - split.train == {(c, p) for c in "AB" for p in never}
    assert {p for _, p in split.test} - never <= {p for _, p in split.train}  # the rest: seen in A and B
    labels = assign_split(adata, split)
    assert (
        labels[adata.obs["target_gene"].isin(never).to_numpy() & (adata.obs["cell_type"] != "C").to_numpy()]
        .eq("unused")
        .all()
    )
    with pytest.raises(ValueError, match="unseen"):
        split_by_context(adata, "C", unseen=1.5)
    few = split_by_context(adata, "C", few_shot=0.8, unseen=0.125, seed=1)  # 4 test perturbations
    assert len(few.test) == 4 and len({p for _, p in few.test} - {p for _, p in few.train}) == 1  # never 0
    train, test = train_test_cells(adata, split)
    pairs = lambda cells: set(map(tuple, cells.obs[["cell_type", "target_gene"]].astype(str).to_numpy()))  # noqa: E731
    assert pairs(train) == set(split.train) | {(c, CONTROL) for c in "ABC"}  # every cell type's controls
    assert pairs(test) == set(split.test) | {("C", CONTROL)}  # the controls of the held-out cell type only
    controls_of_c = ((adata.obs["target_gene"] == CONTROL) & (adata.obs["cell_type"] == "C")).sum()
    assert train.n_obs + test.n_obs == adata.n_obs - (labels == "unused").sum() + controls_of_c  # C's are in both


def test_check_split_catches_leakage():
    adata = many_perts()
    split = split_by_perturbation(adata)
    leaked = replace(split, train=split.train | {next(iter(split.test))})
    with pytest.raises(ValueError, match="leakage: 1 .* both train and test"):
        check_split(adata, leaked)
    with pytest.raises(ValueError, match="not in the data"):
        check_split(adata, replace(split, test=split.test | {("A", "NOPE")}))
    with pytest.raises(ValueError, match="no test pairs"):
        check_split(adata, Split(train=split.train, val=split.val, test=frozenset()))


# ----------------------------------------------------------------------------- datasets


@pytest.fixture()
def file_server(tmp_path):
    """Serve tmp_path over HTTP on localhost; yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def challenge_schema_file(path):
    """A tiny file with the challenge training data's exact schema."""
    raw = raw_adata(n_cells=40, control=CONTROL)
    obs = pd.DataFrame(
        {
            "target_gene": raw.obs["guide_target"].to_numpy(),
            "guide_id": [f"{t}_P1P2_A|{t}_P1P2_B" for t in raw.obs["guide_target"]],
            "batch": np.where(np.arange(40) % 2, "Flex_1_01", "Flex_1_02"),
        },
        index=raw.obs_names,
    )
    ad.AnnData(X=raw.X, obs=obs, var=raw.var).write_h5ad(path)
    return path


def test_fetch_verifies_caches_and_reports_offline(tmp_path, monkeypatch, file_server):
    served = tmp_path / "served"
    served.mkdir()
    (served / "tiny.bin").write_bytes(b"virtual cell" * 100)
    digest = hashlib.sha256((served / "tiny.bin").read_bytes()).hexdigest()
    monkeypatch.setenv("VCELL_DATA_DIR", str(tmp_path / "cache"))
    base = file_server
    monkeypatch.setitem(data.DATASETS, "tiny", data.Dataset(f"{base}/served/tiny.bin", digest, "test"))
    path = data.fetch("tiny", progress=False)
    assert open(path, "rb").read() == (served / "tiny.bin").read_bytes()
    (served / "tiny.bin").unlink()
    assert data.fetch("tiny", progress=False) == path  # cached: no download needed

    monkeypatch.setitem(data.DATASETS, "changed", data.Dataset(f"{base}/served/other.bin", "0" * 64, "test"))
    (served / "other.bin").write_bytes(b"something else")
    with pytest.raises(DatasetUnavailableError, match="does not match its sha256"):
        data.fetch("changed", progress=False)

    monkeypatch.setitem(data.DATASETS, "offline", data.Dataset("http://127.0.0.1:9/nothing.h5ad", "0" * 64, "test"))
    with pytest.raises(DatasetUnavailableError, match="could not download offline from http://127.0.0.1:9"):
        data.fetch("offline", progress=False)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        data.fetch("nope")


def test_unpinned_download_warns(tmp_path, monkeypatch, file_server):
    (tmp_path / "a.bin").write_bytes(b"abc")
    monkeypatch.setenv("VCELL_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(data.DATASETS, "unpinned", data.Dataset(f"{file_server}/a.bin", None, "test"))
    with pytest.warns(UserWarning, match="no sha256 is pinned"):
        data.fetch("unpinned", progress=False)


@pytest.mark.parametrize(
    ("name", "shipped"), [("papalexi2021_thp1", data.PAPALEXI_FILE), ("human_proteins", data.PROTEIN_FILE)]
)
def test_registry_pins_the_shipped_files(name, shipped):
    from pathlib import Path

    entry = data.DATASETS[name]
    path = Path(__file__).resolve().parents[1] / "data" / shipped
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert entry.url.endswith(f"/raw/main/data/{shipped}")
    assert data.shipped_file(shipped, name) == path


def test_load_vcc_training_on_a_challenge_schema_file(tmp_path):
    adata = load_vcc_training(challenge_schema_file(tmp_path / "adata_Training.h5ad"))
    assert set(adata.obs["batch"]) == {"Flex_1_01", "Flex_1_02"}
    assert set(adata.obs["cell_type"]) == {"H1 hESC"}
    assert "guide_id" in adata.obs and (adata.obs["target_gene"] == CONTROL).sum() >= 8
    wrong = raw_adata()
    wrong.write_h5ad(tmp_path / "wrong.h5ad")
    with pytest.raises(ValueError, match=r"not the challenge schema: obs lacks \['target_gene', 'guide_id', 'batch'\]"):
        load_vcc_training(tmp_path / "wrong.h5ad")


def test_load_papalexi2021_real_data():
    adata = load_papalexi2021()
    assert adata.shape == (20729, 299)
    assert (adata.obs["target_gene"] == CONTROL).sum() == 2386
    assert adata.obs["target_gene"].nunique() == 26
    assert list(adata.obs["batch"].cat.categories) == ["rep_1", "rep_2", "rep_3"]
    measured_targets = sorted(set(adata.obs["target_gene"]) & set(adata.var_names))
    assert measured_targets == sorted(
        ["STAT1", "STAT2", "STAT3", "JAK2", "NFKBIA", "CMTM6", "UBE2L6", "IFNGR2", "TNFRSF14"]
    )


# ----------------------------------------------------------------------------- no silent overwrites (issue 8)


def test_existing_batch_and_cell_type_are_kept_not_replaced():
    raw = raw_adata(control=CONTROL).copy()
    raw.obs = raw.obs.rename(columns={"guide_target": "target_gene", "rep": "batch", "line": "cell_type"})
    std = load_perturbation_data(raw)  # default arguments
    assert (std.obs["batch"].astype(str) == raw.obs["batch"].astype(str)).all()
    assert (std.obs["cell_type"].astype(str) == raw.obs["cell_type"].astype(str)).all()
    with pytest.raises(ValueError, match="cell_type='HEK293' would replace the existing obs\\['cell_type'\\]"):
        load_perturbation_data(raw, cell_type="HEK293")
    with pytest.raises(ValueError, match="obs already has a 'batch' column that batch_col would replace"):
        load_perturbation_data(raw.copy(), batch_col="cell_type")


def test_a_second_control_label_is_refused_not_merged():
    raw = raw_adata(control="NT")
    raw.obs.loc[raw.obs_names[8:12], "guide_target"] = CONTROL
    with pytest.raises(ValueError, match="holds both 'NT' .* and 'non-targeting'"):
        load_perturbation_data(raw, pert_col="guide_target", control="NT")


def test_an_existing_target_gene_column_is_not_overwritten():
    raw = raw_adata()
    raw.obs["target_gene"] = "something else"
    with pytest.raises(ValueError, match="obs already has a 'target_gene' column that pert_col would replace"):
        load_perturbation_data(raw, pert_col="guide_target", control="NT")
    # The same values under both names lose nothing: accepted.
    raw.obs["target_gene"] = raw.obs["guide_target"].replace({"NT": CONTROL})
    assert load_perturbation_data(raw, pert_col="guide_target", control="NT").n_obs == raw.n_obs


def test_the_standard_column_itself_can_carry_another_control_label():
    raw = raw_adata(control="NT")
    raw.obs = raw.obs.rename(columns={"guide_target": "target_gene"})
    std = load_perturbation_data(raw, control="NT")
    assert (std.obs["target_gene"] == CONTROL).sum() == (raw.obs["target_gene"] == "NT").sum()


# ----------------------------------------------------------------------------- clear errors (issue 8)


def test_counts_from_a_layer_drop_the_log1p_mark():
    raw = raw_adata()
    raw.layers["counts"] = raw.X.copy()
    sc.pp.normalize_total(raw)
    sc.pp.log1p(raw)  # X is log1p now, uns["log1p"] is set
    std = load_perturbation_data(raw, pert_col="guide_target", control="NT", layer="counts")
    assert "log1p" not in std.uns and "log1p" in raw.uns
    normalize_log1p(std)  # used to raise "already log1p-transformed"


def test_numeric_perturbation_labels_with_a_numeric_control():
    raw = raw_adata()
    codes = {"NT": 0, "GENE1": 1, "GENE2": 2, "GENE3": 3}
    raw.obs["guide_code"] = raw.obs["guide_target"].map(codes).astype(int)
    std = load_perturbation_data(raw, pert_col="guide_code", control=0)
    assert (std.obs["target_gene"] == CONTROL).sum() == (raw.obs["guide_code"] == 0).sum()
    assert set(std.obs["target_gene"]) == {CONTROL, "1", "2", "3"}


def test_backed_anndata_is_read_without_copying_it(tmp_path):
    raw = raw_adata()
    raw.layers["counts"] = raw.X.copy()
    raw.write_h5ad(tmp_path / "screen.h5ad")
    backed = ad.read_h5ad(tmp_path / "screen.h5ad", backed="r")
    std = load_perturbation_data(backed, pert_col="guide_target", control="NT")
    assert not std.isbacked and backed.isbacked
    assert (std.X != raw.X).nnz == 0
    assert list(std.layers) == []  # the other layers are not copied into memory
    backed.file.close()


def test_match_controls_refuses_duplicate_cell_names():
    adata = standard()
    adata.obs_names = ["same"] * 2 + list(adata.obs_names[2:])
    with pytest.raises(ValueError, match="obs_names has 1 duplicated cell names"):
        match_controls(adata)


# ----------------------------------------------------------------------------- column arguments (issue 8)


def test_column_arguments_give_the_same_results_on_renamed_columns():
    adata = standard()
    renamed = adata.copy()
    renamed.obs = adata.obs[["target_gene", "cell_type", "batch"]].set_axis(["guide", "line", "lane"], axis=1)
    renamed.obs["guide"] = renamed.obs["guide"].astype(str).replace({CONTROL: "NT"})
    columns = {"pert_col": "guide", "control": "NT", "context_col": "line"}
    pd.testing.assert_frame_equal(
        perturbation_effects(adata), perturbation_effects(renamed, **columns), check_names=False
    )
    pd.testing.assert_series_equal(
        match_controls(adata, same_batch=True), match_controls(renamed, same_batch=True, batch_col="lane", **columns)
    )
    pairs = [
        (split_by_perturbation(adata), split_by_perturbation(renamed, **columns)),
        (split_by_context(adata, "K562", few_shot=0.5), split_by_context(renamed, "K562", few_shot=0.5, **columns)),
    ]
    for split, again in pairs:
        assert again == split
        assert (assign_split(adata, split).to_numpy() == assign_split(renamed, split, **columns).to_numpy()).all()
    with pytest.raises(ValueError, match="pert_col='target_gene' is not a column of obs"):
        perturbation_effects(renamed)


def test_repository_file_finds_the_checkouts_copy():
    path = data.repository_file("bench/results/se_training_curve.csv")
    assert path.exists() and path.parent.name == "results"


def test_repository_file_says_what_is_missing():
    with pytest.raises(data.DatasetUnavailableError, match="no_such_result.csv"):
        data.repository_file("bench/results/no_such_result.csv")
