"""Checkers for the DFT primer of lesson 2 and for lesson 3: measuring spectrum damage.

    check_tone_dft(fn)               fn(w, M) -> Z (M,) complex, the DFT of z(m) = exp(i w m)
        Z_k = sum_{m=0}^{M-1} exp(i (w - 2*pi*k/M) m), bin k at index k (np.fft.fft's order)
    check_off_frequency_energy(fn)   fn(z, w) -> L (...), z (..., M) complex, w (...)
        L(z, w) = || z - A exp(i w m) ||^2 / || z ||^2,  A = (1/M) sum_m z(m) exp(-i w m)
    check_undertrained(fn)           fn(w, N) -> mask (J,), True where the period 2*pi/w > N

References: np.fft.fft for the tone's DFT, minifope.spectrum.off_frequency_energy and
minifope.spectrum.undertrained.
"""

import math

import numpy as np

from .. import spectrum
from ..rope import rope_frequencies
from .grading import grade, grade_cases, rows, verdict


def _geometric_sum(delta, M, first=0):
    # sum_{m=first}^{first+M-1} exp(i delta m), summed term by term (no closed form to get wrong)
    m = np.arange(first, first + M)
    return np.exp(1j * np.multiply.outer(delta, m)).sum(axis=-1)


def check_tone_dft(fn):
    """fn(w, M) -> Z (M,) complex: the DFT of the sampled tone z(m) = exp(i w m), m = 0 .. M-1,
    Z_k = sum_m z(m) exp(-2*pi*i k m / M), graded against np.fft.fft on a tone on a bin, one
    halfway between two bins, and a negative frequency off the grid."""
    cases = [("on bin 3, M=16", 2 * math.pi * 3 / 16, 16),
             ("bin 3.5, M=16", 2 * math.pi * 3.5 / 16, 16),
             ("w=-2.0, M=12", -2.0, 12)]
    seen = []

    def recorded(w, M):
        seen.append(fn(w, M))
        return seen[-1]

    answer = recorded if callable(fn) else fn
    ok, shown = True, {}
    for label, w, M in cases:
        k = np.arange(M)
        ref = np.fft.fft(np.exp(1j * w * np.arange(M)))
        delta = w - 2 * math.pi * k / M
        mistakes = {
            "the DFT's kernel is exp(-2*pi*i k m / M), with a minus sign: with a plus, index k "
            "holds the frequency -2*pi*k/M": [_geometric_sum(w + 2 * math.pi * k / M, M)],
            "np.fft.fft does not divide by M: a tone on bin k0 gives Z_k0 = M": [ref / M],
            "bin k sits at index k = 0 .. M-1 (np.fft.fft's order; the bins k >= M/2 are the "
            "negative frequencies 2*pi*k/M - 2*pi): no fftshift": [np.fft.fftshift(ref)],
            "bin k is the frequency w_k = 2*pi*k/M radians per position, not k/M":
                [_geometric_sum(w - k / M, M)],
            "the positions run m = 0 .. M-1: starting at m = 1 multiplies Z_k by exp(i delta_k)":
                [_geometric_sum(delta, M, first=1)],
            "the phase has the wrong sign: Z_k = sum_m exp(+i delta_k m) = exp(i delta_k (M-1)/2) "
            "sin(M delta_k / 2) / sin(delta_k / 2), delta_k = w - 2*pi*k/M": [np.conj(ref)],
            "that is |Z_k|: the closed form has a phase, exp(i delta_k (M-1)/2); return the "
            "complex Z_k": [np.abs(ref)],
        }
        before = len(seen)
        passed = rows("tone_dft", answer, (w, M), [f"Z ({label})"], [ref], 1e-9, mistakes, shown)
        ok &= passed
        if shown.get("stop"):
            break
        if not passed and len(seen) > before and _has_nonfinite(seen[-1]):
            print("  hint: where delta_k = w - 2*pi*k/M is 0 (a tone on bin k), the closed form "
                  "is 0/0: every term of the sum is 1 there, so Z_k = M")
    return verdict("tone_dft", ok)


def _has_nonfinite(answer):
    try:
        return not np.all(np.isfinite(np.asarray(answer, dtype=complex)))
    except (TypeError, ValueError):
        return False


def check_off_frequency_energy(fn, seed=0):
    """Graded on six signals of M = 64 positions: pure tones on and off the FFT grid, a tone
    at the wrong frequency, a leaked mix (through_linear), a distorted tone (through_activation)
    and noise."""
    rng = np.random.default_rng(seed)
    M = 64
    m = np.arange(M)
    w = np.array([0.3, 2 * math.pi * 5 / M, 0.3, 0.3, 0.7, 0.3])
    mix = spectrum.through_linear(spectrum.clean_sinusoids(np.array([0.3, 1.1]), M),
                                  rng.standard_normal((4, 4)) / 2)[:, 0]
    z = np.stack([
        (1.5 - 0.5j) * np.exp(1j * 0.3 * m),
        np.exp(1j * w[1] * m),
        np.exp(1j * 1.2 * m),
        mix,
        spectrum.through_activation(np.exp(1j * 0.7 * m), np.tanh),
        rng.standard_normal(M) + 1j * rng.standard_normal(M),
    ])
    ref = spectrum.off_frequency_energy(z, w)
    tone = np.exp(1j * w[:, None] * m)
    Z = np.sum(z * np.conj(tone), axis=-1)
    energy = np.sum(np.abs(z) ** 2, axis=-1)
    mistakes = {
        "A is the mean (1/M) sum_m z(m) exp(-i w m): the ratio form is "
        "1 - |Z(w)|^2 / (M * sum_m |z(m)|^2), with the factor M": [1 - np.abs(Z) ** 2 / energy],
        "the projection on the tone uses exp(-i w m) (the conjugate of the tone)":
            [spectrum.off_frequency_energy(z, -w)],
        "that is the energy AT w (the explained share); L is the share left unexplained, 1 minus it":
            [1 - ref],
    }
    return grade("off_frequency_energy", fn, (z, w), ["L"], [ref], tol=1e-8, mistakes=mistakes)


def check_undertrained(fn):
    """fn(w, N) -> boolean mask of the frequencies whose period 2*pi/w exceeds N, for RoPE's
    w_j (d = 64, theta = 10000) at N = 128 and N = 1024 (graded as 0/1 arrays)."""
    w = rope_frequencies(64)
    cases = []
    for N in (128, 1024):
        ref = spectrum.undertrained(w, N).astype(float)
        mistakes = {
            "the period of w is 2*pi/w: compare w with 2*pi/N, not 1/N": [(w < 1.0 / N).astype(float)],
            "the mask is inverted: undertrained means a period LONGER than N, i.e. w < 2*pi/N":
                [1.0 - ref],
        }
        cases.append((f"mask N={N}", (w, N), ref, mistakes))
    return grade_cases("undertrained", fn, cases, tol=0.0)
