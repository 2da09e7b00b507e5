"""The environment files agree with each other, and the configuration keeps its promises."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if match := re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line):
            found[match.group(1).lower()] = match.group(2)
    return found


def test_environment_yml_matches_requirements():
    requirements = pins((ROOT / "requirements.txt").read_text().splitlines())
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert pins(pip_section) == requirements


def test_constraints_agree_with_requirements():
    requirements = pins((ROOT / "requirements.txt").read_text().splitlines())
    constraints = pins((ROOT / "constraints.txt").read_text().splitlines())
    for name, version in requirements.items():
        assert constraints.get(name) == version, f"{name}: requirements {version}, constraints {constraints.get(name)}"


def test_book_build_fails_on_errors_and_uses_offline_mathjax():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "force"
    assert config["execute"]["allow_errors"] is False
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]
    assert config["bibtex_bibfiles"] == ["book/references.bib"]
    assert config["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")
    assert config["only_build_toc_files"] is True


def test_makefile_never_hides_figures():
    # MPLBACKEND=Agg silently removes every figure from executed notebooks.
    for name in ("Makefile", ".ci/run"):
        assert "MPLBACKEND" not in (ROOT / name).read_text()


def test_repository_url_is_the_configured_one_everywhere():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    files = [
        ROOT / "README.md",
        ROOT / "pyproject.toml",
        *(ROOT / "notebooks").glob("*.py"),
        *(ROOT / "vcell_lib").rglob("*.py"),
    ]
    for path in files:
        for found in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", path.read_text()):
            assert found == url, f"{path.name}: {found} differs from _config.yml's repository.url {url}"


def test_readme_examples_run(tmp_path, monkeypatch):
    """The README's Python examples are real code: run them, on a screen with the columns they name."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import torch

    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {"gene": rng.choice(["NT", "STAT1", "JAK2"], 90), "lane": rng.choice(["L1", "L2"], 90)},
        index=[f"c{i}" for i in range(90)],
    )
    screen = ad.AnnData(X=rng.poisson(2.0, (90, 12)).astype(np.float32), obs=obs)
    screen.var_names = [f"g{i}" for i in range(12)]
    screen.write_h5ad(tmp_path / "my_screen.h5ad")
    # the SE example's files: a small checkpoint of Arc's SE, its protein embeddings, cells with some of its genes
    from test_se import arc_se_checkpoint

    (tmp_path / "SE-600M").mkdir()
    _, vocabulary = arc_se_checkpoint(tmp_path / "SE-600M" / "small.ckpt")
    torch.save(vocabulary, tmp_path / "SE-600M" / "protein_embeddings.pt")
    cells = ad.AnnData(X=rng.poisson(2.0, (20, 30)).astype(np.float32))
    cells.var_names = [f"G{i}" for i in range(25)] + [f"unknown{i}" for i in range(5)]
    cells.write_h5ad(tmp_path / "my_cells.h5ad")
    monkeypatch.chdir(tmp_path)
    examples = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(examples) == 3
    for example in examples:
        exec(compile(example.replace("n_cells=1000", "n_cells=50"), "README.md", "exec"), {})


def test_dev_extra_lists_what_the_tests_import():
    """`pip install vcell-lib[dev]` gives the tests every module they import: none is skipped for lack of one."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = {
        re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]
    }
    providers = packages_distributions()
    local = {path.stem for path in (ROOT / "tests").glob("*.py")}  # one test module may reuse another's helpers
    for path in (ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip":
                modules = [node.args[0].value]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in {"vcell_lib", "tests"} | local:
                    continue
                names = {name.lower().replace("_", "-") for name in providers.get(top, [])}
                assert names & listed, (
                    f"{path.name} imports {top} ({names or 'not installed'}): add it to the dev extra"
                )
