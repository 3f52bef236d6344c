"""pytest configuration: documentation examples are tests (``--doctest-modules``), and the suite is deterministic.

Every randomised test is seeded; Hypothesis runs under the ``"rcc"`` profile
below, which derandomises it (the examples are a fixed function of the test),
so two runs of the same commit pass or fail alike.  Set
``HYPOTHESIS_PROFILE=explore`` to search with fresh random examples instead.
"""

import importlib.util
import os

collect_ignore = []
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("rcc/torch")  # the PyTorch adapter, a package: its doctests need torch
if importlib.util.find_spec("dask") is None or importlib.util.find_spec("distributed") is None:
    collect_ignore.append("rcc/dask.py")

if importlib.util.find_spec("hypothesis") is not None:
    from hypothesis import HealthCheck, settings

    _COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "print_blob": True}
    # derandomize: examples are derived from the test itself, and no example database is replayed.
    settings.register_profile("rcc", derandomize=True, database=None, max_examples=25, **_COMMON)
    settings.register_profile("explore", derandomize=False, max_examples=200, **_COMMON)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "rcc"))
