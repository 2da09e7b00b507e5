"""Gene embeddings from a protein language model (ESM-2), as STATE builds them.

Taught in chapter 10. Every protein isoform of a gene runs through ESM-2; its per-residue vectors are
mean-pooled (special tokens and padding excluded) into an isoform vector, and the isoform vectors
are averaged into the gene vector. We use fair-esm, the ESM authors' own implementation: its
alphabet ships with the package, so tokenization is exact offline, and `load_esm2` names the same
checkpoints STATE used (up to esm2_t48_15B_UR50D).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "AMINO_ACIDS",
    "ESM2_MODELS",
    "ESM2",
    "clean_sequence",
    "embed_sequences",
    "gene_embeddings",
    "load_esm2",
    "mean_pool",
    "read_fasta",
    "residue_mask",
    "windows",
]

AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWY")
"""The 20 standard amino acids."""
_ESM_EXTRA = frozenset("XBUZO")  # letters ESM-2's alphabet also knows: unknown, ambiguous, rare

ESM2_MODELS: dict[str, tuple[int, int, int]] = {
    "esm2_t6_8M_UR50D": (6, 320, 20),
    "esm2_t12_35M_UR50D": (12, 480, 20),
    "esm2_t30_150M_UR50D": (30, 640, 20),
    "esm2_t33_650M_UR50D": (33, 1280, 20),
    "esm2_t36_3B_UR50D": (36, 2560, 40),
    "esm2_t48_15B_UR50D": (48, 5120, 40),
}
"""The released ESM-2 models: name -> (layers, embedding width, attention heads)."""

MAX_RESIDUES = 1022
"""ESM-2 was trained on crops of 1,022 residues (1,024 tokens with the start and end tokens)."""


# ----------------------------------------------------------------------------- sequences


def read_fasta(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a (gzipped) FASTA into {gene symbol: [sequences]}; several records of a gene are isoforms. Ch. 10.

    The symbol is the header's first field, up to "|" or whitespace (">STAT1|HGNC:11362|..." -> "STAT1").
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"path: no such FASTA file {str(path)!r}")
    opener = gzip.open if path.suffix == ".gz" else open
    genes: dict[str, list[str]] = {}
    symbol, chunks = None, []
    with opener(path, "rt") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if line.startswith(">"):
                if symbol is not None:
                    genes.setdefault(symbol, []).append("".join(chunks))
                symbol = line[1:].split("|")[0].split()[0] if line[1:].strip() else ""
                if not symbol:
                    raise ValueError(f"{path.name}:{number}: header without a gene symbol")
                chunks = []
            elif line:
                if symbol is None:
                    raise ValueError(f"{path.name}:{number}: sequence before the first '>' header: not a FASTA file?")
                chunks.append(line)
    if symbol is not None:
        genes.setdefault(symbol, []).append("".join(chunks))
    if not genes:
        raise ValueError(f"{path.name}: no FASTA records found")
    return genes


def clean_sequence(sequence: str, *, nonstandard: str = "error", name: str = "sequence") -> str:
    """Validate a protein sequence; `nonstandard` says what to do with letters beyond the 20. Ch. 10.

    "error" (default) raises; "keep" keeps the letters ESM-2 knows (X, B, U, Z, O); "to_x" turns
    them into X, ESM-2's unknown residue. Lowercase letters, digits and other symbols always raise.
    """
    if nonstandard not in {"error", "keep", "to_x"}:
        raise ValueError(f"nonstandard must be 'error', 'keep' or 'to_x', got {nonstandard!r}")
    sequence = sequence.strip().rstrip("*")  # a trailing stop symbol is common in FASTA files
    if not sequence:
        raise ValueError(f"{name} is empty")
    letters = set(sequence)
    invalid = letters - AMINO_ACIDS - _ESM_EXTRA
    if invalid:
        hint = " (lowercase: use sequence.upper())" if any(c.islower() for c in invalid) else ""
        raise ValueError(f"{name} has characters that are not amino acids: {sorted(invalid)}{hint}")
    rare = letters & _ESM_EXTRA
    if rare and nonstandard == "error":
        where = sequence.index(min(rare, key=sequence.index))
        raise ValueError(
            f"{name} has non-standard residues {sorted(rare)} (first at position {where + 1}); "
            "pass nonstandard='keep' to let ESM-2 see them or 'to_x' to mark them unknown"
        )
    if rare and nonstandard == "to_x":
        sequence = "".join("X" if c in _ESM_EXTRA else c for c in sequence)
    return sequence


def windows(length: int, size: int = MAX_RESIDUES, stride: int | None = None) -> list[tuple[int, int]]:
    """Overlapping [start, end) windows covering a protein longer than the model's context. Ch. 10.

    Windows of `size` residues every `stride` (default size // 2), the last one aligned to the end.
    Every residue is covered; the per-residue vectors of overlapping windows are averaged.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    stride = size // 2 if stride is None else stride
    if not 1 <= stride <= size:
        raise ValueError(f"stride must be in [1, size], got {stride}")
    if length <= size:
        return [(0, length)]
    starts = list(range(0, length - size, stride)) + [length - size]
    return [(s, s + size) for s in starts]


def residue_mask(tokens, alphabet):
    """True where a token is an amino acid: not the start, end or padding token. Taught in chapter 10."""
    special = {alphabet.cls_idx, alphabet.eos_idx, alphabet.padding_idx}
    mask = tokens.new_ones(tokens.shape, dtype=bool)
    for index in special:
        mask &= tokens != index
    return mask


def mean_pool(residues, mask):
    """Mean of per-residue vectors where `mask` is true: (batch, tokens, width) -> (batch, width). Ch. 10."""
    weights = mask.to(residues.dtype).unsqueeze(-1)
    counts = weights.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("mean_pool: a row of mask selects no residue")
    return (residues * weights).sum(dim=1) / counts


# ----------------------------------------------------------------------------- the model


@dataclass
class ESM2:
    """A loaded ESM-2: the network, its alphabet, and whether its weights are the pretrained ones."""

    model: object
    alphabet: object
    name: str
    pretrained: bool

    @property
    def width(self) -> int:
        return int(self.model.embed_dim)

    @property
    def layers(self) -> int:
        return int(self.model.num_layers)

    def weights_id(self) -> str:
        """ "pretrained" for released weights (the name identifies them); for others, a digest of the weights."""
        if self.pretrained:
            return "pretrained"
        digest = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
        return f"random-{digest.hexdigest()[:12]}"


def load_esm2(name: str = "esm2_t6_8M_UR50D", *, fallback: bool = True, seed: int = 0) -> ESM2:
    """Load a pretrained ESM-2 by name; offline, fall back LOUDLY to a small random ESM-2. Taught in ch. 10.

    Downloads go through fair-esm (torch hub cache). When the weights cannot be fetched (no internet),
    and `fallback` is true, returns a randomly initialized ESM-2 of the 8M architecture (6 layers,
    width 320) and warns that its embeddings carry no biology; with fallback=False the error is raised.
    """
    import esm
    import torch

    if name not in ESM2_MODELS:
        raise ValueError(f"unknown ESM-2 model {name!r}; choose one of {list(ESM2_MODELS)}")
    try:
        model, alphabet = esm.pretrained.load_model_and_alphabet(name)
        return ESM2(model.eval(), alphabet, name, pretrained=True)
    except OSError as error:  # URLError / HTTPError / no network: no weights to be had
        if not fallback:
            raise
        warnings.warn(
            f"could not download {name} ({type(error).__name__}: {error}); using a RANDOMLY INITIALIZED "
            "ESM-2 (6 layers, width 320) instead. Its embeddings carry no biology: use them to test code, "
            "not to draw conclusions",
            stacklevel=2,
        )
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    layers, width, heads = ESM2_MODELS["esm2_t6_8M_UR50D"]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the same random model every time; the caller's torch RNG is restored below
    model = esm.model.esm2.ESM2(num_layers=layers, embed_dim=width, attention_heads=heads, alphabet=alphabet)
    torch.random.set_rng_state(generator_state)
    return ESM2(model.eval(), alphabet, "random_esm2_t6", pretrained=False)


def embed_sequences(
    esm2: ESM2,
    sequences: Sequence[str],
    *,
    layer: int | None = None,
    max_tokens: int | None = None,
    window: int = MAX_RESIDUES,
    progress: bool = False,
    device: str | None = None,
) -> np.ndarray:
    """Mean-pooled embedding of each protein: (n, width) float32. Taught in chapter 10.

    Proteins longer than `window` residues are cut into half-overlapping windows; per-residue vectors
    of overlapping windows are averaged before pooling. Windows are sorted by length and batched up
    to `max_tokens` tokens (default: 1,024 on a CPU, where small batches ran fastest in
    bench/esm_throughput.py, and 16,384 on a GPU), so similar lengths share a batch and little
    padding is computed.
    `layer` defaults to the last layer. The model runs where it is (move it with esm2.model.to("cuda")),
    unless `device` is given, in which case it is moved there.
    """
    import torch

    layer = esm2.layers if layer is None else layer
    if not 0 <= layer <= esm2.layers:
        raise ValueError(f"layer must be in [0, {esm2.layers}], got {layer}")
    model = esm2.model if device is None else esm2.model.to(device)
    device = next(model.parameters()).device
    max_tokens = max_tokens or (16384 if device.type == "cuda" else 1024)
    pieces = [(i, s, e) for i, seq in enumerate(sequences) for s, e in windows(len(seq), window)]
    pieces.sort(key=lambda piece: piece[2] - piece[1])
    batches, current = [], []
    for piece in pieces:
        if current and (len(current) + 1) * (piece[2] - piece[1] + 2) > max_tokens:
            batches.append(current)
            current = []
        current.append(piece)
    batches.append(current)

    width = esm2.width
    sums = [np.zeros((len(seq), width), dtype=np.float64) for seq in sequences]
    covers = [np.zeros(len(seq), dtype=np.float64) for seq in sequences]
    converter = esm2.alphabet.get_batch_converter()
    if progress:
        from tqdm.auto import tqdm  # imported only when asked for

        batches = tqdm(batches, desc=f"embedding with {esm2.name}", unit="batch")
    with torch.inference_mode():
        for batch in batches:
            _, _, tokens = converter([(str(k), sequences[i][s:e]) for k, (i, s, e) in enumerate(batch)])
            output = model(tokens.to(device), repr_layers=[layer])["representations"][layer].float().cpu().numpy()
            for row, (i, s, e) in enumerate(batch):
                sums[i][s:e] += output[row, 1 : 1 + e - s]  # skip the start token; stop before end and padding
                covers[i][s:e] += 1
    return np.stack([(total / cover[:, None]).mean(axis=0) for total, cover in zip(sums, covers)]).astype(np.float32)


# ----------------------------------------------------------------------------- genes, with a cache


def _sequence_key(sequence: str) -> str:
    return hashlib.sha256(sequence.encode()).hexdigest()


def gene_embeddings(
    fasta: str | os.PathLike | Mapping[str, Sequence[str]],
    esm2: ESM2,
    *,
    genes: Iterable[str] | None = None,
    nonstandard: str = "error",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **embed_kwargs,
) -> tuple[list[str], np.ndarray]:
    """Gene vectors: each isoform mean-pooled by ESM-2, then the isoforms averaged. Taught in chapter 10.

    `fasta` is a path or {gene: [isoform sequences]}. Returns (genes, array of shape (n_genes, width)).
    With `cache_dir`, isoform vectors are stored in one file per model, weights, layer and window size
    (everything that changes a vector), keyed by each sequence's sha256, so a second call only runs the
    model on sequences it has not seen. `embed_kwargs` go to `embed_sequences`.
    """
    records = read_fasta(fasta) if isinstance(fasta, (str, os.PathLike)) else {g: list(s) for g, s in fasta.items()}
    names = list(records) if genes is None else list(dict.fromkeys(genes))
    missing = [g for g in names if g not in records]
    if missing:
        raise ValueError(
            f"{len(missing)} genes are absent from the FASTA, e.g. {missing[:5]}; "
            "check the symbols (HGNC) or pass only the genes it contains"
        )
    isoforms = {
        g: [clean_sequence(s, nonstandard=nonstandard, name=f"{g} isoform {k + 1}") for k, s in enumerate(records[g])]
        for g in names
    }
    cache: dict[str, np.ndarray] = {}
    cache_file = None
    if cache_dir is not None:
        # Resolved as embed_sequences resolves them: layer=0 is the embedding layer, not "the default".
        layer = embed_kwargs.get("layer")
        layer = esm2.layers if layer is None else layer
        window = embed_kwargs.get("window", MAX_RESIDUES)
        cache_file = Path(cache_dir) / f"{esm2.name}_{esm2.weights_id()}_layer{layer}_window{window}.npz"
        if cache_file.exists():
            with np.load(cache_file) as stored:
                cache = {key: stored[key] for key in stored.files}
    unique = list(dict.fromkeys(s for seqs in isoforms.values() for s in seqs))
    todo = [s for s in unique if _sequence_key(s) not in cache]
    if todo:
        vectors = embed_sequences(esm2, todo, progress=progress, **embed_kwargs)
        cache.update({_sequence_key(s): v for s, v in zip(todo, vectors)})
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache_file, **cache)
    table = np.stack([np.mean([cache[_sequence_key(s)] for s in isoforms[g]], axis=0) for g in names])
    return names, table.astype(np.float32)
