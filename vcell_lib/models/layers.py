"""Building blocks shared by the book's models: an MLP and two transformer blocks, written out.

Taught in chapters 11 (MLP, EncoderBlock, SkipBlock: SE) and 12 (RMSNorm, SwiGLU, SelfAttention, LlamaBlock,
LlamaEncoder: ST's backbone). Parameter names follow Arc's code (arc-state) and, for the Llama parts, Hugging Face's
`LlamaModel`, so that their checkpoints load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP", "EncoderBlock", "LlamaBlock", "LlamaEncoder", "RMSNorm", "SelfAttention", "SkipBlock", "SwiGLU"]

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class MLP(nn.Sequential):
    """`n_layers` Linear layers with an activation and dropout between them. Taught in chapter 11.

    The layout (Linear, activation, Dropout, ..., Linear) is arc-state's `build_mlp`, so a state dict saved by
    one loads into the other. `n_layers=1` is a single Linear.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        n_layers: int = 2,
        *,
        activation: str = "gelu",
        dropout: float = 0.0,
    ) -> None:
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        widths = [in_dim] + [hidden_dim] * (n_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for k, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(width_in, width_out))
            if k < n_layers - 1:
                layers += [_ACTIVATIONS[activation](), nn.Dropout(dropout)]
        super().__init__(*layers)


class EncoderBlock(nn.Module):
    """One post-LayerNorm transformer encoder block (self-attention, then a GELU feed-forward). Taught in chapter 11.

    `x + attention(x)` then LayerNorm, `x + FFN(x)` then LayerNorm: the order of the original transformer and of
    SE. No positional information: the block treats its input as a set of tokens. `key_padding_mask` (True where
    a token must be ignored) keeps those tokens from being attended to.
    """

    def __init__(self, d_model: int, n_heads: int, d_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv_proj = nn.Linear(d_model, 3 * d_model)  # queries, keys and values in one matrix
        self.out_proj = nn.Linear(d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_hidden)
        self.linear2 = nn.Linear(d_hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def attention(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Multi-head self-attention of x (batch, tokens, d_model); returns the same shape."""
        batch, tokens, width = x.shape
        heads = self.qkv_proj(x).view(batch, tokens, 3, self.n_heads, width // self.n_heads)
        q, k, v = heads.permute(2, 0, 3, 1, 4)  # each (batch, heads, tokens, head width)
        allowed = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        x = self.norm1(x + self.drop(self.attention(x, key_padding_mask)))
        return self.norm2(x + self.drop(self.linear2(self.drop(F.gelu(self.linear1(x))))))


class SkipBlock(nn.Module):
    """LayerNorm(x + Linear(ReLU(Linear(x)))), widening to twice the input inside. Taught in chapter 11."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(width, 2 * width)
        self.dense = nn.Linear(2 * width, width)
        self.layer_norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer_norm(x + self.dense(torch.relu(self.intermediate_dense(x))))


# --- the Llama block (ST's backbone) -------------------------------------------------------------------------
# Hugging Face's `LlamaModel` made bidirectional, as arc-state uses it, is `LlamaEncoder` below with the same
# parameter names: `layers.{i}.self_attn.{q,k,v,o}_proj`, `layers.{i}.mlp.{gate,up,down}_proj`,
# `layers.{i}.input_layernorm`, `layers.{i}.post_attention_layernorm` and the final `norm`. Its state dict loads
# into ours once `embed_tokens.weight` is dropped: the token table is never used when the inputs are vectors.
# Llama's Linear layers have no bias (its config's `attention_bias` and `mlp_bias` are False by default, and
# arc-state never sets them). arc-state's changes to Llama, and how they appear here:
# - no causal mask (its `LlamaBidirectionalModel` passes an all-ones mask and `is_causal=False`): every cell
#   attends to every cell;
# - no rotary position embedding (its `NoRoPE` returns cos = 1, sin = 0, which leaves queries and keys as they
#   are): nothing tells the cells apart by position, so the encoder is permutation-equivariant over the set.


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) times a learned gain: LayerNorm without centring and bias. Taught in chapter 12.

    Computed in float32 whatever the input's type, as Llama does.
    """

    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normalized = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normalized.to(x.dtype)


class SwiGLU(nn.Module):
    """Llama's feed-forward network: down(SiLU(gate(x)) * up(x)), no biases. Taught in chapter 12.

    The gate, a SiLU of one projection, scales another projection element by element.
    """

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_hidden, bias=False)
        self.up_proj = nn.Linear(d_model, d_hidden, bias=False)
        self.down_proj = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention without mask or positions: every token attends to every token. Taught in ch. 12.

    Queries, keys and values are separate Linear maps without bias (Llama's q_proj, k_proj, v_proj), each head has
    width d_model / n_heads, and `dropout` acts on the attention weights while training (Llama's
    `attention_dropout`).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape

        def heads(projection: nn.Linear) -> Tensor:  # (batch, heads, tokens, head width)
            return projection(x).view(batch, tokens, self.n_heads, width // self.n_heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q_proj), heads(self.k_proj), heads(self.v_proj),
            dropout_p=self.dropout if self.training else 0.0, is_causal=False,
        )  # fmt: skip
        return self.o_proj(out.transpose(1, 2).reshape(batch, tokens, width))


class LlamaBlock(nn.Module):
    """One pre-norm Llama block: x + attention(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)). Taught in chapter 12.

    Pre-norm (the norm inside the residual branch, unlike `EncoderBlock`'s post-norm) leaves the residual stream
    untouched from input to output, which keeps deep stacks easy to train.
    """

    def __init__(self, d_model: int, n_heads: int, d_hidden: int, *, eps: float = 1e-6, dropout: float = 0.0) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(d_model, eps)
        self.self_attn = SelfAttention(d_model, n_heads, dropout)
        self.post_attention_layernorm = RMSNorm(d_model, eps)
        self.mlp = SwiGLU(d_model, d_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaEncoder(nn.Module):
    """`n_layers` LlamaBlocks then a final RMSNorm: a bidirectional Llama without token table. Taught in chapter 12.

    Maps tokens (batch, tokens, d_model) to the same shape; permuting the tokens permutes the output the same way.
    Hugging Face's `LlamaModel` weights load by name, less `embed_tokens` (see the note above).
    """

    def __init__(
        self, d_model: int, n_heads: int, d_hidden: int, n_layers: int, *, eps: float = 1e-6, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            LlamaBlock(d_model, n_heads, d_hidden, eps=eps, dropout=dropout) for _ in range(n_layers)
        )
        self.norm = RMSNorm(d_model, eps)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)
