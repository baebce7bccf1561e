import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from napari_medgan.metrics.wasserstein import wasserstein_1d


@pytest.mark.parametrize("sizes", [(500, 500), (37, 1201), (1, 9)])
def test_wasserstein_1d_matches_scipy(sizes):
    rng = np.random.default_rng(sum(sizes))
    u = rng.normal(0.0, 1.0, sizes[0])
    v = rng.gamma(2.0, 0.7, sizes[1]).reshape(-1, 1)  # shapes are flattened
    assert wasserstein_1d(u, v) == pytest.approx(wasserstein_distance(u, v.ravel()), rel=1e-12)


def test_wasserstein_1d_of_a_shift_is_the_shift():
    u = np.linspace(-1.0, 1.0, 101)
    assert wasserstein_1d(u, u) == 0.0
    assert wasserstein_1d(u, u + 0.25) == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [np.array([]), np.array([0.0, np.nan])])
def test_wasserstein_1d_refuses_empty_or_nan(bad):
    with pytest.raises(ValueError, match="wasserstein_1d"):
        wasserstein_1d(bad, np.zeros(3))
