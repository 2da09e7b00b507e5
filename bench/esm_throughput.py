"""Throughput of vcell_lib.embeddings.embed_sequences (residues per second) on this machine.

Uses the pretrained esm2_t6_8M_UR50D when its weights can be downloaded, else the random fallback of the
same size (the speed is the same: only the weights differ). Run: .venv/bin/python bench/esm_throughput.py
"""

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from vcell_lib.embeddings import embed_sequences, load_esm2, read_fasta

FASTA = Path(__file__).resolve().parents[1] / "data" / "human_proteins_canonical_by_hgnc.fasta.gz"


def main() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        esm2 = load_esm2("esm2_t6_8M_UR50D")
    proteins = read_fasta(FASTA)
    rng = np.random.default_rng(0)
    pool = [
        seqs[0]
        for seqs in proteins.values()
        if 200 <= len(seqs[0]) <= 600 and set(seqs[0]) <= set("ACDEFGHIKLMNPQRSTVWY")
    ]
    sample = [pool[i] for i in rng.choice(len(pool), 48, replace=False)]
    residues = sum(map(len, sample))
    print(f"model: {esm2.name} (pretrained={esm2.pretrained}), device: cpu, torch threads: {torch.get_num_threads()}")
    embed_sequences(esm2, sample[:4])  # warm-up
    for max_tokens in (1024, 4096):
        start = time.perf_counter()
        embed_sequences(esm2, sample, max_tokens=max_tokens)
        seconds = time.perf_counter() - start
        print(
            f"{len(sample)} proteins, {residues} residues, max_tokens={max_tokens}: "
            f"{seconds:.1f} s, {residues / seconds:,.0f} residues/s"
        )
    total = sum(len(seqs[0]) for seqs in proteins.values())
    print(f"the whole FASTA ({total:,} residues) at that rate: {total / (residues / seconds) / 3600:.1f} h")


if __name__ == "__main__":
    main()
