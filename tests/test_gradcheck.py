"""The gradient checker accepts a right backward, rejects a wrong one, and says which tensor."""

import numpy as np

from minifope import reference as R
from minifope.gradcheck import check_backward, check_gradients, cmp, numerical_gradient, relative_error
from minifope.layers import rmsnorm_forward, rmsnorm_backward


def _inputs():
    rng = np.random.default_rng(0)
    return dict(x=rng.standard_normal((2, 3, 8)), g=rng.standard_normal(8))


def test_checker_accepts_the_right_backward(capsys):
    assert check_backward(rmsnorm_forward, rmsnorm_backward, R.rmsnorm, _inputs())
    out = capsys.readouterr().out
    assert "all ok" in out and "FAIL" not in out


def test_checker_rejects_a_wrong_backward_and_names_the_tensor(capsys):
    def wrong_backward(dout, cache):
        dx, dg = rmsnorm_backward(dout, cache)
        return dx, dg * 1.01  # 1% off in the scale's gradient only

    assert not check_backward(rmsnorm_forward, wrong_backward, R.rmsnorm, _inputs())
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["x"].rstrip().endswith("ok")
    assert rows["g"].rstrip().endswith("FAIL")


def test_cmp_reports_a_shape_mismatch_as_fail(capsys):
    assert not cmp("w", np.zeros((2, 3)), np.zeros((3, 2)))
    assert "shape" in capsys.readouterr().out


def test_check_gradients_fails_on_a_missing_tensor():
    assert not check_gradients({"a": np.ones(2)}, {"a": np.ones(2), "b": np.ones(2)}, verbose=False)


def test_relative_error_is_max_abs_diff_over_max_abs_reference():
    assert relative_error(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == 0.25
    assert relative_error(np.array([0.1, 0.0]), np.zeros(2)) == 0.1


def test_numerical_gradient_of_a_quadratic_is_exact_and_restores_x():
    x = np.array([1.5, -2.0])
    g = numerical_gradient(lambda: float(np.sum(x ** 2)), x, 1)
    assert abs(g - (-4.0)) < 1e-8
    assert x[1] == -2.0


def test_cmp_compares_complex_tensors_in_full(capsys):
    ref = np.array([1 + 2j, 3 - 1j])
    assert cmp("z", ref.copy(), ref)
    assert not cmp("z", ref.real, ref)  # the imaginary part is not dropped
    assert not cmp("z", ref.conj(), ref)
    assert "FAIL" in capsys.readouterr().out
