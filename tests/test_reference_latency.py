"""experiments.reference_latency: its helpers, its path without the C++ reference, and its checks on a stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from experiments import reference_latency as rl

ROOT = Path(__file__).resolve().parent.parent


def test_latency_summary_reports_median_and_90th_percentile_in_microseconds():
    summary = rl.latency_summary([1e-6, 2e-6, 3e-6, 4e-6, 5e-6])
    assert summary["median_us"] == pytest.approx(3.0)
    assert summary["p90_us"] == pytest.approx(4.6)
    with pytest.raises(ValueError, match="seconds must be a non-empty 1-D array"):
        rl.latency_summary([])


def test_decode_agreement_splits_first_candidate_from_later_ones():
    encoded = np.array([0.1, 0.2, 0.3, 0.4, np.nan])
    decoded = np.array([0.1, 0.25, 0.3, 0.4, np.nan])
    got = rl.decode_agreement(decoded, encoded, np.array([0, 1, 0, 5, 2]), first_index=0)
    assert got == {"first_messages": 2, "first_exact": 2, "later_messages": 3, "later_exact": 1}
    got = rl.decode_agreement(decoded, encoded, np.array([1, 1, 2, 2, 2]), first_index=1)
    assert got == {"first_messages": 2, "first_exact": 1, "later_messages": 3, "later_exact": 2}
    with pytest.raises(ValueError, match="one shape"):
        rl.decode_agreement(decoded[:2], encoded, np.zeros(5, dtype=int), first_index=0)
    with pytest.raises(ValueError, match="at least first_index=1"):
        rl.decode_agreement(decoded, encoded, np.zeros(5, dtype=int), first_index=1)


def test_interleaved_latencies_runs_every_seed_once_alternating_and_drops_the_warmup():
    order = []
    ours, theirs = rl.interleaved_latencies(lambda s: order.append(("ours", s)),
                                            lambda s: order.append(("reference", s)), calls=4, warmup=2)
    assert order[:4] == [("ours", 0), ("reference", 0), ("reference", 1), ("ours", 1)]
    assert sorted(s for who, s in order if who == "ours") == list(range(6))
    assert sorted(s for who, s in order if who == "reference") == list(range(6))
    assert ours.shape == theirs.shape == (4,) and (ours >= 0).all() and (theirs >= 0).all()


def test_missing_reference_prints_how_to_build_it_writes_nothing_and_exits_0(tmp_path):
    """Run as a user would, with the reference's module made unimportable (even where it is installed)."""
    pytest.importorskip("matplotlib")
    code = ("import sys, runpy; sys.modules['hybrid_rcc'] = None; sys.argv[1:] = ['--out-dir', sys.argv[1]]; "
            "runpy.run_module('experiments.reference_latency', run_name='__main__')")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "not importable, so nothing was measured" in done.stdout
    assert rl.REFERENCE_URL in done.stdout and "PYTHONPATH" in done.stdout
    assert not (tmp_path / "out").exists()


def _stand_in(broken):
    """A stand-in for the reference's module, with its interface, coding through rcc (0-based indices).

    ``broken`` decodes every message past the first candidate with the wrong seed,
    as a decoder that skips the wrong amount of shared randomness would.
    """
    import rcc

    class Output:
        def __init__(self, enc, seed):
            self.sample_opt = np.array([float(enc.sample)])
            self.sample_index = int(enc.index) - 1
            self.total_number_samples = int(enc.candidates)
            self.box_dimensions = np.array([float(enc.width)])
            self.seed, self.enc = seed, enc

    def sample_gaussian_hybrid(q_mean, q_std, p_mean, p_std, algorithm, eps, seed, n_max, verbose):
        prior = rcc.Normal(float(p_mean[0]), float(p_std[0]))
        return Output(rcc.encode_sample(rcc.Normal(float(q_mean[0]), float(q_std[0])), seed=seed, prior=prior,
                                        tail_mass=eps), seed)

    def decode_gaussian_hybrid(out, p_mean, p_std):
        seed = out.seed + 1 if broken and out.sample_index > 0 else out.seed
        return np.array([float(rcc.decode_sample(out.enc.index, out.enc.factor, seed=seed,
                                                 prior=rcc.Normal(float(p_mean[0]), float(p_std[0])),
                                                 width=out.enc.width))])

    return types.SimpleNamespace(SamplingAlgorithm=types.SimpleNamespace(PFR=0),
                                 sample_gaussian_hybrid=sample_gaussian_hybrid,
                                 decode_gaussian_hybrid=decode_gaussian_hybrid)


@pytest.mark.parametrize("broken", [False, True])
def test_measurement_on_a_stand_in_writes_both_tables_and_catches_a_wrong_decoder(tmp_path, broken):
    pytest.importorskip("matplotlib")
    from experiments.common import read_csv

    summary = rl.main(tiny=True, out_dir=tmp_path, progress=False, reference=_stand_in(broken))
    latency = read_csv(tmp_path / "reference_latency.csv")
    assert [r["operation"] for r in latency] == ["encode, scalar", "decode, scalar",
                                                 f"encode, batch of {rl.BATCH}", f"decode, batch of {rl.BATCH}"]
    for r in latency:
        assert float(r["ours_median_us"]) > 0 and float(r["reference_p90_us"]) >= float(r["reference_median_us"])
        assert float(r["load_avg_1min_before"]) >= 0
    rows = read_csv(tmp_path / "reference_decode.csv")
    assert {r["seed_from"] for r in rows} == {"0", str(rl.SEED_CHECK_HIGH)}
    checks = {r["implementation"]: r for r in rows if r["seed_from"] == "0"}
    ours, theirs = checks["rcc"], checks["reference"]
    assert int(ours["later_exact"]) == int(ours["later_messages"]) > 0
    assert int(ours["first_exact"]) == int(ours["first_messages"]) > 0
    assert int(theirs["first_exact"]) == int(theirs["first_messages"]) > 0
    later = int(theirs["later_messages"])
    assert later > 0 and int(theirs["later_exact"]) == (0 if broken else later)
    assert summary["reference decodes N > 0 exactly"] == f"{0 if broken else later}/{later}"
