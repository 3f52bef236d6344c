"""Deep searches of the sample-split samplers: below SAMPLE_SPLIT_DEPTH nodes split at their midpoint.

The targets here carry about 36 bits of KL far in the prior's tail, so most
searches pass depth ``SAMPLE_SPLIT_DEPTH`` and select a node of the mixed part
of the tree (a pure sample-split tree would need more than the 62 levels a heap
index addresses for some of them).
"""

import numpy as np
import pytest

import rcc
from rcc import samplers, testing
from rcc.random import private_key

SAMPLE_SPLITS = ("astar", "gprs-sac", "grc-sample")
N = 20_000
STD = 2.0 ** -28
# (name, target, reference): KL about 38 bits
DEEP = [
    ("normal, std 2**-28 at 3.5 prior stds", rcc.Normal(np.full(N, 3.5), STD), rcc.Normal(3.5, STD).truncate(0.0)),
    ("laplace, std 2**-28 at -3.5 prior stds", rcc.Laplace(np.full(N, -3.5), STD / np.sqrt(2.0), tail_mass=1e-6),
     rcc.Laplace(-3.5, STD / np.sqrt(2.0), tail_mass=1e-6)),
]


def _depth(index):
    return np.floor(np.log2(np.asarray(index, dtype=np.float64))).astype(np.int64)


@pytest.mark.parametrize("method", SAMPLE_SPLITS)
def test_deep_searches_are_exact(method):
    cases = []
    for k, (name, target, reference) in enumerate(DEEP):
        enc = rcc.encode_sample(target, 1200 + k, method=method, tail_mass=0.0)
        depth = _depth(enc.index)
        assert np.mean(depth > samplers.SAMPLE_SPLIT_DEPTH) > 0.5  # the mixed part of the tree is what is tested
        assert depth.max() <= samplers.MAX_DEPTH
        decoded = rcc.decode_sample(enc.index, enc.factor, 1200 + k, method=method)
        assert np.array_equal(decoded, enc.sample)
        cases.append(testing.BatteryCase(f"{method}: {name}", enc.sample, reference.cdf))
    testing.assert_battery_passes(testing.run_battery(cases))


@pytest.mark.parametrize("method", SAMPLE_SPLITS)
def test_test_of_the_test_wrong_bound_at_depth_fails(method):
    """The mode displaced by one target std: wrong only where the nodes are as narrow as the target,
    which for this target is below SAMPLE_SPLIT_DEPTH; the battery sees it."""
    name, target, reference = DEEP[0]
    params, _, _, _ = samplers.core._params(target, rcc.Normal(0.0, 1.0), 0.0)
    params[:, samplers.kernels.P_VERTEX] += STD
    index, sample, _, status = samplers.core._run_search(params, 1200, private_key(1200), 0, method, 2**20)
    # greedy rejection coding may lose the residual mass of a few (the wrong masses do not add up)
    ok = status == 0
    assert np.mean(ok) > 0.99
    assert np.mean(_depth(index[ok]) > samplers.SAMPLE_SPLIT_DEPTH) > 0.5
    result = testing.run_battery([testing.BatteryCase("wrong bound at depth", sample[ok], reference.cdf)])
    assert not result.passed


def test_deep_messages_through_bytes():
    """The path code takes the left share 1/2 below SAMPLE_SPLIT_DEPTH, as the tree splits there."""
    target = rcc.Normal(np.linspace(3.4, 3.6, 2000), STD)
    fit = rcc.encode_sample(target, 3, method="grc-sample", tail_mass=0.0)
    enc = rcc.encode_sample(target, 4, method="grc-sample", tail_mass=0.0)
    assert np.mean(_depth(enc.index) > samplers.SAMPLE_SPLIT_DEPTH) > 0.5
    code = samplers.TreeIndexCode.fit(fit.index)
    data = samplers.encode_tree_messages(enc, 4, index_code=code)
    index = samplers.decode_tree_messages(data, 2000, 4, index_code=code, method="grc-sample")
    assert np.array_equal(index, enc.index)
    bits = code.bits(enc.index, 4, method="grc-sample")
    assert abs(8 * len(data) - bits.sum()) < 0.005 * bits.sum() + 128  # the ideal information content, and a header
    assert 8 * len(data) / 2000 < np.mean(enc.kl_bits) + 4
    share = np.empty(3)
    nodes = np.array([2**samplers.SAMPLE_SPLIT_DEPTH - 1, 2**samplers.SAMPLE_SPLIT_DEPTH, 2**62 - 1])
    samplers.left_fractions(4, 0, nodes, 0, share)
    assert share[0] != 0.5 and share[1] == 0.5 and share[2] == 0.5
