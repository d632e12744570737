"""Float64 NumPy references for ``min_{α ∈ simplex} αᵀGα``, independent of JAX.

Two methods, neither of them Frank-Wolfe:

* :func:`exhaustive` (small T): every support S is tried; on S the KKT
  system ``[G_SS 1; 1ᵀ 0] [α_S; −μ] = [0; 1]`` is solved by least squares,
  and a candidate is kept when it is feasible and satisfies the KKT
  conditions ``(Gα)_t >= αᵀGα`` for all t. The best kept candidate wins.
* :func:`converged` (any T): accelerated projected gradient with restarts, then
  the equality-constrained QP on the support it found, kept if better.

Both return ``(α, lower_bound)``: the Frank-Wolfe duality gap
``2(αᵀGα − min_t (Gα)_t)`` bounds ``αᵀGα − min``, so
``αᵀGα − gap <= min``, a certified lower bound on the optimum.
"""

import itertools

import numpy as np


def value(gram, weights):
  return float(weights @ gram @ weights)


def duality_gap(gram, weights):
  dots = gram @ weights
  return float(2.0 * (weights @ dots - dots.min()))


def lower_bound(gram, weights):
  return value(gram, weights) - max(duality_gap(gram, weights), 0.0)


def _solve_on_support(gram, support):
  size = len(support)
  kkt = np.zeros((size + 1, size + 1))
  kkt[:size, :size] = gram[np.ix_(support, support)]
  kkt[:size, size] = 1.0
  kkt[size, :size] = 1.0
  rhs = np.zeros(size + 1)
  rhs[size] = 1.0
  solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
  weights = np.zeros(len(gram))
  weights[list(support)] = solution[:size]
  return weights


def exhaustive(gram):
  gram = np.asarray(gram, np.float64)
  num_tasks = len(gram)
  scale = max(gram.diagonal().max(), 1e-300)
  best, best_value = None, np.inf
  for size in range(1, num_tasks + 1):
    for support in itertools.combinations(range(num_tasks), size):
      weights = _solve_on_support(gram, support)
      if weights.min() < -1e-12 or abs(weights.sum() - 1) > 1e-9:
        continue
      weights = np.maximum(weights, 0.0)
      weights /= weights.sum()
      if duality_gap(gram, weights) > 1e-10 * scale:
        continue
      if value(gram, weights) < best_value:
        best, best_value = weights, value(gram, weights)
  return best, lower_bound(gram, best)


def _project_on_simplex(vector):
  ordered = np.sort(vector)[::-1]
  cumulative = np.cumsum(ordered) - 1.0
  index = np.arange(1, len(vector) + 1)
  last = index[ordered - cumulative / index > 0][-1]
  return np.maximum(vector - cumulative[last - 1] / last, 0.0)


def converged(gram, iterations=20000):
  gram = np.asarray(gram, np.float64)
  num_tasks = len(gram)
  lipschitz = max(2.0 * np.linalg.eigvalsh(gram).max(), 1e-300)
  x = np.full(num_tasks, 1.0 / num_tasks)
  y, momentum, current = x.copy(), 1.0, value(gram, x)
  for _ in range(iterations):
    candidate = _project_on_simplex(y - 2.0 * (gram @ y) / lipschitz)
    candidate_value = value(gram, candidate)
    if candidate_value > current:  # Restart the momentum.
      y, momentum = x.copy(), 1.0
      continue
    next_momentum = (1 + np.sqrt(1 + 4 * momentum**2)) / 2
    y = candidate + (momentum - 1) / next_momentum * (candidate - x)
    x, momentum, current = candidate, next_momentum, candidate_value
  polished = _solve_on_support(gram, tuple(np.flatnonzero(x > 1e-10)))
  if polished.min() >= 0 and duality_gap(gram, polished) < duality_gap(gram, x):
    x = polished / polished.sum()
  return x, lower_bound(gram, x)


def relative_suboptimality(gram, weights, bound):
  """``(f(α) − lower bound) / max_t G_tt`` for α renormalised onto the simplex."""
  gram = np.asarray(gram, np.float64)
  weights = np.asarray(weights, np.float64)
  weights = weights / weights.sum()
  return (value(gram, weights) - bound) / gram.diagonal().max()
