"""Start-up: import rcc compiles nothing and loads no heavy optional modules; compiling says so; one signature per kernel."""

import io
import pathlib
import re
import subprocess
import sys
import textwrap

import numba
import numpy as np
from numba.core import event

import rcc
from rcc import compilation, warmup


def test_import_compiles_nothing_and_loads_no_scipy_stats_or_torch():
    probe = textwrap.dedent(
        """
        import sys
        import rcc, rcc.warmup
        from rcc import compilation
        heavy = [name for name in ("scipy.stats", "scipy.optimize", "torch") if name in sys.modules]
        compiled = [name for name, count in rcc.warmup.specialisations().items() if count]
        print(heavy, compiled, compilation.compiled_kernel_count())
        """
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            cwd=str(pathlib.Path(rcc.__file__).parents[1]))
    assert result.stdout.strip() == "[] [] 0", result.stdout + result.stderr
    assert "compiling" not in result.stderr


def test_rcc_testing_still_loads_on_first_use():
    assert rcc.testing.__name__ == "rcc.testing"
    assert "testing" in rcc.__all__


def test_a_real_compilation_is_announced_in_one_line_with_its_duration():
    stream = io.StringIO()
    announcer = compilation._CompileAnnouncer(stream)
    namespace = {"__name__": "rcc.probe"}  # a kernel of rcc's own, compiled afresh (no cache)
    exec("def probe_kernel(x):\n    return x + 1\n", namespace)  # noqa: S102 - a fixed test function
    kernel = numba.njit(namespace["probe_kernel"])
    event.register("numba:compile", announcer)
    try:
        assert kernel(1) == 2
        assert kernel(2) == 3  # already compiled: nothing more is said
    finally:
        event.unregister("numba:compile", announcer)
    assert re.fullmatch(r"rcc: compiling kernel probe_kernel \(first run only, cached afterwards\)\.\.\. "
                        r"done in \d+\.\d s\n", stream.getvalue()), stream.getvalue()
    assert announcer.count == 1


def test_other_packages_compilations_are_not_announced():
    stream = io.StringIO()
    announcer = compilation._CompileAnnouncer(stream)
    kernel = numba.njit(lambda x: x * 2)  # defined in this test module, not in rcc
    event.register("numba:compile", announcer)
    try:
        assert kernel(2) == 4
    finally:
        event.unregister("numba:compile", announcer)
    assert stream.getvalue() == "" and announcer.count == 0


# The kernels the Python layer calls.  (Kernels they call in turn show up only
# in a process that compiled them, not in one that loaded its callers from the
# cache, and tests of the kernels call some of those directly with other types.)
ENTRY_POINTS = {f"rcc.kernels.{name}" for name in (
    "encode_one", "encode_one_fixed_count", "encode_fused", "encode_fused_serial", "encode_fused_product",
    "encode_fused_product_serial", "encode_fused_fixed_count", "encode_fused_fixed_count_serial", "decode_one", "decode_batch",
    "decode_batch_serial",
    "prepare_batch", "prepare_batch_serial")} | {"rcc.axis_kernels.gaussian_width_array"} | {
    "rcc.general._encode_general_batch", "rcc.general._encode_general_batch_serial", "rcc.general._encode_general_one",
    "rcc.targets.general._certify_batch",
    "rcc.targets.general._quadrature_batch", "rcc.random._uniform_array", "rcc.random._exponential_array"} | {
    f"rcc.samplers.kernels.{name}" for name in ("encode_batch", "decode_batch", "decode_candidates_batch",
                                                "_fill_params_batch")} | {
    "rcc.samplers.general_masses.general_masses_batch", "rcc.samplers.general_search.general_astar_batch"}


def test_warm_up_leaves_every_kernel_the_api_calls_with_one_signature():
    # Scalars and arrays, serial and threaded batches, read-only and writable
    # inputs, int / numpy / uint64 seeds all reach one compiled version per kernel.
    warmup.warm_up()
    for seed in (5, np.int64(5), np.uint64(5), 2**64 - 1):
        rcc.encode_sample(rcc.Normal(np.array([0.1, 0.2]), 0.05), seed=seed)
        rcc.encode_sample(rcc.Normal(np.broadcast_to(0.1, (3,)), 0.01), seed=seed, width=np.array([8, 8, 8]))
        rcc.decode_sample(np.array([1, 2]), np.broadcast_to(np.int32(3), (2,)), seed=seed, width=8)
    rcc.gaussian_width(0.1)
    rcc.gaussian_width(np.array([0.1, 0.2]))
    for method in ("gprs", "gprs-dyadic", "astar"):  # scalar, read-only and writable targets and indices
        for target in (rcc.Normal(0.1, 0.3), rcc.Normal(np.broadcast_to(0.1, (3,)), np.array([0.2, 0.3, 0.4]))):
            enc = rcc.encode_sample(target, seed=3, method=method, rng=2)
            rcc.decode_sample(enc.index, enc.factor, seed=3, method=method)
            rcc.decode_sample(np.broadcast_to(np.asarray(enc.index), (2,) + np.shape(enc.index)), enc.factor, seed=3,
                              method=method)
    counts = warmup.specialisations()
    assert ENTRY_POINTS <= set(counts)
    assert {name: counts[name] for name in ENTRY_POINTS if counts[name] != 1} == {}


def test_no_kernel_the_api_calls_holds_a_run_time_address():
    # Machine code holding a Python object's address (a function passed across a compiled call)
    # cannot be cached on disk: numba would recompile that kernel in every process.
    warmup.warm_up()
    holding = [f"{module}.{name}" for module, name, dispatcher in warmup._dispatchers()
               if f"{module}.{name}" in ENTRY_POINTS
               and any(overload.library.has_dynamic_globals for overload in dispatcher.overloads.values())]
    assert holding == []
