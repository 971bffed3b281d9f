"""The position-embedding modules state the equations they implement, in the symbols the code uses."""

import inspect

import pytest

from minifope import alibi, fope, nope, rope

EQUATIONS = {
    rope: ["w_j = theta^(-2j/d)", "x' = x * [COS, COS] + rotate_half(x) * [SIN, SIN]",
           "s(m, n) = Re( sum_j  h_j * exp(i * w_j * (m - n)) )", "fope-spec section 1"],
    fope: ["COS[h, m, j] = sum_f cos(w_f * m) * Ccos[h, f, j]",
           "SIN[h, m, j] = sum_f sin(w_f * m) * Csin[h, f, j]", "2*pi/N",
           "J = min(F, head_dim // 4)", "sigma * sqrt(2 / (J * (F + n_head)))", "fope-spec section 3"],
    alibi: ["s(m, n) = q_m . k_n / sqrt(d)  -  slope_h * (m - n)", "2^(-8/H)", "fope-spec section 4"],
    nope: ["s(m, n) = q_m . k_n / sqrt(d)"],
}

SYMBOLS_IN_CODE = {
    rope.rope_frequencies: ["theta", "head_dim"],
    rope.nudft_scores: ["h = nudft_spectrum", "distance", "w"],
    fope.fope_frequencies: ["D = max(fope_dim, head_dim)", "floor = 2.0 * math.pi / train_len"],
    fope.fope_tables: ["ccos", "csin", "einsum(\"mf,hfj->hmj\""],
    fope.fope_coefficients: ["std = sigma * math.sqrt(2.0 / (J * (F + n_head)))"],
    alibi.alibi_bias: ["slopes", "distance"],
}


@pytest.mark.parametrize("module", EQUATIONS, ids=lambda m: m.__name__)
def test_module_docstring_states_its_equations(module):
    for equation in EQUATIONS[module]:
        assert equation in module.__doc__, f"{module.__name__} docstring lacks {equation!r}"


@pytest.mark.parametrize("function", SYMBOLS_IN_CODE, ids=lambda f: f.__name__)
def test_code_uses_the_docstring_symbols(function):
    source = inspect.getsource(function)
    for symbol in SYMBOLS_IN_CODE[function]:
        assert symbol in source, f"{function.__name__} does not use {symbol!r}"
