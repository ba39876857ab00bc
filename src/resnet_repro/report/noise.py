"""The statistics behind the report's verdicts: a measure and its noise, a comparison (a contrast of
several models' measures: a difference, or a slope over depth), the tests that make it decisive, and
how a claim's comparisons combine. claims.py builds the measures from the runs; nothing here reads a file.

The estimand. A reproduced number estimates an architecture's expected value over training seeds (a rerun
of the same recipe with another seed) and, for a test or validation error, over test images like these:
theta = E_seed E_image[error]. A comparison estimates a contrast sum_j w_j theta_j. Its noise has two
independent sources, each estimated once:
  seeds   each model's spread of its runs' values, s^2 / k with k - 1 degrees of freedom. A model with one
          run borrows the pooled seed variance of its family's models with several runs (for error rates
          on the binomial scale, s^2 / p(100 - p), so a 1% and a 40% error do not share one variance), with
          the pool's degrees of freedom; with no pool the comparison is not decisive.
  images  which images were drawn. Where every run was scored on the same images (the same identity, not
          merely the same labels), the per-image contrast c_i of the runs' mean errors gives var(c) / n,
          less the within-image seed variance (W - s^2) / k of each model, which s^2 / k holds already
          (method of moments: W is the mean over images of the variance over seeds of one image's error).
          Elsewhere each model's binomial p(100 - p) / n: an upper bound (the models' shared hard images
          are not paired away), so conservative.
A comparison is decisive in a direction when its one-sided test rejects at level ALPHA (the normal tail
beyond Z): a t-test with the Welch-Satterthwaite degrees of freedom of the parts (normal where every part
is a known variance); where it rests on one run of each of two models scored on the same images, the exact
McNemar test on the images they disagree on must reject too.
"""

import math
import statistics
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binomtest, norm
from scipy.stats import t as t_dist

Z = 2.0  # the promised error rate: the normal tail beyond Z standard deviations, per direction
ALPHA = float(norm.sf(Z))  # 0.0228
NO_IMAGE_COUNT = "no image count"  # why an error rate's images' noise is unmeasured


@dataclass(frozen=True)
class Part:
    """One independent part of a noise variance; df None where it is a known variance."""

    variance: float
    df: float | None
    what: str
    kind: str = "seeds"  # seeds or images


@dataclass(frozen=True)
class Pool:
    """A seed variance pooled over the models with several runs: `ratio` is the pooled s^2, or for error
    rates s^2 / p(100 - p) (binomial scale), with its degrees of freedom."""

    ratio: float
    df: int
    models: tuple
    binomial: bool

    def variance(self, value, n=None):
        return self.ratio * (rate_scale(value, n) if self.binomial else 1.0)


@dataclass
class Measure:
    """One model's measured number: a value per run (seed), and what its noise rests on."""

    label: str
    values: list  # one per run, in `unit`
    unit: str = "%"
    n: int | None = None  # the images each value is a rate over (test or validation error)
    over_images: bool = False  # a test or validation error: without n its images' noise is unmeasured
    errors: object = None  # runs x images array of 0/1 errors: the same images, in the same order, in every run
    images: str | None = None  # those images' identity: two measures pair only on the same
    floor: float = 0.0  # a lower bound on the variance of one run's value (its own known noise)
    pool: Pool | None = None  # borrowed where there is one run
    fixed: bool = False  # a threshold: no noise
    runs: list = field(default_factory=list)

    @property
    def value(self):
        return statistics.fmean(self.values)

    @property
    def k(self):
        return len(self.values)


def threshold(label, value):
    return Measure(label, [value], fixed=True)


def clamp_rate(p, n=None):
    """An error rate p% kept one image away from 0 and 100 (0.1% where the count is not known), so that no
    error on a few images is not taken for certainty."""
    lo = 100.0 / n if n and n > 1 else 0.1
    return min(max(p, lo), 100.0 - lo)


def rate_scale(p, n=None):
    p = clamp_rate(p, n)
    return p * (100.0 - p)


def binomial_std(p, n):
    """Std (percentage points) of an error rate p% measured on n images."""
    if not n:
        return None
    return math.sqrt(rate_scale(p, n) / n) if n > 1 else 50.0


def satterthwaite(parts):
    """(std, degrees of freedom) of a sum of independent variance parts: df None where every part is a
    known variance, else Welch-Satterthwaite's; estimated parts that are all zero keep the smallest of
    their df (two identical seeds do not make a known variance)."""
    total = sum(p.variance for p in parts)
    estimated = [p for p in parts if p.df is not None]
    if not estimated:
        return math.sqrt(total), None
    denom = sum(p.variance**2 / p.df for p in estimated)
    df = total * total / denom if denom > 0 else min(p.df for p in estimated)
    return math.sqrt(total), df


def critical(df):
    """The multiple of the noise std a one-sided test at ALPHA needs: Z, or the t-quantile for df."""
    return Z if df is None else float(t_dist.ppf(1.0 - ALPHA, df))


def tail(x, df):
    """P(T > x) for Student's t with df (normal where df is None)."""
    return float(norm.sf(x) if df is None else t_dist.sf(x, df))


# ---------------------------------------------------------------- seeds


def within_image_variance(m):
    """W: the mean over images of the variance over runs of one image's error (0/1 scale), None unless
    the measure has per-image errors of >= 2 runs."""
    if m.errors is None or m.k < 2:
        return None
    return float(np.var(m.errors, axis=0, ddof=1).mean())


def floor_of(m):
    """The smallest variance one run's value can have: the measure's own floor, and for error rates over
    images W / n (a run's error moves at least by its images' flips: E[W / n] <= E[s^2])."""
    w = within_image_variance(m)
    return max(m.floor, 0.0 if w is None else w * 1e4 / m.errors.shape[1])


def run_variance(m, level=None):
    """(variance of one run's value, df, in words) from the seeds, or the pool for one run (on the binomial
    scale at `level`, the mean of the values compared, not the run's own value: a run that came out low by
    chance would otherwise borrow a smaller variance); None if unmeasured. The sample variance is raised to
    the floor where it falls below, keeping its df."""
    floor = floor_of(m)
    if m.k >= 2:
        s2 = statistics.variance(m.values)
        words = f"seed sd {math.sqrt(s2):.3g} over {m.k} runs"
        if floor > s2:
            words += f", raised to its floor {math.sqrt(floor):.3g}"
        return max(s2, floor), m.k - 1, words
    if m.pool is not None:
        v = m.pool.variance(m.value if level is None else level, m.n)
        words = f"one run: the pooled seed sd {math.sqrt(v):.3g} ({m.pool.df} df, from {', '.join(m.pool.models)})"
        return max(v, floor), m.pool.df, words
    return None


def pool(measures, binomial):
    """The seed variance pooled over the measures with >= 2 runs (a Pool), or None where there are none."""
    ms = [m for m in measures if m is not None and not m.fixed and m.k >= 2]
    if not ms:
        return None
    df = sum(m.k - 1 for m in ms)
    scale = lambda m: rate_scale(m.value, m.n) if binomial else 1.0
    ratio = sum((m.k - 1) * statistics.variance(m.values) / scale(m) for m in ms) / df
    return Pool(ratio, df, tuple(dict.fromkeys(m.label.split(" ")[0] for m in ms)), binomial)


# ---------------------------------------------------------------- images


def paired(ms):
    """Every measure has per-image errors of one image set, the same identity."""
    return (
        all(m.errors is not None and m.images is not None for m in ms)
        and len({(m.images, m.errors.shape[1]) for m in ms}) == 1
    )


def image_part(ms, ws):
    """(Part, pairing in words) of the images' noise of sum w_j value_j; (None, "") for measures that are not
    rates over images (training error, responses)."""
    if not all(m.n for m in ms):
        return None, ""
    if paired(ms):
        n = ms[0].errors.shape[1]
        c = 100.0 * sum(w * m.errors.mean(axis=0) for m, w in zip(ms, ws))
        v = float(np.var(c, ddof=1))
        for m, w in zip(ms, ws):  # the within-image seed variance is inside the seed parts already
            wv = within_image_variance(m)
            if wv is not None:
                gamma = max(0.0, wv * 1e4 - statistics.variance(m.values)) * n / (n - 1)
                v -= w * w * gamma / m.k
        return Part(
            max(v, 0.0) / n, None, f"images: paired over the same {n:,}", "images"
        ), f"paired over the same {n:,} images"
    v = sum(w * w * binomial_std(m.value, m.n) ** 2 for m, w in zip(ms, ws))
    what = ", ".join(f"{m.label.split(' ')[0]} binomial on n={m.n:,}" for m in ms)
    return Part(v, None, f"images: {what}", "images"), "unpaired"


def mcnemar_p(a, b):
    """One-sided exact McNemar p-value that `a` errs less than `b` (one run each, the same images): the
    images where exactly one of them errs, binomial on how many of those `b` got wrong."""
    ea, eb = a.errors[0].astype(bool), b.errors[0].astype(bool)
    only_b, only_a = int((eb & ~ea).sum()), int((ea & ~eb).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_b, only_a + only_b, 0.5, alternative="greater").pvalue)


# ---------------------------------------------------------------- comparisons


def contrast(ms, ws):
    """(estimate, noise parts, pairing in words, [(label, why its noise is unmeasured)]) of sum w_j m_j."""
    live = [(m, w) for m, w in zip(ms, ws) if w and not m.fixed]
    estimate = sum(w * m.value for m, w in zip(ms, ws))
    level = statistics.fmean(m.value for m, _ in live) if live else None
    parts, unmeasured, borrowed = [], [], {}
    for m, w in live:
        rv = run_variance(m, level)
        if rv is None:
            unmeasured.append((m.label, "one seed, no pooled seed variance"))
            continue
        v, df, words = rv
        if m.k == 1:  # one estimate of a variance, however many runs borrow it: one part, the pool's df
            share = borrowed.setdefault(m.pool, [0.0, []])
            share[0] += w * w * v
            share[1].append(m.label)
            continue
        parts.append(Part(w * w * v / m.k, df, f"seeds: {m.label}: {words}"))
    for p, (v, labels) in borrowed.items():
        words = f"one run each, the pooled seed variance ({p.df} df, from {', '.join(p.models)})"
        parts.append(Part(v, p.df, f"seeds: {', '.join(labels)}: {words}"))
    unmeasured += [(m.label, NO_IMAGE_COUNT) for m, _ in live if m.over_images and not m.n]
    img, pairing = image_part([m for m, _ in live], [w for _, w in live]) if live else (None, "")
    if img is not None:
        parts.insert(0, img)
    return estimate, parts, pairing, unmeasured


def p_values(d, sd, df, op, margin):
    """One-sided p-values (agrees, contradicts) of a claimed contrast `d op 0`, op '<' or '<=':
    '<'  agrees when d < 0 beyond noise; contradicts when the data exclude an effect of `margin` or more
         (d > -margin beyond noise): a true absence of the claimed effect can be named.
    '<=' non-inferiority: agrees when d < margin beyond noise; contradicts when d > margin beyond noise."""
    if sd is None or not sd > 0 or not math.isfinite(d):
        return 1.0, 1.0
    if op == "<":
        return tail(-d / sd, df), tail((d + margin) / sd, df)
    return tail((margin - d) / sd, df), tail((d - margin) / sd, df)


def compare(ms, ws, op, margin, label=None, unit=None, conditional=False):
    """A claimed contrast sum_j w_j m_j op 0 (a difference a - b: ms=[a, b], ws=[1, -1]) as a dict with its
    numbers, noise and outcome: agrees / contradicts / within noise (before any correction for the other
    comparisons of its claim: combine). conditional: about these trained runs, not the architectures (the
    seeds' part is left out: an ensemble against its own members)."""
    d, parts, pairing, unmeasured = contrast(ms, ws)
    if conditional:
        parts = [p for p in parts if p.kind != "seeds"]
        unmeasured = [(label, why) for label, why in unmeasured if why == NO_IMAGE_COUNT]
    sd, df = satterthwaite(parts) if parts and not unmeasured else (None, None)
    p_agree, p_contra = p_values(d, sd, df, op, margin)
    exact = len(ms) == 2 and all(m.k == 1 for m in ms) and paired(ms) and ws[0] == -ws[1] != 0
    if exact:  # one run each on the same images: the images' part judged exactly as well
        a, b = (ms[0], ms[1]) if ws[0] > 0 else (ms[1], ms[0])
        if op == "<":
            p_agree = max(p_agree, mcnemar_p(a, b))
        if op == "<" and margin == 0:
            p_contra = max(p_contra, mcnemar_p(b, a))
    outcome = "agrees" if p_agree <= ALPHA else "contradicts" if p_contra <= ALPHA else "within noise"
    # '<' with a margin: both can reject (a consistent improvement smaller than the margin); it agrees, and says so
    below_margin = outcome == "agrees" and p_contra <= ALPHA
    why = ""
    if unmeasured:
        reasons = {}
        for label, reason in unmeasured:
            reasons.setdefault(reason, []).append(label.split(" ")[0])
        why = "; ".join(f"{reason} ({', '.join(labels)})" for reason, labels in reasons.items())
    elif sd is None or not sd > 0:
        why = "noise unknown or estimated as zero"
    return {
        "claim": label or f"{ms[0].label} {op} {ms[1].label}",
        "op": op,
        "difference": d,
        "margin": margin,
        "noise_std": sd,
        "df": df,
        "critical": critical(df) if sd is not None else None,
        "p_agrees": p_agree,
        "p_contradicts": p_contra,
        "exact_mcnemar": exact,
        "parts": [(p.what, math.sqrt(p.variance), p.df) for p in parts],
        "pairing": pairing or "no images",
        "unit": unit or ms[0].unit,
        "unmeasured": why,
        "outcome": outcome,
        "below_margin": below_margin,
    }


def slope_weights(x):
    """Weights w with sum w_j y_j the least-squares slope of y on x."""
    mean = statistics.fmean(x)
    ss = sum((v - mean) ** 2 for v in x)
    return [(v - mean) / ss for v in x]


def holm(pvalues, alpha=ALPHA):
    """Which of the hypotheses are rejected by Holm's step-down procedure at family-wise level alpha."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        rejected[i] = True
    return rejected


def combine(comparisons):
    """A claim's comparisons -> what its numbers say: 'holds' when every one agrees (an intersection-union
    test: each at ALPHA keeps the claim's false 'holds' at ALPHA), 'does not hold' when Holm's procedure
    over their contradiction p-values rejects any (the claim's false 'does not hold' at most ALPHA however
    many comparisons), else 'too little data to say'. Each comparison's outcome is rewritten to match: a
    contradiction Holm does not keep becomes 'within noise'."""
    keep = holm([c["p_contradicts"] for c in comparisons])
    for c, contradicts in zip(comparisons, keep):
        if c["outcome"] == "contradicts" and not contradicts:
            c["outcome"], c["holm"] = "within noise", "a contradiction not kept by Holm's correction"
    outcomes = [c["outcome"] for c in comparisons]
    if "contradicts" in outcomes:
        return "does not hold"
    if outcomes and all(o == "agrees" for o in outcomes):
        return "holds"
    return "too little data to say"
