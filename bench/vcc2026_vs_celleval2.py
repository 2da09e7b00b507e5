"""Agreement and speed of vcell_lib.vcc2026 against cell-eval2 0.20.0 (the official 2026 evaluator).

Scores the generated cases of tests/test_vcc2026.py with both, plus the baseline panel and the replicate
anchor, and prints the largest absolute difference per metric over all of them and the time each took.
Run: .venv/bin/python bench/vcc2026_vs_celleval2.py   (not run in CI)
"""

import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_vcc2026 import CASES, make_pair, official  # noqa: E402  (the tests' generated cases and cell-eval2 call)

from vcell_lib import vcc2026  # noqa: E402

logging.getLogger("cell_eval2").setLevel(logging.ERROR)


def timed(function, *args):
    """(result, seconds)."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def anchors_official(real):
    """cell-eval2's baseline panel and replicate anchor."""
    from dataclasses import replace

    import cell_eval2
    from cell_eval2.anchor import compute_replicate_anchor
    from cell_eval2.baseline import build_generic_baseline

    preset = cell_eval2.EvalConfig.from_preset("vcc2026")
    config = replace(preset, pert_col="target_gene", cache_strict=False, de=replace(preset.de, backend="pdex"))
    agg = build_generic_baseline(real, config=config).agg
    base = pd.Series({m: agg.filter(agg["statistic"] == "mean")[m][0] for m in vcc2026.PANEL})
    _, anchor = compute_replicate_anchor(real, config=config)
    return base, pd.Series(dict(zip(anchor["metric"], anchor["replicate"]))).reindex(list(vcc2026.PANEL))


rows, times = {}, {}
for name, build in CASES.items():
    pred, real = build()
    (ref, t_ref), (mine, t_mine) = timed(official, pred, real), timed(vcc2026.evaluate, pred, real)
    rows[name] = (mine - ref).abs()
    times[name] = (t_ref, t_mine)
_, real = CASES["random"]()
(ref_anchor, t_ref) = timed(anchors_official, real)
mine_base, t_base = timed(vcc2026.evaluate_baseline, real)
mine_rep, t_rep = timed(vcc2026.replicate, real)
rows["baseline panel"] = (mine_base - ref_anchor[0]).abs()
rows["replicate (5 splits)"] = (mine_rep - ref_anchor[1]).abs()
times["baseline + replicate"] = (t_ref, t_base + t_rep)
_, wide = make_pair(9, n_genes=600, n_perts=8, cells=30, n_controls=60)  # the halves keep different genes
(ref_wide, t_ref), (rep_wide, t_rep) = timed(anchors_official, wide), timed(vcc2026.replicate, wide)
rows["replicate, 600 genes"] = (rep_wide - ref_wide[1]).abs()
times["600 genes: baseline + rep."] = (t_ref, t_rep)

table = pd.DataFrame(rows).T[list(vcc2026.PANEL)]
pd.set_option("display.width", 200)
print("absolute difference vcc2026 - cell-eval2, per case and metric:")
print(table.map(lambda v: f"{v:.1e}").to_string())
print("\nlargest over all cases:")
print(table.max().map(lambda v: f"{v:.1e}").to_string())
print("\nseconds (cell-eval2, vcc2026):")
for name, (a, b) in times.items():
    print(f"  {name:25s} {a:7.2f} {b:7.2f}")
assert np.all(table.to_numpy() < 1e-6), "a metric differs from cell-eval2 by 1e-6 or more"
