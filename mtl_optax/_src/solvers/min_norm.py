"""The min-norm point of the convex hull of the task gradients, from G alone.

``min_norm_weights(gram)`` returns ``α* = argmin_{α ∈ Δ_T} αᵀ G α``, the
weights of the shortest vector ``d = Σ_t α_t g_t`` in the convex hull of the
task gradients (Sener & Koltun 2018, thesis eq. 4.5). It is a pure function of
the T x T Gramian, compiled: no Python loop over iterations, no host sync, and
it batches with ``jax.vmap``.

The solver is Wolfe's minimum-norm-point algorithm (Wolfe, "Finding the
nearest point in a polytope", Mathematical Programming 1976), an active-set
method that ends after finitely many steps with the exact minimiser (up to
rounding), where Frank-Wolfe variants only approach it; on task gradients whose
norms span orders of magnitude they can need thousands of iterations. It keeps a
set ``S`` of tasks whose gradients are affinely independent and the weights
``α`` (zero off ``S``). Each iteration solves one small linear system:

* the *affine minimiser* ``β`` of ``αᵀGα`` on ``{Σ_t α_t = 1, α = 0 off S}``,
  from the bordered (KKT) system ``[G_SS 1; 1ᵀ 0] [β; −λ] = [0; 1]``;
* if ``β > 0`` on ``S`` (a *major* step) it becomes ``α``; a task ``t`` outside
  ``S`` with ``(Gα)_t < αᵀGα`` (``g_t`` makes an obtuse angle with ``d``
  beyond its rounding) then joins ``S``, the one with the smallest ``(Gα)_t``;
  if there is none, ``α`` is optimal;
* otherwise (a *minor* step) ``α`` moves towards ``β`` until a weight reaches
  0, and that task leaves ``S``.

**Scale-free arithmetic.** The bordered system is solved on the equilibrated
Gramian ``D^{-1/2} G D^{-1/2}`` (``D = diag G``, the cosines of the gradients),
so its condition is that of the directions, not of the norms, and two steps of
iterative refinement with compensated residuals make the solve as accurate as
the cosine matrix allows. ``(Gα)_t`` is computed with compensated (twice the
working precision) products and sums (see :func:`_matvec`).

**Stopping rule, scale-free.** A task joins ``S`` only when its improvement
``αᵀGα − (Gα)_t`` exceeds ``tol · αᵀGα`` plus its own rounding error,
``ROUNDING · eps · (|(Gα)_t| + (|G|α)_t)`` (one bit of each weight moves
``(Gα)_t`` by about ``eps (|G|α)_t``): relative to the current objective and
to each task's own scale, not to the largest ``G_tt``. The loop also stops
when a step would increase the objective beyond rounding (the working
precision is reached), or after ``max_iters`` iterations (in practice Wolfe's
method needs a few times ``T``: 34 median, 65 at most on the T = 32 scaled
Jacobians of the accuracy tests). The tests check the guarantee that matters,
the relative error of ``d = Σ_t α_t g_t`` against a float64 solution: below
1e-4 on Jacobians whose row norms span 1e-3 … 1e3, for T up to 32.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src import validation
from mtl_optax._src import numerics
from mtl_optax._src.solvers import frank_wolfe
from mtl_optax._src.solvers import scaling
from mtl_optax._src.solvers.result import SolverResult

DEFAULT_MAX_ITERS = 2000
DEFAULT_TOL = 1e-8
# The gap is computed to about eps · (Σ α_t s_t + s_best) (see _stopping);
# below this many times that, it is rounding noise.
ROUNDING = 16.0


# The min-norm solvers a method can choose: Wolfe's method (this module, exact
# after finitely many steps) and the MGDA paper's Frank-Wolfe (approaches the
# optimum; :mod:`frank_wolfe`).
SOLVERS = ('wolfe', 'frank_wolfe')

# Refinement steps of each affine solve (each gains the digits that the
# cosine matrix's condition allows).
REFINEMENTS = 2


class _LoopState(NamedTuple):
  weights: jax.Array  # shape=[T], dtype=float32 (float64 under x64)
  dots: jax.Array  # shape=[T], same dtype; (Gα)_t + linear_t, compensated
  members: jax.Array  # shape=[T], dtype=bool; the set S
  iterations: jax.Array  # shape=(), dtype=int32
  done: jax.Array  # shape=(), dtype=bool
  converged: jax.Array  # shape=(), dtype=bool; optimal to the stopping rule


def min_norm_weights(
    gram: jax.Array,
    *,
    max_iters: int | None = None,
    tol: float | None = None,
    solver: str = 'wolfe',
) -> jax.Array:
  r"""Weights of the min-norm point of the convex hull: ``argmin_{α∈Δ} αᵀGα``.

  Sener and Koltun, "Multi-Task Learning as Multi-Objective Optimization"
  (NeurIPS 2018), problem (3) and Algorithm 2; Nakamura's thesis eq. 4.5. For
  T = 1 the answer is ``[1]``; for T = 2 it has the closed form
  ``α_1 = clip((G_22 − G_12) / (G_11 + G_22 − 2 G_12), 0, 1)`` (``½`` when the
  two gradients are equal). For T > 2 Wolfe's active-set method (see the
  module docstring) runs inside one ``lax.while_loop``.

  The Gramian is divided by the power of two nearest its largest diagonal
  entry, and each affine sub-problem is solved on the cosines of the
  gradients, so any scale works and the tasks' relative scales do not degrade
  the answer: on Jacobians whose row norms span 1e-3 … 1e3 the update
  ``d = Σ_t α_t g_t`` is within 1e-4 (relative) of the float64 solution for T
  up to 32 (tests/test_solver_accuracy.py). ``G = 0`` (every gradient zero)
  returns uniform weights. A non-finite Gramian stops the loop at once and
  returns a finite or NaN vector; it never hangs. The result is treated as a
  constant by autodiff (``stop_gradient``), as the authors back-propagate
  ``Σ α_t L_t`` with ``α`` fixed.

  Args:
    gram: ``[T, T]`` positive semi-definite Gramian ``G[i, j] = <g_i, g_j>``.
      Batch several with ``jax.vmap``.
    max_iters: Python int >= 1, cap on the iterations for T > 2 (None: the
      solver's default, 2000 for Wolfe's method, 250 for Frank-Wolfe).
    tol: >= 0, a task outside the support joins it only if it lowers
      ``(Gα)_t`` below ``αᵀGα`` by more than ``tol · αᵀGα`` plus its rounding
      error; when none does, the weights are optimal (None: 1e-8). For
      Frank-Wolfe, the ℓ1 change of ``α`` below which it stops (None: 1e-5).
    solver: ``'wolfe'`` (this method, exact) or ``'frank_wolfe'`` (the MGDA
      paper's Algorithm 2, which only approaches the minimiser; see
      :mod:`frank_wolfe`).

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
  return solve_with(solver, gram, max_iters=max_iters, tol=tol).weights


def solve_with(solver: str, gram: jax.Array, *, max_iters: int | None = None,
               tol: float | None = None,
               active: jax.Array | None = None) -> SolverResult:
  """The min-norm problem solved by ``solver`` (one of :data:`SOLVERS`).

  ``max_iters`` and ``tol`` of None take the chosen solver's defaults.
  """
  validation.check_choice('solver', solver, SOLVERS)
  if solver == 'frank_wolfe':
    return frank_wolfe.solve(
        gram, active=active,
        max_iters=frank_wolfe.DEFAULT_MAX_ITERS if max_iters is None
        else max_iters,
        tol=frank_wolfe.DEFAULT_TOL if tol is None else tol)
  return solve(gram, active=active,
               max_iters=DEFAULT_MAX_ITERS if max_iters is None else max_iters,
               tol=DEFAULT_TOL if tol is None else tol)


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
    tol: the improvement, relative to the objective, below which a task is
      not brought into the support.
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
  validation.check_positive_int('max_iters', max_iters)
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
  result = _wolfe(gram, active, max_iters, tol, interior_first=True)
  # G = 0: every point of the hull is optimal; uniform weights on the face.
  uniform = active.astype(dtype) / jnp.sum(active).astype(dtype)
  return result._replace(
      weights=jnp.where(jnp.any(gram != 0), result.weights, uniform))


def _check_tol(tol) -> None:
  # Not validation.check_range: this runs inside jit, where jnp ops on a Python float
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


def _affine_minimiser(gram, linear, members):
  """``argmin αᵀGα + 2 linearᵀα`` on ``{Σ α = 1, α = 0 off members}``.

  The bordered system ``[G_SS 1; 1ᵀ 0] [β; −λ] = [−linear_S; 1]`` written in
  the variables ``γ = D^{1/2} β`` (``D = diag G`` on ``S``), whose matrix has
  the cosines of the gradients inside and the border ``D^{-1/2} 1`` (divided
  by its largest entry, and the constraint with it), solved by LU with
  iterative refinement.
  Non-members get the identity inside the matrix and weight 0.
  """
  num_tasks = gram.shape[0]
  dtype = gram.dtype
  diagonal = jnp.diagonal(gram)
  positive = members & (diagonal > 0)
  scale = jnp.where(positive, lax.rsqrt(jnp.where(positive, diagonal, 1.0)),
                    1.0)
  border = jnp.where(members, scale, 0.0)
  largest = jnp.max(border)
  border = border / largest  # Σ_t β_t = 1 is borderᵀγ = 1 / largest.
  inner = jnp.where(members[:, None] & members[None, :],
                    gram * scale[:, None] * scale[None, :],
                    jnp.eye(num_tasks, dtype=dtype))
  matrix = jnp.block([[inner, border[:, None]],
                      [border[None, :], jnp.zeros([1, 1], dtype)]])
  rhs = jnp.concatenate([jnp.where(members, -linear * scale, 0.0),
                         jnp.ones([1], dtype) / largest])
  factors = jax.scipy.linalg.lu_factor(matrix)
  solution = jax.scipy.linalg.lu_solve(factors, rhs)
  for _ in range(REFINEMENTS):
    residual = rhs - _matvec(matrix, solution)
    solution = solution + jax.scipy.linalg.lu_solve(factors, residual)
  # β = D^{-1/2} γ; the division removes the rounding of Σβ = 1.
  weights = jnp.where(members, solution[:num_tasks] * scale, 0.0)
  return weights / jnp.sum(weights)


def _improvements(weights, dots, linear, magnitudes, tol):
  """``(improvement, slack)``: how far each task's ``dots_t`` lies below
  ``αᵀ(Gα + linear)``, and the part of it that is tolerance and rounding.

  ``dots = Gα + linear`` (compensated), ``magnitudes = |G|α + |linear|``.
  The slack is ``tol · αᵀGα`` plus each task's own rounding error.
  """
  eps = jnp.finfo(dots.dtype).eps
  value = jnp.sum(weights * (dots - linear))  # αᵀGα = ‖d‖².
  improvement = jnp.sum(weights * dots) - dots
  return improvement, tol * value + ROUNDING * eps * (jnp.abs(dots)
                                                      + magnitudes)


def _is_optimal(gram, weights, active, tol, linear):
  """Whether ``weights`` > 0 on ``active`` solve the problem on that face.

  The optimality conditions of ``min αᵀGα + 2 linearᵀα`` on the simplex
  with every active weight positive: ``(Gα + linear)_t = αᵀ(Gα + linear)``
  for each active task, here to within the tolerance and rounding of Wolfe's
  stopping rule. An inaccurate solve (rank-deficient or ill-conditioned
  gradients) fails the test.
  """
  dots = _matvec(gram, weights) + linear
  improvement, slack = _improvements(
      weights, dots, linear, jnp.abs(gram) @ weights + jnp.abs(linear), tol)
  balanced = jnp.abs(improvement) <= slack
  return (jnp.all(jnp.isfinite(weights))
          & jnp.all(jnp.where(active, (weights > 0) & balanced, True)))


def first_vertex(gram, active, linear=None):
  """The start of :func:`_wolfe`: the active vertex of least objective."""
  values = jnp.diagonal(gram)
  if linear is not None:
    values = values + 2.0 * linear
  best = jnp.argmin(jnp.where(active, values, jnp.inf))
  return jax.nn.one_hot(best, gram.shape[0], dtype=gram.dtype)


def _wolfe(gram, active, max_iters, tol, linear=None,
           weights0=None, interior_first=False) -> SolverResult:
  """The loop; with ``linear``, it minimises ``αᵀGα + 2 linearᵀα``.

  ``weights0`` (on the simplex, zero off ``active``, with affinely
  independent gradients on its support, e.g. a previous solution) is the
  start; by default :func:`first_vertex`. CAGrad's dual solver uses both.

  ``interior_first`` (a bool, may be traced) first tries the affine
  minimiser on every active task: when all its weights are positive and it
  passes the optimality test, it is the answer and the loop does not run.
  That is one solve where a cold start would add the tasks one by one (T
  solves), typical of many nearly orthogonal gradients.
  """
  num_tasks = gram.shape[0]
  dtype = gram.dtype
  eps = jnp.finfo(dtype).eps
  if linear is None:
    linear = jnp.zeros([num_tasks], dtype)
  if weights0 is None:
    weights0 = first_vertex(gram, active, linear)

  def try_interior(weights0):
    interior = _affine_minimiser(gram, linear, active)
    optimal = _is_optimal(gram, interior, active, tol, linear)
    return jnp.where(optimal, interior, weights0), optimal

  weights0, optimal0 = lax.cond(
      interior_first, try_interior, lambda w: (w, jnp.asarray(False)),
      weights0)
  zero = ~jnp.any(gram != 0)  # Every point of the hull is optimal.

  def not_done(loop):
    return ~loop.done & (loop.iterations < max_iters)

  def step(loop):
    weights, members = loop.weights, loop.members
    target = _affine_minimiser(gram, linear, members)
    solved = jnp.all(jnp.isfinite(target))
    major = jnp.all(jnp.where(members, target > 0, True))
    # Minor step: the largest move towards the target that keeps α >= 0; the
    # weight that reaches 0 leaves S.
    shrinking = members & (target <= 0)
    limits = jnp.where(shrinking, weights / jnp.where(
        shrinking, weights - target, 1.0), jnp.inf)
    dropped = jnp.argmin(limits)
    moved = jnp.maximum(
        weights + jnp.clip(limits[dropped], 0.0, 1.0) * (target - weights),
        0.0).at[dropped].set(0.0)
    moved = moved / jnp.sum(moved)
    new_weights = jnp.where(major, target, moved)
    new_dots = _matvec(gram, new_weights) + linear
    # The objective αᵀGα + 2 linearᵀα = Σ_t α_t (dots_t + linear_t) never
    # increases in exact arithmetic; when rounding says otherwise, the
    # working precision is reached.
    magnitudes = jnp.abs(gram) @ new_weights + jnp.abs(linear)
    worse = ~solved | ~(
        jnp.sum(new_weights * (new_dots + linear))
        <= jnp.sum(weights * (loop.dots + linear))
        + ROUNDING * eps * jnp.sum(new_weights * magnitudes))
    new_weights = jnp.where(worse, weights, new_weights)
    dots = jnp.where(worse, loop.dots, new_dots)
    members = jnp.where(major, members, members & (moved > 0))
    improvement, slack = _improvements(new_weights, dots, linear, magnitudes,
                                       tol)
    candidates = active & ~members & (improvement > slack)
    optimal = major & ~jnp.any(candidates)
    entering = jnp.argmin(jnp.where(candidates, dots, jnp.inf))
    done = worse | optimal
    members = jnp.where(major & ~done, members.at[entering].set(True),
                        members)
    return _LoopState(
        weights=new_weights,
        dots=dots,
        members=members,
        iterations=loop.iterations + 1,
        done=done,
        converged=optimal | (worse & solved))

  start = _LoopState(
      weights=weights0,
      dots=_matvec(gram, weights0) + linear,
      members=(weights0 > 0) & active,
      iterations=jnp.zeros([], jnp.int32),
      done=~jnp.all(jnp.isfinite(gram)) | zero | optimal0,
      converged=zero | optimal0)
  final = lax.while_loop(not_done, step, start)
  return SolverResult(final.weights, final.iterations, final.converged)


def central_direction_weights(
    gram: jax.Array,
    *,
    max_iters: int | None = None,
    tol: float | None = None,
    solver: str = 'wolfe',
) -> jax.Array:
  """``[T]`` simplex weights of the central direction, from the Gramian alone.

  ``w_t = (k_t / n_t) / Σ_j (k_j / n_j)`` with ``n_t = ‖g_t‖`` and ``k`` the
  min-norm weights of the unit gradients (Nakamura's thesis eqs. 4.6–4.7):
  the min-norm problem on the cosine matrix, mapped back to the raw
  gradients. Here, beside :func:`min_norm_weights`, because two methods
  solve it (the central direction and the task tensioner's default base).
  Only ratios of ``G`` matter. Tasks with a zero gradient are left out of the
  problem and get weight 0; if every gradient is zero the weights are
  ``1/T``. ``solver``, ``max_iters`` and ``tol`` are those of
  :func:`min_norm_weights`.
  """
  num_tasks = gram.shape[0]
  unit_gram, norms = scaling.cosine_gram(gram)  # Ĝ[i, j] = <g_i/n_i, g_j/n_j>.
  nonzero = norms > 0
  inverse_norms = numerics.safe_div(1.0, norms)
  unit_weights = solve_with(  # k*, eq. 4.6.
      solver, unit_gram, max_iters=max_iters, tol=tol, active=nonzero).weights
  raw_weights = unit_weights * inverse_norms  # k_t / n_t, eq. 4.7.
  # γ = (Σ_t k_t / n_t)^{-1} puts v in the convex hull of the raw gradients.
  return numerics.safe_div(raw_weights, jnp.sum(raw_weights),
                           fallback=1.0 / num_tasks)
