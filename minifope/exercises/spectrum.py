"""Checkers for lesson 3: measuring spectrum damage.

    check_off_frequency_energy(fn)   fn(z, w) -> L (...), z (..., M) complex, w (...)
        L(z, w) = || z - A exp(i w m) ||^2 / || z ||^2,  A = (1/M) sum_m z(m) exp(-i w m)
    check_undertrained(fn)           fn(w, N) -> mask (J,), True where the period 2*pi/w > N

References: minifope.spectrum.off_frequency_energy and minifope.spectrum.undertrained.
"""

import math

import numpy as np

from .. import spectrum
from ..rope import rope_frequencies
from .grading import grade, grade_cases


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
