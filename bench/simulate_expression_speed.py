"""Speed of vcell_lib.biology.simulate_expression: vectorized over cells vs one cell at a time.

Run: .venv/bin/python bench/simulate_expression_speed.py
Prints wall time per configuration and the speed-up of the vectorized loop. Not run in CI.
"""

import time

from vcell_lib.biology import GeneKinetics, Regulation, simulate_expression

GENES = [
    GeneKinetics("TF", 0.3, 0.3, 4.0, k_tl=0.5),
    GeneKinetics("UP", 0.5, 0.5, 6.0, k_tl=0.5),
    GeneKinetics("DOWN", 0.5, 0.5, 6.0, k_tl=0.5),
    GeneKinetics("OTHER", 0.2, 0.4, 6.0, k_tl=0.5),
]
NETWORK = [Regulation("TF", "UP", 60.0), Regulation("TF", "DOWN", 60.0, activates=False)]
T_MAX = 150.0


def best_of(repeats: int, func) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    print(f"4 genes with translation and regulation, {T_MAX:.0f} simulated hours")
    one_cell = best_of(3, lambda: simulate_expression(GENES, NETWORK, n_cells=1, t_max=T_MAX, n_times=2, seed=0))
    print(f"one cell: {one_cell * 1e3:.1f} ms")
    for n_cells in (100, 1000, 2000, 10000):
        seconds = best_of(
            2, lambda n=n_cells: simulate_expression(GENES, NETWORK, n_cells=n, t_max=T_MAX, n_times=2, seed=0)
        )
        print(
            f"{n_cells:6d} cells: {seconds:6.2f} s, {seconds / n_cells * 1e3:6.2f} ms per cell, "
            f"{one_cell * n_cells / seconds:5.1f}x faster than one cell at a time"
        )


if __name__ == "__main__":
    main()
