"""Measures of spectrum damage that read zero where there is no damage (fope-spec 2).

`spectrum.model_leakage` reads the off-frequency share of the batch mean of a layer's rotated
queries. That mean is the positional part plus content that did not average out, and the
content's power, about spread^2 / B over B windows, sits in every frequency: an untrained
model reads 0.1 to 0.4 even in layer 0, where no position has reached the queries yet.
The measures here estimate the positional part itself, free of that floor.

(1) positional_spectrum. Window b's pair signal is z_b(m) = s(m) + e_b(m), m = 0 .. M-1: the
    positional part s (the same in every window) plus content e_b of mean zero, independent
    across windows. For any orthogonal projector P onto a set of frequencies,

        E || P mean_b z_b ||^2 = || P s ||^2 + tr(P Sigma) / B          (the floor)
        U(P) = sum_{b != b'} Re( (P z_b)^H (P z_b') ) / (B (B - 1))
             = ( B^2 || P mean_b z_b ||^2 - sum_b || P z_b ||^2 ) / (B (B - 1)),
        E U(P) = || P s ||^2                                             (no floor)

    U is the split-half cross estimator Re( (P mean_A z)^H (P mean_B z) ) of two disjoint
    halves A, B of the windows, averaged over every way of splitting them: each cross product
    has expectation || P s ||^2 because the halves' content is independent, and averaging
    over the splits lowers the variance. U can come out negative by chance. Where P s = 0
    (no damage of that kind) its spread falls like 1/B, as the floor it removes does; where
    P s != 0 the cross term of s with the content makes it 1/sqrt(B). Three projectors
    split ||s||^2:

        own         P_own: the pair's own frequency w_j (what pair_frequencies says it carries)
        distortion  the span of the distortion frequencies D_j, less P_own: the harmonics
                    n w_j (n = 0, +-2, .., +-order) and the sums and differences w_j +- w_k
                    with the embedding's other frequencies w_k: what a nonlinearity makes of
                    the pair's tone and the others (spectrum.through_activation)
        leakage     everything else: the other w_k, their negatives and -w_j (what a linear
                    layer's real mix makes, spectrum.through_linear), and any other frequency

    Over M positions frequencies closer than about 2*pi/M cannot be told apart, so a
    distortion frequency within pi/M of w_j is left out of D_j (most of its energy projects on
    the own tone) and two within pi/M of each other count as one; a linear-mix image that
    falls within pi/M of a distortion frequency counts as distortion. For RoPE this is most
    pairs at small M: every w_k < pi/M sits on 0, the constant a harmonic brings. Undertrained
    pairs (period > M) are the same blind spot as in spectrum.py.

(2) logit_kernel_drift. RoPE's logit is a function of m - n (rope.py); past the training
    length N it extends only if the content-averaged logit at distance Delta is the same
    function there as inside N. The drift is the difference of two means, which needs no
    correction: content averages out of it without a floor.

(3) clip_surgery. The pairs whose period exceeds N were never trained over a full cycle;
    zeroing their frequency in a trained RoPE model (rope_clip, FoPE's clip without its series)
    tests whether they are what breaks past N. The same for FoPE trained without its clip
    (series only): its series' frequencies of period > N zeroed where they stand.
"""

import math

import numpy as np

from .lengthgen import loss_by_length
from .rope import as_complex
from .spectrum import clean_sinusoids, pair_frequencies, undertrained


# ---------------------------------------------------------------------------------------------
# (1) the positional part's spectrum, free of the content floor


def unbiased_power(c):
    """U = sum_{b != b'} Re( c_b^H c_b' ) / (B (B - 1)) over the first axis: c (B, ..., K) -> (...).

    c_b are the coordinates of window b in an orthonormal basis (of a projector's range, or the
    positions themselves); E U = || E c ||^2 whenever the windows are independent with a common
    mean. U = ( B^2 || mean_b c_b ||^2 - sum_b || c_b ||^2 ) / (B (B - 1)).
    """
    c = np.asarray(c)
    B = c.shape[0]
    if B < 2:
        raise ValueError(f"the content-free estimate needs at least 2 windows, got {B}")
    total = np.sum(np.abs(c.sum(axis=0)) ** 2, axis=-1)
    each = np.sum(np.abs(c) ** 2, axis=(0, -1))
    return (total - each) / (B * (B - 1))


def distortion_frequencies(w, j, order=3):
    """D_j: the harmonics n w_j (n = 0, +-2, .., +-order) and w_j +- w_k for the other distinct
    non-zero frequencies w_k of w (J,), wrapped into [-pi, pi). Empty for a NaN w_j."""
    w = np.asarray(w, dtype=np.float64)
    if np.isnan(w[j]):
        return np.zeros(0)
    n = np.array([0] + [s * h for h in range(2, order + 1) for s in (1, -1)])
    others = np.unique(w[np.isfinite(w) & (w != 0) & (w != w[j])])
    d = np.concatenate([n * w[j], w[j] + others, w[j] - others])
    return _wrap(d)


def _wrap(w):
    return (np.asarray(w, dtype=np.float64) + math.pi) % (2 * math.pi) - math.pi


def _tones(w, M):
    # exp(i w m) / sqrt(M): w (K,) -> (M, K), unit columns
    return clean_sinusoids(w, M) / math.sqrt(M)


def _distortion_basis(w_j, d, M):
    """Orthonormal basis (M, K) of span{exp(i d m)} with the own tone projected out.

    Frequencies within pi/M of w_j are own, within pi/M of an earlier one the same.
    """
    tol = math.pi / M
    kept = []
    for f in d:
        if abs(_wrap(f - w_j)) > tol and all(abs(_wrap(f - g)) > tol for g in kept):
            kept.append(f)
    if not kept:
        return np.zeros((M, 0), dtype=complex)
    own = _tones([w_j], M)
    E = _tones(kept, M)
    E = E - own @ (own.conj().T @ E)
    U, s, _ = np.linalg.svd(E, full_matrices=False)
    return U[:, s > 1e-8 * max(s.max(), 1e-300)]


def positional_spectrum(z, w, order=3):
    """The positional part of pair signals, split into own frequency, distortion and leakage.

    z (B, ..., M, J): complex pair signals of B independent windows over positions m = 0..M-1
    (a layer's rotated queries from `rotated_pair_signals`, with the batch first; hidden states
    as `rope.as_complex(x)` work the same), w (J,) the frequency each pair should carry.
    Returns a dict of (..., J) arrays, energies as mean power per position:

        power       mean_b sum_m |z_b(m)|^2 / M: everything, content included
        positional  U(I) / M, unbiased for sum_m |s(m)|^2 / M (the module docstring's U)
        own, distortion, leakage
                    U(P) / M for the three projectors; they add up to `positional`
        own_share, distortion_share, leakage_share
                    each over `positional`: ratios of unbiased estimates (consistent, not
                    unbiased; meaningless where `positional` is itself ~0 against `power`)

    and the positional part's spectrum on the M-point FFT grid, unbiased bin by bin:
        omega (M,)  2*pi*k/M in [-pi, pi), fftshifted
        spectrum (..., M, J)  U(bin k) / M^2, summing over k to `positional`
    A pair with a NaN w (no frequency of its own) gets NaN own, distortion and leakage.
    """
    z = np.asarray(z)
    w = np.asarray(w, dtype=np.float64)
    M, J = z.shape[-2], z.shape[-1]
    zt = np.swapaxes(z, -1, -2)  # (B, ..., J, M)
    power = np.mean(np.sum(np.abs(zt) ** 2, axis=-1), axis=0) / M
    positional = unbiased_power(zt) / M

    finite = np.isfinite(w)
    own_tone = _tones(np.where(finite, w, 0.0), M)  # (M, J)
    c_own = np.einsum("b...jm,mj->b...j", zt, own_tone.conj())[..., None]
    bases = [_distortion_basis(w[j], distortion_frequencies(w, j, order), M) if finite[j]
             else np.zeros((M, 0), dtype=complex) for j in range(J)]
    K = max(1, max(b.shape[1] for b in bases))
    Q = np.zeros((J, M, K), dtype=complex)  # zero columns pad the pairs with fewer
    for j, b in enumerate(bases):
        Q[j, :, :b.shape[1]] = b
    c_dist = np.einsum("b...jm,jmk->b...jk", zt, Q.conj())
    own = unbiased_power(c_own) / M
    distortion = unbiased_power(c_dist) / M
    own, distortion = np.where(finite, own, np.nan), np.where(finite, distortion, np.nan)
    leakage = positional - own - distortion

    Z = np.fft.fftshift(np.fft.fft(zt, axis=-1), axes=-1)  # (B, ..., J, M); sum_k |Z_k|^2 = M sum_m |z|^2
    spectrum = np.swapaxes(unbiased_power(Z[..., None]), -1, -2) / M ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = {name + "_share": value / positional
                  for name, value in (("own", own), ("distortion", distortion), ("leakage", leakage))}
    return dict(power=power, positional=positional, own=own, distortion=distortion, leakage=leakage,
                omega=2 * math.pi * np.fft.fftshift(np.fft.fftfreq(M)), spectrum=spectrum, **shares)


def model_positional_spectrum(model, idx, layer, order=3):
    """positional_spectrum of block `layer`'s rotated queries and keys: (q dict, k dict).

    idx (B,T): B independent windows (the estimate's independence is across the batch), each
    read over positions 0 .. T-1. The energies and shares in the dicts are (H, d/2): per head,
    per pair (pooled_shares sums them); the spectrum is (H, T, d/2).
    """
    a = model.attention_inputs(idx, layer)
    w = pair_frequencies(model)
    return (positional_spectrum(as_complex(a["q_rot"]), w, order),
            positional_spectrum(as_complex(a["k_rot"]), w, order))


def pooled_shares(result):
    """own, distortion and leakage shares pooled over heads and pairs: sum of each energy over
    the finite pairs / sum of `positional` over them. result: a positional_spectrum dict."""
    finite = np.isfinite(result["own"])
    total = result["positional"][finite].sum()
    return {name: float(result[name][finite].sum() / total) for name in ("own", "distortion", "leakage")}


# ---------------------------------------------------------------------------------------------
# (2) does the logit stay the same function of distance past N?


def logit_kernel_drift(model, idx, layer, N=None, per_head=False):
    """K_out(Delta) - K_in(Delta): the content-averaged logit at distance Delta past N and within.

    idx (B,T) windows with T > N (N defaults to config.train_len), read at positions 0 .. T-1.
    With S[b,h,m,n] = q_rot[m] . k_rot[n] / sqrt(d)  (- slope_h (m - n) for ALiBi), the logit
    block `layer` attends with, for Delta = 0 .. N-1:

        K_in(Delta)  = mean over b, h and queries Delta <= m < N of S[b, h, m, m - Delta]
        K_out(Delta) = mean over b, h and queries N <= m < T     of S[b, h, m, m - Delta]

    Returns dict(distance (N,), inside, outside, drift = outside - inside), each (N,), or (H, N)
    with per_head. A logit that depends on m - n only gives drift 0 exactly: RoPE or ALiBi on
    content that is the same at every position (a window repeating one token), in layer 0. It
    also has expectation 0 for such models on stationary content: a difference of means, it
    has no floor, only a spread that falls like 1/sqrt(B). FoPE with sigma > 0 (cross terms of
    different frequencies) and the sinusoidal embedding (absolute positions) drift.
    Memory: the (B, H, T, T) scores of the layer, as in attention_weights.
    """
    N = model.config.train_len if N is None else N
    T = np.asarray(idx).shape[1]
    if not 0 < N < T:
        raise ValueError(f"logit_kernel_drift needs windows longer than N = {N}, got length {T}")
    a = model.attention_inputs(idx, layer)
    q, k = a["q_rot"].astype(np.float64), a["k_rot"].astype(np.float64)
    m = np.arange(T)[None, :]  # (1, T) queries
    distance = np.arange(N)[:, None]  # (N, 1)
    n = np.clip(m - distance, 0, None)  # (N, T) keys
    scores = (q / math.sqrt(q.shape[-1])) @ np.swapaxes(k, -1, -2)  # (B,H,T,T)
    S = scores[:, :, np.broadcast_to(m, n.shape), n]  # (B,H,N,T): S[b,h,Delta,m] at key m - Delta
    if model.slopes is not None:
        S = S - np.asarray(model.slopes)[None, :, None, None] * distance[None, None]
    valid = m >= distance  # (N, T)
    inside = valid & (m < N)
    outside = valid & (m >= N)
    axes = (0,) if per_head else (0, 1)

    def mean_over(mask):
        count = mask.sum(axis=-1)
        return np.sum(np.where(mask, S, 0.0), axis=-1).mean(axis=axes) / count

    K_in, K_out = mean_over(inside), mean_over(outside)
    return dict(distance=np.arange(N), inside=K_in, outside=K_out, drift=K_out - K_in)


# ---------------------------------------------------------------------------------------------
# (3) clip surgery


def clip_surgery(model, N=None):
    """The model with every frequency whose period 2*pi/w exceeds N set to w = 0.

    RoPE: every such pair set to w_j = 0. That is GPT.with_config(rope_clip=True) with N as
    the clip floor 2*pi/N (N defaults to the model's own: rope_original_len or train_len):
    the weights are shared, not copied, and none changes; the other pairs keep their w_j. For
    an unscaled RoPE, N != train_len goes in as rope_original_len, which there sets the clip
    floor and nothing else. A scaled RoPE (rope_scaling) is clipped at its own N only, since
    rope_original_len also moves its ramp.

    FoPE without its clip (the series-only ablation, fope_clip=False; N defaults to
    train_len): every such frequency w_f of the series set to 0 where it stands, its
    coefficients kept, so that its terms become constants, cos(0 m) Ccos[h, f, j] = Ccos[h, f, j]
    in COS and sin(0 m) = 0 in SIN. FoPE's clip drops those frequencies from the series
    before training instead (there is no coefficient left to keep), so this is the nearest
    surgery on a trained model: its other frequencies and every weight stay as trained.

    Refused: FoPE with its clip (it already zeroes exactly these frequencies, the same
    comparison as spectrum.undertrained, and its series holds none of them: nothing left to
    cut); ALiBi, NoPE and sinusoidal rotate nothing.
    """
    cfg = model.config
    if cfg.pe == "fope" and not cfg.fope_clip:
        cut = model.with_config()  # the same weights; its own embedding object, whose w changes
        cut.pe.w = np.where(undertrained(cut.pe.w, cfg.train_len if N is None else N), 0.0, cut.pe.w)
        return cut
    if cfg.pe != "rope":
        raise ValueError(f"clip surgery applies to pe='rope' and to FoPE without its clip only, not "
                         f"{cfg.pe!r}{' with its clip' if cfg.pe == 'fope' else ''}: FoPE clips already, "
                         "the others have no frequencies")
    own_N = cfg.rope_original_len or cfg.train_len
    N = own_N if N is None else N
    if N == own_N:
        return model.with_config(rope_clip=True)
    if cfg.rope_scaling != "none" or cfg.rope_clip:
        raise ValueError(f"clip_surgery at N = {N} on a model clipped or scaled at N = {own_N}: "
                         "clip it at its own N")
    return model.with_config(rope_clip=True, rope_original_len=N)


def surgery_loss(model, data, lengths, N=None, **options):
    """loss_by_length (lengthgen.py) of the model and of clip_surgery(model, N) on the same
    windows: {"before": ..., "after": ...}. options go to loss_by_length."""
    return dict(before=loss_by_length(model, data, lengths, **options),
                after=loss_by_length(clip_surgery(model, N), data, lengths, **options))
