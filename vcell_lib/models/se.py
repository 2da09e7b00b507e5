"""SE, the State Embedding model: a transformer that turns a cell's transcriptome into one vector.

Taught in chapter 11. The architecture is Arc's `StateEmbeddingModel` (arc-state 0.11), written out so that each
part can be read, with two deliberate differences that the chapter states:

- query genes are really masked: they are left out of the cell sentence (the reference builds a mask and never
  applies it, so the genes it asks the model to predict can be in its input);
- the read depth given to the decoder comes from the visible genes (the reference computes it from the values
  being predicted).

`load_arc_checkpoint` reads a checkpoint of Arc's model into this one: same weights, same cell embeddings.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import anndata as ad
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..env import set_seed
from ..train import History, TrainConfig, fit
from ._matrix import gather_rows, log1p_matrix
from .layers import EncoderBlock, SkipBlock
from .losses import energy_distance

__all__ = [
    "ARC_CLS_GENE",
    "DATASET_EMBEDDING_DIM",
    "SEBatches",
    "SEConfig",
    "StateEmbedding",
    "cell_sentences",
    "compare_embeddings",
    "embed_cells",
    "gene_table",
    "judge_embedding",
    "load_arc_checkpoint",
    "majority_accuracy",
    "predict_masked_genes",
    "read_depth",
    "train_se",
    "training_batch",
]

DATASET_EMBEDDING_DIM = 10  # width of the dataset embedding appended to the cell embedding (Arc: z_dim_ds)
ARC_CLS_GENE = 3  # the reference gives the CLS slot the expression weight of the dataset's gene at this index


@dataclass(frozen=True)
class SEConfig:
    """Sizes of an SE model and of its training examples. Taught in chapter 11.

    `tiny` is for tests, `small` for the chapter's CPU budget, `arc_defaults` is arc-state's
    `state-defaults.yaml`; the released SE-600M's own sizes are read from its checkpoint by `load_arc_checkpoint`.
    """

    token_dim: int  # width of the frozen gene embeddings (5120 for ESM-2 15B)
    d_model: int = 512
    n_heads: int = 16
    d_hidden: int = 1024
    n_layers: int = 8
    output_dim: int = 512  # width of the cell embedding
    dataset_correction: bool = True  # a learnable dataset token, its 10-d embedding and a dataset classifier
    n_datasets: int = 1
    read_depth: bool = True  # give the decoder the cell's read depth
    n_bins: int = 10  # soft bins of the expression encoding
    dropout: float = 0.0
    sentence_length: int = 2048  # tokens per cell, CLS included
    n_expressed_queries: int = 512  # per cell, drawn among its expressed genes
    n_unexpressed_queries: int = 512  # per cell, drawn among its zeros
    n_shared_queries: int = 512  # drawn once per batch, the same genes for every cell

    def __post_init__(self) -> None:
        for name in ("token_dim", "d_model", "n_heads", "d_hidden", "n_layers", "output_dim", "n_datasets", "n_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.sentence_length < 2:
            raise ValueError(f"sentence_length counts the CLS token and must be at least 2, got {self.sentence_length}")

    @property
    def n_queries(self) -> int:
        """Query genes per cell: expressed, unexpressed, then the shared ones."""
        return self.n_expressed_queries + self.n_unexpressed_queries + self.n_shared_queries

    @classmethod
    def tiny(cls, token_dim: int, **changes) -> SEConfig:
        """A model of a few thousand parameters, for tests."""
        sizes = dict(d_model=16, n_heads=2, d_hidden=32, n_layers=1, output_dim=16, sentence_length=24)
        sizes.update(n_expressed_queries=4, n_unexpressed_queries=4, n_shared_queries=4)
        return replace(cls(token_dim, **sizes), **changes)

    @classmethod
    def small(cls, token_dim: int, **changes) -> SEConfig:
        """The chapter's size: trains on a CPU in a minute or two."""
        sizes = dict(d_model=64, n_heads=4, d_hidden=128, n_layers=2, output_dim=64, sentence_length=128)
        sizes.update(n_expressed_queries=32, n_unexpressed_queries=32, n_shared_queries=32)
        return replace(cls(token_dim, **sizes), **changes)

    @classmethod
    def arc_defaults(cls, token_dim: int = 5120, **changes) -> SEConfig:
        """arc-state's `state-defaults.yaml`: width 512, 8 layers of 16 heads, sentences of 2048 tokens."""
        return replace(cls(token_dim), **changes)


class CellEncoding(NamedTuple):
    """What the encoder says about a batch of cells."""

    cell: Tensor  # (cells, output_dim), L2-normalized: the cell embedding
    dataset: Tensor | None  # (cells, DATASET_EMBEDDING_DIM): the dataset embedding, None without dataset correction
    dataset_state: Tensor | None  # (cells, output_dim): the dataset token's output, for the dataset classifier


class StateEmbedding(nn.Module):
    """The SE model: gene tokens + expression encodings -> transformer -> CLS embedding; a decoder reads genes back.

    Taught in chapter 11. `genes` names the rows of `gene_embeddings` (the frozen vocabulary, e.g. ESM-2 vectors).
    Inputs are cell sentences: `sentence_genes` (cells, tokens), indices into the vocabulary with position 0
    reserved for CLS, and `sentence_values` (cells, tokens), the expression weights of those genes.
    """

    def __init__(self, config: SEConfig, genes: Sequence[str], gene_embeddings: Tensor | np.ndarray) -> None:
        super().__init__()
        table = torch.as_tensor(np.asarray(gene_embeddings, dtype=np.float32))
        if table.ndim != 2 or table.shape[1] != config.token_dim:
            raise ValueError(f"gene_embeddings must have shape (genes, {config.token_dim}), got {tuple(table.shape)}")
        if len(genes) != table.shape[0]:
            raise ValueError(f"{len(genes)} gene names for {table.shape[0]} embedding rows")
        if len(set(genes)) != len(genes):
            raise ValueError("gene names must be unique")
        self.config = config
        self.genes = list(genes)
        self.gene_position = {g: i for i, g in enumerate(self.genes)}
        self.register_buffer("gene_embeddings", table)  # frozen: saved with the model, never trained
        d = config.d_model
        self.cls_token = nn.Parameter(torch.randn(1, config.token_dim))
        self.gene_projection = nn.Sequential(nn.Linear(config.token_dim, d), nn.LayerNorm(d), nn.SiLU())
        self.value_encoder = nn.Sequential(nn.Linear(1, 512), nn.LeakyReLU(), nn.Linear(512, config.n_bins))
        self.bin_embedding = nn.Embedding(config.n_bins, d)
        self.blocks = nn.ModuleList(
            EncoderBlock(d, config.n_heads, config.d_hidden, config.dropout) for _ in range(config.n_layers)
        )
        self.cell_head = nn.Sequential(SkipBlock(d), nn.Linear(d, config.output_dim))
        extra = int(config.read_depth) + (DATASET_EMBEDDING_DIM if config.dataset_correction else 0)
        width = d + config.output_dim + extra
        self.expression_decoder = nn.Sequential(SkipBlock(width), SkipBlock(width), nn.Linear(width, 1))
        if config.dataset_correction:
            self.dataset_token = nn.Parameter(torch.randn(1, config.token_dim))
            self.dataset_head = nn.Linear(config.output_dim, DATASET_EMBEDDING_DIM)
            self.dataset_classifier = nn.Sequential(
                nn.Linear(config.output_dim, d), nn.SiLU(), nn.LayerNorm(d), nn.Dropout(0.1),
                nn.Linear(d, config.n_datasets),
            )  # fmt: skip

    # --- the encoder -------------------------------------------------------------------------------------
    def soft_bins(self, values: Tensor) -> Tensor:
        """Bin weights (cells, tokens, n_bins) of each expression value; each row sums to one."""
        return torch.softmax(self.value_encoder(values.unsqueeze(-1)), dim=-1)

    def tokens(self, sentence_genes: Tensor, sentence_values: Tensor) -> Tensor:
        """Input tokens (cells, tokens [+1 dataset token], d_model): gene token + soft-binned expression."""
        vectors = F.normalize(self.gene_embeddings[sentence_genes], dim=-1)
        cls = self.cls_token.expand(len(vectors), -1).unsqueeze(1)
        vectors = torch.cat([cls, vectors[:, 1:]], dim=1)  # position 0 is CLS, whatever gene index it holds
        if self.config.dataset_correction:
            vectors = torch.cat([vectors, self.dataset_token.expand(len(vectors), -1).unsqueeze(1)], dim=1)
        tokens = self.gene_projection(vectors) * math.sqrt(self.config.d_model)
        expression = self.soft_bins(sentence_values) @ self.bin_embedding.weight
        if self.config.dataset_correction:  # the dataset token gets no expression encoding
            expression = F.pad(expression, (0, 0, 0, 1))
        return tokens + expression

    def encode(self, sentence_genes: Tensor, sentence_values: Tensor) -> CellEncoding:
        """Cell embeddings (L2-normalized CLS output) and, with dataset correction, the dataset embeddings."""
        x = self.tokens(sentence_genes, sentence_values)
        for block in self.blocks:
            x = block(x)
        cell = F.normalize(self.cell_head(x[:, 0]), dim=-1)
        if not self.config.dataset_correction:
            return CellEncoding(cell, None, None)
        dataset_state = self.cell_head(x[:, -1])
        return CellEncoding(cell, self.dataset_head(dataset_state), dataset_state)

    def forward(self, sentence_genes: Tensor, sentence_values: Tensor) -> Tensor:
        """The embedding Arc saves as `X_state`: the cell embedding, then the dataset embedding if there is one."""
        encoding = self.encode(sentence_genes, sentence_values)
        return encoding.cell if encoding.dataset is None else torch.cat([encoding.cell, encoding.dataset], dim=-1)

    # --- the decoder -------------------------------------------------------------------------------------
    def decode(self, encoding: CellEncoding, query_genes: Tensor, read_depth: Tensor | None = None) -> Tensor:
        """Predicted log1p expression (cells, queries) of `query_genes` (cells, queries) from each cell's encoding.

        Each query is [projected gene embedding; cell embedding; read depth; dataset embedding] through two
        SkipBlocks and a Linear. As in the reference, query genes are projected without L2-normalization.
        """
        n_queries = query_genes.shape[1]
        parts = [self.gene_projection(self.gene_embeddings[query_genes])]
        parts.append(encoding.cell.unsqueeze(1).expand(-1, n_queries, -1))
        if self.config.read_depth:
            if read_depth is None:
                raise ValueError("this model was built with read_depth=True: pass read_depth (one value per cell)")
            parts.append(read_depth.reshape(-1, 1, 1).expand(-1, n_queries, 1).to(parts[0].dtype))
        if encoding.dataset is not None:
            parts.append(encoding.dataset.unsqueeze(1).expand(-1, n_queries, -1))
        return self.expression_decoder(torch.cat(parts, dim=-1)).squeeze(-1)

    def loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The training loss of one `training_batch`: SE's tabular energy loss, plus the dataset classification.

        Per cell, the energy distance between predicted and true query values (one point each: their Euclidean
        distance); per shared gene, the same across the batch's cells; with dataset correction, the
        cross-entropy of predicting each cell's dataset from its dataset token.
        """
        encoding = self.encode(batch["sentence_genes"], batch["sentence_values"])
        predicted = self.decode(encoding, batch["query_genes"], batch.get("read_depth"))
        truth = batch["query_values"]
        loss = energy_distance(predicted.unsqueeze(1), truth.unsqueeze(1)).mean()
        shared = self.config.n_shared_queries
        if shared:
            loss = (
                loss + energy_distance(predicted[:, -shared:].T.unsqueeze(1), truth[:, -shared:].T.unsqueeze(1)).mean()
            )
        if encoding.dataset_state is not None and "dataset" in batch:
            loss = loss + F.cross_entropy(self.dataset_classifier(encoding.dataset_state), batch["dataset"])
        return loss

    def vocabulary_positions(self, genes: Sequence[str]) -> np.ndarray:
        """Vocabulary index of each gene, -1 where the model has no embedding for it."""
        return np.array([self.gene_position.get(g, -1) for g in genes], dtype=np.int64)

    def save(self, path: str | Path) -> None:
        """Save config, vocabulary and weights in one file (`StateEmbedding.load` reads it back)."""
        torch.save({"config": asdict(self.config), "genes": self.genes, "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> StateEmbedding:
        """A model saved by `save` (weights_only loading: no code in the file is run)."""
        saved = torch.load(path, map_location=map_location, weights_only=True)
        model = cls(SEConfig(**saved["config"]), saved["genes"], saved["state_dict"]["gene_embeddings"])
        model.load_state_dict(saved["state_dict"])
        return model


def gene_table(genes: Sequence[str], embeddings: Mapping[str, np.ndarray | Tensor]) -> np.ndarray:
    """Embedding rows for `genes` from {gene: vector}; a gene without a vector gets zeros, with a warning.

    Taught in chapter 11. Zeros are the reference's rule for genes without a protein sequence: after the model's
    L2-normalization (which leaves a zero vector at zero) every such gene is the same token, known only by its
    expression.
    """
    if not embeddings:
        raise ValueError("embeddings is empty: pass {gene symbol: vector}")
    width = len(next(iter(embeddings.values())))
    missing = [g for g in genes if g not in embeddings]
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(genes)} genes have no embedding (e.g. {missing[:5]}): they get a zero vector",
            stacklevel=2,
        )
    rows = [
        np.asarray(embeddings[g], dtype=np.float32) if g in embeddings else np.zeros(width, np.float32) for g in genes
    ]
    return np.stack(rows)


# --- cell sentences and training batches ----------------------------------------------------------------------
def cell_sentences(
    X: np.ndarray,
    length: int,
    rng: np.random.Generator,
    *,
    hidden: np.ndarray | None = None,
    cls_value_gene: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cell sentences of a dense block of log1p values X (cells, genes). Taught in chapter 11.

    Each sentence is [CLS] then the cell's top `length - 1` genes by expression, ties broken at random (so the
    zeros that fill a sentence are a random draw); when fewer genes are visible than slots, the remaining slots
    repeat random unexpressed genes. `hidden` (cells, genes) marks genes to leave out: they never enter the
    sentence, and their values do not count in the weights. Returns (genes, values), both (cells, length):
    gene = column of X (0 at the CLS slot), value = 100 * x_g / sum of the visible x (SE's expression weight).
    The CLS slot's value is 0, or with `cls_value_gene=ARC_CLS_GENE` that gene's weight, as the reference does.
    """
    X = np.asarray(X, dtype=np.float32)
    n_cells, n_genes = X.shape
    visible = np.ones_like(X, dtype=bool) if hidden is None else ~np.asarray(hidden, dtype=bool)
    if np.isnan(X).any() or (X < 0).any():
        raise ValueError("X must be log1p expression: finite and non-negative")
    keys = np.where(visible, X, -1.0)  # hidden genes sort last, below every visible zero
    shuffled = rng.permuted(np.tile(np.arange(n_genes), (n_cells, 1)), axis=1)
    order = np.argsort(-np.take_along_axis(keys, shuffled, axis=1), axis=1, kind="stable")
    ranked = np.take_along_axis(shuffled, order, axis=1)[:, : length - 1]
    genes = np.zeros((n_cells, length), dtype=np.int64)
    genes[:, 1 : ranked.shape[1] + 1] = ranked
    n_visible = visible.sum(axis=1)
    for c in np.flatnonzero(n_visible < length - 1):  # too few genes: pad with random unexpressed ones
        pool = np.flatnonzero(visible[c] & (X[c] == 0))
        pool = pool if len(pool) else np.flatnonzero(visible[c])
        if not len(pool):
            raise ValueError(f"cell {c} has no visible gene: hide fewer genes")
        genes[c, 1 + n_visible[c] :] = rng.choice(pool, size=length - 1 - n_visible[c])
    totals = np.where(visible, X, 0.0).sum(axis=1, keepdims=True)
    weights = np.divide(100.0 * X, totals, out=np.zeros_like(X), where=totals > 0)
    values = np.take_along_axis(weights, genes, axis=1)
    values[:, 0] = 0.0 if cls_value_gene is None else weights[:, cls_value_gene]
    return genes, values.astype(np.float32)


def read_depth(X: np.ndarray, hidden: np.ndarray | None = None) -> np.ndarray:
    """Each cell's mean non-zero log1p value over its visible genes (0 for an empty cell). Taught in chapter 11.

    SE's decoder reads it to tell a deeply sequenced cell from a shallow one. The reference takes it from the
    values being predicted; computed from the visible genes, it tells the decoder nothing about them.
    """
    visible = np.where(hidden, 0.0, X) if hidden is not None else np.asarray(X)
    n_expressed = (visible > 0).sum(axis=1)
    depth = np.divide(visible.sum(axis=1), n_expressed, out=np.zeros(len(visible)), where=n_expressed > 0)
    return depth.astype(np.float32)


def _choose(rng: np.random.Generator, pool: np.ndarray, size: int) -> np.ndarray:
    """`size` distinct items of pool, or with replacement when the pool is smaller (as the reference does)."""
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    if len(pool) == 0:
        return np.full(size, -1, dtype=np.int64)
    return rng.choice(pool, size=size, replace=len(pool) < size)


def training_batch(
    X: np.ndarray,
    vocabulary: np.ndarray,
    config: SEConfig,
    rng: np.random.Generator,
    *,
    dataset: np.ndarray | None = None,
) -> dict[str, Tensor]:
    """One SE training batch from dense log1p rows X (cells, genes). Taught in chapter 11.

    Per cell, `n_expressed_queries` genes among its expressed ones and `n_unexpressed_queries` among its zeros,
    plus `n_shared_queries` genes shared by the batch, are the genes to predict; all are hidden from the cell's
    sentence. `vocabulary` maps each column of X to the model's gene index. The read depth is the mean of the
    visible non-zero values. Returns the tensors `StateEmbedding.loss` reads.

    Two small departures from the reference: "unexpressed" means a zero here (the reference takes log1p < 1,
    which includes genes with one count), and the shared genes are distinct genes of X (the reference draws them
    from its whole vocabulary, with replacement, and scores genes absent from the dataset as zeros).
    """
    X = np.asarray(X, dtype=np.float32)
    n_cells, n_genes = X.shape
    if len(vocabulary) != n_genes:
        raise ValueError(f"vocabulary has {len(vocabulary)} entries for {n_genes} genes")
    if config.n_queries >= n_genes:
        raise ValueError(f"{config.n_queries} query genes per cell leave no gene of {n_genes} to read: use fewer")
    shared = rng.choice(n_genes, size=config.n_shared_queries, replace=False)
    queries = np.empty((n_cells, config.n_queries), dtype=np.int64)
    for c in range(n_cells):
        candidates = np.setdiff1d(np.arange(n_genes), shared)
        expressed = _choose(rng, candidates[X[c, candidates] > 0], config.n_expressed_queries)
        unexpressed = _choose(rng, candidates[X[c, candidates] == 0], config.n_unexpressed_queries)
        # A cell without zeros (or without expressed genes) asks about other genes instead.
        fallback = np.setdiff1d(candidates, np.concatenate([expressed, unexpressed]))
        expressed[expressed < 0] = _choose(rng, fallback, int((expressed < 0).sum()))
        unexpressed[unexpressed < 0] = _choose(rng, fallback, int((unexpressed < 0).sum()))
        queries[c] = np.concatenate([expressed, unexpressed, shared])
    hidden = np.zeros_like(X, dtype=bool)
    np.put_along_axis(hidden, queries, True, axis=1)
    genes, values = cell_sentences(X, config.sentence_length, rng, hidden=hidden)
    batch = {
        "sentence_genes": torch.from_numpy(vocabulary[genes]),
        "sentence_values": torch.from_numpy(values),
        "query_genes": torch.from_numpy(vocabulary[queries]),
        "query_values": torch.from_numpy(np.take_along_axis(X, queries, axis=1)),
        "read_depth": torch.from_numpy(read_depth(X, hidden)),
    }
    if dataset is not None:
        batch["dataset"] = torch.as_tensor(np.asarray(dataset), dtype=torch.long)
    return batch


def _vocabulary(model: StateEmbedding, adata: ad.AnnData) -> np.ndarray:
    """The model's index for each gene of adata; genes it does not know are an error that names them."""
    positions = model.vocabulary_positions(list(adata.var_names))
    unknown = adata.var_names[positions < 0]
    if len(unknown):
        raise ValueError(
            f"{len(unknown)} genes of adata are not in the model's vocabulary (e.g. {list(unknown[:5])}): "
            "subset adata to the model's genes (model.genes), as Arc's inference does"
        )
    return positions


class SEBatches:
    """Shuffled SE training batches over an AnnData, re-drawn every pass (an iterable for `train.fit`).

    Taught in chapter 11. X is read as log1p (count-like X is normalized first). `dataset_col` names the obs
    column whose categories are the datasets (batches, replicates) the dataset token learns.
    """

    def __init__(
        self,
        adata: ad.AnnData,
        model: StateEmbedding,
        batch_size: int,
        *,
        dataset_col: str | None = None,
        seed: int = 0,
    ) -> None:
        self.X = log1p_matrix(adata, "adata")
        self.vocabulary = _vocabulary(model, adata)
        self.config = model.config
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.dataset = None
        if dataset_col is not None:
            if dataset_col not in adata.obs:
                raise ValueError(f"dataset_col {dataset_col!r} is not a column of adata.obs")
            codes = adata.obs[dataset_col].astype("category").cat.codes.to_numpy()
            if codes.max() >= model.config.n_datasets:
                raise ValueError(
                    f"{codes.max() + 1} datasets in {dataset_col!r}, model has n_datasets={model.config.n_datasets}"
                )
            self.dataset = codes

    def __len__(self) -> int:
        return math.ceil(self.X.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        order = self.rng.permutation(self.X.shape[0])
        for start in range(0, len(order), self.batch_size):
            index = np.sort(order[start : start + self.batch_size])
            dataset = None if self.dataset is None else self.dataset[index]
            yield training_batch(gather_rows(self.X, index), self.vocabulary, self.config, self.rng, dataset=dataset)


def train_se(
    adata: ad.AnnData,
    gene_embeddings: np.ndarray | Mapping[str, np.ndarray] | None = None,
    *,
    config: SEConfig | None = None,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    dataset_col: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[StateEmbedding, History]:
    """Build and train an SE on the cells of `adata` in one call; returns (model, history). Taught in chapter 13.

    Chapter 11's recipe: `SEBatches` of `batch_size` cells, `train.fit` for `steps` updates with AdamW at `lr`
    (warm-up then cosine), no validation. `gene_embeddings` is one row per gene of `adata.var_names`, or
    {gene: vector} (see `gene_table`), or None for `adata.varm["gene_features"]` (the simulator's).
    `config` defaults to `SEConfig.small` at that width, with one dataset per category of `dataset_col`.
    Embed cells afterwards with `embed_cells(model, adata)`.
    """
    if gene_embeddings is None:
        if "gene_features" not in adata.varm:
            raise ValueError("pass gene_embeddings (one row per gene), or an adata with varm['gene_features']")
        gene_embeddings = adata.varm["gene_features"]
    if isinstance(gene_embeddings, Mapping):
        gene_embeddings = gene_table(list(adata.var_names), gene_embeddings)
    table = np.asarray(gene_embeddings, dtype=np.float32)
    if table.ndim != 2 or table.shape[0] != adata.n_vars:
        raise ValueError(f"gene_embeddings must have one row per gene of adata ({adata.n_vars}), got {table.shape}")
    if dataset_col is not None and dataset_col not in adata.obs:
        raise ValueError(f"dataset_col {dataset_col!r} is not a column of adata.obs")
    # as SEBatches codes them: one dataset per category, unused categories included
    n_datasets = 1 if dataset_col is None else len(adata.obs[dataset_col].astype("category").cat.categories)
    config = config or SEConfig.small(token_dim=table.shape[1], n_datasets=n_datasets)
    set_seed(seed)
    model = StateEmbedding(config, list(adata.var_names.astype(str)), table)
    batches = SEBatches(adata, model, batch_size, dataset_col=dataset_col, seed=seed)
    settings = TrainConfig(max_steps=steps, lr=lr, seed=seed, val_every=10**9, progress=progress)
    history = fit(model, batches, lambda m, b: m.loss(b), settings)
    return model.eval(), history


# --- using a trained model ------------------------------------------------------------------------------------
@torch.no_grad()
def embed_cells(
    model: StateEmbedding,
    adata: ad.AnnData,
    *,
    key: str | None = "X_se",
    batch_size: int = 256,
    seed: int = 0,
    cls_value_gene: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Embed every cell of adata (cells, output_dim [+10 dataset dims]); store it in `adata.obsm[key]` too.

    Taught in chapter 11. Sentences are drawn with `seed` (ties among zeros are random) and nothing is hidden.
    Pass `cls_value_gene=ARC_CLS_GENE` for a model trained by arc-state (its CLS slot carried that gene's weight).
    """
    from tqdm.auto import tqdm

    X = log1p_matrix(adata, "adata")
    vocabulary = _vocabulary(model, adata)
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in tqdm(range(0, X.shape[0], batch_size), desc="embedding cells", disable=not progress):
        rows = gather_rows(X, np.arange(start, min(start + batch_size, X.shape[0])))
        genes, values = cell_sentences(rows, model.config.sentence_length, rng, cls_value_gene=cls_value_gene)
        out.append(model(torch.from_numpy(vocabulary[genes]).to(device), torch.from_numpy(values).to(device)).cpu())
    model.train(was_training)
    embedding = torch.cat(out).numpy()
    if key is not None:
        adata.obsm[key] = embedding
    return embedding


@torch.no_grad()
def predict_masked_genes(
    model: StateEmbedding, X: np.ndarray, vocabulary: np.ndarray, hidden: np.ndarray, *, seed: int = 0
) -> np.ndarray:
    """Predict the hidden genes of each cell from the rest (cells, genes; values outside `hidden` are NaN).

    Taught in chapter 11: the hidden genes are left out of the sentences, the model embeds what remains and its
    decoder reads the hidden genes back, with the read depth of the visible genes.
    """
    X = np.asarray(X, dtype=np.float32)
    hidden = np.asarray(hidden, dtype=bool)
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    genes, values = cell_sentences(X, model.config.sentence_length, rng, hidden=hidden)
    encoding = model.encode(torch.from_numpy(vocabulary[genes]).to(device), torch.from_numpy(values).to(device))
    depth = read_depth(X, hidden)
    all_genes = torch.from_numpy(np.tile(vocabulary, (len(X), 1))).to(device)
    predicted = model.decode(encoding, all_genes, torch.as_tensor(depth, dtype=torch.float32, device=device))
    model.train(was_training)
    return np.where(hidden, predicted.cpu().numpy(), np.nan)


# --- judging an embedding -------------------------------------------------------------------------------------
def judge_embedding(
    train: np.ndarray, test: np.ndarray, train_labels: pd.DataFrame, test_labels: pd.DataFrame, *, k: int = 10
) -> pd.Series:
    """How well an embedding of held-out cells keeps each label apart. Taught in chapter 11.

    For every column of the labels: the accuracy of a k-nearest-neighbour classifier fit on the training cells'
    embedding and scored on the held-out cells (high: the label can be read from the embedding), and the
    silhouette of the held-out cells grouped by that label (from -1 to 1; high: tight, separate groups).
    """
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier

    if len(train) != len(train_labels) or len(test) != len(test_labels):
        raise ValueError("each embedding needs one row of labels per cell")
    scores = {}
    for column in train_labels.columns:
        knn = KNeighborsClassifier(n_neighbors=k).fit(train, train_labels[column].astype(str))
        scores[f"kNN {column}"] = knn.score(test, test_labels[column].astype(str))
    for column in train_labels.columns:
        scores[f"silhouette {column}"] = silhouette_score(test, test_labels[column].astype(str))
    return pd.Series(scores)


def majority_accuracy(train_labels: pd.DataFrame, test_labels: pd.DataFrame) -> pd.Series:
    """The kNN scores' floor: accuracy of always guessing each column's most frequent training label. Ch. 11."""
    return pd.Series(
        {f"kNN {c}": float((test_labels[c].astype(str) == train_labels[c].astype(str).mode()[0]).mean())
         for c in train_labels.columns}
    )  # fmt: skip


def compare_embeddings(
    embeddings: Mapping[str, tuple[np.ndarray, np.ndarray]],
    train_labels: pd.DataFrame,
    test_labels: pd.DataFrame,
    *,
    k: int = 10,
) -> pd.DataFrame:
    """`judge_embedding` for several embeddings {name: (train, test)}, one row each, plus the majority guess.

    Columns: kNN accuracy for each label, then silhouette for each label. Taught in chapter 11.
    """
    rows = {name: judge_embedding(a, b, train_labels, test_labels, k=k) for name, (a, b) in embeddings.items()}
    rows["majority guess"] = majority_accuracy(train_labels, test_labels)
    columns = [f"{kind} {label}" for kind in ("kNN", "silhouette") for label in train_labels.columns]
    return pd.DataFrame(rows).T[columns]


# --- Arc's checkpoints ---------------------------------------------------------------------------------------
# Our module names for Arc's (arc-state's StateEmbeddingModel); everything else has the same name.
ARC_NAMES = {
    "encoder.": "gene_projection.",
    "count_encoder.": "value_encoder.",
    "bin_encoder.": "bin_embedding.",
    "transformer_encoder.layers.": "blocks.",
    "decoder.": "cell_head.",
    "binary_decoder.": "expression_decoder.",
    "dataset_embedder.": "dataset_head.",
    "dataset_encoder.": "dataset_classifier.",
}


def _rename(key: str) -> str:
    for theirs, ours in ARC_NAMES.items():
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    return key


def load_arc_checkpoint(
    path: str | Path, *, gene_embeddings: Mapping[str, Tensor | np.ndarray] | None = None
) -> StateEmbedding:
    """Load a checkpoint of arc-state's `StateEmbeddingModel` (e.g. SE-600M) into the book's SE. Taught in ch. 11.

    The checkpoint is Lightning's: `state_dict` and `hyper_parameters`, whose `cfg` is an OmegaConf object, so it
    is unpickled with `weights_only=False` (only load files you trust) and needs `omegaconf`. The frozen protein
    embeddings ({gene symbol: vector}, SE-600M's `protein_embeddings.pt`) come from `gene_embeddings`, else from
    the checkpoint's `protein_embeds_dict` when Arc packed them in. Their order is the vocabulary's order.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(
            f"{path} is not a Lightning checkpoint of StateEmbeddingModel (no state_dict/hyper_parameters)"
        )
    hp, state = checkpoint["hyper_parameters"], checkpoint["state_dict"]
    cfg = hp["cfg"]
    if not cfg.model.counts:
        raise ValueError("this checkpoint was trained without expression encodings (model.counts=False): not SE")
    if gene_embeddings is None:
        gene_embeddings = checkpoint.get("protein_embeds_dict")
        if gene_embeddings is None:
            raise ValueError("the checkpoint carries no protein embeddings: pass gene_embeddings=torch.load(...)")
    dataset_correction = bool(cfg.model.get("dataset_correction", False))
    config = SEConfig(
        token_dim=hp["token_dim"], d_model=hp["d_model"], n_heads=hp["nhead"], d_hidden=hp["d_hid"],
        n_layers=hp["nlayers"], output_dim=hp["output_dim"], dataset_correction=dataset_correction,
        n_datasets=state["dataset_encoder.4.weight"].shape[0] if dataset_correction else 1,
        read_depth=bool(cfg.model.rda), sentence_length=cfg.dataset.pad_length,
        n_expressed_queries=cfg.dataset.P, n_unexpressed_queries=cfg.dataset.N, n_shared_queries=cfg.dataset.S,
    )  # fmt: skip
    genes = list(gene_embeddings)
    table = np.stack([np.asarray(torch.as_tensor(v, dtype=torch.float32)) for v in gene_embeddings.values()])
    model = StateEmbedding(config, genes, table)
    # pe_embedding is the protein table (given above); gene_embedding_layer is a second name for `encoder`.
    skipped = ("pe_embedding.", "gene_embedding_layer.")
    weights = {_rename(k): v for k, v in state.items() if not k.startswith(skipped)}
    weights["gene_embeddings"] = model.gene_embeddings
    model.load_state_dict(weights, strict=True)
    return model.eval()
