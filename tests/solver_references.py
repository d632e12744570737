"""Float64 NumPy references for the Gramian solvers, independent of JAX.

Written for the solver-accuracy suite (tests/test_solver_accuracy.py); none
of them is the library's algorithm.

* :func:`simplex_projection_weights`: Wolfe's minimum-norm-point algorithm
  (Wolfe, "Finding the nearest point in a polytope", Math. Programming 1976),
  an active-set method that keeps its support affinely independent and
  solves each affine sub-problem exactly (least squares on the bordered KKT
  system). It returns ``argmin_{α∈Δ} ‖Σ_t α_t q_t‖²`` for points ``q_t``
  given by their Gramian; with a linear term it projects a point onto the
  hull (the points are shifted first).
* :func:`cagrad_dual`: CAGrad's dual ``min_{w∈Δ} bᵀw + r‖g_w‖`` by bisection
  on the scalar fixed point of the projection of ``−μ g_0`` onto the hull
  (the reduction is checked by the KKT residual in the tests).
* :func:`dual_cone`: ``argmin_{v >= u} vᵀAv`` by Lawson–Hanson NNLS-style
  active set on ``z = v − u`` with exact solves.
* :func:`aligned_weights`: Aligned-MTL's balance matrix from the SVD of the
  Jacobian (the library works from the Gramian with Jacobi's method).
* :func:`fair_root`: the root of ``G w = w^{-1/α}`` (from
  fair_allocation_reference).
"""

import numpy as np

from fair_allocation_reference import newton_root


def _affine_minimiser(gram, linear, support):
  """``argmin αᵀGα + 2 linearᵀα`` on the affine hull of ``support``."""
  size = len(support)
  kkt = np.zeros((size + 1, size + 1))
  kkt[:size, :size] = gram[np.ix_(support, support)]
  kkt[:size, size] = 1.0
  kkt[size, :size] = 1.0
  rhs = np.zeros(size + 1)
  rhs[:size] = -linear[support]
  rhs[size] = 1.0
  # Equilibrate: the Gramian's entries may span many orders of magnitude.
  scale = np.sqrt(np.maximum(np.diagonal(kkt)[:size], 1e-300))
  scale = np.append(scale, 1.0 / np.sqrt(scale.max() * scale.min()))
  solution = np.linalg.lstsq(kkt / scale[:, None] / scale[None, :],
                             rhs / scale, rcond=None)[0] / scale
  return solution[:size]


def simplex_projection_weights(gram, linear=None, max_iters=10000):
  """``argmin_{α ∈ Δ} αᵀGα + 2 linearᵀα`` (Wolfe's algorithm, float64).

  With ``linear = J p`` this is the projection of ``−p`` onto the hull of the
  rows of ``J`` (Wolfe's algorithm on the points ``g_t + p``, written with
  ``G`` and the linear term so that no large constant is added).
  """
  gram = np.asarray(gram, np.float64)
  num_tasks = len(gram)
  linear = (np.zeros(num_tasks) if linear is None
            else np.asarray(linear, np.float64))
  scale = max(np.abs(gram).max(), 1e-300)
  gram, linear = gram / scale, linear / scale
  weights = np.zeros(num_tasks)
  first = int(np.argmin(np.diagonal(gram)))
  weights[first] = 1.0
  support = [first]
  for _ in range(max_iters):
    dots = gram @ weights + linear
    value = weights @ dots
    candidate = int(np.argmin(dots))
    magnitude = np.abs(gram) @ weights + np.abs(linear)
    if dots[candidate] >= value - 1e-14 * (weights @ magnitude + 1e-300):
      break
    if candidate in support:
      break
    support.append(candidate)
    while True:
      target = np.zeros(num_tasks)
      target[support] = _affine_minimiser(gram, linear, support)
      if all(target[t] > 1e-15 for t in support):
        weights = target
        break
      shrinking = [t for t in support if target[t] <= 1e-15]
      theta = min(weights[t] / (weights[t] - target[t]) for t in shrinking)
      weights = weights + theta * (target - weights)
      weights[np.abs(weights) < 1e-15] = 0.0
      weights = np.maximum(weights, 0.0)
      support = [t for t in support if weights[t] > 0]
      weights /= weights.sum()
  return weights


def cagrad_dual(gram, c, iters=200):
  """``argmin_{w∈Δ} bᵀw + c‖g_0‖ ‖g_w‖`` (CAGrad's dual), float64.

  For ``μ > 0`` the projection ``x(μ)`` of ``−μ g_0`` onto the hull solves
  the dual with ``c‖g_0‖ = ‖x(μ)‖ / μ``; ``μ`` is found by bisection on
  ``log μ`` (the map is monotone on the test problems; the tests check
  the KKT conditions of the dual at the answer).
  """
  gram = np.asarray(gram, np.float64)
  mean_alignment = gram.mean(axis=1)
  radius = c * np.sqrt(mean_alignment.mean())

  def solve(log_mu):
    weights = simplex_projection_weights(
        gram, np.exp(log_mu) * mean_alignment)
    norm = np.sqrt(max(weights @ gram @ weights, 1e-300))
    return weights, np.log(norm) - np.log(radius) - log_mu

  closest = simplex_projection_weights(gram)
  low = np.log(max(np.sqrt(max(closest @ gram @ closest, 0)), 1e-300)) \
      - np.log(radius)
  high = 0.5 * np.log(np.diagonal(gram).max()) - np.log(radius)
  weights = closest
  for _ in range(iters):
    middle = 0.5 * (low + high)
    weights, value = solve(middle)
    if value >= 0:
      low = middle
    else:
      high = middle
    if high - low < 1e-14 * max(1.0, abs(high)):
      break
  return weights


def cagrad_dual_objective(gram, weights, c):
  gram = np.asarray(gram, np.float64)
  mean_alignment = gram.mean(axis=1)
  radius = c * np.sqrt(mean_alignment.mean())
  return mean_alignment @ weights + radius * np.sqrt(
      max(weights @ gram @ weights, 0.0))


def fair_root(gram, alpha):
  return newton_root(np.asarray(gram, np.float64), alpha)


def bound_projection(matrix, lower, max_iters=1000):
  """``argmin_{v >= lower} vᵀAv`` for positive definite ``A`` (float64).

  Primal active set on ``z = v − lower >= 0`` (minimise ``½zᵀAz + zᵀAl``):
  exact solves on the free set, the most violated bound freed, blocking
  steps fixed. Certified by the tests through its KKT conditions.
  """
  matrix = np.asarray(matrix, np.float64)
  lower = np.asarray(lower, np.float64)
  linear = matrix @ lower
  num_tasks = len(lower)
  free = np.zeros(num_tasks, bool)
  offset = np.zeros(num_tasks)
  for _ in range(max_iters):
    target = np.zeros(num_tasks)
    if free.any():
      target[free] = np.linalg.solve(matrix[np.ix_(free, free)],
                                     -linear[free])
    if np.all(target[free] > 0):
      offset = target
      gradient = matrix @ offset + linear
      violated = ~free & (gradient < -1e-15 * np.abs(matrix).max()
                          * max(np.abs(offset + lower).max(), 1e-300))
      if not violated.any():
        break
      free[np.argmin(np.where(violated, gradient, np.inf))] = True
    else:
      blocking = free & (target <= 0)
      ratios = np.where(blocking, offset / np.where(
          blocking, offset - target, 1.0), np.inf)
      index = int(np.argmin(ratios))
      offset = np.maximum(offset + ratios[index] * (target - offset), 0.0)
      offset[index] = 0.0
      free[index] = False
  return lower + offset


def pinv_on_cosine_rank(gram, vector, rtol=1e-5):
  """``G⁺ vector`` with the rank of the cosine matrix (the library's rule)."""
  gram = np.asarray(gram, np.float64)
  eigenvalues, eigenvectors = np.linalg.eigh(gram)
  kept = eigenvalues > rtol * eigenvalues[-1]
  inverse = np.where(kept, 1.0 / np.where(kept, eigenvalues, 1.0), 0.0)
  return eigenvectors @ (inverse * (eigenvectors.T @ vector))


def equal_projection_coefficients(gram):
  """IMTL-G / ConFIG's ``c = D⁻¹ Ĉ⁺ 1`` in float64 (``Ĉ`` the cosines)."""
  gram = np.asarray(gram, np.float64)
  norms = np.sqrt(np.diagonal(gram))
  cosines = gram / np.outer(norms, norms)
  return pinv_on_cosine_rank(cosines, np.ones(len(gram))) / norms


def aligned_weights(jacobian, preference, rtol=1e-5):
  """Aligned-MTL's ``σ_min G^{-1/2} w`` with the rank of the cosine matrix.

  From the float64 SVD of the Jacobian, ``J = U Σ Wᵀ`` (so ``G = U Σ² Uᵀ``),
  not from the eigenvalues of ``G``: with row norms over six decades
  ``cond(G)`` reaches 1e12 and float64 ``eigh(G)`` would itself lose the
  smallest eigenvalues to ~1e-4, while the singular values of ``J`` come
  out to about ``1e-16 · cond(J)``.
  """
  jacobian = np.asarray(jacobian, np.float64)
  units = jacobian / np.linalg.norm(jacobian, axis=1, keepdims=True)
  cosine_eigenvalues = np.linalg.eigvalsh(units @ units.T)
  rank = int(np.sum(cosine_eigenvalues > rtol * cosine_eigenvalues[-1]))
  left, singular, _ = np.linalg.svd(jacobian, full_matrices=False)
  left, singular = left[:, :rank], singular[:rank]
  return singular.min() * (left / singular) @ (left.T @ preference)


def pcgrad_weights(gram, orders):
  """Σ_i of PCGrad's projected coefficients, task i visiting ``orders[i]``."""
  gram = np.asarray(gram, np.float64)
  num_tasks = len(gram)
  total = np.zeros(num_tasks)
  for task in range(num_tasks):
    coefficients = np.eye(num_tasks)[task]
    for other in orders[task]:
      inner = coefficients @ gram[:, other]
      if other != task and inner < 0:
        coefficients[other] -= inner / gram[other, other]
    total += coefficients
  return total


def _ternary_minimum(objective, low=0.0, high=1.0, iters=200):
  """Minimiser of a convex function of one variable on [low, high]."""
  for _ in range(iters):
    third = (high - low) / 3
    if objective(low + third) <= objective(high - third):
      high -= third
    else:
      low += third
  return 0.5 * (low + high)


def cagrad_direction_by_search(jacobian, c, zero_rtol=1e-9):
  """CAGrad's update for T <= 3 by nested ternary search on the dual, float64.

  Independent of the root search of :func:`cagrad_dual` (and of its lower
  end, which is what degenerate gradients test): the dual
  ``F(w) = g_wᵀg_0 + c‖g_0‖‖g_w‖`` is convex on the simplex, and so is its
  inner minimum in the outer variable. ``d = g_0 + c‖g_0‖ g_w/‖g_w‖``, or
  ``g_0`` when the minimiser has ``‖g_w‖ <= zero_rtol · max_t ‖g_t‖``
  (the library's convention for ``g_w* = 0``). Returns ``(d, F*)``.
  """
  jacobian = np.asarray(jacobian, np.float64)
  num_tasks = len(jacobian)
  mean = jacobian.mean(axis=0)
  radius = c * np.linalg.norm(mean)

  def objective(weights):
    combined = weights @ jacobian
    return combined @ mean + radius * np.linalg.norm(combined)

  if num_tasks == 1:
    weights = np.ones(1)
  elif num_tasks == 2:
    share = _ternary_minimum(lambda s: objective(np.array([1 - s, s])))
    weights = np.array([1 - share, share])
  elif num_tasks == 3:
    def point(first, share):
      return np.array([first, (1 - first) * share, (1 - first) * (1 - share)])

    def inner(first):
      return _ternary_minimum(lambda s: objective(point(first, s)), iters=120)

    first = _ternary_minimum(lambda f: objective(point(f, inner(f))),
                             iters=120)
    weights = point(first, inner(first))
  else:
    raise ValueError('T <= 3 only')
  combined = weights @ jacobian
  norm = np.linalg.norm(combined)
  if norm <= zero_rtol * np.linalg.norm(jacobian, axis=1).max():
    return mean, objective(weights)
  return mean + radius * combined / norm, objective(weights)
