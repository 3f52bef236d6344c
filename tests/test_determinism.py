"""Streams are a function of the inputs' bits, not of the CPU's SIMD dispatch.

numpy and torch pick vectorised transcendentals (exp, log, log2, power, ...) at run
time from the CPU's features, and the AVX2/AVX-512 paths round differently in the
last bit from the baseline ones.  A compressed stream must decode on another machine,
so everything that reaches a stream (or a table both coder sides build) must use the
C library's double functions, IEEE arithmetic or a fixed summation order instead.

The test runs the pinned cases (rcc.compression streams and message codes, the torch
channels' streams, an RCCChannel calibrated from the same posteriors) once in this
process and once in a child process with numpy's and torch's SIMD dispatch forced down
to their baselines and numba on one thread, and asserts the same digests.  The child's
inputs are the parent's own arrays, so only the library's arithmetic can differ.  A
deliberately broken variant (the standard deviations from numpy's vectorised ``exp``)
shows that the forced-down run detects such a dependence.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("constriction")

ROOT = Path(__file__).resolve().parents[1]

#: RCCChannel cases of tests/test_golden_torch.py coded here (their calibrated factor tables
#: depend on every exp of the posteriors; the narrow-posterior case is left out for its
#: calibration time).
RCC_NAMES = ("default", "empirical", "prior_zipf")


def _sha(data):
    return hashlib.sha256(bytes(data)).hexdigest()


def _inputs():
    """The cases' input arrays, made once in the parent and handed to the child as they are."""
    import test_golden_torch as golden

    noise = golden.noise_stream("plain")[1]
    rcc_inputs = {}
    for name in RCC_NAMES:
        calibration = golden.RCC_CASES[name]["data"](300, seed=1)
        rcc_inputs[name] = ([t.numpy() for t in calibration], [t.numpy() for t in golden.rcc_items(name)])
    return {"noise": noise.numpy(), "rcc": rcc_inputs}


def _digests(inputs, broken=False):
    """``{case: sha256}`` of every stream and decoded output of the cases, from ``inputs``.

    ``broken=True`` codes the RCCChannel cases with the standard deviations taken from
    numpy's vectorised ``exp`` (what the library did before it used the C library's).
    """
    import test_golden_streams
    import test_golden_torch as golden

    from rcc.torch import RCCChannel, UniformNoiseChannel, channel as channel_module

    out = {}
    if not broken:
        for name, data in test_golden_streams._all_streams():
            out[f"rcc/{name}"] = _sha(data)
        y = torch.from_numpy(inputs["noise"])
        for name, case in sorted(golden.NOISE_CASES.items()):
            noise = UniformNoiseChannel(**case).eval()
            data = noise.compress(y, seed=123)
            out[f"noise/{name}"] = _sha(data)
            out[f"noise/{name}/decoded"] = _sha(noise.decompress(data, seed=123, shape=y.shape).numpy().tobytes())
    saved = channel_module._libm
    if broken:
        channel_module._libm = lambda function, x: np.exp(np.asarray(x, dtype=np.float64))
    try:
        for name in RCC_NAMES[:1] if broken else RCC_NAMES:
            (cal_mean, cal_log_scale), (mean, log_scale) = inputs["rcc"][name]
            latents = cal_mean.shape[1]
            ch = RCCChannel(latents, **golden.RCC_CASES[name]["kwargs"])
            ch.calibrate(torch.from_numpy(cal_mean), torch.from_numpy(cal_log_scale), seed=3)
            ch.eval()
            mean, log_scale = torch.from_numpy(mean), torch.from_numpy(log_scale)
            batch = ch.compress(mean, log_scale, seed=77)[0]
            items = ch.compress(mean, log_scale, seed=77, per_item=True)[0]
            out[f"rcc_channel/{name}"] = _sha(batch)
            out[f"rcc_channel/{name}/items"] = _sha(b"".join(bytes(blob) for blob in items))
            out[f"rcc_channel/{name}/tables"] = _sha(ch.factor_tables.numpy().tobytes())
            if not broken:
                decoded = ch.decompress(batch, seed=77, shape=mean.shape)
                out[f"rcc_channel/{name}/decoded"] = _sha(decoded.numpy().tobytes())
    finally:
        channel_module._libm = saved
    return out


def _probe():
    """Digest of numpy's vectorised exp over a fixed grid: differs when the dispatch changes it."""
    return _sha(np.exp(np.linspace(-30.0, 5.0, 4099)).tobytes())


def _dispatched_features():
    """numpy's dispatch targets this CPU runs (what ``NPY_DISABLE_CPU_FEATURES`` accepts)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


def _child(path):
    """Entry point of the forced-down process: digests of the parent's inputs, as JSON."""
    with open(path, "rb") as f:
        inputs = pickle.load(f)
    print(json.dumps({
        "still_dispatched": _dispatched_features(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "probe": _probe(),
        "digests": _digests(inputs),
        "broken": _digests(inputs, broken=True),
    }))


@pytest.fixture(scope="module")
def forced_down(tmp_path_factory):
    """``(inputs, the child's report)``; the child runs with the SIMD dispatch forced down."""
    inputs = _inputs()
    path = tmp_path_factory.mktemp("determinism") / "inputs.pkl"
    with open(path, "wb") as f:
        pickle.dump(inputs, f)
    env = dict(os.environ)
    env.update(ATEN_CPU_CAPABILITY="default", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               NPY_DISABLE_CPU_FEATURES=" ".join(_dispatched_features()))
    code = (f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]; "
            f"import test_determinism; test_determinism._child({str(path)!r})")
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return inputs, json.loads(run.stdout.strip().splitlines()[-1])


def test_child_runs_with_the_dispatch_forced_down(forced_down):
    _, report = forced_down
    assert report["still_dispatched"] == []
    assert report["torch_capability"] == "DEFAULT"


def test_streams_do_not_depend_on_the_simd_dispatch(forced_down):
    inputs, report = forced_down
    here = _digests(inputs)
    assert sorted(report["digests"]) == sorted(here)
    changed = [name for name in here if report["digests"][name] != here[name]]
    assert not changed, f"streams that change with the CPU's SIMD dispatch: {changed}"


def test_the_forced_down_run_detects_a_simd_dependent_stream(forced_down):
    """Power: with the standard deviations from numpy's vectorised exp, the calibrated tables
    and the streams differ between this process and the forced-down one."""
    inputs, report = forced_down
    if report["probe"] == _probe():
        pytest.skip("numpy's exp rounds alike with and without this CPU's SIMD paths: nothing to detect")
    here = _digests(inputs, broken=True)
    assert report["broken"]["rcc_channel/default/tables"] != here["rcc_channel/default/tables"]
    assert report["broken"]["rcc_channel/default"] != here["rcc_channel/default"]
