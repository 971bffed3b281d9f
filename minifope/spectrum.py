"""Spectral analysis: why RoPE's periodic extension breaks and what FoPE changes (fope-spec 1-3).

RoPE reads the attention logit as a Fourier sum over distance (rope.py):
s(m, n) = Re( sum_j h_j exp(i w_j (m - n)) ), h_j = q_j conj(k_j). That sum extends past the
training length N only if pair j really carries the one frequency w_j. Three things spoil it:

1. Spectral leakage (linear layers). Every projection mixes dimensions, so a pair that carried
   w_j in one layer arrives at the next carrying a blend of w_j, the other w_k and their
   negatives (a real mix of cos and sin holds both exp(+i w m) and exp(-i w m)).
2. Spectral distortion (activations). A nonlinearity applied to a sinusoid adds harmonics
   2 w, 3 w, ... and a constant: frequencies that were never in RoPE's set.
3. Undertrained low frequencies (time-domain truncation). A w with period 2*pi/w > N never
   completes a cycle in training; what the model learned about it beyond N is a guess.
   FoPE clips these to zero: `undertrained` is exactly its floor w < 2*pi/N.

The measure of damages 1 and 2 is the off-frequency energy of a complex pair signal z(m),
m = 0 .. M-1, with respect to the frequency w it should carry:

    L(z, w) = || z - A exp(i w m) ||^2 / || z ||^2,   A = (1/M) sum_m z(m) exp(-i w m)
            = 1 - |sum_m z(m) exp(-i w m)|^2 / (M * sum_m |z(m)|^2)

the share of z's energy that the best-fitting single tone at w leaves unexplained: 0 for a
pure tone at w, about 1 for a tone elsewhere, in [0, 1] always.

Damage 3 is also the measure's blind spot: over M positions two frequencies closer than about
2*pi/M cannot be told apart, so a pair whose period exceeds the window shows almost no leakage
whatever happened to it. Within the training window the model cannot see that damage either.

Plots import matplotlib lazily and draw on a `matplotlib.figure.Figure` (no pyplot state, safe
without a display); they return the Figure.
"""

import math

import numpy as np

from .fope import step_identity
from .rope import as_complex


# ---------------------------------------------------------------------------------------------
# (a) the score against relative distance: the NUDFT sum of one head


def head_spectrum(q, k):
    """|h_j| = |q_j conj(k_j)|: q, k (..., d) before rotation -> (..., d/2)."""
    return np.abs(as_complex(q) * np.conj(as_complex(k)))


def score_vs_distance(q, k, w, distances):
    """s(Delta) = Re( sum_j h_j exp(i w_j Delta) ),  h_j = q_j conj(k_j).

    q, k (..., d) before rotation (one query and one key of a head, or their averages), w (d/2,)
    the frequencies, distances (D,) values of Delta = m - n -> (..., D). For RoPE this is the
    logit of q at m and k at n for every m, n with m - n = Delta. FoPE's logit depends on m
    and n separately (fope-spec 3), so for FoPE this is the RoPE reading with FoPE's w.
    """
    h = as_complex(q) * np.conj(as_complex(k))
    phase = np.exp(1j * np.asarray(w, dtype=np.float64)[:, None]
                   * np.asarray(distances, dtype=np.float64)[None, :])  # (d/2, D)
    return np.real(h @ phase)


def plot_head_spectrum(q, k, w, train_len, distances=None):
    """Two panels: |h_j| against w_j (log x, floor 2*pi/N marked) and s(Delta) against Delta.

    q, k (d,), w (d/2,), train_len N; distances default to 0 .. 4N - 1. Zero frequencies
    (FoPE's clipped pairs) have no place on a log axis: the title counts them instead.
    """
    from matplotlib.figure import Figure

    w = np.asarray(w, dtype=np.float64)
    distances = np.arange(4 * train_len) if distances is None else np.asarray(distances)
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    ax_h, ax_s = fig.subplots(1, 2)
    rotating = w > 0
    ax_h.plot(w[rotating], head_spectrum(q, k)[rotating], "o")
    ax_h.set_xscale("log")
    ax_h.axvline(2 * math.pi / train_len, color="C3", ls="--", label="floor 2π/N")
    hidden = np.sum(~rotating)
    ax_h.set(xlabel="frequency w_j", ylabel="|h_j|",
             title="head spectrum" + (f" ({hidden} pairs at w = 0 not shown)" if hidden else ""))
    ax_h.legend()
    ax_s.plot(distances, score_vs_distance(q, k, w, distances))
    ax_s.axvline(train_len, color="C3", ls="--", label="training length N")
    ax_s.set(xlabel="distance Δ = m - n", ylabel="s(Δ)", title="score against distance")
    ax_s.legend()
    return fig


# ---------------------------------------------------------------------------------------------
# (b) leakage and distortion: the off-frequency energy


def off_frequency_energy(z, w):
    """L(z, w) = || z - A exp(i w m) ||^2 / || z ||^2,  A = (1/M) sum_m z(m) exp(-i w m).

    z (..., M) a complex signal over positions m = 0 .. M-1 (last axis), w broadcasting
    against z's leading axes -> (...). Equivalently 1 - |Z(w)|^2 / (M sum_m |z(m)|^2) with
    Z(w) = sum_m z(m) exp(-i w m), the DTFT of z at w. On the FFT grid, w = 2*pi*k/M, Z(w)
    is FFT bin k and by Parseval (sum_k |Z_k|^2 = M sum_m |z|^2) L is the share of the FFT
    energy outside bin k. Off the grid it still projects on w exactly, so a pure tone gives 0
    wherever it lies (an FFT bin would lose up to 60% of it between bins); a tone at w' gives
    1 - |D(w' - w)|^2 / M^2, D the Dirichlet kernel: 1 when w' - w is a nonzero multiple of
    2*pi/M, close to 1 once |w' - w| >> 2*pi/M, close to 0 when |w' - w| << 2*pi/M.
    The residual form avoids the cancellation of 1 - ratio near a pure tone.
    """
    z = np.asarray(z)
    m = np.arange(z.shape[-1])
    tone = np.exp(1j * np.asarray(w, dtype=np.float64)[..., None] * m)  # exp(i w m)
    A = np.mean(z * np.conj(tone), axis=-1, keepdims=True)
    residual = np.sum(np.abs(z - A * tone) ** 2, axis=-1)
    return residual / np.sum(np.abs(z) ** 2, axis=-1)


def pair_leakage(z, w):
    """Mean off-frequency energy of each pair: z (..., M, J) pair signals, w (J,) -> (J,).

    L(z[..., :, j], w_j) averaged over the leading axes (sequences, heads), each signal
    counting once. A pair whose w_j is NaN (no frequency is its own) gets NaN.
    """
    z = np.asarray(z)
    leak = off_frequency_energy(np.swapaxes(z, -1, -2), w)  # (..., J)
    return leak.reshape(-1, z.shape[-1]).mean(axis=0)


def pair_frequencies(model):
    """The frequency each pair of `model`'s heads is meant to carry, (d/2,).

    RoPE: w_j. FoPE: series pair i < J starts, through the step identity, on w_{i*step} (the
    noise sigma adds the others on purpose); a series pair the step identity leaves empty
    (when (J-1)*step >= F) starts on no frequency and gets NaN; pairs >= J carry 0.
    ALiBi, NoPE and sinusoidal rotate nothing: every pair is meant to be constant, frequency 0.
    """
    cfg = model.config
    if cfg.pe == "rope":
        return model.pe.w.copy()
    w = np.zeros(cfg.head_dim // 2)
    if cfg.pe == "fope":
        f, i = np.nonzero(step_identity(len(model.pe.w), model.pe.J))
        w[:model.pe.J] = np.nan
        w[i] = model.pe.w[f]
    return w


def rotated_pair_signals(model, idx, layer):
    """Block `layer`'s queries and keys after the position embedding, as complex pair signals.

    idx (B,T) -> zq, zk (B,H,T,d/2) with z_j(m) = x_rot[j] + i x_rot[j + d/2] at position m,
    and w (d/2,) the frequency each pair is meant to carry (`pair_frequencies`).
    """
    a = model.attention_inputs(idx, layer)
    return as_complex(a["q_rot"]), as_complex(a["k_rot"]), pair_frequencies(model)


def model_leakage(model, idx, layer):
    """Per-pair off-frequency energy of block `layer`'s rotated queries and keys: (d/2,), (d/2,).

    A query before rotation depends on the token, so one sequence's z_j(m) wanders with its
    content and would read as leakage. The mean over the batch, E_b[z_j(b, m)], keeps what all
    sequences share at position m: the positional structure. For RoPE it is a pure tone at w_j
    exactly when the unrotated mean is constant over positions; what earlier layers wrote into
    it (damages 1 and 2) shows up as leakage. Content that does not average out over B
    sequences leaves a floor of about (spread^2 / B) / |mean|^2: this measure carries that
    content floor, and reads 0.1 to 0.4 on an untrained tiny model even in layer 0, which no
    position has reached. mechanism.model_positional_spectrum estimates the positional part
    free of the floor (a cross product of distinct windows) and reads ~0 there.
    """
    return _mean_leakage(model.attention_inputs(idx, layer), pair_frequencies(model))


def model_leakages(model, idx):
    """[model_leakage(model, idx, l) for every layer l], from one forward pass."""
    w = pair_frequencies(model)
    return [_mean_leakage(inputs, w) for inputs in model.each_layers_attention_inputs(idx)]


def _mean_leakage(inputs, w):
    # pair_leakage of the batch mean of one layer's rotated queries and keys (attention_inputs)
    return (pair_leakage(as_complex(inputs["q_rot"]).mean(axis=0), w),
            pair_leakage(as_complex(inputs["k_rot"]).mean(axis=0), w))


def clean_sinusoids(w, M):
    """z_j(m) = exp(i w_j m): one frequency per pair, w (J,) -> (M, J). What RoPE puts in."""
    return np.exp(1j * np.arange(M)[:, None] * np.asarray(w, dtype=np.float64)[None, :])


def through_linear(z, W):
    """A linear layer on the real dims: x = [Re z, Im z] (half-split), x' = x @ W, back to pairs.

    z (..., M, J), W (2J, 2J') -> (..., M, J'). Each output pair becomes a blend of every input
    pair's cos and sin, i.e. of exp(+i w_k m) and exp(-i w_k m) for all k: leakage.
    """
    x = np.concatenate([z.real, z.imag], axis=-1)
    return as_complex(x @ W)


def through_activation(z, fn):
    """An elementwise nonlinearity on the real dims: fn(Re z) + i fn(Im z), z (..., M, J).

    fn(cos(w m)) is periodic with period 2*pi/w but not a sinusoid: its Fourier series adds a
    constant and harmonics 2w, 3w, ...: distortion.
    """
    return fn(z.real) + 1j * fn(z.imag)


def energy_spectrum(z, n_fft=None, hann=True):
    """Share of each signal's energy per FFT bin: z (..., M, J) -> omega (K,), share (..., K, J).

    omega = 2*pi*k/K in [-pi, pi) (fftshifted), K = n_fft or M; n_fft > M zero-pads, which
    only interpolates between bins. The share sums to 1 over the K bins of each signal. The
    periodic Hann window g(m) = 1/2 - 1/2 cos(2*pi*m/M) keeps the FFT's own leakage (a tone
    between bins smeared over the whole axis) from passing for the model's; hann=False gives
    the plain FFT, whose bin k is the Z(w) of `off_frequency_energy` at w = 2*pi*k/M.
    """
    z = np.asarray(z)
    M = z.shape[-2]
    K = n_fft or M
    g = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(M) / M) if hann else np.ones(M)
    Z = np.fft.fftshift(np.fft.fft(z * g[:, None], n=K, axis=-2), axes=-2)
    energy = np.abs(Z) ** 2
    omega = 2 * math.pi * np.fft.fftshift(np.fft.fftfreq(K))
    return omega, energy / np.sum(energy, axis=-2, keepdims=True)


def plot_pair_spectra(z, w, ax=None, n_fft=None, title=None):
    """Image of each pair's energy share against frequency, with the frequency it should carry.

    z (..., M, J) pair signals (shares averaged over the leading axes), w (J,) marked as dots.
    Draws on `ax` (a new Figure without one) and returns its Figure; put a RoPE and a FoPE
    model side by side by passing two axes of one figure. In a notebook pass an ax from
    plt.subplots: Jupyter shows pyplot's figures, and prints a new bare Figure as text.
    """
    omega, share = energy_spectrum(z, n_fft)
    share = share.reshape(-1, *share.shape[-2:]).mean(axis=0)  # (K, J)
    if ax is None:
        from matplotlib.figure import Figure
        ax = Figure(figsize=(6, 4), layout="constrained").subplots()
    J, step = share.shape[1], omega[1] - omega[0]
    image = ax.imshow(np.log10(share.T + 1e-12), aspect="auto", origin="lower", cmap="magma",
                      vmin=-6, vmax=0, interpolation="nearest",
                      extent=(omega[0] - step / 2, omega[-1] + step / 2, -0.5, J - 0.5))
    ax.plot(w, np.arange(J), "o", mfc="none", mec="cyan", label="frequency it should carry")
    ax.set(xlabel="frequency ω (radians per position)", ylabel="pair j", title=title)
    ax.legend(loc="upper right", fontsize="small")
    ax.figure.colorbar(image, ax=ax, label="log10 energy share")
    return ax.figure


# ---------------------------------------------------------------------------------------------
# (c) undertrained low frequencies


def undertrained(w, train_len):
    """Mask of the frequencies that never complete a cycle in training: period 2*pi/w > N.

    That is w < 2*pi/N (w = 0 included: its period is infinite), the very comparison
    fope_frequencies uses, so FoPE clips exactly these to zero.
    """
    return np.asarray(w, dtype=np.float64) < 2 * math.pi / train_len


def plot_periods(w, train_len, ax=None):
    """Bar chart of each pair's period 2*pi/w_j (log y) against N, undertrained pairs marked.

    w (J,), train_len N. Draws on `ax` (a new Figure without one) and returns its Figure.
    Zero frequencies have an infinite period and get no bar.
    """
    w = np.asarray(w, dtype=np.float64)
    with np.errstate(divide="ignore"):
        period = np.where(w > 0, 2 * math.pi / w, np.nan)
    mask = undertrained(w, train_len)
    j = np.arange(len(w))
    if ax is None:
        from matplotlib.figure import Figure
        ax = Figure(figsize=(6, 3.5), layout="constrained").subplots()
    ax.bar(j[~mask], period[~mask], color="C0", label="completes a cycle within N")
    ax.bar(j[mask], period[mask], color="C3", label="undertrained: period > N (FoPE clips)")
    ax.axhline(train_len, color="k", ls="--", label=f"training length N = {train_len}")
    ax.set_yscale("log")
    ax.set(xlabel="pair j", ylabel="period 2π/w_j (positions)")
    ax.legend(fontsize="small")
    return ax.figure
