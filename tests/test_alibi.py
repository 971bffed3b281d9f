"""ALiBi slopes (fope-spec section 4) and the bias they give."""

import numpy as np
import pytest

from minifope import alibi_slopes
from minifope.alibi import alibi_bias


def test_alibi_slopes_for_8_heads_are_halves_down_to_1_over_256():
    np.testing.assert_allclose(alibi_slopes(8), [2.0 ** -i for i in range(1, 9)], rtol=1e-15)


def test_alibi_slopes_for_6_heads_append_every_second_slope_of_the_8_head_case():
    # c = 4: slopes(4) = 2^-2, 2^-4, 2^-6, 2^-8; then slopes(8)[0::2][:2] = 2^-1, 2^-3
    np.testing.assert_allclose(alibi_slopes(6), [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8,
                                                 2.0 ** -1, 2.0 ** -3], rtol=1e-15)


@pytest.mark.parametrize("n_head", [1, 2, 3, 5, 12, 16])
def test_alibi_slopes_are_distinct_and_in_0_1(n_head):
    s = alibi_slopes(n_head)
    assert s.shape == (n_head,) and len(set(s)) == n_head
    assert np.all((s > 0) & (s < 1))


def test_alibi_bias_is_minus_slope_times_distance():
    bias = alibi_bias(np.array([0.5, 0.25]), np.arange(3) + 10, np.arange(13))
    assert bias.shape == (2, 3, 13)
    assert bias[0, 2, 12] == 0.0                      # m = n
    assert bias[1, 0, 4] == pytest.approx(-0.25 * 6)  # m = 10, n = 4
