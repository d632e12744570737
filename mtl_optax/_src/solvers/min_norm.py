"""The min-norm point of the convex hull of the task gradients, from G alone.

``min_norm_weights(gram)`` returns ``α* = argmin_{α ∈ Δ_T} αᵀ G α``, the
weights of the shortest vector ``d = Σ_t α_t g_t`` in the convex hull of the
task gradients (Sener & Koltun 2018, thesis eq. 4.5). It is a pure function of
the T x T Gramian, compiled: no Python loop over iterations, no host sync, and
it batches with ``jax.vmap``.

The solver is a Frank-Wolfe method that converges linearly, because plain
Frank-Wolfe (the paper's Algorithm 2) crawls at O(1/k) once the optimum lies
inside the simplex. Each iteration takes one of two steps, both with an exact
line search, and the choice between them is the one of *blended pairwise
conditional gradients* (Tsuji, Tanaka and Pokutta, ICML 2022):

* a *pairwise* Frank-Wolfe step, which moves mass from the worst vertex in
  the support (largest ``(Gα)_t``) to the best vertex of the simplex
  (smallest ``(Gα)_t``), when the Frank-Wolfe gap exceeds the spread of
  ``Gα`` over the support (a vertex is missing from the support);
* otherwise a *face* step that stays on the current support: a
  conjugate-gradient step on the face (the first one after the support changes
  is the projected gradient), which needs far fewer iterations than pairwise
  steps on ill-conditioned faces.

A step that reaches the border of the simplex drops that vertex exactly.

**Stopping rule, scale-free.** The Frank-Wolfe duality gap
``gap = 2(αᵀGα − min_t (Gα)_t)`` bounds the suboptimality ``αᵀGα − min``.
The loop stops once

  ``gap <= tol · αᵀGα + ROUNDING · eps · (Σ_t α_t (s_t + (|G|α)_t) + s_b)``,
  ``s_t = |(Gα)_t| + eps (|G|α)_t``,

i.e. when the gap is below ``tol`` relative to the current objective (not to
the largest ``G_tt``, which can be orders of magnitude larger when the task
gradients' norms differ), or below the rounding error of the gap itself:
``(Gα)_t`` is computed with compensated (twice the working precision)
products and sums, to about ``eps · s_t``, and one bit of a weight ``α_t``
moves the objective by about ``eps α_t (|G|α)_t``, so no float32 solver can
certify less (``b`` is the best vertex, ``argmin_t (Gα)_t``). Both terms are
invariant to a positive factor on any one
task's gradient (up to that task's share), so the relative accuracy of the
update does not depend on the gradients' scales. The loop also stops when a
step changes nothing twice in a row (rounding reached), or after
``max_iters`` iterations. Since ``d`` is the projection of 0 onto the hull,
``‖d − d*‖² <= αᵀGα − min <= gap``.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src import base
from mtl_optax._src import numerics
from mtl_optax._src.solvers import scaling
from mtl_optax._src.solvers.result import SolverResult

DEFAULT_MAX_ITERS = 2000
DEFAULT_TOL = 1e-8
# The gap is computed to about eps · (Σ α_t s_t + s_best) (see _stopping);
# below this many times that, it is rounding noise.
ROUNDING = 16.0
_ABSOLUTE_FLOOR = 2.0 ** 40


class _LoopState(NamedTuple):
  weights: jax.Array  # shape=[T], dtype=float32 (float64 under x64)
  dots: jax.Array  # shape=[T], same dtype; dots[t] = <g_t, d> = (Gα)_t
  iterations: jax.Array  # shape=(), dtype=int32
  done: jax.Array  # shape=(), dtype=bool; the stopping rule holds
  finite: jax.Array  # shape=(), dtype=bool; the gap is finite
  direction: jax.Array  # shape=[T], same dtype; last conjugate direction
  residual_norm: jax.Array  # shape=(), same dtype; 0 restarts CG
  stalls: jax.Array  # shape=(), dtype=int32; steps in a row that did nothing


def min_norm_weights(
    gram: jax.Array,
    *,
    max_iters: int = DEFAULT_MAX_ITERS,
    tol: float = DEFAULT_TOL,
) -> jax.Array:
  r"""Weights of the min-norm point of the convex hull: ``argmin_{α∈Δ} αᵀGα``.

  Sener and Koltun, "Multi-Task Learning as Multi-Objective Optimization"
  (NeurIPS 2018), problem (3) and Algorithm 2; Nakamura's thesis eq. 4.5. For
  T = 1 the answer is ``[1]``; for T = 2 it has the closed form
  ``α_1 = clip((G_22 − G_12) / (G_11 + G_22 − 2 G_12), 0, 1)`` (``½`` when the
  two gradients are equal). For T > 2 a linearly convergent Frank-Wolfe method
  (blended pairwise conditional gradients, exact line searches; see the module
  docstring) runs inside one ``lax.while_loop``.

  The Gramian is divided by its largest diagonal entry first, so any scale
  works, and the stopping rule is relative to the objective (see the module
  docstring), so the tasks' relative scales do not degrade the answer. ``G =
  0`` (every gradient zero) returns uniform weights. A non-finite
  Gramian stops the loop at once and returns a finite or NaN vector; it never
  hangs. The result is treated as a constant by autodiff (``stop_gradient``),
  as the authors back-propagate ``Σ α_t L_t`` with ``α`` fixed.

  Args:
    gram: ``[T, T]`` positive semi-definite Gramian ``G[i, j] = <g_i, g_j>``.
      Batch several with ``jax.vmap``.
    max_iters: Python int >= 1, cap on the iterations for T > 2.
    tol: >= 0, stop once the Frank-Wolfe duality gap, which bounds the
      suboptimality ``αᵀGα − min``, is below ``tol · αᵀGα`` (or at the
      rounding floor of float32, whichever is larger).

  Returns:
    ``[T]`` weights on the simplex, float32 (float64 for a float64 ``gram``).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> jacobian = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    >>> weights = mtl.min_norm_weights(jacobian @ jacobian.T)
    >>> weights
    Array([0.6, 0.4], dtype=float32)
    >>> bool(jnp.allclose(weights @ jacobian, jnp.array([0.0, 1.0, 1.0]),
    ...                   atol=1e-6))
    True
  """
  return solve(gram, max_iters=max_iters, tol=tol).weights


def solve(
    gram: jax.Array,
    *,
    max_iters: int = DEFAULT_MAX_ITERS,
    tol: float = DEFAULT_TOL,
    active: jax.Array | None = None,
    closed_form: bool = True,
) -> SolverResult:
  """:func:`min_norm_weights` with its iteration count and convergence flag.

  Args:
    gram: ``[T, T]`` Gramian.
    max_iters: cap on the iterations.
    tol: duality gap relative to the objective at which to stop.
    active: optional ``[T]`` bool; the problem is solved on the face of the
      simplex spanned by the active tasks, the others get weight 0. If no task
      is active, every task is.
    closed_form: use the closed form for T = 2 (False forces the iterative
      solver, for tests and benchmarks).

  Returns:
    A :class:`SolverResult`; ``iterations`` is 0 for the closed forms,
    ``converged`` says that the stopping rule on the gap was met.
  """
  gram = jnp.asarray(gram)
  if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
    raise ValueError(
        f'gram must be a square [T, T] matrix (use jax.vmap for a batch), '
        f'got shape {gram.shape}.')
  base.check_positive_int('max_iters', max_iters)
  _check_tol(tol)
  num_tasks = gram.shape[0]
  dtype = jnp.promote_types(gram.dtype, jnp.float32)
  gram = normalise_scale(lax.stop_gradient(gram).astype(dtype))
  if active is None:
    active = jnp.ones([num_tasks], bool)
  else:
    active = jnp.asarray(active, bool)
    active = jnp.where(jnp.any(active), active, True)

  if num_tasks == 1:
    return SolverResult(jnp.ones([1], dtype), jnp.zeros([], jnp.int32),
                        jnp.all(jnp.isfinite(gram)))
  if num_tasks == 2 and closed_form:
    weights = _two_task_weights(gram, active)
    return SolverResult(weights, jnp.zeros([], jnp.int32),
                        jnp.all(jnp.isfinite(weights)))
  return _blended_pairwise(gram, active, max_iters, tol)


def _check_tol(tol) -> None:
  # Not base.check_range: this runs inside jit, where jnp ops on a Python float
  # are traced. A traced tol (inject_hyperparams) is not checked.
  if isinstance(tol, (int, float)) and not (math.isfinite(tol) and tol >= 0):
    raise ValueError(f'tol must be a finite number >= 0, got {tol!r}.')


def normalise_scale(gram: jax.Array) -> jax.Array:
  """G divided by the power of two nearest below ``max_t G_tt``.

  The minimiser is the same, entries are in [-2, 2], and dividing by a power
  of two is exact, so well-scaled inputs give exactly the closed forms.
  """
  largest = jnp.max(jnp.diagonal(gram))
  # frexp/ldexp are exact, unlike exp2(floor(log2(·))).
  _, exponent = jnp.frexp(jnp.where(largest > 0, largest, 1.0))
  return gram / jnp.ldexp(jnp.ones([], gram.dtype), exponent - 1)


def _split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Dekker's split ``x = hi + lo``, each half of the significand."""
  bits = jnp.finfo(x.dtype).nmant + 1
  factor = jnp.asarray(2.0 ** ((bits + 1) // 2) + 1.0, x.dtype)
  scaled = factor * x
  high = scaled - (scaled - x)
  return high, x - high


def _matvec(gram: jax.Array, vector: jax.Array) -> jax.Array:
  """``G v`` as if accumulated in twice the working precision.

  Task gradients of very different norms make ``(Gα)_t`` a sum of terms
  much larger than itself (for a long gradient g_t nearly orthogonal to the
  min-norm point); in plain float32 its relative error is then far above
  eps and no solver can locate the optimum. Error-free transformations
  (Dekker's product, Knuth's two-sum in a pairwise tree; Ogita, Rump and
  Oishi, "Accurate sum and dot product", 2005) keep the rounding of every
  product and sum, so the result is accurate to about eps relative to
  ``|G v|``, plus ``eps²`` relative to the terms. Elementwise operations
  only: no matmul, which may run in TF32 on GPUs.
  """
  vector = jnp.broadcast_to(vector[None, :], gram.shape)
  products = gram * vector
  gram_high, gram_low = _split(gram)
  vector_high, vector_low = _split(vector)
  errors = (((gram_high * vector_high - products) + gram_high * vector_low
             + gram_low * vector_high) + gram_low * vector_low)
  compensation = jnp.sum(errors, axis=1)
  size = 1
  while size < products.shape[1]:
    size *= 2
  partial = jnp.pad(products, ((0, 0), (0, size - products.shape[1])))
  while partial.shape[1] > 1:
    left, right = partial[:, 0::2], partial[:, 1::2]
    total = left + right
    right_part = total - left
    compensation = compensation + jnp.sum(
        (left - (total - right_part)) + (right - right_part), axis=1)
    partial = total
  return partial[:, 0] + compensation


def _norm(vector: jax.Array) -> jax.Array:
  """Euclidean norm without underflow or overflow of the squares."""
  largest = jnp.max(jnp.abs(vector))
  safe = jnp.where(largest > 0, largest, 1.0)
  return safe * numerics.safe_sqrt(jnp.sum((vector / safe) ** 2))


def _duality_gap(weights, dots, active):
  """``2(αᵀGα − min_t (Gα)_t)`` as a sum of non-negative terms (less rounding)."""
  best = jnp.min(jnp.where(active, dots, jnp.inf))
  return 2.0 * jnp.sum(jnp.where(weights > 0, weights * (dots - best), 0.0))


def _stopping(gram, weights, dots, active, tol, linear):
  """``(done, finite)``: the scale-free stopping rule of the module docstring.

  ``dots = Gα + linear`` is half the gradient of ``αᵀGα + 2 linearᵀα``.
  With a linear term (the projection of a point ``−v`` onto the hull, with
  ``linear = Jv``), the gap still bounds ``‖g_α − x*‖²``, so it is compared
  with ``αᵀGα = ‖g_α‖²``, not with the objective.
  """
  gap = _duality_gap(weights, dots, active)
  value = jnp.sum(weights * (dots - linear))  # αᵀGα.
  # dots carry eps relative to themselves plus eps² relative to their terms
  # (|G|α)_t + |linear_t| (compensated products and sums, see _matvec).
  magnitudes = jnp.sum(jnp.abs(gram) * weights[None, :], axis=1) + jnp.abs(
      linear)
  eps = jnp.finfo(gram.dtype).eps
  best = jnp.argmin(jnp.where(active, dots, jnp.inf))
  sizes = jnp.abs(dots) + eps * magnitudes
  # The weights themselves are float: a change of α_t by its last bit moves
  # the objective by about eps α_t (|G|α)_t, so the gap cannot go below that.
  # An absolute floor far below any float32 objective but above the
  # subnormals: G is normalised (max G_tt in [1, 2)), and when the optimum is
  # 0 (Pareto-stationary) the relative rule alone would chase it forever.
  floor = ROUNDING * eps * (jnp.sum(weights * (sizes + magnitudes))
                            + sizes[best]) + _ABSOLUTE_FLOOR * jnp.finfo(
                                gram.dtype).tiny
  return gap <= tol * value + floor, jnp.isfinite(gap)


def _two_task_weights(gram: jax.Array, active: jax.Array) -> jax.Array:
  """Closed form for T = 2: minimise ``‖a g_1 + (1 − a) g_2‖²`` over [0, 1]."""
  diff_sq = gram[0, 0] + gram[1, 1] - 2.0 * gram[0, 1]  # ‖g_1 − g_2‖².
  equal = diff_sq <= 0
  safe_diff_sq = jnp.where(equal, 1.0, diff_sq)
  # Each weight from its own ratio (rather than 1 − the other), so that exact
  # inputs give correctly rounded weights; their sum is 1 up to rounding.
  first = jnp.clip((gram[1, 1] - gram[0, 1]) / safe_diff_sq, 0.0, 1.0)
  second = jnp.clip((gram[0, 0] - gram[0, 1]) / safe_diff_sq, 0.0, 1.0)
  weights = jnp.where(equal, 0.5, jnp.stack([first, second]))
  # A face with a single task: all the weight goes to it.
  return jnp.where(jnp.all(active), weights, active.astype(gram.dtype))


def _blended_pairwise(gram, active, max_iters, tol, linear=None,
                      weights0=None) -> SolverResult:
  """The loop; with ``linear``, it minimises ``αᵀGα + 2 linearᵀα``.

  ``weights0`` (on the simplex, zero off ``active``) is the start, uniform
  on ``active`` by default. CAGrad's dual solver uses both.
  """
  num_tasks = gram.shape[0]
  dtype = gram.dtype
  if linear is None:
    linear = jnp.zeros([num_tasks], dtype)
  if weights0 is None:
    weights0 = active.astype(dtype) / jnp.sum(active).astype(dtype)
  dots0 = _matvec(gram, weights0) + linear
  zeros = jnp.zeros([num_tasks], dtype)

  def not_done(loop):
    # A non-finite gap (non-finite G) stops at once.
    return ((loop.iterations < max_iters) & loop.finite & ~loop.done
            & (loop.stalls < 2))

  def step(loop):
    weights, dots = loop.weights, loop.dots
    support = weights > 0
    away = jnp.argmax(jnp.where(support, dots, -jnp.inf))
    best_in_support = jnp.argmin(jnp.where(support, dots, jnp.inf))
    best = jnp.argmin(jnp.where(active, dots, jnp.inf))
    value = jnp.sum(weights * dots)
    # Blended choice: bring in a new vertex only when the Frank-Wolfe gap
    # beats the spread of the face; otherwise minimise on the face.
    add_vertex = value - dots[best] > dots[away] - dots[best_in_support]
    pairwise = (jax.nn.one_hot(best, num_tasks, dtype=dtype)
                - jax.nn.one_hot(away, num_tasks, dtype=dtype))
    # Conjugate gradients on the face {supp ⊆ support, Σ = 1}: the residual
    # is minus the gradient projected on that affine subspace.
    face_mean = jnp.sum(jnp.where(support, dots, 0.0)) / jnp.sum(support)
    residual = jnp.where(support, face_mean - dots, 0.0)
    # Norms, not squares, and unit-size search directions: with tasks of very
    # different norms the residuals can be ~1e-20 of G's largest entry, and
    # their squares (or pᵀGp) would underflow float32.
    residual_norm = _norm(residual)
    ratio = jnp.where(loop.residual_norm > 0, residual_norm / jnp.where(
        loop.residual_norm > 0, loop.residual_norm, 1.0), 0.0)
    conjugate = residual + ratio * ratio * loop.direction
    # Rounding can break conjugacy; fall back to the projected gradient.
    conjugate = jnp.where(jnp.sum(conjugate * residual) > 0, conjugate,
                          residual)
    direction = jnp.where(add_vertex, pairwise, conjugate)
    largest = jnp.max(jnp.abs(direction))
    direction = direction / jnp.where(largest > 0, largest, 1.0)

    # Exact line search on f(α + γ p) = f + 2γ pᵀGα + γ² pᵀGp. Σ p = 0, so the
    # slope is taken against centred dots, which cancels less.
    slope = jnp.sum(direction * (dots - face_mean))
    curvature = jnp.sum(direction * _matvec(gram, direction))
    exact = jnp.where(curvature > 0,
                      -slope / jnp.where(curvature > 0, curvature, 1.0),
                      jnp.inf)
    exact = jnp.maximum(exact, 0.0)
    # The largest step that keeps α >= 0, and the vertex it drops.
    shrinking = direction < 0
    limits = jnp.where(shrinking,
                       weights / jnp.where(shrinking, -direction, 1.0), jnp.inf)
    dropped = jnp.argmin(limits)
    drop = exact >= limits[dropped]
    step_size = jnp.minimum(exact, limits[dropped])

    new_weights = jnp.maximum(weights + step_size * direction, 0.0)
    new_weights = jnp.where(drop, new_weights.at[dropped].set(0.0), new_weights)
    new_weights = new_weights / jnp.sum(new_weights)
    # Rounding must never leave the simplex (e.g. every weight underflowing).
    new_weights = jnp.where(jnp.all(jnp.isfinite(new_weights)), new_weights,
                            weights)
    new_dots = _matvec(gram, new_weights) + linear
    restart = add_vertex | drop | (step_size <= 0)
    unchanged = jnp.all(new_weights == weights)
    done, finite = _stopping(gram, new_weights, new_dots, active, tol, linear)
    return _LoopState(
        weights=new_weights,
        dots=new_dots,
        iterations=loop.iterations + 1,
        done=done,
        finite=finite,
        direction=jnp.where(restart, zeros, conjugate),
        residual_norm=jnp.where(restart, jnp.zeros([], dtype), residual_norm),
        stalls=jnp.where(unchanged, loop.stalls + 1, 0))

  done0, finite0 = _stopping(gram, weights0, dots0, active, tol, linear)
  start = _LoopState(
      weights=weights0,
      dots=dots0,
      iterations=jnp.zeros([], jnp.int32),
      done=done0,
      finite=finite0,
      direction=zeros,
      residual_norm=jnp.zeros([], dtype),
      stalls=jnp.zeros([], jnp.int32))
  final = lax.while_loop(not_done, step, start)
  # Two steps that changed nothing: float rounding reached, as converged as
  # the working precision allows.
  return SolverResult(final.weights, final.iterations,
                      final.done | (final.finite & (final.stalls >= 2)))


def central_direction_weights(
    gram: jax.Array,
    *,
    max_iters: int = DEFAULT_MAX_ITERS,
    tol: float = DEFAULT_TOL,
) -> jax.Array:
  """``[T]`` simplex weights of the central direction, from the Gramian alone.

  ``w_t = (k_t / n_t) / Σ_j (k_j / n_j)`` with ``n_t = ‖g_t‖`` and ``k`` the
  min-norm weights of the unit gradients (Nakamura's thesis eqs. 4.6–4.7):
  the min-norm problem on the cosine matrix, mapped back to the raw
  gradients. Here, beside :func:`min_norm_weights`, because two methods
  solve it (the central direction and the task tensioner's default base).
  Only ratios of ``G`` matter. Tasks with a zero gradient are left out of the
  problem and get weight 0; if every gradient is zero the weights are
  ``1/T``.
  """
  num_tasks = gram.shape[0]
  unit_gram, norms = scaling.cosine_gram(gram)  # Ĝ[i, j] = <g_i/n_i, g_j/n_j>.
  nonzero = norms > 0
  inverse_norms = numerics.safe_div(1.0, norms)
  unit_weights = solve(  # k*, eq. 4.6.
      unit_gram, max_iters=max_iters, tol=tol, active=nonzero).weights
  raw_weights = unit_weights * inverse_norms  # k_t / n_t, eq. 4.7.
  # γ = (Σ_t k_t / n_t)^{-1} puts v in the convex hull of the raw gradients.
  return numerics.safe_div(raw_weights, jnp.sum(raw_weights),
                           fallback=1.0 / num_tasks)
