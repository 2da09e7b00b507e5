"""Unit tests of vcell_lib.env and vcell_lib.plotting (chapter 01)."""

import random
import subprocess
import sys

import matplotlib as mpl
import numpy as np
import pytest

from vcell_lib import env, plotting


def test_set_seed_makes_every_generator_repeat():
    torch = pytest.importorskip("torch")
    rng = env.set_seed(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item(), rng.random())
    rng = env.set_seed(7)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), rng.random()) == first


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "0", True])
def test_set_seed_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed"):
        env.set_seed(bad)


def test_fast_mode_and_by_mode(monkeypatch):
    monkeypatch.setenv("VCELL_FAST", "1")
    assert env.fast_mode() and env.by_mode(full=1000, fast=10) == 10
    monkeypatch.setenv("VCELL_FAST", "0")
    assert not env.fast_mode() and env.by_mode(full=1000, fast=10) == 1000
    monkeypatch.delenv("VCELL_FAST")
    assert not env.fast_mode()
    monkeypatch.setenv("VCELL_FAST", "yes")
    with pytest.raises(ValueError, match="VCELL_FAST"):
        env.fast_mode()


def test_get_device():
    torch = pytest.importorskip("torch")
    assert env.get_device("cpu") == torch.device("cpu")
    assert env.get_device().type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError, match="prefer"):
        env.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no cuda device"):
            env.get_device("cuda")


def test_versions_reports_installed_and_missing():
    found = env.versions(("numpy", "surely-not-a-package-xyz"))
    assert found["python"].count(".") == 2
    assert found["numpy"] == np.__version__
    assert found["surely-not-a-package-xyz"] == "not installed"
    assert env.versions()["vcell-lib"] != "not installed"


def test_style_is_explicit():
    mpl.rcdefaults()
    plotting.style()
    assert mpl.rcParams["axes.spines.top"] is False
    assert mpl.rcParams["axes.prop_cycle"].by_key()["color"][0] == plotting.PALETTE["control"]
    mpl.rcdefaults()


def test_import_has_no_side_effects():
    """Importing the library must not seed, style, filter warnings or import torch."""
    code = (
        # Dependencies first: scipy itself adds a warnings filter when imported.
        "import sys, warnings, matplotlib as mpl, numpy as np, scipy.special\n"
        "state = np.random.get_state()[1].copy(); rc = dict(mpl.rcParams); filters = list(warnings.filters)\n"
        "import vcell_lib, vcell_lib.env, vcell_lib.plotting, vcell_lib.biology\n"
        "assert (np.random.get_state()[1] == state).all()\n"
        "assert dict(mpl.rcParams) == rc\n"
        "assert list(warnings.filters) == filters\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plot_history_draws_the_losses_and_refuses_an_empty_history():
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless: no window; rcParams are left as they are
    import matplotlib.pyplot as plt
    import pytest

    from vcell_lib.train import History

    history = History(train_loss=[4.0, 3.0, 2.5, 2.0], val_loss=[(2, 3.5), (4, 2.2)])
    ax = plotting.plot_history(history, "a run", log=True)
    lines = ax.get_lines()
    assert [list(line.get_ydata()) for line in lines][0] == history.train_loss
    assert list(lines[-1].get_xdata()) == [2, 4] and ax.get_yscale() == "log" and ax.get_title() == "a run"
    plt.close("all")
    with pytest.raises(ValueError, match="no training loss"):
        plotting.plot_history(History(), "empty")
