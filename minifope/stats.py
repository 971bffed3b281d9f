"""The lab's intervals: a mean over seeds, an accuracy over seeds and prompts, a paired difference.

Every number the lab reports comes with the sample standard deviation over seeds (ddof = 1,
labelled "sd") and a 95% interval:

- a mean over seeds (a loss):       mean +- t_{0.975, n-1} * sd / sqrt(n)      (t_interval)
- an accuracy (0/1 per prompt, prompts nested in seeds): the hull of two intervals
  (accuracy_interval), both inside [0, 1]:
    * a bootstrap over seeds and prompts: resample the seeds, then the prompts within each
      resampled seed, and take the 2.5th and 97.5th percentiles of the mean (how much the
      answer moves with other seeds and other prompts);
    * the Wilson score interval of all prompts pooled, which is not zero-width when every
      prompt is right (a bootstrap of 32 of 32 correct is [1, 1]: it cannot see that 32
      prompts cannot tell 1.0 from 0.95).
- a paired difference (same seed, same windows or the same prompts): for losses the t
  interval of the per-seed differences; for accuracies the bootstrap of the difference of
  means with seeds and prompts resampled together for both variants (paired_accuracy_difference).

A difference is "separated" when its interval excludes zero. With 3 seeds t_{0.975, 2} = 4.30:
a loss difference is separated only when it is large against its spread over seeds.
"""

import math

import numpy as np

LEVEL = 0.95
RESAMPLES = 4000


def t_interval(values, level=LEVEL):
    """{n, mean, sd, low, high}: the mean of `values` with the t interval; sd is the sample
    standard deviation (ddof = 1). With one value sd, low and high are None."""
    from scipy import stats as sps  # here, not at import: the CLI starts without loading scipy

    x = np.asarray(values, dtype=float)
    n, mean = len(x), float(x.mean())
    if n < 2:
        return dict(n=n, mean=mean, sd=None, low=None, high=None)
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return dict(n=n, mean=mean, sd=sd, low=mean - half, high=mean + half)


def wilson_interval(k, n, level=LEVEL):
    """(low, high): the Wilson score interval of k successes in n trials."""
    from scipy import stats as sps

    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def _percentiles(boot, level):
    # the percentile interval of a bootstrap distribution
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return float(low), float(high)


def _hull_with_wilson(boot, k, n, level):
    # accuracy_interval's interval: the hull of the bootstrap's percentile interval and the
    # Wilson interval of k right of n pooled prompts
    low, high = _percentiles(boot, level)
    w_low, w_high = wilson_interval(k, n, level)
    return min(low, w_low), max(high, w_high)


def _resample(n_seeds, n_prompts, rng, resamples):
    # (R, S) seed indices, then (R, S, P) prompt indices within each drawn seed
    seeds = rng.integers(0, n_seeds, (resamples, n_seeds))
    prompts = rng.integers(0, n_prompts, (resamples, n_seeds, n_prompts))
    return seeds[:, :, None], prompts


def accuracy_interval(correct, level=LEVEL, resamples=RESAMPLES, seed=0):
    """{n_seeds, n_prompts, mean, sd, low, high} of a (seeds, prompts) array of 0/1: the mean
    accuracy, the sample sd of the per-seed accuracies (None with one seed) and the hull of
    the seed-and-prompt bootstrap interval and the pooled Wilson interval (module docstring)."""
    c = np.asarray(correct, dtype=float)
    if c.ndim != 2 or c.size == 0:
        raise ValueError(f"correct must be a non-empty (seeds, prompts) array, got shape {c.shape}")
    S, P = c.shape
    s, p = _resample(S, P, np.random.default_rng(seed), resamples)
    low, high = _hull_with_wilson(c[s, p].mean(axis=(1, 2)), c.sum(), c.size, level)
    per_seed = c.mean(axis=1)
    return dict(n_seeds=S, n_prompts=P, mean=float(c.mean()),
                sd=float(per_seed.std(ddof=1)) if S > 1 else None, low=float(low), high=float(high))


def paired_difference(a, b, level=LEVEL):
    """t_interval of a - b, seed by seed, plus separated: whether the interval excludes zero."""
    d = t_interval(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), level)
    d["separated"] = d["low"] is not None and (d["low"] > 0 or d["high"] < 0)
    return d


def paired_accuracy_difference(a, b, level=LEVEL, resamples=RESAMPLES, seed=0):
    """{mean, low, high, separated} of accuracy(a) - accuracy(b), a and b (seeds, prompts) of 0/1
    on the same prompts: the bootstrap resamples seeds and prompts once for both, keeping pairs."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must be (seeds, prompts) arrays of one shape, got {a.shape} and {b.shape}")
    s, p = _resample(*a.shape, np.random.default_rng(seed), resamples)
    low, high = _percentiles((a[s, p] - b[s, p]).mean(axis=(1, 2)), level)
    return dict(mean=float((a - b).mean()), low=low, high=high, separated=low > 0 or high < 0)


def accuracy_by_group(correct, in_group, names=("repeated", "distinct"), level=LEVEL,
                      resamples=RESAMPLES, seed=0):
    """Accuracy of the prompts in a group (in_group True) and of the others, and their
    difference (group - others), from (seeds, prompts) arrays of 0/1 and bool.

    Returns {names[0]: group, names[1]: others, "difference"}. A group: {n (prompts), mean
    (pooled over seeds), sd (of the per-seed accuracies, over the seeds with a prompt in the
    group; None with fewer than 2), low, high}, the interval the hull of the seed-and-prompt
    bootstrap and the pooled Wilson interval, as in accuracy_interval. The bootstrap resamples
    seeds, then prompts within each seed, whatever their group, and takes each group's accuracy
    in every resample; the difference's interval is the percentile interval of the resampled
    differences. A group without prompts has mean None and there is no difference."""
    c, g = np.asarray(correct, dtype=float), np.asarray(in_group, dtype=bool)
    if c.ndim != 2 or c.shape != g.shape or c.size == 0:
        raise ValueError(f"correct and in_group must be non-empty (seeds, prompts) arrays of one shape, "
                         f"got {c.shape} and {g.shape}")
    s, p = _resample(*c.shape, np.random.default_rng(seed), resamples)
    c_boot, g_boot = c[s, p], g[s, p]
    out, boots = {}, []
    for name, mask, mask_boot in ((names[0], g, g_boot), (names[1], ~g, ~g_boot)):
        n = int(mask.sum())
        if not n:
            out[name] = dict(n=0, mean=None, sd=None, low=None, high=None)
            continue
        with np.errstate(invalid="ignore"):  # a resample may draw no prompt of the group: nan
            boot = (c_boot * mask_boot).sum(axis=(1, 2)) / mask_boot.sum(axis=(1, 2))
        boots.append(boot)
        low, high = _hull_with_wilson(boot[~np.isnan(boot)], (c * mask).sum(), n, level)
        per_seed = [row[m].mean() for row, m in zip(c, mask) if m.any()]
        out[name] = dict(n=n, mean=float((c * mask).sum() / n),
                         sd=float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None,
                         low=float(low), high=float(high))
    if len(boots) == 2:
        d = boots[0] - boots[1]
        low, high = _percentiles(d[~np.isnan(d)], level)
        out["difference"] = dict(mean=out[names[0]]["mean"] - out[names[1]]["mean"], low=low, high=high,
                                 separated=low > 0 or high < 0)
    return out


def interval_text(r, digits=3):
    """'1.611 (sd 0.021, 95% CI 1.559 to 1.663)', or '1.611' when there is no interval."""
    if r.get("low") is None:
        return f"{r['mean']:.{digits}f}"
    sd = f"sd {r['sd']:.{digits}f}, " if r.get("sd") is not None else ""
    return f"{r['mean']:.{digits}f} ({sd}95% CI {r['low']:.{digits}f} to {r['high']:.{digits}f})"
