"""Unit tests of vcell_lib.embeddings (chapter 10). No download happens here: the network is off in tests."""

import gzip
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
esm = pytest.importorskip("esm")

from vcell_lib.embeddings import (  # noqa: E402
    ESM2,
    ESM2_MODELS,
    clean_sequence,
    embed_sequences,
    gene_embeddings,
    load_esm2,
    mean_pool,
    read_fasta,
    residue_mask,
    windows,
)


@pytest.fixture(scope="module")
def random_esm2() -> ESM2:
    """The fallback model, built directly (no download attempt)."""
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    torch.manual_seed(0)
    model = esm.model.esm2.ESM2(num_layers=2, embed_dim=32, attention_heads=4, alphabet=alphabet)
    return ESM2(model.eval(), alphabet, "tiny_test_esm2", pretrained=False)


def write_fasta(path, records):
    with gzip.open(path, "wt") as handle:
        for header, sequence in records:
            handle.write(f">{header}\n{sequence[:30]}\n{sequence[30:]}\n")  # wrapped lines
    return path


# ----------------------------------------------------------------------------- sequences


def test_read_fasta_groups_isoforms(tmp_path):
    path = write_fasta(
        tmp_path / "p.fa.gz",
        [("STAT1|HGNC:11362|x", "M" + "A" * 40), ("STAT1|HGNC:11362|iso2", "M" + "C" * 35), ("JAK2 other", "MKV")],
    )
    genes = read_fasta(path)
    assert list(genes) == ["STAT1", "JAK2"]
    assert genes["STAT1"] == ["M" + "A" * 40, "M" + "C" * 35]
    with pytest.raises(ValueError, match="no such FASTA"):
        read_fasta(tmp_path / "missing.fa")
    (tmp_path / "bad.fa").write_text("MKV\n>A\nMK\n")
    with pytest.raises(ValueError, match="before the first '>'"):
        read_fasta(tmp_path / "bad.fa")


def test_shipped_fasta():
    path = os.path.join(os.path.dirname(__file__), "..", "data", "human_proteins_canonical_by_hgnc.fasta.gz")
    genes = read_fasta(path)
    assert len(genes) == 19139
    assert genes["STAT1"][0].startswith("MSQWYELQQL")


def test_clean_sequence_errors_and_options():
    assert clean_sequence("MKTAYIAK*") == "MKTAYIAK"
    with pytest.raises(ValueError, match="empty"):
        clean_sequence("  ")
    with pytest.raises(ValueError, match=r"lowercase: use sequence.upper\(\)"):
        clean_sequence("MKta")
    with pytest.raises(ValueError, match=r"not amino acids: \['1'\]"):
        clean_sequence("MK1")
    with pytest.raises(ValueError, match=r"non-standard residues \['U'\] \(first at position 3\)"):
        clean_sequence("MKUAX"[:4])
    assert clean_sequence("MKUX", nonstandard="keep") == "MKUX"
    assert clean_sequence("MKUB", nonstandard="to_x") == "MKXX"
    with pytest.raises(ValueError, match="nonstandard"):
        clean_sequence("MK", nonstandard="drop")


def test_tokenization_matches_the_esm_alphabet(random_esm2):
    alphabet = random_esm2.alphabet
    _, _, tokens = alphabet.get_batch_converter()([("a", "MKV"), ("b", "MK")])
    residues = [alphabet.get_idx(letter) for letter in "MKV"]
    expected_first = [alphabet.cls_idx, *residues, alphabet.eos_idx]
    assert tokens[0].tolist() == expected_first
    assert tokens[1].tolist()[-1] == alphabet.padding_idx  # shorter sequence padded at the end
    assert residue_mask(tokens, alphabet).sum(dim=1).tolist() == [3, 2]


# ----------------------------------------------------------------------------- pooling and windows


def test_mean_pool_by_hand():
    residues = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[False, True, True, False], [False, True, False, False]])
    pooled = mean_pool(residues, mask)
    torch.testing.assert_close(pooled[0], (residues[0, 1] + residues[0, 2]) / 2)
    torch.testing.assert_close(pooled[1], residues[1, 1])
    with pytest.raises(ValueError, match="no residue"):
        mean_pool(residues, torch.zeros(2, 4, dtype=torch.bool))


def test_windows_cover_every_residue():
    assert windows(500) == [(0, 500)]
    spans = windows(2500, size=1022)
    assert spans[0] == (0, 1022) and spans[-1] == (2500 - 1022, 2500)
    covered = np.zeros(2500, int)
    for start, end in spans:
        assert end - start == 1022
        covered[start:end] += 1
    assert covered.min() >= 1
    for bad in ({"length": 0}, {"length": 5, "size": 0}, {"length": 5, "size": 4, "stride": 5}):
        with pytest.raises(ValueError):
            windows(**bad)


def test_embed_sequences_pools_residues_without_special_tokens(random_esm2):
    sequences = ["MKTAYIAKQR", "MSTNPKPQRKTKRNT"]
    ours = embed_sequences(random_esm2, sequences)
    _, _, tokens = random_esm2.alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(sequences)])
    with torch.inference_mode():
        reps = random_esm2.model(tokens, repr_layers=[2])["representations"][2]
    expected = mean_pool(reps, residue_mask(tokens, random_esm2.alphabet)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    # Batching and order do not change a protein's vector.
    alone = embed_sequences(random_esm2, sequences[::-1], max_tokens=20)
    np.testing.assert_allclose(alone[::-1], ours, atol=1e-5)
    with pytest.raises(ValueError, match="layer"):
        embed_sequences(random_esm2, sequences, layer=3)


def test_long_proteins_are_windowed(random_esm2):
    long = ("MKTAYIAKQRQISFVKSHFSRQ" * 5)[:100]
    windowed = embed_sequences(random_esm2, [long], window=40)
    assert windowed.shape == (1, 32) and np.isfinite(windowed).all()
    assert not np.allclose(windowed, embed_sequences(random_esm2, [long]))  # windows see less context


# ----------------------------------------------------------------------------- genes and cache


def test_gene_embeddings_average_isoforms_and_cache(random_esm2, tmp_path):
    records = {"A": ["MKTAYIAKQR", "MKTAYIAKQRQISF"], "B": ["MSTNPKPQRK"]}
    genes, table = gene_embeddings(records, random_esm2, cache_dir=tmp_path, progress=False)
    isoforms = embed_sequences(random_esm2, records["A"])
    np.testing.assert_allclose(table[0], isoforms.mean(axis=0), atol=1e-5)
    assert genes == ["A", "B"] and table.shape == (2, 32)
    cache_file = tmp_path / f"tiny_test_esm2_{random_esm2.weights_id()}_layer2_window1022.npz"
    assert cache_file.exists() and len(np.load(cache_file).files) == 3

    class Exploding:  # a cache hit must not run the model (reading its size and weights is fine)
        num_layers, embed_dim = 2, 32

        def state_dict(self):
            return random_esm2.model.state_dict()

        def __call__(self, *args, **kwargs):
            raise AssertionError("the model ran although every sequence was cached")

        def parameters(self):
            raise AssertionError("the model was prepared to run although every sequence was cached")

    cached_model = ESM2(Exploding(), random_esm2.alphabet, random_esm2.name, pretrained=False)
    _, again = gene_embeddings(records, cached_model, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again, table)
    # A new sequence is a cache miss: only it is embedded, and it joins the cache.
    gene_embeddings({"C": ["MKVLAAGG"]}, random_esm2, cache_dir=tmp_path, progress=False)
    assert len(np.load(cache_file).files) == 4
    # Another layer is another cache: never the last layer's vectors under a layer-1 request.
    _, layer1 = gene_embeddings(records, random_esm2, cache_dir=tmp_path, progress=False, layer=1)
    np.testing.assert_allclose(
        layer1, np.stack([embed_sequences(random_esm2, records[g], layer=1).mean(0) for g in "AB"]), atol=1e-5
    )
    assert not np.allclose(layer1, table)


def test_cache_key_holds_every_argument_that_changes_the_vectors(random_esm2, tmp_path):
    records = {"A": ["MKTAYIAKQR"], "B": ["MSTNPKPQRK"]}
    _, layer0 = gene_embeddings(records, random_esm2, cache_dir=tmp_path, progress=False, layer=0)
    _, last = gene_embeddings(records, random_esm2, cache_dir=tmp_path, progress=False)  # the last layer
    np.testing.assert_allclose(last, embed_sequences(random_esm2, ["MKTAYIAKQR", "MSTNPKPQRK"]), atol=1e-5)
    assert not np.allclose(layer0, last)
    # Other random weights under the same name are another cache.
    torch.manual_seed(1)
    other = ESM2(
        esm.model.esm2.ESM2(num_layers=2, embed_dim=32, attention_heads=4, alphabet=random_esm2.alphabet).eval(),
        random_esm2.alphabet,
        random_esm2.name,
        pretrained=False,
    )
    assert other.weights_id() != random_esm2.weights_id()
    _, theirs = gene_embeddings(records, other, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(theirs, embed_sequences(other, ["MKTAYIAKQR", "MSTNPKPQRK"]), atol=1e-5)


def test_gene_embeddings_errors(random_esm2):
    with pytest.raises(ValueError, match=r"1 genes are absent from the FASTA, e.g. \['NOPE'\]"):
        gene_embeddings({"A": ["MKV"]}, random_esm2, genes=["A", "NOPE"])
    with pytest.raises(ValueError, match="A isoform 2 is empty"):
        gene_embeddings({"A": ["MKV", ""]}, random_esm2)
    with pytest.raises(ValueError, match="non-standard residues"):
        gene_embeddings({"A": ["MKUV"]}, random_esm2)


# ----------------------------------------------------------------------------- loading


def test_load_esm2_falls_back_loudly_when_offline(monkeypatch):
    def offline(name):
        raise OSError("no network")

    monkeypatch.setattr(esm.pretrained, "load_model_and_alphabet", offline)
    before = torch.random.get_rng_state()
    with pytest.warns(UserWarning, match="RANDOMLY INITIALIZED"):
        model = load_esm2("esm2_t33_650M_UR50D")
    assert not model.pretrained and model.width == 320 and model.layers == 6
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random state is untouched
    with pytest.raises(OSError):
        load_esm2(fallback=False)
    with pytest.raises(ValueError, match="unknown ESM-2 model"):
        load_esm2("esm3")
    assert ESM2_MODELS["esm2_t48_15B_UR50D"][1] == 5120


def test_pretrained_esm2_when_weights_are_reachable():
    """Runs the real pretrained model when its weights can be fetched (Colab, the Pages build)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_esm2("esm2_t6_8M_UR50D", fallback=False)
    except OSError as error:
        pytest.skip(f"pretrained ESM-2 weights are not reachable here ({type(error).__name__}): offline")
    assert model.pretrained and model.width == 320
    vectors = embed_sequences(model, ["MKTAYIAKQRQISFVKSHFSRQ", "MKTAYIAKQRQISFVKSHFSRQ"[::-1]])
    assert vectors.shape == (2, 320) and not np.allclose(vectors[0], vectors[1])
