"""SE, the State Embedding model (vcell_lib.models.se): invariants, training, round trips, parity with arc-state."""

import warnings

import anndata as ad
import numpy as np
import pytest
import torch

from vcell_lib.models import se
from vcell_lib.models.losses import energy_distance

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_GENES, TOKEN_DIM = 30, 12


@pytest.fixture
def X():
    rng = np.random.default_rng(0)
    counts = rng.negative_binomial(2, 0.5, (8, N_GENES)).astype(np.float32)
    return np.log1p(counts)


@pytest.fixture
def model():
    torch.manual_seed(0)
    genes = [f"G{i}" for i in range(N_GENES)]
    return se.StateEmbedding(se.SEConfig.tiny(TOKEN_DIM, n_datasets=2), genes, torch.randn(N_GENES, TOKEN_DIM)).eval()


def batch_for(model, X, seed=0):
    dataset = np.arange(len(X)) % 2
    return se.training_batch(X, np.arange(X.shape[1]), model.config, np.random.default_rng(seed), dataset=dataset)


def test_shapes(model, X):
    batch = batch_for(model, X)
    config = model.config
    assert batch["sentence_genes"].shape == batch["sentence_values"].shape == (8, config.sentence_length)
    assert batch["query_genes"].shape == batch["query_values"].shape == (8, config.n_queries)
    encoding = model.encode(batch["sentence_genes"], batch["sentence_values"])
    assert encoding.cell.shape == (8, config.output_dim)
    assert encoding.dataset.shape == (8, se.DATASET_EMBEDDING_DIM)
    assert torch.allclose(encoding.cell.norm(dim=-1), torch.ones(8))
    assert model(batch["sentence_genes"], batch["sentence_values"]).shape == (8, config.output_dim + 10)
    assert model.decode(encoding, batch["query_genes"], batch["read_depth"]).shape == (8, config.n_queries)
    assert torch.isfinite(model.loss(batch))


def test_cell_sentence_takes_top_genes_and_pads():
    X = np.array([[0.0, 3.0, 1.0, 0.0, 2.0, 0.5]], dtype=np.float32)
    genes, values = se.cell_sentences(X, 4, np.random.default_rng(0))
    assert genes[0, 1:].tolist() == [1, 4, 2]  # the three highest, in order
    assert values[0, 0] == 0.0  # the CLS slot carries no expression
    np.testing.assert_allclose(values[0, 1:], 100 * X[0, [1, 4, 2]] / X.sum())
    long_genes, _ = se.cell_sentences(X, 10, np.random.default_rng(0))  # 9 slots, 6 genes: zeros repeat
    assert set(long_genes[0, 5:].tolist()) <= {0, 3}
    assert set(long_genes[0, 1:5].tolist()) == {1, 2, 4, 5}
    with pytest.raises(ValueError, match="non-negative"):
        se.cell_sentences(-X, 4, np.random.default_rng(0))


def test_query_genes_are_hidden_from_the_sentence(model, X):
    batch = batch_for(model, X)
    config = model.config
    for sentence, queries in zip(batch["sentence_genes"], batch["query_genes"]):
        assert not set(sentence[1:].tolist()) & set(queries.tolist())
    shared = batch["query_genes"][:, -config.n_shared_queries :]
    assert (shared == shared[0]).all()  # the shared genes are the same for every cell
    np.testing.assert_array_equal(batch["query_values"], np.take_along_axis(X, batch["query_genes"].numpy(), axis=1))


def test_masked_values_never_reach_the_encoder(model, X):
    hidden = batch_for(model, X)["query_genes"].numpy()
    mask = np.zeros_like(X, dtype=bool)
    np.put_along_axis(mask, hidden, True, axis=1)
    changed = np.where(mask, 7.0, X).astype(np.float32)  # new values for every hidden gene
    length = model.config.sentence_length
    first = se.cell_sentences(X, length, np.random.default_rng(3), hidden=mask)
    second = se.cell_sentences(changed, length, np.random.default_rng(3), hidden=mask)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(se.read_depth(X, mask), se.read_depth(changed, mask))
    assert not np.array_equal(se.read_depth(X), se.read_depth(changed))  # unmasked, the values do get through
    unmasked = se.cell_sentences(changed, length, np.random.default_rng(3))
    assert not np.array_equal(first[1], unmasked[1])


def test_soft_bins_sum_to_one(model):
    weights = model.soft_bins(torch.rand(5, 7) * 20)
    assert weights.shape == (5, 7, model.config.n_bins)
    assert torch.allclose(weights.sum(-1), torch.ones(5, 7))
    assert (weights > 0).all()


def test_permuting_the_sentence_leaves_the_embedding_unchanged(model, X):
    batch = batch_for(model, X)
    genes, values = batch["sentence_genes"], batch["sentence_values"]
    order = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(genes.shape[1] - 1)])
    with torch.no_grad():
        before = model(genes, values)
        after = model(genes[:, order], values[:, order])
    assert torch.allclose(before, after, atol=1e-6)
    with torch.no_grad():  # moving CLS away from position 0 does change it: the check above can fail
        moved = model(genes[:, [1, 0, *range(2, genes.shape[1])]], values[:, [1, 0, *range(2, genes.shape[1])]])
    assert not torch.allclose(before, moved, atol=1e-4)


def test_a_tiny_model_overfits_a_tiny_batch(model, X):
    torch.manual_seed(0)
    batch = batch_for(model, X)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])


def test_the_loss_is_arcs_tabular_loss(model, X):
    from state.emb.nn.loss import TabularLoss

    torch.manual_seed(0)
    predicted, truth = torch.rand(8, model.config.n_queries) * 3, torch.rand(8, model.config.n_queries) * 3
    shared = model.config.n_shared_queries
    ours = (
        energy_distance(predicted.unsqueeze(1), truth.unsqueeze(1)).mean()
        + energy_distance(predicted[:, -shared:].T.unsqueeze(1), truth[:, -shared:].T.unsqueeze(1)).mean()
    )
    assert torch.allclose(ours, TabularLoss(shared=shared)(predicted, truth), atol=1e-5)


def test_save_and_load_round_trip(model, X, tmp_path):
    batch = batch_for(model, X)
    model.save(tmp_path / "se.pt")
    loaded = se.StateEmbedding.load(tmp_path / "se.pt").eval()
    assert loaded.config == model.config and loaded.genes == model.genes
    with torch.no_grad():
        assert torch.equal(model(batch["sentence_genes"], batch["sentence_values"]),
                           loaded(batch["sentence_genes"], batch["sentence_values"]))  # fmt: skip


def test_gene_table_gives_zeros_and_warns_for_missing_genes():
    embeddings = {"A": np.ones(3), "B": np.full(3, 2.0)}
    with pytest.warns(UserWarning, match="1 of 3 genes have no embedding"):
        table = se.gene_table(["A", "C", "B"], embeddings)
    np.testing.assert_array_equal(table, [[1, 1, 1], [0, 0, 0], [2, 2, 2]])


def test_embed_cells_on_anndata(model, X):
    adata = ad.AnnData(X, var={"gene": model.genes}).copy()
    adata.var_names = model.genes
    adata.uns["log1p"] = {"base": None}
    embedding = se.embed_cells(model, adata, progress=False)
    assert embedding.shape == (8, model.config.output_dim + 10)
    assert adata.obsm["X_se"] is embedding
    again = se.embed_cells(model, adata, key=None, progress=False)
    np.testing.assert_allclose(embedding, again, atol=1e-6)  # same seed, same sentences
    renamed = adata[:, :5].copy()
    renamed.var_names = ["X1", "X2", "X3", "X4", "X5"]
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        se.embed_cells(model, renamed, progress=False)


def test_batches_cover_every_cell_and_know_the_datasets(model, X):
    adata = ad.AnnData(X)
    adata.var_names = model.genes
    adata.uns["log1p"] = {"base": None}
    adata.obs["replicate"] = ["r1", "r2"] * 4
    batches = list(se.SEBatches(adata, model, batch_size=3, dataset_col="replicate"))
    assert len(batches) == 3 and sum(len(b["dataset"]) for b in batches) == 8
    adata.obs["replicate"] = ["r1", "r2", "r3", "r4"] * 2
    with pytest.raises(ValueError, match="n_datasets=2"):
        se.SEBatches(adata, model, batch_size=3, dataset_col="replicate")


ARC_SENTENCE_LENGTH = 16


def arc_se_checkpoint(path, n_vocabulary=40, token_dim=24):
    """Save a checkpoint of arc-state's StateEmbeddingModel (random weights, small sizes) as Lightning would.

    Returns (arc's model in eval mode, the protein-embedding vocabulary {gene: vector}). Also used by the README test.
    """
    omegaconf = pytest.importorskip("omegaconf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from state.emb.nn.model import StateEmbeddingModel

    torch.manual_seed(0)
    cfg = omegaconf.OmegaConf.create({
        "model": {"rda": True, "counts": True, "dataset_correction": True, "num_downsample": 1, "batch_size": 8},
        "dataset": {"current": "tiny", "tiny": {"num_datasets": 3}, "pad_length": ARC_SENTENCE_LENGTH,
                    "P": 4, "N": 4, "S": 4},
        "loss": {"name": "tabular"},
        "embeddings": {"current": "esm", "esm": {"size": token_dim, "num": n_vocabulary}},
        "optimizer": {"weight_decay": 0.01, "start": 0.33, "end": 1.0, "max_lr": 1e-4},
    })  # fmt: skip
    arc = StateEmbeddingModel(token_dim=token_dim, d_model=16, nhead=2, d_hid=32, nlayers=2, output_dim=12, cfg=cfg)
    vocabulary = {f"G{i}": torch.randn(token_dim) for i in range(n_vocabulary)}
    vocabulary["G5"] = torch.zeros(token_dim)  # a gene without a protein sequence
    arc.pe_embedding = torch.nn.Embedding.from_pretrained(torch.stack(list(vocabulary.values())))
    arc.protein_embeds = vocabulary
    arc.eval()
    checkpoint = {"state_dict": arc.state_dict(), "hyper_parameters": dict(arc.hparams)}
    arc.on_save_checkpoint(checkpoint)  # what Lightning calls: adds cfg_yaml and the packed protein embeddings
    torch.save(checkpoint, path)
    return arc, vocabulary


def test_se_matches_arc_state(tmp_path):
    """A checkpoint of arc-state's StateEmbeddingModel, loaded into the book's SE, gives the same embeddings."""
    arc, vocabulary = arc_se_checkpoint(tmp_path / "se.ckpt")
    n_vocabulary, length = len(vocabulary), ARC_SENTENCE_LENGTH
    ours = se.load_arc_checkpoint(tmp_path / "se.ckpt", gene_embeddings=vocabulary)
    assert ours.config.d_model == 16 and ours.config.n_datasets == 3 and ours.config.sentence_length == length

    rng = np.random.default_rng(0)
    X = np.log1p(rng.poisson(1.0, (6, 30)).astype(np.float32))
    columns = rng.permutation(n_vocabulary)[:30]  # the data's genes, as vocabulary positions
    genes, values = se.cell_sentences(X, length, rng, cls_value_gene=se.ARC_CLS_GENE)
    sentence = torch.from_numpy(columns[genes])
    values = torch.from_numpy(values)
    with torch.no_grad():
        encoding = ours.encode(sentence, values)
        no_queries = torch.zeros(6, 1, dtype=torch.long)
        arc_batch = (
            sentence,
            no_queries,
            None,
            None,
            None,
            torch.zeros(6, length, dtype=torch.bool),
            None,
            values,
            None,
        )
        _, _, _, arc_cell, arc_dataset_state = arc._compute_embedding_for_batch(arc_batch)
        arc_dataset = arc.dataset_embedder(arc_dataset_state)
        # decoding: Arc's inference path (resize_batch, then binary_decoder) against ours
        queries = torch.from_numpy(columns[:7])
        depth = torch.full((6,), 2.5)
        merged = arc.resize_batch(
            arc_cell, arc.gene_embedding_layer(arc.pe_embedding(queries)), depth, ds_emb=arc_dataset
        )
        arc_decoded = arc.binary_decoder(merged).squeeze(-1)
        decoded = ours.decode(encoding, queries.expand(6, -1), depth)
    largest = max(
        (encoding.cell - arc_cell).abs().max().item(),
        (encoding.dataset - arc_dataset).abs().max().item(),
        (decoded - arc_decoded).abs().max().item(),
    )
    print(f"largest difference from arc-state: {largest:.2e}")
    assert largest < 1e-5

    from_packed = se.load_arc_checkpoint(tmp_path / "se.ckpt")  # the embeddings Arc packed into the checkpoint
    assert from_packed.genes == ours.genes
    checkpoint = torch.load(tmp_path / "se.ckpt", weights_only=False)
    del checkpoint["protein_embeds_dict"]
    torch.save(checkpoint, tmp_path / "bare.ckpt")
    with pytest.raises(ValueError, match="pass gene_embeddings"):
        se.load_arc_checkpoint(tmp_path / "bare.ckpt")


def test_judge_embedding_reads_labels_that_the_embedding_separates():
    rng = np.random.default_rng(0)
    import pandas as pd

    labels = pd.DataFrame({"kind": np.repeat(["a", "b", "c"], 40), "noise": rng.choice(["x", "y"], 120)})
    centers = {"a": [0, 0], "b": [10, 0], "c": [0, 10]}
    points = np.array([centers[k] for k in labels["kind"]]) + rng.normal(0, 1, (120, 2))
    train, test = np.arange(120) % 2 == 0, np.arange(120) % 2 == 1
    scores = se.judge_embedding(points[train], points[test], labels[train], labels[test], k=5)
    assert scores["kNN kind"] == 1.0 and scores["silhouette kind"] > 0.7
    assert scores["kNN noise"] < 0.75 and abs(scores["silhouette noise"]) < 0.1
    floor = se.majority_accuracy(labels[train], labels[test])
    assert floor["kNN kind"] == pytest.approx(1 / 3, abs=0.05)
    with pytest.raises(ValueError, match="one row of labels per cell"):
        se.judge_embedding(points[train], points[test], labels, labels[test])
    table = se.compare_embeddings(
        {"good": (points[train], points[test]), "shuffled": (points[train][::-1], points[test])},
        labels[train],
        labels[test],
        k=5,
    )
    assert list(table.index) == ["good", "shuffled", "majority guess"]
    assert list(table.columns) == ["kNN kind", "kNN noise", "silhouette kind", "silhouette noise"]
    assert table.loc["good", "kNN kind"] == 1.0 > table.loc["shuffled", "kNN kind"]


def test_train_se_trains_a_model_in_one_call_and_checks_its_inputs():
    from vcell_lib.data import BATCH, normalize_log1p
    from vcell_lib.simulate import simulate_perturbseq

    adata = normalize_log1p(
        simulate_perturbseq(seed=0, n_genes=120, n_perturbations=4, cells_per_perturbation=10, n_gene_features=8)
    )
    config = se.SEConfig.tiny(8, n_datasets=2)
    model, history = se.train_se(adata, config=config, steps=30, lr=3e-3, dataset_col=BATCH, progress=False)
    assert history.steps == 30 and not model.training and model.genes == list(adata.var_names)
    assert np.mean(history.train_loss[-5:]) < np.mean(history.train_loss[:5])  # it learned something
    again, _ = se.train_se(adata, config=config, steps=30, lr=3e-3, dataset_col=BATCH, progress=False)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)  # same seed, same model
    small, _ = se.train_se(adata, steps=1, progress=False)  # SEConfig.small at the features' width
    assert small.config.token_dim == 8 and small.config.d_model == se.SEConfig.small(8).d_model
    assert se.embed_cells(model, adata, progress=False).shape == (adata.n_obs, 16 + se.DATASET_EMBEDDING_DIM)
    with pytest.raises(ValueError, match="one row per gene"):
        se.train_se(adata, np.zeros((3, 8)), steps=1, progress=False)
    with pytest.raises(ValueError, match="not a column"):
        se.train_se(adata, steps=1, dataset_col="nope", progress=False)
    adata.obs["batch"] = adata.obs["batch"].astype("category").cat.add_categories(["unused"])
    with_unused, _ = se.train_se(adata, steps=1, dataset_col=BATCH, progress=False)  # counted as SEBatches does
    assert with_unused.config.n_datasets == 3
    del adata.varm["gene_features"]
    with pytest.raises(ValueError, match="gene_features"):
        se.train_se(adata, steps=1, progress=False)
