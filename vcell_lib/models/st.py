"""ST, the State Transition model: a set of control cells and a perturbation in, the set of perturbed cells out.

Taught in chapter 12. The architecture is Arc's `StateTransitionPerturbationModel` (arc-state 0.11) with its Llama
backbone, written out. Each cell of a set of S control cells becomes one token: an MLP of the perturbation (the
same for every cell of the set) plus a projection of the cell's expression (plus a batch embedding, optionally).
A bidirectional Llama lets every cell attend to every other; with no positional information, permuting the S
input cells permutes the S predictions the same way. An MLP reads each token back to gene space.

Two ways back, as in the reference (`output_space`):
- "all" (the VCC recipe, all genes): `out = bottleneck(project_out(h) + basal)`, the residual on the control's
  expression, then `Linear(G, G/8) -> GELU -> Linear(G/8, G)` (Arc's `final_down_then_up`), not itself a residual;
- "gene" (e.g. highly variable genes): `out = project_out(h + basal_embedding)`, the residual in hidden space.
With `residual=False` (Arc's `predict_residual=False`) the control enters only through its token: `out =
project_out(h)`, in either space (the bottleneck is then unused).
Both end in a ReLU (Arc applies it whenever there is no gene decoder), so predicted expression is never negative
and often exactly zero. The loss is the energy distance between the predicted and the observed set, per set.

ST can also read and write cell *embeddings* (Arc's `embed_key`, e.g. SE's `X_state`; chapter 13): then `n_genes`
is the embedding's width, the output keeps its sign (no ReLU), and a gene decoder (`decoder_genes > 0`, Arc's
`LatentToGeneDecoder`: Linear, LayerNorm, GELU, Dropout per hidden width, then Linear and ReLU) reads expression
back from each predicted embedding; the loss adds the energy distance of the decoded sets to the observed
expression (`decoder_weight`, Arc's default 1), trained through the whole model as Arc does by default.

Differences from the reference, none of which changes a prediction: sets come in as (sets, S, genes) rather
than flattened and cut to `cell_set_len`, so any S works; batches are integer codes (not one-hot); the loss is a
mean over sets (the reference's `nanmean` would skip a set whose loss is NaN).
`load_arc_checkpoint` reads a checkpoint of Arc's model into this one: same weights, same predictions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import MLP, LlamaEncoder
from .losses import energy_distance

__all__ = ["ARC_NAMES", "GeneDecoder", "STConfig", "StateTransition", "load_arc_checkpoint"]

_OUTPUT_SPACES = ("all", "gene")
_LOSSES = ("energy", "mse")


@dataclass(frozen=True)
class STConfig:
    """Sizes and options of an ST model. Taught in chapter 12.

    The defaults are arc-state's `state_sm` (the VCC 2025 recipe); `tiny` is for tests. Names in comments are
    arc-state's, for reading its configs.
    """

    n_genes: int  # G: genes per cell, in and out (input_dim = output_dim)
    pert_dim: int  # P: width of the perturbation vector (one-hot, or gene features such as ESM-2's)
    hidden_dim: int = 672  # token width (hidden_dim = hidden_size)
    n_layers: int = 4  # Llama blocks (num_hidden_layers)
    n_heads: int = 8  # (num_attention_heads); head width hidden_dim / n_heads
    ffn_dim: int = 2688  # SwiGLU width (intermediate_size)
    cell_set_len: int = 128  # S: cells per set when training and predicting (the model takes any S)
    n_encoder_layers: int = 4  # Linear layers of the perturbation MLP (and of the basal MLP when basal_mlp)
    n_decoder_layers: int = 4  # Linear layers of project_out
    basal_mlp: bool = False  # the basal encoder is an MLP (use_basal_projection=True) or one Linear (False)
    n_batches: int = 0  # > 0: a learned embedding of each cell's batch is added to its token (batch_encoder)
    output_space: str = "all"  # "all": residual on the expression + bottleneck; "gene": residual in hidden space
    residual: bool = True  # add the control back at the output (predict_residual); False: out = project_out(h)
    activation: str = "gelu"  # of the MLPs
    dropout: float = 0.1  # in the MLPs (arc-state's default)
    attention_dropout: float = 0.0
    norm_eps: float = 1e-6  # RMSNorm's epsilon (rms_norm_eps)
    loss: str = "energy"  # "energy": energy distance per set (distributional_loss); "mse": mean squared error
    decoder_genes: int = 0  # > 0: cells are embeddings of width n_genes, decoded to this many genes (gene_decoder)
    decoder_hidden: tuple[int, ...] = (1024, 1024, 512)  # the decoder's hidden widths (state tx train's default)
    decoder_weight: float = 1.0  # weight of the decoded expression's energy distance in the loss (decoder_weight)
    decoder_dropout: float = 0.1  # dropout in the gene decoder (decoder_dropout)

    def __post_init__(self) -> None:
        for name in ("n_genes", "pert_dim", "hidden_dim", "n_layers", "n_heads", "ffn_dim", "cell_set_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.hidden_dim % self.n_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by n_heads ({self.n_heads})")
        if self.output_space not in _OUTPUT_SPACES:
            raise ValueError(f"output_space must be one of {_OUTPUT_SPACES}, got {self.output_space!r}")
        if self.output_space == "all" and self.n_genes < 8:
            raise ValueError(f"output_space='all' narrows to n_genes // 8: n_genes must be >= 8, got {self.n_genes}")
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if self.decoder_genes < 0 or self.decoder_weight < 0 or any(w < 1 for w in self.decoder_hidden):
            raise ValueError(
                f"decoder_genes ({self.decoder_genes}) and decoder_weight ({self.decoder_weight}) must be >= 0 and "
                f"the decoder_hidden widths {self.decoder_hidden} >= 1"
            )

    @classmethod
    def tiny(cls, n_genes: int, pert_dim: int, **changes) -> STConfig:
        """A model of a few thousand parameters, for tests."""
        sizes = dict(hidden_dim=16, n_layers=2, n_heads=2, ffn_dim=32, cell_set_len=8, dropout=0.0, decoder_dropout=0.0)
        return replace(cls(n_genes, pert_dim, **sizes), **changes)

    @classmethod
    def small(cls, n_genes: int, pert_dim: int, **changes) -> STConfig:
        """The book's CPU size (chapter 12): width 128, 2 Llama blocks of 4 heads, sets of 32 cells, the residual
        in hidden space (`output_space="gene"`), 2-layer MLPs, no dropout; a few hundred steps train it."""
        sizes = dict(hidden_dim=128, n_layers=2, n_heads=4, ffn_dim=256, cell_set_len=32, n_encoder_layers=2,
                     n_decoder_layers=2, output_space="gene", dropout=0.0, decoder_dropout=0.0)  # fmt: skip
        return replace(cls(n_genes, pert_dim, **sizes), **changes)

    @classmethod
    def state_sm(cls, n_genes: int, pert_dim: int, **changes) -> STConfig:
        """arc-state's `state_sm`: width 672, 4 Llama blocks of 8 heads, SwiGLU 2688, sets of 128 cells."""
        return replace(cls(n_genes, pert_dim), **changes)


class StateTransition(nn.Module):
    """The ST model: (control cells, perturbation[, batch]) per set -> predicted perturbed cells. Taught in ch. 12.

    Module names are arc-state's except `backbone` (its `transformer_backbone`), so its weights load by name.
    """

    def __init__(self, config: STConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.pert_encoder = MLP(
            c.pert_dim, c.hidden_dim, c.hidden_dim, c.n_encoder_layers, activation=c.activation, dropout=c.dropout
        )
        if c.basal_mlp:
            self.basal_encoder: nn.Module = MLP(
                c.n_genes, c.hidden_dim, c.hidden_dim, c.n_encoder_layers, activation=c.activation, dropout=c.dropout
            )
        else:
            self.basal_encoder = nn.Linear(c.n_genes, c.hidden_dim)
        self.batch_encoder = nn.Embedding(c.n_batches, c.hidden_dim) if c.n_batches else None
        self.backbone = LlamaEncoder(
            c.hidden_dim, c.n_heads, c.ffn_dim, c.n_layers, eps=c.norm_eps, dropout=c.attention_dropout
        )
        self.project_out = MLP(
            c.hidden_dim, c.hidden_dim, c.n_genes, c.n_decoder_layers, activation=c.activation, dropout=c.dropout
        )
        if c.output_space == "all":
            self.final_down_then_up = nn.Sequential(
                nn.Linear(c.n_genes, c.n_genes // 8), nn.GELU(), nn.Linear(c.n_genes // 8, c.n_genes)
            )
        self.gene_decoder = None
        if c.decoder_genes:
            self.gene_decoder = GeneDecoder(c.n_genes, c.decoder_genes, c.decoder_hidden, c.decoder_dropout)

    def forward(self, basal: Tensor, pert: Tensor, batch: Tensor | None = None) -> Tensor:
        """Predicted expression (sets, S, G) of the perturbed cells (their embeddings, with a gene decoder).

        Parameters
        ----------
        basal : (sets, S, G) the control cells' expression (log1p), or embeddings, one control per predicted cell.
        pert : (sets, S, P) the perturbation of each cell (the same row for every cell of a set).
        batch : (sets, S) integer batch codes in [0, n_batches), only for a model with `n_batches > 0`.
        """
        c = self.config
        if basal.ndim != 3 or basal.shape[-1] != c.n_genes:
            raise ValueError(f"basal must have shape (sets, S, {c.n_genes}), got {tuple(basal.shape)}")
        if pert.shape != (*basal.shape[:2], c.pert_dim):
            raise ValueError(f"pert must have shape {(*basal.shape[:2], c.pert_dim)} (one row per cell), "
                             f"got {tuple(pert.shape)}")  # fmt: skip
        basal_embedding = self.basal_encoder(basal)
        tokens = self.pert_encoder(pert) + basal_embedding
        if self.batch_encoder is not None:
            if batch is None or batch.shape != basal.shape[:2]:
                got = None if batch is None else tuple(batch.shape)
                raise ValueError(f"this model embeds batches (n_batches={c.n_batches}): pass batch of shape "
                                 f"{tuple(basal.shape[:2])}, got {got}")  # fmt: skip
            tokens = tokens + self.batch_encoder(batch.long())
        elif batch is not None:
            raise ValueError("this model has no batch embedding (n_batches=0): pass batch=None")
        h = self.backbone(tokens)
        if not c.residual:
            out = self.project_out(h)
        elif c.output_space == "all":
            out = self.final_down_then_up(self.project_out(h) + basal)
        else:
            out = self.project_out(h + basal_embedding)
        return out if self.gene_decoder is not None else torch.relu(out)

    def decode(self, latent: Tensor) -> Tensor:
        """Expression (..., decoder_genes) read from predicted embeddings (..., n_genes) by the gene decoder."""
        if self.gene_decoder is None:
            raise ValueError("this model has no gene decoder (decoder_genes=0): its output is already expression")
        return self.gene_decoder(latent)

    def loss(self, pred: Tensor, target: Tensor, target_genes: Tensor | None = None) -> Tensor:
        """ST's training loss between predicted and observed sets (sets, S, G): a scalar. Taught in chapter 12.

        "energy": the energy distance between each predicted set and its observed set (no cell is paired with
        another), averaged over sets; "mse": the mean squared error, cell by cell (it needs paired cells).
        With a gene decoder, `target_genes` (sets, S, decoder_genes) is the observed expression, and the same
        loss between the decoded sets and it is added with `decoder_weight` (chapter 13).
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
        distance = F.mse_loss if self.config.loss == "mse" else lambda x, y: energy_distance(x, y).mean()
        loss = distance(pred, target)
        if self.gene_decoder is None:
            if target_genes is not None:
                raise ValueError("target_genes is given but the model has no gene decoder (decoder_genes=0)")
            return loss
        if target_genes is None or target_genes.shape != (*pred.shape[:-1], self.config.decoder_genes):
            got = None if target_genes is None else tuple(target_genes.shape)
            raise ValueError(f"this model decodes {self.config.decoder_genes} genes: pass target_genes of shape "
                             f"{(*pred.shape[:-1], self.config.decoder_genes)}, got {got}")  # fmt: skip
        return loss + self.config.decoder_weight * distance(self.decode(pred), target_genes)


class GeneDecoder(nn.Module):
    """Arc's `LatentToGeneDecoder`: embeddings -> expression, [Linear, LayerNorm, GELU, Dropout] per hidden width,
    then Linear and ReLU (expression is never negative). Taught in chapter 13."""

    def __init__(self, latent_dim: int, n_genes: int, hidden: tuple[int, ...], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width_in, width_out in zip((latent_dim, *hidden[:-1]), hidden):
            layers += [nn.Linear(width_in, width_out), nn.LayerNorm(width_out), nn.GELU(), nn.Dropout(dropout)]
        layers += [nn.Linear(hidden[-1] if hidden else latent_dim, n_genes), nn.ReLU()]
        self.decoder = nn.Sequential(*layers)

    def forward(self, latent: Tensor) -> Tensor:
        return self.decoder(latent)


# --- Arc's checkpoints ---------------------------------------------------------------------------------------
# Our module names for Arc's (arc-state's StateTransitionPerturbationModel); everything else has the same name.
# Inside the backbone the names are Hugging Face's LlamaModel's, which LlamaEncoder keeps.
ARC_NAMES = {"transformer_backbone.": "backbone."}

# Keys of Arc's state dict with no counterpart here: Llama's token table, zeroed, frozen and never read (the inputs
# are vectors, passed as `inputs_embeds`). Rotary embeddings have no weights to drop (Arc's NoRoPE has none).
_UNUSED = ("transformer_backbone.embed_tokens.",)

# Options of Arc's model that this one does not have: (hyper-parameter, its value that we support).
_UNSUPPORTED = (
    ("confidence_token", False),
    ("use_batch_token", False),
    ("batch_predictor", False),
    ("mask_attn", False),
    ("finetune_vci_decoder", False),
)


def _rename(key: str) -> str:
    for theirs, ours in ARC_NAMES.items():
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    return key


def load_arc_checkpoint(path: str | Path) -> StateTransition:
    """Load a checkpoint of arc-state's `StateTransitionPerturbationModel` into the book's ST. Taught in ch. 12.

    The checkpoint is Lightning's (`state_dict` and `hyper_parameters`, e.g. `final.ckpt` of `state tx train`),
    unpickled with `weights_only=False`: only load files you trust. Supported: the bidirectional Llama backbone
    (`state_sm`, `state`, `state_lg`) with expression in and out (`output_space` "all" or "gene"; "embedding"
    has the same forward as "gene"), a Linear or MLP basal encoder, with or without batch embedding. Not supported,
    with an error that names the option: the GPT-2 backbone, a causal Llama, grouped-query attention, LoRA
    adapters, the confidence and batch tokens, the batch predictor, self-only attention (`mask_attn`), a residual
    gene decoder, and a gene decoder on a model whose cells are expression (`embed_key` None or "X_hvg"). A model
    on embeddings (`embed_key` such as "X_state") loads with its gene decoder (chapter 13); one without a decoder
    (`gene_decoder_bool: False`, as in `state_sm.yaml`) loads as arc-state runs it: its outputs are embeddings,
    through a ReLU.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict/hyper_parameters)")
    hp, state = checkpoint["hyper_parameters"], checkpoint["state_dict"]

    def refuse(what: str) -> None:
        raise ValueError(f"{path}: {what} is not supported by the book's ST (see load_arc_checkpoint's docstring)")

    if hp.get("transformer_backbone_key") != "llama":
        refuse(f"transformer_backbone_key={hp.get('transformer_backbone_key')!r} (only 'llama' is)")
    for name, supported in _UNSUPPORTED:
        if bool(hp.get(name, supported)) != supported:
            refuse(f"{name}={hp.get(name)!r}")
    if (hp.get("lora") or {}).get("enable", False):
        refuse("a LoRA-adapted backbone (lora.enable=True)")
    decoder = dict(hp.get("decoder_cfg") or {})
    if any(k.startswith("gene_decoder.") for k in state):
        if hp.get("embed_key") in (None, "X_hvg"):
            refuse(f"a gene decoder (gene_decoder.* weights) on expression (embed_key={hp.get('embed_key')!r})")
        if not decoder or decoder.get("residual_decoder", False):
            refuse("a gene decoder without decoder_cfg, or a residual one (residual_decoder=True)")
        if decoder.get("latent_dim", hp["output_dim"]) != hp["output_dim"]:
            refuse(f"a gene decoder reading {decoder['latent_dim']} dimensions from outputs of {hp['output_dim']}")
    else:
        decoder = {}
    if hp["input_dim"] != hp["output_dim"]:
        refuse(f"input_dim {hp['input_dim']} != output_dim {hp['output_dim']}")
    llama = dict(hp["transformer_backbone_kwargs"])
    n_heads = llama["num_attention_heads"]
    if not llama.get("bidirectional_attention", False):
        refuse("a causal Llama (bidirectional_attention=False)")
    if llama.get("num_key_value_heads", n_heads) != n_heads:
        refuse(f"grouped-query attention (num_key_value_heads={llama['num_key_value_heads']})")
    head_dim = llama.get("head_dim") or hp["hidden_dim"] // n_heads
    if llama["hidden_size"] != hp["hidden_dim"] or head_dim * n_heads != hp["hidden_dim"]:
        refuse(f"hidden_size {llama['hidden_size']} and head_dim {head_dim} with hidden_dim {hp['hidden_dim']}")
    if llama.get("hidden_act", "silu") != "silu" or llama.get("attention_bias") or llama.get("mlp_bias"):
        refuse("a Llama with another activation than SiLU, or with biases")
    loss = "mse" if hp.get("loss", "energy") == "mse" else "energy"
    if hp.get("loss", "energy") not in ("energy", "mse") or hp.get("distributional_loss", "energy") != "energy":
        warnings.warn(f"training loss {hp.get('loss')}/{hp.get('distributional_loss')} becomes 'energy'", stacklevel=2)
    config = STConfig(
        n_genes=hp["input_dim"], pert_dim=hp["pert_dim"], hidden_dim=hp["hidden_dim"],
        n_layers=llama["num_hidden_layers"], n_heads=n_heads, ffn_dim=llama["intermediate_size"],
        cell_set_len=hp.get("cell_set_len", 256), n_encoder_layers=hp.get("n_encoder_layers", 2),
        n_decoder_layers=hp.get("n_decoder_layers", 2), basal_mlp=bool(hp.get("use_basal_projection", True)),
        n_batches=hp["batch_dim"] if hp.get("batch_encoder") and hp.get("batch_dim") else 0,
        output_space="all" if hp.get("output_space", "gene") == "all" else "gene",
        residual=bool(hp.get("predict_residual", True)),
        activation=str(hp.get("activation", "gelu")).lower(), dropout=hp.get("dropout", 0.1),
        attention_dropout=llama.get("attention_dropout", 0.0), norm_eps=llama.get("rms_norm_eps", 1e-6), loss=loss,
        decoder_genes=decoder.get("gene_dim", 0), decoder_hidden=tuple(decoder.get("hidden_dims", (512, 1024))),
        decoder_weight=float(hp.get("decoder_weight", 1.0)), decoder_dropout=float(decoder.get("dropout", 0.1)),
    )  # fmt: skip
    model = StateTransition(config)
    weights = {_rename(k): v for k, v in state.items() if not k.startswith(_UNUSED)}
    model.load_state_dict(weights, strict=True)
    return model.eval()
