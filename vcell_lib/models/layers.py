"""Building blocks shared by the book's models: an MLP and a transformer encoder block written out.

Taught in chapter 11. Parameter names follow Arc's code (arc-state), so that its checkpoints load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP", "EncoderBlock", "SkipBlock"]

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
