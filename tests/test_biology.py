"""Unit tests of vcell_lib.biology (chapter 01)."""

from dataclasses import replace

import numpy as np
import pytest
from scipy import integrate, stats

from vcell_lib.biology import (
    GENETIC_CODE,
    GeneKinetics,
    Regulation,
    capture,
    crispri,
    knockout,
    sample_stationary,
    simulate_expression,
    splice,
    telegraph_moments,
    telegraph_pmf,
    transcribe,
    translate,
)

BURSTY = GeneKinetics("A", k_on=0.1, k_off=0.5, k_tx=10.0, k_deg=0.2)


# ----------------------------------------------------------------------------- sequences


def test_genetic_code_has_64_codons_20_amino_acids_3_stops():
    assert len(GENETIC_CODE) == 64
    assert sum(aa == "*" for aa in GENETIC_CODE.values()) == 3
    assert len(set(GENETIC_CODE.values()) - {"*"}) == 20
    assert GENETIC_CODE["AUG"] == "M"
    assert {c for c, aa in GENETIC_CODE.items() if aa == "*"} == {"UAA", "UAG", "UGA"}
    assert GENETIC_CODE["UGG"] == "W" and GENETIC_CODE["GGC"] == "G"


def test_transcribe_splice_translate_round_trip():
    exon1, intron, exon2 = "CCATGGCT", "GTAAGTTTTTTAG", "TGGAAATAACC"
    pre = transcribe(exon1 + intron + exon2)
    assert pre == (exon1 + intron + exon2).replace("T", "U")
    mrna = splice(pre, [(0, len(exon1)), (len(exon1) + len(intron), len(pre))])
    assert mrna == (exon1 + exon2).replace("T", "U")
    # AUG GCU UGG AAA UAA -> M A W K, stop excluded
    assert translate(mrna) == "MAWK"


def test_translate_without_start_or_stop():
    assert translate("CCCUUU") == ""
    assert translate("AUGGCUGC") == "MA"  # runs off the end: incomplete codon ignored


@pytest.mark.parametrize(
    ("func", "arg", "name"),
    [(transcribe, "ACGU", "dna"), (transcribe, "", "dna"), (transcribe, "acgt", "dna"), (translate, "AUGT", "mrna")],
)
def test_sequence_errors_name_the_argument(func, arg, name):
    with pytest.raises(ValueError, match=name):
        func(arg)


@pytest.mark.parametrize("exons", [[], [(0, 20)], [(3, 2)], [(0, 4), (2, 6)]])
def test_splice_rejects_bad_exons(exons):
    with pytest.raises(ValueError, match="exons"):
        splice("AUGGCUUAA", exons)


# ----------------------------------------------------------------------------- kinetics


@pytest.mark.parametrize("field", ["k_on", "k_off", "k_tx", "k_deg", "k_tl", "k_pdeg"])
def test_negative_or_nan_rates_are_rejected_by_name(field):
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=field):
            replace(BURSTY, **{field: bad})


def test_zero_decay_and_empty_name_are_rejected():
    with pytest.raises(ValueError, match="k_deg"):
        replace(BURSTY, k_deg=0.0)
    with pytest.raises(ValueError, match="name"):
        replace(BURSTY, name="")


def test_regulation_validation_and_factor():
    with pytest.raises(ValueError, match="threshold"):
        Regulation("A", "B", threshold=0)
    with pytest.raises(ValueError, match="hill"):
        Regulation("A", "B", threshold=1, hill=-2)
    with pytest.raises(ValueError, match="self-regulation"):
        Regulation("A", "A", threshold=1)
    act = Regulation("A", "B", threshold=10, hill=2)
    rep = Regulation("A", "B", threshold=10, hill=2, activates=False)
    np.testing.assert_allclose(act.factor(np.array([0, 10, 1e6])), [0, 0.5, 1], atol=1e-9)
    np.testing.assert_allclose(act.factor(np.array([3.0, 30.0])) + rep.factor(np.array([3.0, 30.0])), 1)


def test_crispri_and_knockout():
    assert crispri(BURSTY, 0.9).k_on == pytest.approx(0.01)
    assert crispri(BURSTY, 0.0) == BURSTY
    ko = knockout(replace(BURSTY, k_tl=1.0), nmd_factor=2)
    assert ko.k_tl == 0 and ko.k_deg == pytest.approx(0.4)
    with pytest.raises(ValueError, match="efficiency"):
        crispri(BURSTY, 1.5)
    with pytest.raises(ValueError, match="nmd_factor"):
        knockout(BURSTY, 0.5)


# ----------------------------------------------------------------------------- theory


def test_telegraph_pmf_normalized_and_matches_moments():
    n = np.arange(600)
    p = telegraph_pmf(n, BURSTY)
    mean, var = telegraph_moments(BURSTY)
    assert p.sum() == pytest.approx(1, abs=1e-9)
    assert (n * p).sum() == pytest.approx(mean, rel=1e-9)
    assert (n**2 * p).sum() - mean**2 == pytest.approx(var, rel=1e-9)


def test_telegraph_pmf_equals_beta_poisson_integral():
    a, b, c = BURSTY.k_on / BURSTY.k_deg, BURSTY.k_off / BURSTY.k_deg, BURSTY.k_tx / BURSTY.k_deg
    for count in (0, 3, 17, 60):

        def density(q, count=count):
            return stats.beta.pdf(q, a, b) * stats.poisson.pmf(count, c * q)

        expected, _ = integrate.quad(density, 0, 1, limit=200)
        assert telegraph_pmf([count], BURSTY)[0] == pytest.approx(expected, rel=1e-6)


def test_telegraph_limits():
    always_on = GeneKinetics("P", k_on=1.0, k_off=0.0, k_tx=4.0, k_deg=1.0)
    n = np.arange(30)
    np.testing.assert_allclose(telegraph_pmf(n, always_on), stats.poisson.pmf(n, 4.0), rtol=1e-10)
    assert telegraph_moments(always_on) == pytest.approx((4.0, 4.0))
    silent = replace(BURSTY, k_on=0.0)
    np.testing.assert_array_equal(telegraph_pmf(n, silent), (n == 0).astype(float))
    with pytest.raises(ValueError, match="counts"):
        telegraph_pmf([-1, 2], BURSTY)
    with pytest.raises(ValueError, match="counts"):
        telegraph_pmf([], BURSTY)


# ----------------------------------------------------------------------------- simulation


def test_simulation_reaches_telegraph_steady_state():
    sim = simulate_expression([BURSTY], n_cells=3000, t_max=60.0, n_times=3, seed=1)
    x = sim.final_mrna()[:, 0]
    mean, var = telegraph_moments(BURSTY)
    # The mean of 3000 draws has standard error sqrt(var / 3000) ~ 0.18.
    assert abs(x.mean() - mean) < 5 * np.sqrt(var / 3000)
    assert x.var() / x.mean() > 5  # strongly overdispersed, as the theory says (Fano ~ 11)
    # Whole distribution: chi-square-like check on the first counts.
    observed = np.bincount(x, minlength=10)[:10] / len(x)
    np.testing.assert_allclose(observed, telegraph_pmf(np.arange(10), BURSTY), atol=0.02)


def test_simulation_is_reproducible_and_shaped():
    genes = [BURSTY, GeneKinetics("B", 1.0, 1.0, 5.0, k_tl=0.5)]
    a = simulate_expression(genes, n_cells=7, t_max=5.0, n_times=11, seed=3)
    b = simulate_expression(genes, n_cells=7, t_max=5.0, n_times=11, seed=3)
    c = simulate_expression(genes, n_cells=7, t_max=5.0, n_times=11, seed=4)
    assert a.mrna.shape == a.protein.shape == a.promoter_on.shape == (7, 11, 2)
    np.testing.assert_array_equal(a.mrna, b.mrna)
    assert not np.array_equal(a.mrna, c.mrna)
    assert (a.mrna[:, 0] == 0).all() and (a.mrna >= 0).all() and (a.protein >= 0).all()
    assert a.gene_index("B") == 1
    with pytest.raises(ValueError, match="unknown gene"):
        a.gene_index("Z")


def test_regulation_propagates_a_knockdown():
    tf = GeneKinetics("TF", 0.3, 0.3, 4.0, k_tl=0.5)
    up = GeneKinetics("UP", 0.5, 0.5, 6.0)
    down = GeneKinetics("DOWN", 0.5, 0.5, 6.0)
    regs = [Regulation("TF", "UP", threshold=60), Regulation("TF", "DOWN", threshold=60, activates=False)]
    control = simulate_expression([tf, up, down], regs, n_cells=400, t_max=100.0, n_times=2).final_mrna().mean(0)
    silenced = simulate_expression([crispri(tf, 0.9), up, down], regs, n_cells=400, t_max=100.0, n_times=2)
    silenced = silenced.final_mrna().mean(0)
    assert silenced[0] < 0.3 * control[0]  # the target itself
    assert silenced[1] < 0.5 * control[1]  # activated downstream gene falls
    assert silenced[2] > 1.5 * control[2]  # repressed downstream gene rises


def test_a_gene_that_never_switches_on_stays_empty():
    sim = simulate_expression([replace(BURSTY, k_on=0.0)], n_cells=5, t_max=10.0)
    assert sim.mrna.sum() == 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"genes": []}, "genes"),
        ({"genes": [BURSTY, BURSTY]}, "genes"),
        ({"n_cells": 0}, "n_cells"),
        ({"n_cells": 2.5}, "n_cells"),
        ({"t_max": -1.0}, "t_max"),
        ({"t_max": float("nan")}, "t_max"),
        ({"n_times": 1}, "n_times"),
        ({"regulations": [Regulation("A", "Z", threshold=1)]}, "regulations"),
    ],
)
def test_simulation_rejects_bad_arguments(kwargs, name):
    args = {"genes": [BURSTY], **kwargs}
    with pytest.raises(ValueError, match=name):
        simulate_expression(**args)


def test_capture_thins_binomially():
    counts = np.full(20000, 50)
    seen = capture(counts, 0.1, seed=0)
    assert seen.mean() == pytest.approx(5.0, rel=0.02)
    assert seen.var() == pytest.approx(50 * 0.1 * 0.9, rel=0.05)
    np.testing.assert_array_equal(capture(counts, 1.0), counts)
    for bad_counts in (np.array([]), np.array([1, -1]), np.array([0.5, 2.0])):
        with pytest.raises(ValueError, match="counts"):
            capture(bad_counts, 0.5)
    for bad in (0.0, 1.2, float("nan")):
        with pytest.raises(ValueError, match="efficiency"):
            capture(counts, bad)


def test_sample_stationary_matches_the_exact_distribution():
    x = sample_stationary(BURSTY, 40000, seed=2)
    mean, var = telegraph_moments(BURSTY)
    assert x.mean() == pytest.approx(mean, rel=0.03)
    assert x.var() == pytest.approx(var, rel=0.06)
    observed = np.bincount(x, minlength=10)[:10] / len(x)
    np.testing.assert_allclose(observed, telegraph_pmf(np.arange(10), BURSTY), atol=0.01)
    assert (sample_stationary(replace(BURSTY, k_on=0.0), 5) == 0).all()
    with pytest.raises(ValueError, match="n_cells"):
        sample_stationary(BURSTY, 0)
