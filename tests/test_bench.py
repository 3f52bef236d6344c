"""rcc.bench's numpy reference race is the kernels' race: it selects the same candidates."""

import numpy as np
import pytest

import rcc
from rcc.bench import gaussian_channel, reference_hybrid_encode


@pytest.mark.parametrize("std", [0.1, 0.01, 1e-4])
@pytest.mark.parametrize("width, transform, transform_scale", [
    (None, None, rcc.DEFAULT_TRANSFORM_SCALE),
    ("adaptive", None, rcc.DEFAULT_TRANSFORM_SCALE),
    (None, "prior", 1.0),
])
def test_reference_race_selects_the_kernels_indices(std, width, transform, transform_scale):
    target = gaussian_channel(150, std, seed=3)
    ours = rcc.encode_sample(target, seed=2, width=width, transform=transform)
    reference = reference_hybrid_encode(target.mean, std, ours.width, seed=2, transform_scale=transform_scale)
    np.testing.assert_array_equal(reference, ours.index)


def test_a_reference_on_another_axis_disagrees():
    # The comparison has power: the prior's axis (the old reference) selects other candidates.
    target = gaussian_channel(150, 0.01, seed=3)
    ours = rcc.encode_sample(target, seed=2)
    reference = reference_hybrid_encode(target.mean, 0.01, ours.width, seed=2, transform_scale=1.0)
    assert np.mean(reference == ours.index) < 0.8
