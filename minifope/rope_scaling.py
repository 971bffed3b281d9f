"""Extending RoPE past the training length N to L = s * N (fope-spec section 5).

Three ways, each a change of RoPE's frequencies w_j = theta^(-2j/d) (rope.py):

PI, position interpolation: divide every position by s, i.e. every frequency:

    w'_j = w_j / s

NTK-aware scaling: raise theta so that the lowest frequency stretches by exactly s and
the highest stays put:

    theta' = theta * s^(d / (d - 2)),   w'_j = theta'^(-2j/d)

YaRN: per frequency, blend interpolation and extrapolation by how many rotations the
frequency makes within the training length, r_j = N * w_j / (2*pi):

    gamma_j = clip((r_j - beta_slow) / (beta_fast - beta_slow), 0, 1)
    w'_j = (1 - gamma_j) * w_j / s + gamma_j * w_j        (beta_fast = 32, beta_slow = 1)

so frequencies that turn many times within N keep their value, those that turn less than
once are interpolated. YaRN also sharpens attention: sqrt(1/t) = 0.1 * ln(s) + 1, applied
to both q and k (the cos and sin tables are multiplied by it), so the logits grow by 1/t.

At character level N is small (128-256), so even the highest frequency w_0 = 1 turns only
N / (2*pi) ~ 20-40 times within N: below beta_fast, so YaRN interpolates it a little too.
"""

import math

import numpy as np

from .rope import rope_frequencies

from .config import ROPE_SCALINGS  # noqa: F401  (the names this module implements)
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0


def pi_frequencies(w, s):
    """w'_j = w_j / s."""
    return np.asarray(w) / s


def ntk_frequencies(head_dim, theta, s):
    """w'_j = theta'^(-2j/d) with theta' = theta * s^(d / (d - 2))."""
    return rope_frequencies(head_dim, theta * s ** (head_dim / (head_dim - 2)))


def yarn_ramp(w, train_len, beta_fast=YARN_BETA_FAST, beta_slow=YARN_BETA_SLOW):
    """gamma_j = clip((r_j - beta_slow) / (beta_fast - beta_slow), 0, 1), r_j = N * w_j / (2*pi)."""
    r = train_len * np.asarray(w) / (2.0 * math.pi)
    return np.clip((r - beta_slow) / (beta_fast - beta_slow), 0.0, 1.0)


def yarn_frequencies(w, s, train_len, beta_fast=YARN_BETA_FAST, beta_slow=YARN_BETA_SLOW):
    """w'_j = (1 - gamma_j) * w_j / s + gamma_j * w_j."""
    gamma = yarn_ramp(w, train_len, beta_fast, beta_slow)
    return (1.0 - gamma) * np.asarray(w) / s + gamma * np.asarray(w)


def yarn_attention_factor(s):
    """sqrt(1/t) = 0.1 * ln(s) + 1, the factor on q and on k (1 for s <= 1)."""
    return 0.1 * math.log(s) + 1.0 if s > 1.0 else 1.0


def scaled_rope_frequencies(head_dim, theta, scaling, s, train_len):
    """RoPE's frequencies under `scaling` ('none' | 'pi' | 'ntk' | 'yarn') with factor s."""
    w = rope_frequencies(head_dim, theta)
    if scaling == "none" or s == 1.0:
        return w
    if scaling == "pi":
        return pi_frequencies(w, s)
    if scaling == "ntk":
        return ntk_frequencies(head_dim, theta, s)
    if scaling == "yarn":
        return yarn_frequencies(w, s, train_len)
    raise ValueError(f"rope_scaling must be one of {', '.join(ROPE_SCALINGS)}, got {scaling!r}")
