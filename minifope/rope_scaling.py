"""Extending RoPE past the training length N to L = s * N (fope-spec section 5).

Three ways, each a change of RoPE's frequencies w_j = theta^(-2j/d), j = 0 .. d/2 - 1 (rope.py):

PI, position interpolation: divide every position by s, i.e. every frequency:

    w'_j = w_j / s

NTK-aware scaling: raise theta so that the lowest frequency stretches by exactly s and
the highest stays put:

    theta' = theta * s^(d / (d - 2)),   w'_j = theta'^(-2j/d)

YaRN: per frequency, blend extrapolation (keep w_j) and interpolation (w_j / s) by a ramp
gamma_j in [0, 1], the share of w_j kept:

    w'_j = (1 - gamma_j) * w_j / s + gamma_j * w_j        (beta_fast = 32, beta_slow = 1)

Frequencies that turn many times within N keep their value; those that turn less than
once are interpolated. Two ramps, chosen by GPTConfig.rope_yarn_ramp:

- 'index' (the default): the ramp of YaRN's reference code, of transformers
  (`_compute_yarn_parameters`) and of the FoPE authors' YaRN baseline, linear in the pair
  index j. The pair that turns b times within N sits at the fractional index

      j(b) = d * ln(N / (2*pi*b)) / (2 * ln theta)          (w_j * N = 2*pi*b solved for j)

  and with low = max(floor(j(beta_fast)), 0), high = min(ceil(j(beta_slow)), d - 1)
  (high = low + 0.001 if they meet):

      gamma_j = 1 - clip((j - low) / (high - low), 0, 1)

- 'rotations': the YaRN paper's equation, linear in the rotation count r_j = N * w_j / (2*pi):

      gamma_j = clip((r_j - beta_slow) / (beta_fast - beta_slow), 0, 1)

The two agree at the ends (gamma = 1 above beta_fast turns, 0 below beta_slow) and differ
between: r_j falls geometrically with j, so the paper's ramp drops fast and the index ramp
evenly. At d = 32, s = 4, N = 256 the kept share of w_1 .. w_6 is 0.86, 0.71, 0.57, 0.43,
0.29, 0.14 with 'index' and 0.71, 0.38, 0.20, 0.10, 0.04, 0.01 with 'rotations'.

YaRN also sharpens attention: sqrt(1/t) = 0.1 * ln(s) + 1, applied to both q and k (the
cos and sin tables are multiplied by it), so the logits grow by 1/t.

At character level N is small, so the highest frequency w_0 = 1 turns only r_0 = N / (2*pi)
times within N: 20.4 at N = 128, 40.7 at N = 256. With the paper's ramp w_0 is interpolated a
little at N = 128 (r_0 < beta_fast) and kept at N = 256; the index ramp keeps w_0 at both
(low = max(floor(j(32)), 0) is 0: j(32) is negative at N = 128, between 0 and 1 at N = 256 for
d = 16 to 64), and at N = 128 starts interpolating from w_1.
"""

import math

import numpy as np


ROPE_SCALINGS = ("none", "pi", "ntk", "yarn")
YARN_RAMPS = ("index", "rotations")
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0


def rope_frequencies(head_dim, theta=10000.0):
    """w_j = theta^(-2j/d), j = 0 .. d/2 - 1: rope.rope_frequencies, restated here because rope.py
    builds its RoPE on this module (tests/test_rope_scaling.py checks that the two agree)."""
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even integer, got {head_dim}")
    return theta ** (-2.0 * np.arange(head_dim // 2, dtype=np.float64) / head_dim)


def pi_frequencies(w, s):
    """w'_j = w_j / s."""
    return np.asarray(w) / s


def ntk_frequencies(head_dim, theta, s):
    """w'_j = theta'^(-2j/d) with theta' = theta * s^(d / (d - 2))."""
    return rope_frequencies(head_dim, theta * s ** (head_dim / (head_dim - 2)))


def yarn_correction_index(turns, head_dim, theta, train_len):
    """j(b) = d * ln(N / (2*pi*b)) / (2 * ln theta): the fractional pair index whose frequency
    turns b times within N."""
    return head_dim * math.log(train_len / (turns * 2.0 * math.pi)) / (2.0 * math.log(theta))


def yarn_index_ramp(head_dim, theta, train_len, beta_fast=YARN_BETA_FAST, beta_slow=YARN_BETA_SLOW):
    """gamma_j = 1 - clip((j - low) / (high - low), 0, 1), j = 0 .. d/2 - 1, with
    low = max(floor(j(beta_fast)), 0) and high = min(ceil(j(beta_slow)), d - 1)."""
    low = max(math.floor(yarn_correction_index(beta_fast, head_dim, theta, train_len)), 0)
    high = min(math.ceil(yarn_correction_index(beta_slow, head_dim, theta, train_len)), head_dim - 1)
    if high == low:
        high += 0.001  # as the reference code does, so the ramp is a step rather than 0 / 0
    j = np.arange(head_dim // 2)
    return 1.0 - np.clip((j - low) / (high - low), 0.0, 1.0)


def yarn_ramp(w, train_len, beta_fast=YARN_BETA_FAST, beta_slow=YARN_BETA_SLOW):
    """The paper's ramp: gamma_j = clip((r_j - beta_slow) / (beta_fast - beta_slow), 0, 1),
    r_j = N * w_j / (2*pi)."""
    r = train_len * np.asarray(w) / (2.0 * math.pi)
    return np.clip((r - beta_slow) / (beta_fast - beta_slow), 0.0, 1.0)


def yarn_frequencies(w, s, gamma):
    """w'_j = (1 - gamma_j) * w_j / s + gamma_j * w_j."""
    w, gamma = np.asarray(w), np.asarray(gamma)
    return (1.0 - gamma) * w / s + gamma * w


def yarn_attention_factor(s):
    """sqrt(1/t) = 0.1 * ln(s) + 1, the factor on q and on k (1 for s <= 1)."""
    return 0.1 * math.log(s) + 1.0 if s > 1.0 else 1.0


def scaled_rope_frequencies(head_dim, theta, scaling, s, train_len, yarn_ramp_kind="index"):
    """RoPE's frequencies under `scaling` ('none' | 'pi' | 'ntk' | 'yarn') with factor s;
    yarn_ramp_kind: 'index' (the reference code's ramp) or 'rotations' (the paper's)."""
    w = rope_frequencies(head_dim, theta)
    if scaling == "none" or s == 1.0:
        return w
    if scaling == "pi":
        return pi_frequencies(w, s)
    if scaling == "ntk":
        return ntk_frequencies(head_dim, theta, s)
    if scaling == "yarn":
        if yarn_ramp_kind == "index":
            gamma = yarn_index_ramp(head_dim, theta, train_len)
        elif yarn_ramp_kind == "rotations":
            gamma = yarn_ramp(w, train_len)
        else:
            raise ValueError(f"rope_yarn_ramp must be one of {', '.join(YARN_RAMPS)}, got {yarn_ramp_kind!r}")
        return yarn_frequencies(w, s, gamma)
    raise ValueError(f"rope_scaling must be one of {', '.join(ROPE_SCALINGS)}, got {scaling!r}")
