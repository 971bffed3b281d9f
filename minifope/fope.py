"""FoPE, the Fourier position embedding (Hua et al. 2024; fope-spec section 3).

Two changes to RoPE (rope.py), applied to queries and keys with the same tables:

(a) Each rotating pair j carries a Fourier series over the frequency set instead of one
    frequency. Per head h, position m:

        COS[h, m, j] = sum_f cos(w_f * m) * Ccos[h, f, j]
        SIN[h, m, j] = sum_f sin(w_f * m) * Csin[h, f, j]
        x' = x * [COS, COS] + rotate_half(x) * [SIN, SIN]

(b) Clip floor to zero: every frequency with w_f < 2*pi/N (N = train_len, whose period
    is longer than the training length) is set to 0.

The details follow the authors' code (fope-spec section 3 table):

    w_f = theta^(-2f/D), f < D/2, with D = max(fope_dim, head_dim)
    zero (clipped) frequencies are dropped from the series input: F frequencies remain
    J = min(F, head_dim // 4) output pairs carry a series; pairs J .. d/2-1 do not rotate
    Ccos, Csin: (n_head, F, J), drawn separately (Ccos then Csin) for every layer
    init: step identity C[i*step, i] = 1 with step = ceil(F/J), plus Gaussian noise of
          std sigma * sqrt(2 / (J * (F + n_head))), xavier_normal_(gain=sigma) on the 3-D tensor
    fixed at init by default; learnable on request

Zero-frequency pairs (j >= J). We give them COS = 1, SIN = 0: the identity, which is the
paper's zero frequency exp(i * 0 * m) = 1. The authors' code pads both COS and SIN with 1
instead (a fixed 45-degree rotation scaled by sqrt(2)); in a query-key dot product two
such pairs give 2x the identity's value. `zero_freq='authors'` selects that padding.

Not implemented: the authors' code has an option `fourier_norm` that divides each
coefficient column C[h, :, j] by its sum over the frequencies before the series is formed.
It is off by default in their model config and none of their published configs turns it
on, so every run of theirs we compare with used the coefficients as drawn, as here.

Properties (tested): with sigma = 0 and F <= head_dim/4 the tables are exactly RoPE's with
the clipped frequencies zeroed, so the logit depends on m - n only; with sigma > 0 the
cross terms between different frequencies make it depend on m and n separately.

In the GPT (class FoPE): every block holds its own Ccos, Csin (blocks.{l}.fope.ccos, .csin),
fixed buffers unless fope_learnable, and rotates its queries and keys by its own tables.
"""

import math

import numpy as np

from .embedding import PositionEmbedding


def fope_frequencies(head_dim, theta, train_len, fope_dim=0, clip=True):
    """The series input: w_f = theta^(-2f/D), f < D/2, keeping only w_f >= 2*pi/N.

    D = max(fope_dim, head_dim), N = train_len. Returns the F non-zero frequencies (float64).
    clip=False keeps all D/2 of them (the "series only" ablation).
    """
    D = max(fope_dim, head_dim)
    f = np.arange(D // 2, dtype=np.float64)
    w = theta ** (-2.0 * f / D)
    floor = 2.0 * math.pi / train_len
    return w[w >= floor] if clip else w


def fope_num_rotating_pairs(head_dim, num_frequencies):
    """J = min(F, head_dim // 4): the pairs that carry a Fourier series."""
    return min(num_frequencies, head_dim // 4)


def step_identity(F, J):
    """The (F, J) matrix with C[i*step, i] = 1, step = ceil(F/J): pair i starts on frequency i*step.

    Where i*step >= F (when J*step overshoots F, e.g. F = 21, J = 16, step 2: pairs 11..15)
    the column stays zero, so those pairs carry only the Gaussian noise, and nothing at
    sigma = 0; the authors' step identity likewise sets the 1 only where i*step < F."""
    eye = np.zeros((F, J))
    if J == 0:
        return eye
    step = math.ceil(F / J)
    i = np.arange(J)
    i = i[i * step < F]
    eye[i * step, i] = 1.0
    return eye


def fope_coefficients(rng, n_head, F, J, sigma):
    """Ccos, Csin (n_head, F, J): step identity + N(0, std^2), std = sigma * sqrt(2 / (J * (F + n_head))).

    That std is torch's xavier_normal_(gain=sigma) on a (n_head, F, J) tensor, whose
    fan_in = F*J and fan_out = n_head*J. Ccos is drawn first, then Csin.
    """
    std = sigma * math.sqrt(2.0 / (J * (F + n_head))) if J else 0.0
    eye = step_identity(F, J)
    ccos = eye + std * rng.standard_normal((n_head, F, J))
    csin = eye + std * rng.standard_normal((n_head, F, J))
    return ccos, csin


def fope_tables(positions, w, ccos, csin, head_dim, zero_freq="identity"):
    """COS, SIN (H, T, d/2) for positions (T,), frequencies w (F,), coefficients (H, F, J).

        COS[h, m, j] = sum_f cos(w_f * m) * Ccos[h, f, j]   for j < J
        SIN[h, m, j] = sum_f sin(w_f * m) * Csin[h, f, j]   for j < J
        COS[h, m, j] = 1, SIN[h, m, j] = 0 ('identity') or 1 ('authors')   for j >= J
    """
    angles = np.asarray(positions, dtype=np.float64)[:, None] * np.asarray(w)[None, :]
    series_cos = np.einsum("mf,hfj->hmj", np.cos(angles), ccos)
    series_sin = np.einsum("mf,hfj->hmj", np.sin(angles), csin)
    n_head, T, J = series_cos.shape
    pad = (0, 0), (0, 0), (0, head_dim // 2 - J)
    cos = np.pad(series_cos, pad, constant_values=1.0)
    sin = np.pad(series_sin, pad, constant_values=1.0 if zero_freq == "authors" else 0.0)
    return cos, sin


def fope_coefficient_grads(dcos, dsin, positions, w, J):
    # dcos, dsin (H,T,d/2) gradients of the tables -> dCcos, dCsin (H,F,J)
    # COS is linear in Ccos:  dCcos[h, f, j] = sum_m cos(w_f * m) * dCOS[h, m, j]  (same for SIN)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * np.asarray(w)[None, :]
    dccos = np.einsum("mf,hmj->hfj", np.cos(angles), dcos[..., :J])
    dcsin = np.einsum("mf,hmj->hfj", np.sin(angles), dsin[..., :J])
    return dccos, dcsin


class FoPE(PositionEmbedding):
    """pe='fope': block l rotates q and k by fope_tables of its own coefficients
    blocks.{l}.fope.ccos, blocks.{l}.fope.csin (H, F, J), drawn by fope_coefficients."""

    def __init__(self, config):
        super().__init__(config)
        self.w = fope_frequencies(config.head_dim, config.rope_theta, config.train_len,
                                  config.fope_dim, config.fope_clip)
        self.J = fope_num_rotating_pairs(config.head_dim, len(self.w))
        self.learnable = config.fope_learnable

    def block_shapes(self):
        shape = (self.config.n_head, len(self.w), self.J)
        return {"fope.ccos": shape, "fope.csin": shape}

    def init_block(self, rng):
        ccos, csin = fope_coefficients(rng, self.config.n_head, len(self.w), self.J, self.config.fope_sigma)
        return {"fope.ccos": ccos, "fope.csin": csin}

    def tables(self, weights, positions):
        return fope_tables(positions, self.w, weights["fope.ccos"], weights["fope.csin"],
                           self.config.head_dim, self.config.fope_zero_freq)

    def table_grads(self, dcos, dsin, positions):
        if not self.learnable:
            return {}
        dccos, dcsin = fope_coefficient_grads(dcos, dsin, positions, self.w, self.J)
        return {"fope.ccos": dccos, "fope.csin": dcsin}
