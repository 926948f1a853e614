"""Statistics over seeds: means with Student-t 95% intervals, and paired differences.

Every comparison tacleaner prints goes through here. An interval is the two-sided Student-t
interval ``mean +- t(0.975, n-1) * sd / sqrt(n)`` over independent runs (seeds); with n = 1
there is none. Two defenses applied to the same backdoored models are compared by the
per-seed differences (a paired t-interval), and a difference whose interval contains zero is
reported as "not distinguishable", never as a ranking.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

CONFIDENCE = 0.95
INTERVAL = "Student-t 95% interval over seeds"


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on the CDF; exact to ~1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class Summary:
    """n, mean, sample standard deviation and the 95% t-interval [lo, hi] of some values.

    ``sd``, ``lo`` and ``hi`` are None when n < 2 (no spread can be estimated)."""

    n: int
    mean: float
    sd: float | None
    lo: float | None
    hi: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.hi is None else (self.hi - self.lo) / 2.0

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, standard deviation and two-sided t-interval of independent ``values``."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = math.fsum(xs) / n
    if n < 2:
        return Summary(n, mean, None, None, None)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """``a - b`` over matched runs: the summary of the per-run differences and a verdict."""

    a: str
    b: str
    metric: str
    diff: Summary
    verdict: str

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "metric": self.metric, **self.diff.to_dict(), "verdict": self.verdict}


def compare(a: str, b: str, metric: str, pairs: Sequence[tuple[float, float]], *, scale: float = 100.0,
            unit: str = "points") -> Comparison:
    """Paired comparison of ``a`` and ``b`` on ``metric`` from matched ``(a_value, b_value)``
    pairs (same backdoored model, same seeds). Values are multiplied by ``scale`` for the
    verdict (fractions -> percentage points)."""
    diffs = [(x - y) * scale for x, y in pairs]
    s = summarize(diffs)
    if s.lo is None:
        verdict = f"{a} vs {b}: n=1, no interval; not distinguishable without more seeds"
    elif s.lo > 0 or s.hi < 0:
        word = "higher" if s.mean > 0 else "lower"
        verdict = (f"{a} {word} than {b} by {abs(s.mean):.1f} {unit}, 95% CI [{s.lo:.1f}, {s.hi:.1f}], n={s.n}")
    else:
        verdict = (f"{a} and {b} not distinguishable at n={s.n} (difference {s.mean:+.1f} {unit}, "
                   f"95% CI [{s.lo:.1f}, {s.hi:.1f}])")
    return Comparison(a, b, metric, s, verdict)


def format_summary(s: Summary, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± half-width`` (or the mean alone at n = 1), scaled (fractions -> percent)."""
    if s.half_width is None:
        return f"{s.mean * scale:.{digits}f}"
    return f"{s.mean * scale:.{digits}f} ± {s.half_width * scale:.{digits}f}"
