"""Statistical checks that a reverse channel coder outputs exact samples (:ref:`exactness`).

Exactness of a channel simulation scheme is a statistical claim: the decoded
samples of a fixed target, collected over many independent seeds, must follow
the target distribution.  This module holds the tools to check that claim for
*any* coder -- ours or someone else's -- and deliberately imports nothing else
from ``rcc``:

* :func:`draw_samples` / :func:`draw_samples_batched` run a coder over many
  seeds and assert that every decode reproduces the sender's sample to the bit;
* :func:`ks_check` and :func:`chi2_check` test one set of samples against a
  target CDF;
* :func:`combine_pvalues`, :func:`uniformity_check` and :func:`bonferroni_check`
  judge a family of p-values;
* :func:`run_battery` and :func:`assert_battery_passes` tie these together for a
  list of targets;
* :func:`ks_distance` and :func:`total_variation_binned` measure how far an
  approximate coder (MRC, ORC) is from its target.

Every check returns a :class:`CheckResult`.  Nothing here uses global random
state (Scientific Python SPEC 7): the only seeds are those handed to the coder.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "CheckResult",
    "BatteryCase",
    "CaseResult",
    "BatteryResult",
    "ks_check",
    "chi2_check",
    "ks_distance",
    "total_variation_binned",
    "draw_samples",
    "draw_samples_batched",
    "combine_pvalues",
    "uniformity_check",
    "bonferroni_check",
    "run_battery",
    "assert_battery_passes",
]


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """Outcome of one statistical check.

    Attributes
    ----------
    name : str
        Which check produced this result (``"ks"``, ``"chi2"``, ...).
    statistic : float
        The test statistic.
    pvalue : float
        The p-value under the null hypothesis "the samples are exact".
    n : int
        Number of samples (or p-values) the check looked at.
    passed : bool
        ``pvalue >= alpha``.
    alpha : float
        Significance level the check was run at.
    details : dict
        Check-specific extras (degrees of freedom, bin edges, ...).
    """

    name: str
    statistic: float
    pvalue: float
    n: int
    passed: bool
    alpha: float
    details: dict = dataclasses.field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{self.name}: {verdict}  statistic={self.statistic:.5g}  "
                f"p={self.pvalue:.4g}  n={self.n}  (alpha={self.alpha:.3g})")


def _result(name, statistic, pvalue, n, alpha, **details) -> CheckResult:
    pvalue = float(pvalue)
    return CheckResult(name, float(statistic), pvalue, int(n), bool(pvalue >= alpha),
                       float(alpha), details)


# --------------------------------------------------------------------------- validation


def _check_alpha(alpha) -> float:
    if not isinstance(alpha, numbers.Real) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def _check_samples(samples, name="samples") -> np.ndarray:
    x = np.asarray(samples)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    if x.size < 2:
        raise ValueError(f"{name} must hold at least n >= 2 values, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _check_callable(fn, name):
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    return fn


def _eval_cdf(cdf, x, name="cdf") -> np.ndarray:
    """Evaluate a vectorised CDF and check that its output is a CDF's."""
    with np.errstate(all="ignore"):
        f = np.asarray(cdf(x), dtype=np.float64)
    if f.shape != np.shape(x):
        raise ValueError(f"{name} must be vectorised: input shape {np.shape(x)}, "
                         f"output shape {f.shape}")
    if not np.all((f >= -1e-12) & (f <= 1 + 1e-12)):  # also rejects NaN
        raise ValueError(f"{name} returned values outside [0, 1] or NaN")
    return np.clip(f, 0.0, 1.0)


def _check_pvalues(pvalues) -> np.ndarray:
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if p.size == 0:
        raise ValueError("pvalues must not be empty")
    if not np.all((p >= 0.0) & (p <= 1.0)):  # also rejects NaN
        raise ValueError("pvalues must all lie in [0, 1]")
    return p


# --------------------------------------------------------------------------- bins


def _quantile_edges(cdf, x_sorted, nbins) -> np.ndarray:
    """Points c_1 <= ... <= c_{nbins-1} with cdf(c_k) ~ k / nbins (numerical inversion)."""
    q = np.arange(1, nbins) / nbins
    lo, hi = x_sorted[0], x_sorted[-1]
    width = max(hi - lo, 1.0)
    for _ in range(64):  # widen the bracket until it holds every target quantile
        f_lo, f_hi = _eval_cdf(cdf, np.array([lo, hi]))
        if f_lo < q[0] and f_hi >= q[-1]:
            break
        lo = lo - width if f_lo >= q[0] else lo
        hi = hi + width if f_hi < q[-1] else hi
        width *= 2
    else:
        raise ValueError("cdf: could not bracket its quantiles; is it a CDF?")
    grid = np.linspace(lo, hi, 1025)  # coarse inversion on a grid, then refine
    f_grid = _eval_cdf(cdf, grid)
    k = np.clip(np.searchsorted(f_grid, q, side="left"), 1, grid.size - 1)
    a, b, fa, fb = grid[k - 1], grid[k], f_grid[k - 1], f_grid[k]
    for _ in range(100):  # bisect until each bin's mass is known to 1% of 1 / nbins
        if np.max(fb - fa) <= 0.01 / nbins:
            break
        mid = a + (b - a) / 2
        fm = _eval_cdf(cdf, mid)
        below = fm < q  # invariant: cdf(a) < q <= cdf(b)
        a, fa = np.where(below, mid, a), np.where(below, fm, fa)
        b, fb = np.where(below, b, mid), np.where(below, fb, fm)
    return b


def _binned_counts(x, cdf, bins, ppf):
    """Observed counts and target probabilities on bins (-inf, c_1], ..., (c_k, inf)."""
    x_sorted = np.sort(x)
    if isinstance(bins, numbers.Integral):
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        if ppf is not None:
            with np.errstate(all="ignore"):
                cuts = np.asarray(_check_callable(ppf, "ppf")(np.arange(1, int(bins)) / bins),
                                  dtype=np.float64)
            cuts = cuts[np.isfinite(cuts)]
        else:
            cuts = _quantile_edges(cdf, x_sorted, int(bins))
    else:
        cuts = np.asarray(bins, dtype=np.float64)
        if cuts.ndim != 1 or cuts.size == 0 or not np.all(np.isfinite(cuts)):
            raise ValueError("bins must be an int or a 1-D array of finite cut points")
        if np.any(np.diff(cuts) <= 0):
            raise ValueError("bins cut points must be strictly increasing")
    cuts = np.unique(cuts)
    cum = np.searchsorted(x_sorted, cuts, side="right")
    observed = np.diff(np.concatenate([[0], cum, [x.size]]))
    fcuts = _eval_cdf(cdf, cuts)
    if np.any(np.diff(fcuts) < 0):
        raise ValueError("cdf is not non-decreasing")
    probs = np.diff(np.concatenate([[0.0], fcuts, [1.0]]))
    return observed, probs, cuts


def _default_bins(n: int) -> int:
    return int(max(2, min(50, n // 20)))


# --------------------------------------------------------------------------- checks


def ks_check(samples, cdf: Callable, *, alpha: float = 1e-3) -> CheckResult:
    """One-sample Kolmogorov-Smirnov test of `samples` against a continuous target.

    Parameters
    ----------
    samples : array_like, shape (n,)
        Finite samples, ``n >= 2``.
    cdf : callable
        Vectorised target CDF, ``cdf(x) -> array`` of the same shape in [0, 1].
    alpha : float, optional
        Significance level; the check passes when ``pvalue >= alpha``.

    Returns
    -------
    CheckResult
        ``statistic`` is the KS distance ``sup |F_n - F|``; exact p-value for small n.
    """
    alpha = _check_alpha(alpha)
    x = _check_samples(samples)
    _check_callable(cdf, "cdf")
    res = stats.kstest(x, lambda t: _eval_cdf(cdf, t))  # validates the cdf's output
    return _result("ks", res.statistic, res.pvalue, x.size, alpha)


def ks_distance(samples, cdf: Callable) -> float:
    """KS distance ``sup_x |F_n(x) - F(x)|`` between the empirical CDF and `cdf`."""
    x = np.sort(_check_samples(samples))
    f = _eval_cdf(_check_callable(cdf, "cdf"), x)
    n = x.size
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


def chi2_check(samples, cdf: Callable, *, bins=None, ppf: Callable | None = None,
               alpha: float = 1e-3) -> CheckResult:
    """Binned chi-square goodness-of-fit test of `samples` against a target.

    Parameters
    ----------
    samples : array_like, shape (n,)
        Finite samples, ``n >= 2``.
    cdf : callable
        Vectorised target CDF.
    bins : int or array_like, optional
        Number of (approximately) equiprobable bins, or strictly increasing
        finite cut points ``c_1 < ... < c_k`` giving the bins
        ``(-inf, c_1], (c_1, c_2], ..., (c_k, inf)``.  Default
        ``max(2, min(50, n // 20))``, so that expected counts are >= 20 / bin.
    ppf : callable, optional
        Vectorised inverse CDF used to place equiprobable cut points.  Without
        it the cut points come from inverting `cdf` by bisection.
    alpha : float, optional
        Significance level.

    Returns
    -------
    CheckResult
        Pearson statistic with ``bins - 1`` degrees of freedom.  Expected counts
        come from `cdf` at the cut points, so inexact quantiles only change the
        bins, not the validity.  A sample in a bin of target probability 0 gives
        an infinite statistic and p-value 0.
    """
    alpha = _check_alpha(alpha)
    x = _check_samples(samples)
    _check_callable(cdf, "cdf")
    bins = _default_bins(x.size) if bins is None else bins
    observed, probs, cuts = _binned_counts(x, cdf, bins, ppf)
    expected = x.size * probs
    keep = expected > 0
    df = max(int(keep.sum()) - 1, 1)
    if np.any(observed[~keep] > 0):
        stat, pvalue = np.inf, 0.0
    else:
        obs, exp = observed[keep], expected[keep]
        stat = float(np.sum((obs - exp) ** 2 / exp))
        pvalue = stats.chi2.sf(stat, df)
    return _result("chi2", stat, pvalue, x.size, alpha, df=df, edges=cuts,
                   observed=observed, expected=expected, min_expected=float(expected.min()))


def total_variation_binned(samples, cdf: Callable, bins=None, *,
                           ppf: Callable | None = None) -> float:
    """Total variation distance between the binned empirical and target distributions.

    Parameters
    ----------
    samples : array_like, shape (n,)
        Finite samples.
    cdf : callable
        Vectorised target CDF.
    bins : int or array_like, optional
        As in :func:`chi2_check`.
    ppf : callable, optional
        As in :func:`chi2_check`.

    Returns
    -------
    float
        ``0.5 * sum_k |counts_k / n - p_k|``.  A lower bound on the TV distance
        of the sampler, plus sampling noise of order ``sqrt(bins / n)``.
    """
    x = _check_samples(samples)
    _check_callable(cdf, "cdf")
    bins = _default_bins(x.size) if bins is None else bins
    observed, probs, _ = _binned_counts(x, cdf, bins, ppf)
    return float(0.5 * np.sum(np.abs(observed / x.size - probs)))


# --------------------------------------------------------------------------- p-values


def combine_pvalues(pvalues, *, method: str = "fisher", alpha: float = 1e-3) -> CheckResult:
    """Combine independent p-values into one (:func:`scipy.stats.combine_pvalues`).

    Parameters
    ----------
    pvalues : array_like
        Independent p-values in [0, 1].
    method : str, optional
        Any method of :func:`scipy.stats.combine_pvalues` (``"fisher"``,
        ``"stouffer"``, ``"pearson"``, ``"tippett"``, ``"mudholkar_george"``).
    alpha : float, optional
        Significance level of the combined test.
    """
    alpha = _check_alpha(alpha)
    p = _check_pvalues(pvalues)
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {type(method).__name__}")
    with np.errstate(divide="ignore"):
        try:
            res = stats.combine_pvalues(p, method=method)
        except ValueError as err:
            raise ValueError(f"method: {err}") from None
    return _result(f"combined[{method}]", res.statistic, res.pvalue, p.size, alpha)


def uniformity_check(pvalues, *, alpha: float = 1e-3) -> CheckResult:
    """KS test that independent p-values look uniform on [0, 1].

    Catches both too-small and suspiciously clustered p-values (e.g. all near 0.5).
    """
    alpha = _check_alpha(alpha)
    p = _check_pvalues(pvalues)
    res = stats.kstest(p, "uniform")
    return _result("uniformity", res.statistic, res.pvalue, p.size, alpha)


def bonferroni_check(pvalues, *, alpha: float = 1e-3) -> CheckResult:
    """Bonferroni check that no p-value is absurdly small: ``min p >= alpha / m``.

    Valid under any dependence between the p-values.  The reported p-value is
    ``min(1, m * min p)``.
    """
    alpha = _check_alpha(alpha)
    p = _check_pvalues(pvalues)
    return _result("bonferroni", p.min(), min(1.0, p.size * p.min()), p.size, alpha)


# --------------------------------------------------------------------------- coders


def _bits_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return (a.dtype == b.dtype and a.shape == b.shape
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


def draw_samples(encode: Callable, decode: Callable, n: int | None = None, *,
                 seeds: Iterable[int] | None = None, base_seed: int = 0) -> np.ndarray:
    """Run a coder once per seed and return the decoded samples.

    For each seed: ``message = encode(seed)``, ``sample = decode(message, seed)``.
    When `message` has a ``.sample`` attribute (the sender's copy), the decoded
    sample must equal it bit for bit, dtype and shape included.

    Parameters
    ----------
    encode : callable
        ``encode(seed) -> message``.
    decode : callable
        ``decode(message, seed) -> sample`` (a scalar or an array).
    n : int, optional
        Number of seeds ``base_seed, base_seed + 1, ..., base_seed + n - 1``.
    seeds : iterable of int, optional
        Explicit seeds, instead of (or with a matching) `n`.
    base_seed : int, optional
        First seed when `seeds` is not given.

    Returns
    -------
    ndarray, shape ``(n, *sample_shape)``
        The decoded samples.

    Raises
    ------
    AssertionError
        If a decoded sample differs from ``message.sample``; names the seed.
    """
    _check_callable(encode, "encode")
    _check_callable(decode, "decode")
    if seeds is None:
        if n is None:
            raise TypeError("n or seeds must be given")
        if not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if not isinstance(base_seed, numbers.Integral) or base_seed < 0:
            raise ValueError(f"base_seed must be a non-negative integer, got {base_seed!r}")
        seeds = range(int(base_seed), int(base_seed) + int(n))
    else:
        seeds = [int(s) for s in seeds]
        if not seeds or (n is not None and n != len(seeds)):
            raise ValueError(f"seeds must be non-empty and match n={n}, got {len(seeds)}")
    out = []
    for seed in seeds:
        message = encode(seed)
        sample = decode(message, seed)
        if hasattr(message, "sample") and not _bits_equal(sample, message.sample):
            raise AssertionError(f"round trip failed at seed {seed}: decoded {sample!r} "
                                 f"!= encoded .sample {message.sample!r}")
        out.append(np.asarray(sample))
    return np.stack(out)


def draw_samples_batched(encode_batch: Callable, decode_batch: Callable, n: int,
                         seed: int) -> np.ndarray:
    """Run a batched coder on `n` independent targets and return the decoded samples.

    Parameters
    ----------
    encode_batch : callable
        ``encode_batch(n, seed) -> message``, encoding a batch of `n`
        independent samples (e.g. `n` copies of one target under one seed).
    decode_batch : callable
        ``decode_batch(message, seed) -> ndarray`` of shape ``(n, ...)``.
    n : int
        Batch size, ``n >= 1``.
    seed : int
        Seed handed to both callables.

    Returns
    -------
    ndarray
        The decoded batch.

    Raises
    ------
    AssertionError
        If the batch has the wrong length, or differs bit for bit from
        ``message.sample`` when the message has one (the first mismatching
        indices are named).
    """
    _check_callable(encode_batch, "encode_batch")
    _check_callable(decode_batch, "decode_batch")
    if not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    message = encode_batch(int(n), seed)
    sample = np.asarray(decode_batch(message, seed))
    if sample.ndim == 0 or sample.shape[0] != n:
        raise AssertionError(f"decode_batch returned shape {sample.shape}, expected ({n}, ...)")
    if hasattr(message, "sample"):
        sent = np.asarray(message.sample)
        if not _bits_equal(sample, sent):
            if sent.shape != sample.shape or sent.dtype != sample.dtype:
                why = f"shape/dtype {sample.shape}/{sample.dtype} != {sent.shape}/{sent.dtype}"
            else:
                flat_a = sample.reshape(n, -1).view(np.uint8).reshape(n, -1)
                flat_b = sent.reshape(n, -1).view(np.uint8).reshape(n, -1)
                bad = np.flatnonzero(np.any(flat_a != flat_b, axis=1))
                why = (f"{bad.size} of {n} elements differ, first at indices {bad[:5].tolist()}: "
                       f"decoded {sample[bad[:5]]!r} != encoded {sent[bad[:5]]!r}")
            raise AssertionError(f"batched round trip failed (seed {seed}): {why}")
    return sample


# --------------------------------------------------------------------------- battery


@dataclasses.dataclass(frozen=True)
class BatteryCase:
    """One target of a battery: samples, the target CDF and optionally its inverse."""

    name: str
    samples: Any
    cdf: Callable
    ppf: Callable | None = None


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """The KS and chi-square results of one battery case."""

    name: str
    ks: CheckResult
    chi2: CheckResult


@dataclasses.dataclass(frozen=True)
class BatteryResult:
    """Outcome of :func:`run_battery`.

    Attributes
    ----------
    cases : tuple of CaseResult
        Per-case checks, run at the Bonferroni level ``alpha / (2 * len(cases))``.
    checks : dict of str to CheckResult
        Battery-level checks: Fisher combination and uniformity of each test's
        p-values across cases (``"fisher[ks]"``, ``"uniform[ks]"``,
        ``"fisher[chi2]"``, ``"uniform[chi2]"``) and ``"bonferroni"`` over all.
    alpha : float
        Level of each battery-level check.
    """

    cases: tuple
    checks: dict
    alpha: float

    @property
    def passed(self) -> bool:
        """True when every battery-level check passed."""
        return all(c.passed for c in self.checks.values())

    @property
    def pvalues(self) -> np.ndarray:
        """All per-case p-values, KS then chi-square for each case."""
        return np.array([p for c in self.cases for p in (c.ks.pvalue, c.chi2.pvalue)])

    def summary(self) -> str:
        """A plain-text table of all per-case and battery-level results."""
        w = max([len(c.name) for c in self.cases] + [len(k) for k in self.checks] + [4])
        lines = [f"{'case':<{w}}  {'n':>8}  {'ks stat':>9}  {'ks p':>9}  {'chi2 stat':>9}  "
                 f"{'chi2 p':>9}  ok"]
        for c in self.cases:
            ok = "yes" if c.ks.passed and c.chi2.passed else "NO"
            lines.append(f"{c.name:<{w}}  {c.ks.n:>8d}  {c.ks.statistic:>9.4g}  "
                         f"{c.ks.pvalue:>9.3g}  {c.chi2.statistic:>9.4g}  "
                         f"{c.chi2.pvalue:>9.3g}  {ok}")
        lines.append("")
        for key, r in self.checks.items():
            lines.append(f"{key:<{w}}  p={r.pvalue:.3g}  {'pass' if r.passed else 'FAIL'}")
        lines.append(f"battery (alpha={self.alpha:.3g}): {'PASSED' if self.passed else 'FAILED'}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _as_case(case) -> BatteryCase:
    if isinstance(case, BatteryCase):
        return case
    if isinstance(case, Sequence) and len(case) in (3, 4):
        return BatteryCase(*case)
    raise TypeError("cases must hold BatteryCase objects or (name, samples, cdf[, ppf]) "
                    f"tuples, got {case!r:.80}")


def run_battery(cases: Iterable, *, alpha: float = 1e-3) -> BatteryResult:
    """Run KS and chi-square checks on several targets and judge them together.

    Parameters
    ----------
    cases : iterable of BatteryCase or tuple
        ``BatteryCase(name, samples, cdf, ppf=None)`` or equivalent tuples.
        The sample sets must be independent of each other.
    alpha : float, optional
        Level of each battery-level check.

    Returns
    -------
    BatteryResult
        Passed when, for each of the two tests, the Fisher combination of its
        p-values across cases and the KS uniformity test of those p-values pass,
        and no p-value is below ``alpha / (2 * len(cases))`` (Bonferroni).
        KS and chi-square p-values of one case are dependent, so they are only
        combined through the Bonferroni check, which is valid regardless.
    """
    alpha = _check_alpha(alpha)
    cases = [_as_case(c) for c in cases]
    if not cases:
        raise ValueError("cases must not be empty")
    case_alpha = alpha / (2 * len(cases))
    results = []
    for c in cases:
        try:
            results.append(CaseResult(
                c.name, ks_check(c.samples, c.cdf, alpha=case_alpha),
                chi2_check(c.samples, c.cdf, ppf=c.ppf, alpha=case_alpha)))
        except (TypeError, ValueError) as err:
            raise type(err)(f"case {c.name!r}: {err}") from err
    checks = {}
    for test in ("ks", "chi2"):
        p = [getattr(r, test).pvalue for r in results]
        checks[f"fisher[{test}]"] = combine_pvalues(p, method="fisher", alpha=alpha)
        checks[f"uniform[{test}]"] = uniformity_check(p, alpha=alpha)
    all_p = [p for r in results for p in (r.ks.pvalue, r.chi2.pvalue)]
    checks["bonferroni"] = bonferroni_check(all_p, alpha=alpha)
    return BatteryResult(tuple(results), checks, alpha)


def assert_battery_passes(result: BatteryResult) -> None:
    """Raise AssertionError, with the summary table, unless `result` passed."""
    if not isinstance(result, BatteryResult):
        raise TypeError(f"result must be a BatteryResult, got {type(result).__name__}")
    if not result.passed:
        raise AssertionError("statistical battery failed:\n" + result.summary())
