"""The checker of lesson 2's DFT primer accepts the right answers and names realistic mistakes.

check_tone_dft grades fn(w, M), the DFT of the sampled tone exp(i w m), against np.fft.fft.
"""

import numpy as np
import pytest

from minifope.exercises.spectrum import check_tone_dft


def delta(w, M):
    return w - 2 * np.pi * np.arange(M) / M


def tone_dft_closed_form(w, M):
    # sum_m exp(i delta m) = (1 - exp(i delta M)) / (1 - exp(i delta)), and M where delta = 0 mod 2*pi
    d = delta(w, M)
    on_bin = np.abs(np.exp(1j * d) - 1) < 1e-12
    d = np.where(on_bin, 1.0, d)
    return np.where(on_bin, M, (1 - np.exp(1j * d * M)) / (1 - np.exp(1j * d)))


def tone_dft_dirichlet(w, M):
    # the same sum as exp(i delta (M-1)/2) sin(M delta / 2) / sin(delta / 2)
    d = delta(w, M)
    on_bin = np.abs(np.sin(d / 2)) < 1e-12
    d = np.where(on_bin, 1.0, d)
    return np.where(on_bin, M, np.exp(1j * d * (M - 1) / 2) * np.sin(M * d / 2) / np.sin(d / 2))


def tone_dft_by_the_definition(w, M):
    m = np.arange(M)
    return np.exp(1j * w * m) @ np.exp(-2j * np.pi * np.outer(m, m) / M)


@pytest.mark.parametrize("answer", [tone_dft_closed_form, tone_dft_dirichlet, tone_dft_by_the_definition,
                                    lambda w, M: np.fft.fft(np.exp(1j * w * np.arange(M)))],
                         ids=["closed form", "Dirichlet kernel", "definition", "np.fft"])
def test_check_tone_dft_accepts_the_right_answer(answer, capsys):
    assert check_tone_dft(answer) is True
    out = capsys.readouterr().out
    assert [line.endswith("   ok") for line in out.splitlines()] == [False, True, True, True, False]
    assert out.endswith("tone_dft: all ok\n") and "FAIL" not in out


def closed_form_without_the_on_bin_case(w, M):
    d = delta(w, M)
    return (1 - np.exp(1j * d * M)) / (1 - np.exp(1j * d))


def plus_sign_kernel(w, M):
    m = np.arange(M)
    return np.exp(1j * w * m) @ np.exp(2j * np.pi * np.outer(m, m) / M)


def cycles_not_radians(w, M):
    m = np.arange(M)
    return np.exp(1j * np.outer(w - np.arange(M) / M, m)).sum(axis=-1)


def positions_from_one(w, M):
    m = np.arange(1, M + 1)
    return np.exp(1j * np.outer(delta(w, M), m)).sum(axis=-1)


WRONG = [
    (closed_form_without_the_on_bin_case, "0/0"),
    (plus_sign_kernel, "with a minus sign"),
    (lambda w, M: tone_dft_closed_form(w, M) / M, "does not divide by M"),
    (lambda w, M: np.fft.fftshift(tone_dft_closed_form(w, M)), "no fftshift"),
    (cycles_not_radians, "not k/M"),
    (positions_from_one, "m = 0 .. M-1"),
    (lambda w, M: np.conj(tone_dft_closed_form(w, M)), "the phase has the wrong sign"),
    (lambda w, M: np.abs(tone_dft_dirichlet(w, M)), "that is |Z_k|"),
]


@pytest.mark.parametrize("answer, words", WRONG, ids=[words for _, words in WRONG])
def test_check_tone_dft_rejects_a_wrong_answer_and_says_why(answer, words, capsys):
    assert check_tone_dft(answer) is False
    out = capsys.readouterr().out
    assert "tone_dft: FAIL" in out
    assert words in out, out


def test_check_tone_dft_reports_an_unwritten_answer_once(capsys):
    def tone_dft(w, M):
        raise NotImplementedError

    assert check_tone_dft(tone_dft) is False
    out = capsys.readouterr().out
    assert out.count("not done yet") == 1 and "tensor" not in out


def test_check_tone_dft_given_no_function_says_so(capsys):
    assert check_tone_dft(np.zeros(16)) is False
    assert "expected a function" in capsys.readouterr().out
