"""Student-t intervals and Welch's t-test with numpy and math only.

The benchmark reports a mean over a few seeds with a 95 % interval from the
t-distribution, and mark a method whose Δp differs significantly from tuned
equal weighting by Welch's unequal-variances t-test (Welch 1947, "The
generalization of Student's problem when several different population
variances are involved", Biometrika 34). The t-distribution's CDF is the
regularised incomplete beta function (Abramowitz & Stegun 26.7.1), evaluated
by its continued fraction (A&S 26.5.8) with the modified Lentz method.
"""

import math
from typing import NamedTuple

import numpy as np


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
  """The continued fraction of ``I_x(a, b)`` (A&S 26.5.8), modified Lentz."""
  tiny = 1e-300
  c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
  d = 1.0 / (d if abs(d) > tiny else tiny)
  fraction = d
  for m in range(1, 400):
    for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                      -(a + m) * (a + b + m) * x / ((a + 2 * m) *
                                                    (a + 2 * m + 1))):
      d = 1.0 + numerator * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + numerator / c
      c = c if abs(c) > tiny else tiny
      fraction *= c * d
    if abs(c * d - 1.0) < 1e-15:
      break
  return fraction


def incomplete_beta(a: float, b: float, x: float) -> float:
  """The regularised incomplete beta function ``I_x(a, b)``, 0 ≤ x ≤ 1."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
               + a * math.log(x) + b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):  # The fraction converges fast here.
    return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
  return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
  """``P(T ≤ t)`` for Student's t with ``df`` degrees of freedom (A&S 26.7.1)."""
  tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
  return 1.0 - tail if t > 0 else tail


def t_quantile(probability: float, df: float) -> float:
  """The ``t`` with ``t_cdf(t, df) = probability`` (bisection, 1e-12)."""
  low, high = -1e3, 1e3
  for _ in range(200):
    middle = 0.5 * (low + high)
    if t_cdf(middle, df) < probability:
      low = middle
    else:
      high = middle
    if high - low < 1e-12:
      break
  return 0.5 * (low + high)


class Interval(NamedTuple):
  mean: float
  half_width: float  # the 95 % interval is mean ± half_width; nan if n < 2
  n: int


def mean_interval(values, confidence: float = 0.95) -> Interval:
  """Mean and the half-width of its t-interval, ``t_{(1+c)/2, n−1} s / √n``."""
  values = np.asarray(values, np.float64)
  n = values.size
  if n < 2:
    return Interval(float(values.mean()), float('nan'), n)
  quantile = t_quantile(0.5 + confidence / 2.0, n - 1)
  return Interval(float(values.mean()),
                  quantile * float(values.std(ddof=1)) / math.sqrt(n), n)


class Welch(NamedTuple):
  t: float
  df: float
  p: float  # two-sided


def welch(a, b) -> Welch:
  """Welch's t-test of ``mean(a) = mean(b)``, two-sided.

  ``t = (ā − b̄) / √(s_a²/n_a + s_b²/n_b)``, with the Welch–Satterthwaite
  degrees of freedom ``(v_a + v_b)² / (v_a²/(n_a−1) + v_b²/(n_b−1))``,
  ``v = s²/n``. ``p`` is nan with fewer than two values per side, 0 or 1 when
  both sides have no spread.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.size < 2 or b.size < 2:
    return Welch(float('nan'), float('nan'), float('nan'))
  var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
  difference = a.mean() - b.mean()
  if var_a + var_b == 0.0:
    return Welch(math.copysign(math.inf, difference) if difference else 0.0,
                 float('nan'), 0.0 if difference else 1.0)
  t = difference / math.sqrt(var_a + var_b)
  df = (var_a + var_b) ** 2 / (var_a ** 2 / (a.size - 1)
                               + var_b ** 2 / (b.size - 1))
  return Welch(float(t), float(df), float(2.0 * t_cdf(-abs(t), df)))
