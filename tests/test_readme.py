"""The README's Python examples run as written (documentation examples are tests)."""

import importlib.util
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python examples"
    if importlib.util.find_spec("torch") is None:  # the PyTorch recipe needs the torch extra
        blocks = [block for block in blocks if "import torch" not in block]
    namespace = {}
    for block in blocks:
        if "rcc.dask" in block and importlib.util.find_spec("distributed") is None:
            continue  # the dask extra is not installed
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["z"] == namespace["enc"].sample
    assert (namespace["index"] == namespace["batch"].index).all()
    assert (namespace["factor"] == namespace["batch"].factor).all()


def test_the_paths_left_out_without_an_extra_exist():
    """The README's test command runs without the optional extras: conftest.py leaves out the
    modules that import them, so each path it names must be where those modules are."""
    conftest = README.parent / "conftest.py"
    paths = re.findall(r'collect_ignore\.append\("([^"]+)"\)', conftest.read_text())
    assert set(paths) == {"rcc/torch", "rcc/dask.py"}
    assert [path for path in paths if not (README.parent / path).exists()] == []
