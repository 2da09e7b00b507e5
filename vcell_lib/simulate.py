"""Synthetic Perturb-seq with known ground truth, built term by term on the noise model.

Taught in chapter 03. In log space, a perturbed cell's expected expression is

    log lambda_ig = mu_cg  +  k_i * a_cpg  +  (L^T z_i)_g  +  beta_bg
                    X_0:      T_p: knockdown   H: cell        eps: batch
                    basal     through the GRN  programs       effect

Biology (H) also sets the cell's size M_i and the bursty, negative-binomial spread of its molecules,
molecules ~ NegativeBinomial(M_i * lambda_ig / Z_c, theta_g); the measurement (eps) then captures each
molecule with probability eta_i (per cell, scaled per batch for depth): Binomial thinning.

Opt-in knobs, all off by default, make the data less flattering to models, as real screens are:
`shared_response` adds a response that every perturbation shares, each with its own strength
(systematic variation); `program_shift` lets each perturbation move the cell programs of H; and
`n_gene_features > 0` draws a gene latent that shapes the GRN and gives every gene features,
`varm["gene_features"]`, that tell about its effect to the degree `feature_informativeness`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import integrate, special, stats

from vcell_lib.data import BATCH, CELL_TYPE, CONTROL, PERT

__all__ = ["SimulationParams", "simulate_perturbseq", "true_effects"]

GENE_LATENT_DIM = 6  # dimension of the gene latent behind varm["gene_features"] (n_gene_features > 0)
LATENT_SHARPNESS = 10.0  # how strongly a regulator picks targets aligned (or opposed) with it in the latent
SHARED_GENE_FRACTION = 0.2  # genes that the shared response moves


@dataclass(frozen=True)
class SimulationParams:
    """Every knob of `simulate_perturbseq`, with the defaults used in the book. Taught in chapter 03."""

    n_genes: int = 500
    n_perturbations: int = 30
    n_contexts: int = 2
    cells_per_perturbation: int = 100  # per context
    n_control_cells: int = 400  # per context
    n_batches: int = 2
    # basal programs X_0
    context_sd: float = 0.5  # how much contexts differ, per gene (log scale)
    # the gene regulatory network and T_p
    regulator_fraction: float = 0.1
    targets_per_regulator: int = 12
    edge_weight_sd: float = 0.6
    edge_keep: float = 0.75  # each edge is active in a context with this probability
    network_depth: int = 3
    perturb_regulators: float = 0.8  # fraction of perturbations that target a regulator
    knockdown_mean: float = 0.85  # mean CRISPRi efficiency
    knockdown_concentration: float = 10.0  # Beta concentration of the per-cell efficiency
    knockdown_max: float = 0.98  # CRISPRi leaves some expression: at least 2% here
    escape_fraction: float = 0.1  # cells whose guide did not work
    # heterogeneity H
    n_programs: int = 2
    program_gene_fraction: float = 0.1
    program_sd: float = 0.5
    # cell size and bursting (biological) and the measurement eps (technical)
    total_molecules: float = 50_000.0  # mean mRNA molecules per cell
    size_sd: float = 0.3  # log-scale spread of cell size
    capture_mean: float = 0.1
    capture_concentration: float = 50.0
    dispersion_median: float = 2.0  # NB inverse dispersion theta
    batch_sd: float = 0.1  # per-gene log shift per batch
    batch_depth_sd: float = 0.2  # per-batch log shift of capture
    # Opt-in, off by default: what makes real screens harder, or easier, for models than the above.
    shared_response: float = 0.0  # sd (log) of a response all perturbations share, on the genes it moves
    program_shift: float = 0.0  # sd of each perturbation's shift of each program's mean score
    n_gene_features: int = 0  # features per gene in varm["gene_features"]; > 0 also lets a latent shape the GRN
    feature_informativeness: float = 0.5  # share of the features' variance that comes from the gene latent

    def __post_init__(self) -> None:
        # Sizes must be whole numbers; an integral float (100.0) is accepted and stored as an int.
        for name, minimum in (
            *(
                (name, 1)
                for name in ("n_genes", "n_perturbations", "n_contexts", "cells_per_perturbation", "n_batches")
            ),
            *((name, 0) for name in ("n_control_cells", "n_programs", "targets_per_regulator", "network_depth")),
            ("n_gene_features", 0),
        ):
            object.__setattr__(self, name, _whole_number(name, getattr(self, name), minimum))
        if self.n_perturbations > self.n_genes:
            raise ValueError(
                f"n_perturbations ({self.n_perturbations}) cannot exceed n_genes ({self.n_genes}): "
                "each perturbation silences a different gene; lower n_perturbations or raise n_genes"
            )
        for name in (
            "regulator_fraction",
            "edge_keep",
            "perturb_regulators",
            "escape_fraction",
            "program_gene_fraction",
            "feature_informativeness",
        ):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        for name in ("knockdown_mean", "capture_mean", "knockdown_max"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value!r}")
        for name in ("knockdown_concentration", "capture_concentration", "total_molecules", "dispersion_median"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        for name in (
            "context_sd",
            "edge_weight_sd",
            "program_sd",
            "size_sd",
            "batch_sd",
            "batch_depth_sd",
            "shared_response",
            "program_shift",
        ):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if self.program_shift > 0 and self.n_programs == 0:
            raise ValueError("program_shift > 0 shifts the cell programs, but n_programs is 0: set n_programs >= 1")
        # Enough regulators, and enough other genes, for the perturbations asked for.
        g, n_perts = self.n_genes, self.n_perturbations
        n_regulators = max(1, round(self.regulator_fraction * g))
        n_reg_perts = round(self.perturb_regulators * n_perts)
        if n_reg_perts > n_regulators:
            raise ValueError(
                f"perturb_regulators={self.perturb_regulators} of n_perturbations={n_perts} asks for {n_reg_perts} "
                f"silenced regulators, but regulator_fraction={self.regulator_fraction} of n_genes={g} makes only "
                f"{n_regulators}: raise regulator_fraction to at least {n_reg_perts / g:g}, "
                "or lower perturb_regulators or n_perturbations"
            )
        if n_perts - n_reg_perts > g - n_regulators:
            raise ValueError(
                f"n_perturbations={n_perts} with perturb_regulators={self.perturb_regulators} asks for "
                f"{n_perts - n_reg_perts} silenced non-regulators, but regulator_fraction={self.regulator_fraction} "
                f"of n_genes={g} leaves only {g - n_regulators}: lower regulator_fraction to at most "
                f"{(g - n_perts + n_reg_perts) / g:g}, or raise perturb_regulators"
            )


def _whole_number(name: str, value, minimum: int) -> int:
    """`value` as an int, or a ValueError naming `name` and the fix unless it is a whole number >= minimum."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if number and np.isfinite(value) and value == int(value) and value >= minimum:
        return int(value)
    hint = f"e.g. {name}={max(minimum, round(value))}" if number and np.isfinite(value) else "a whole number"
    raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}: pass {hint}")


def _network(
    params: SimulationParams,
    rng: np.random.Generator,
    latent: np.ndarray | None = None,
    latent_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Regulator flags and the edge list (source, target, weight) of a random sparse GRN.

    With a gene `latent`, a regulator picks its targets among the genes aligned or opposed with it
    (probability growing with |cosine|, drawn from `latent_rng`), activates the aligned ones and
    represses the opposed ones: genes close in the latent regulate alike.
    """
    g = params.n_genes
    n_regulators = max(1, round(params.regulator_fraction * g))
    regulators = rng.choice(g, n_regulators, replace=False)
    is_regulator = np.zeros(g, dtype=bool)
    is_regulator[regulators] = True
    if latent is not None:
        unit = latent / np.linalg.norm(latent, axis=1, keepdims=True)
    sources, targets = [], []
    for s in regulators:
        candidates = np.setdiff1d(np.arange(g), [s])
        chosen = rng.choice(candidates, min(params.targets_per_regulator, g - 1), replace=False)
        if latent is not None:  # `chosen` is drawn all the same: the main stream stays as without a latent
            affinity = np.exp(LATENT_SHARPNESS * np.abs(unit[candidates] @ unit[s]))
            chosen = latent_rng.choice(candidates, len(chosen), replace=False, p=affinity / affinity.sum())
        sources += [s] * len(chosen)
        targets += list(chosen)
    # Clipped so that no single edge more than quadruples or quarters its target per unit knockdown.
    weights = np.clip(rng.normal(0.0, params.edge_weight_sd, len(sources)), -1.5, 1.5)
    if latent is not None:
        weights = np.abs(weights) * np.sign(np.sum(unit[sources] * unit[targets], axis=1))
    return is_regulator, np.array(sources, dtype=np.int64), np.array(targets, dtype=np.int64), weights


def _gene_features(latent: np.ndarray, n_features: int, informativeness: float, rng: np.random.Generator) -> np.ndarray:
    """A random linear read-out of the latent, mixed with noise; `informativeness` is the latent's share of variance."""
    dim = latent.shape[1]
    basis, _ = np.linalg.qr(rng.normal(0.0, 1.0, (max(dim, n_features), min(dim, n_features))))
    readout = basis.T if n_features >= dim else basis  # (dim, n_features); keeps angles when n_features >= dim
    noise = rng.normal(0.0, np.sqrt(min(dim, n_features) / n_features), (len(latent), n_features))  # same scale
    return np.sqrt(informativeness) * latent @ readout + np.sqrt(1 - informativeness) * noise


def _response(
    params: SimulationParams,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray],
    active: np.ndarray,
    pert_genes: np.ndarray,
) -> np.ndarray:
    """Per unit log-knockdown of each perturbed gene, the log change of every gene: (perturbations, genes).

    The target itself changes by 1 unit; effects flow along active edges, summed over paths of
    length 1 to `network_depth` (the truncated series e_p (A + A^2 + ...)).
    """
    g = params.n_genes
    sources, targets, weights = edges
    adjacency = sp.csr_matrix((weights * active, (sources, targets)), shape=(g, g))
    step = sp.csr_matrix(
        (np.ones(len(pert_genes)), (np.arange(len(pert_genes)), pert_genes)), shape=(len(pert_genes), g)
    )
    total = step.toarray()
    for _ in range(params.network_depth):
        step = step @ adjacency
        total += step.toarray()
    return total


def simulate_perturbseq(
    params: SimulationParams | None = None, *, seed: int = 0, progress: bool = False, **overrides
) -> ad.AnnData:
    """Simulate a CRISPRi Perturb-seq experiment with known truth, in the book's standard form. Taught in ch. 03.

    Pass a SimulationParams or keyword overrides of its fields (e.g. n_genes=2000). Returns raw
    counts (CSR float32) with obs `target_gene`, `batch`, `cell_type` plus the hidden per-cell
    quantities (`knockdown`, `escaped`, `size`, `capture`), `obsm["programs"]` (the H factors), and
    `uns["truth"]`: the true mean effect of every perturbation in every context, the GRN and the basal
    programs. Same parameters and seed, same data. `progress=True` shows a progress bar.

    The opt-in knobs add to the truth, only when on: `shared_direction` (genes; the shared response of
    strength 1) and `shared_strength` (perturbations), whose product joins every effect;
    `program_shift` (perturbations x programs) and `program_loadings` (programs x genes), whose product
    joins every effect and whose shift moves the perturbed cells' `obsm["programs"]`; and `gene_latent`
    (genes x GENE_LATENT_DIM) behind the GRN and behind `varm["gene_features"]` (genes x n_gene_features).
    Each knob draws from a generator of its own, so switching one on leaves every other term as it was
    (knockdowns, sizes, captures, batches, programs' draws; n_gene_features redraws the GRN's edges).
    """
    if params is None:
        params = SimulationParams(**overrides)
    elif overrides:
        params = SimulationParams(**{**asdict(params), **overrides})
    rng = np.random.default_rng(seed)
    # The opt-in knobs draw from generators of their own: the main stream stays as with the knobs off.
    shared_rng, program_rng, feature_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    g, n_ctx = params.n_genes, params.n_contexts
    genes = np.array([f"G{i:05d}" for i in range(g)])
    contexts = [f"context_{chr(ord('A') + i)}" if n_ctx <= 26 else f"context_{i}" for i in range(n_ctx)]

    # X_0: a shared log-expression profile plus context-specific deviations (a few strong markers).
    shared = rng.normal(0.0, 1.5, g)
    basal = shared + rng.normal(0.0, params.context_sd, (n_ctx, g))
    basal += rng.normal(0.0, 2.0, (n_ctx, g)) * (rng.random((n_ctx, g)) < 0.02)

    # T_p: a sparse GRN, each edge active or not in each context, propagated from the target.
    latent = feature_rng.normal(0.0, 1.0, (g, GENE_LATENT_DIM)) if params.n_gene_features else None
    is_regulator, sources, targets, weights = _network(params, rng, latent, feature_rng)
    n_reg_perts = min(round(params.perturb_regulators * params.n_perturbations), int(is_regulator.sum()))
    pert_genes = np.concatenate(
        [
            rng.choice(np.flatnonzero(is_regulator), n_reg_perts, replace=False),
            rng.choice(np.flatnonzero(~is_regulator), params.n_perturbations - n_reg_perts, replace=False),
        ]
    )
    active = rng.random((n_ctx, len(sources))) < params.edge_keep
    response = np.stack([_response(params, (sources, targets, weights), active[c], pert_genes) for c in range(n_ctx)])
    alpha = params.knockdown_mean * params.knockdown_concentration
    beta = (1 - params.knockdown_mean) * params.knockdown_concentration
    # E[log(1 - min(efficiency, knockdown_max))] for efficiency ~ Beta(alpha, beta); escapers add log(1) = 0.
    cap = params.knockdown_max
    expected, _ = integrate.quad(
        lambda e: np.log1p(-min(e, cap)) * stats.beta.pdf(e, alpha, beta), 0, 1, points=[cap], limit=200
    )
    mean_log_knockdown = (1 - params.escape_fraction) * expected
    extra_truth = {}
    if params.shared_response > 0:
        # Systematic variation: one direction in gene space, shown by every perturbation with its own
        # strength (mean 1; some show it strongly, some barely), the same in every context.
        direction = shared_rng.normal(0.0, params.shared_response, g) * (shared_rng.random(g) < SHARED_GENE_FRACTION)
        strength = shared_rng.gamma(2.0, 0.5, len(pert_genes))
        extra_truth.update(shared_direction=direction, shared_strength=strength)
        if mean_log_knockdown < 0:  # else every guide failed (escape_fraction=1) and no perturbation acts
            # Carried by the knockdown like the network's effect: in proportion to a cell's k_i.
            response = response + strength[:, None] * direction / mean_log_knockdown
    true_effect = mean_log_knockdown * response  # (contexts, perturbations, genes)

    # H: cell programs (e.g. cycle, stress) with sparse gene loadings.
    loadings = rng.normal(0.0, params.program_sd, (params.n_programs, g))
    loadings *= rng.random((params.n_programs, g)) < params.program_gene_fraction
    dispersion = params.dispersion_median * np.exp(rng.normal(0.0, 0.5, g))
    batch_shift = rng.normal(0.0, params.batch_sd, (params.n_batches, g))
    batch_depth = rng.normal(0.0, params.batch_depth_sd, params.n_batches)

    # The cells: per context, controls then each perturbation.
    labels = [CONTROL] * params.n_control_cells + [
        gene for gene in genes[pert_genes] for _ in range(params.cells_per_perturbation)
    ]
    pert_index = np.array(
        [-1] * params.n_control_cells
        + [p for p in range(len(pert_genes)) for _ in range(params.cells_per_perturbation)]
    )
    cell_labels = np.tile(labels, n_ctx)
    cell_pert = np.tile(pert_index, n_ctx)
    cell_ctx = np.repeat(np.arange(n_ctx), len(labels))
    n = len(cell_labels)
    cell_batch = rng.integers(0, params.n_batches, n)
    perturbed = cell_pert >= 0
    escaped = perturbed & (rng.random(n) < params.escape_fraction)
    efficiency = np.where(perturbed & ~escaped, np.minimum(rng.beta(alpha, beta, n), params.knockdown_max), 0.0)
    log_knockdown = np.log1p(-efficiency)
    programs = rng.normal(0.0, 1.0, (n, params.n_programs))
    if params.program_shift > 0:
        # Each perturbation moves each program's mean score (e.g. fewer cycling cells), in proportion to
        # a cell's knockdown as T_p does; the mean change of expression, shift @ loadings, joins the truth.
        shift = program_rng.normal(0.0, params.program_shift, (len(pert_genes), params.n_programs))
        extra_truth.update(program_shift=shift, program_loadings=loadings)
        if mean_log_knockdown < 0:
            scale = log_knockdown[perturbed] / mean_log_knockdown
            programs[perturbed] += scale[:, None] * shift[cell_pert[perturbed]]
            true_effect = true_effect + shift @ loadings
    size = params.total_molecules * np.exp(rng.normal(0.0, params.size_sd, n) - params.size_sd**2 / 2)
    capture_alpha = params.capture_mean * params.capture_concentration
    capture = rng.beta(capture_alpha, params.capture_concentration - capture_alpha, n)
    capture = np.clip(capture * np.exp(batch_depth[cell_batch]), 1e-4, 1.0)
    normalizer = special.logsumexp(basal, axis=1)  # Z_c: a context's profile sums to one

    chunks = []
    chunk = max(16, 2**22 // g)  # about 4M matrix entries at a time: memory stays flat as genes grow
    starts = range(0, n, chunk)
    if progress:
        from tqdm.auto import tqdm  # imported only when asked for: no widget warnings otherwise

        starts = tqdm(starts, desc="simulating cells", unit="chunk")
    for start in starts:
        rows = slice(start, min(start + chunk, n))
        log_rate = basal[cell_ctx[rows]] - normalizer[cell_ctx[rows], None]
        pert_rows = np.flatnonzero(perturbed[rows])
        if len(pert_rows):
            idx = start + pert_rows
            log_rate[pert_rows] += log_knockdown[idx, None] * response[cell_ctx[idx], cell_pert[idx]]
        log_rate += programs[rows] @ loadings + batch_shift[cell_batch[rows]]
        mean = size[rows, None] * np.exp(log_rate)
        molecules = rng.poisson(rng.gamma(dispersion, mean / dispersion))  # negative binomial
        chunks.append(sp.csr_matrix(rng.binomial(molecules, capture[rows, None]).astype(np.float32)))

    obs = pd.DataFrame(
        {
            PERT: pd.Categorical(cell_labels),
            BATCH: pd.Categorical([f"batch_{b}" for b in cell_batch]),
            CELL_TYPE: pd.Categorical(np.array(contexts)[cell_ctx]),
            "knockdown": efficiency,
            "escaped": escaped,
            "size": size,
            "capture": capture,
        },
        index=[f"cell_{i:06d}" for i in range(n)],
    )
    var = pd.DataFrame({"is_regulator": is_regulator, "dispersion": dispersion}, index=pd.Index(genes, name="gene"))
    adata = ad.AnnData(X=sp.vstack(chunks, format="csr"), obs=obs, var=var)
    adata.obsm["programs"] = programs
    if params.n_gene_features:
        features = _gene_features(latent, params.n_gene_features, params.feature_informativeness, feature_rng)
        adata.varm["gene_features"] = features.astype(np.float32)
        extra_truth["gene_latent"] = latent
    adata.uns["truth"] = {
        "contexts": np.array(contexts),
        "perturbations": genes[pert_genes],
        "effect": true_effect,
        "basal_log_expression": basal - normalizer[:, None],
        "grn_source": genes[sources],
        "grn_target": genes[targets],
        "grn_weight": weights,
        "grn_active": active,
        **extra_truth,
    }
    adata.uns["simulation"] = {**asdict(params), "seed": seed}
    return adata


def true_effects(adata: ad.AnnData) -> pd.DataFrame:
    """The stored true mean log-effects: rows (cell_type, target_gene), one column per gene. Taught in ch. 03."""
    if "truth" not in adata.uns:
        raise ValueError("adata has no uns['truth']: only data made by simulate_perturbseq carry a ground truth")
    truth = adata.uns["truth"]
    effect = np.asarray(truth["effect"])
    labels = [[str(c) for c in truth["contexts"]], [str(p) for p in truth["perturbations"]]]
    index = pd.MultiIndex.from_product(labels, names=[CELL_TYPE, PERT])
    return pd.DataFrame(effect.reshape(-1, effect.shape[-1]), index=index, columns=adata.var_names)
