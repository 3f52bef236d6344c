"""The documentation in ``docs/``: every public name has an API entry, and no
page points at material outside the repository.

Building the pages (``python -m sphinx -W -b html docs docs/_build/html``) is a
CI step of its own, not a unit test.
"""

import pathlib
import re

import pytest

import rcc

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def _api_text():
    return (DOCS / "api.rst").read_text(encoding="utf-8")


def _documented(name, text):
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text) is not None


def test_every_public_name_of_rcc_is_in_the_api_reference():
    text = _api_text()
    missing = [name for name in rcc.__all__ if name != "testing" and not _documented(f"rcc.{name}", text)]
    assert not missing, f"add these names to docs/api.rst: {missing}"


def test_every_public_name_of_rcc_testing_and_random_is_in_the_api_reference():
    import rcc.random
    import rcc.testing

    text = _api_text()
    missing = [f"{module.__name__}.{name}" for module in (rcc.random, rcc.testing) for name in module.__all__
               if not _documented(f"{module.__name__}.{name}", text)]
    assert not missing, f"add these names to docs/api.rst: {missing}"


def test_every_public_name_of_rcc_torch_is_in_the_api_reference():
    pytest.importorskip("torch")
    import rcc.torch

    text = _api_text()
    missing = [name for name in rcc.torch.__all__ if not _documented(f"rcc.torch.{name}", text)]
    assert not missing, f"add these names to docs/api.rst: {missing}"


def test_every_page_is_in_the_table_of_contents():
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    pages = sorted(p.stem for p in DOCS.glob("*.rst") if p.stem != "index")
    assert pages, "docs/ has no pages"
    missing = [page for page in pages if not re.search(rf"^\s+{page}\s*$", index, re.M)]
    assert not missing, f"add these pages to the toctree of docs/index.rst: {missing}"


def test_pages_cite_papers_not_internal_files():
    for page in DOCS.glob("*.rst"):
        text = page.read_text(encoding="utf-8")
        for word in ("DESIGN", "../shared", "shared/seeds"):
            assert word not in text, f"{page.name} mentions {word!r}"


ROOT = DOCS.parent

#: Pointers to notes that do not ship with the package (a clone or a wheel).
INTERNAL_POINTERS = ("DESIGN 2", "DESIGN.md", "../shared", "shared/seeds")


def _user_facing_files():
    """The package's modules, the experiment scripts, both READMEs and the docs sources."""
    files = sorted((ROOT / "rcc").rglob("*.py")) + sorted((ROOT / "experiments").rglob("*.py"))
    files += [ROOT / "README.md", ROOT / "paper_figures" / "README.md"]
    files += sorted(path for path in DOCS.rglob("*") if path.is_file() and path.suffix in (".rst", ".py", ".txt")
                    and not {"_build", "generated", "__pycache__"} & set(path.relative_to(DOCS).parts))
    return files


def test_shipped_text_cites_nothing_outside_the_repository():
    files = _user_facing_files()
    assert len(files) > 20, "the scan found too few files"
    found = [f"{path.relative_to(ROOT)}:{number}: {pointer!r}"
             for path in files
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             for pointer in INTERNAL_POINTERS if pointer in line]
    assert not found, ("cite a paper or a docs section (:ref:`label`) instead of internal notes:\n"
                       + "\n".join(found))


def test_every_cited_reference_is_listed():
    listed = set(re.findall(r"^\.\. \[(\w+)\]", (DOCS / "references.rst").read_text(encoding="utf-8"), re.M))
    for page in DOCS.glob("*.rst"):
        cited = set(re.findall(r"\[(\w+)\]_", page.read_text(encoding="utf-8")))
        assert cited <= listed, f"{page.name} cites {sorted(cited - listed)} missing from references.rst"


def test_the_python_examples_of_the_pages_run():
    ran = 0
    for page in sorted(DOCS.glob("*.rst")):
        for block in re.findall(r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", page.read_text(encoding="utf-8"),
                                re.M):
            code = "\n".join(line[3:] for line in block.splitlines())
            exec(compile(code, str(page), "exec"), {})  # noqa: S102 - our own documentation
            ran += 1
    assert ran >= 1, "no page has a Python example"
