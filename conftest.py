"""pytest configuration: documentation examples are tests (``--doctest-modules``)."""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("rcc/torch.py")
if importlib.util.find_spec("dask") is None or importlib.util.find_spec("distributed") is None:
    collect_ignore.append("rcc/dask.py")
