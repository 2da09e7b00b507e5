"""Structure of the book's chapters: pairing, stripped outputs, and the chapter anatomy.

The notebooks themselves are executed by nbmake (`make test`) and by the book build.
"""

import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())


def toc_files(node) -> list[str]:
    """Every `file:` entry of the table of contents, in order."""
    found = []
    if isinstance(node, dict):
        if "file" in node:
            found.append(node["file"])
        for value in node.values():
            found += toc_files(value)
    elif isinstance(node, list):
        for item in node:
            found += toc_files(item)
    return found


CHAPTERS = [f for f in toc_files(TOC) if f.startswith("notebooks/")]


def markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_toc_lists_chapters_without_extension_and_they_exist():
    assert CHAPTERS, "no chapter in _toc.yml"
    for entry in toc_files(TOC) + [TOC["root"]]:
        assert Path(entry).suffix == "", f"{entry}: list chapters without extension"
        assert list(ROOT.glob(entry + ".*")), f"_toc.yml names {entry} but no such file exists"


def test_every_notebook_is_in_the_toc():
    on_disk = {f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("[0-9]*.ipynb")}
    assert on_disk == set(CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_pair_has_identical_cells(chapter):
    py = jupytext.read(ROOT / f"{chapter}.py")
    ipynb = jupytext.read(ROOT / f"{chapter}.ipynb")
    assert len(py.cells) == len(ipynb.cells), "cell count differs: re-pair with `jupytext --sync`"
    for i, (a, b) in enumerate(zip(py.cells, ipynb.cells)):
        assert a.cell_type == b.cell_type, f"cell {i}: type differs"
        assert a.source == b.source, f"cell {i}: source differs between .py and .ipynb"
        assert a.metadata.get("tags", []) == b.metadata.get("tags", []), f"cell {i}: tags differ"
    assert ipynb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_ipynb_is_committed_without_outputs(chapter):
    nb = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs: strip them (pre-commit does)"
            assert cell.execution_count is None, f"cell {i} has an execution count"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_anatomy(chapter):
    nb = jupytext.read(ROOT / f"{chapter}.py")
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "first cell: '# Title' and a hook"
    assert len(first.source.splitlines()) >= 3, "the title needs a one-paragraph hook under it"

    text = markdown(nb)
    objectives = re.search(r"```\{admonition\} Objectives and prerequisites\n(.*?)```", text, re.S)
    assert objectives, "missing the 'Objectives and prerequisites' admonition"
    goals = [line for line in objectives.group(1).splitlines() if line.startswith("- ")]
    assert 3 <= len(goals) <= 5, f"objectives: 3-5 'you will be able to' lines, found {len(goals)}"
    assert "Prerequisites" in objectives.group(1)

    code = [c.source for c in nb.cells if c.cell_type == "code"]
    setup = code[0]
    assert '"google.colab" in sys.modules' in setup, "setup cell: install on Colab only"
    for call in ("set_seed(0)", "style()", "versions()"):
        assert call in setup, f"setup cell must call {call}"

    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[-3:] == ["Summary", "Exercises", "References"], f"last sections: {headings[-3:]}"
    assert "{bibliography}" in text and ":filter: docname in docnames" in text
    exercises = text.split("## Exercises", 1)[1]
    hidden = sum("hide-cell" in c.metadata.get("tags", []) for c in nb.cells) + exercises.count(":class: dropdown")
    assert hidden >= 2, "exercises need solutions hidden in dropdowns"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_colab_install_uses_the_configured_repository(chapter):
    url = CONFIG["repository"]["url"]
    setup = next(c.source for c in jupytext.read(ROOT / f"{chapter}.py").cells if c.cell_type == "code")
    installs = re.findall(r"@ git\+(\S+?)[\"'#@]", setup)
    assert installs, "setup cell: no `pip install ... @ git+URL` line"
    assert installs == [url] * len(installs), f"install URL(s) {installs} differ from _config.yml's {url}"


def test_citations_exist_in_the_bibliography():
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book/references.bib").read_text(), re.M))
    pages = [*(ROOT / "notebooks").glob("*.py"), *(ROOT / "book").glob("*.md")]
    groups = [group for page in pages for group in re.findall(r"\{cite[tp]?\}`([^`]+)`", page.read_text())]
    cited = {key.strip() for group in groups for key in group.split(",")}
    assert cited, "no citations found"
    assert cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"
