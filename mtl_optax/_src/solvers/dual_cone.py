r"""Projection onto the dual cone of the task gradients, as weights.

The dual cone of the task gradients is ``{x : g_t·x >= 0 for every t}``. For
``x = Jᵀu`` (weights ``u`` on the rows of ``J``), its Euclidean projection is
``Jᵀv`` with

  ``v = argmin_{v >= u} vᵀ G v``                                     (1)

(Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
which computes the projection through the Gramian this way), a T x T
problem. UPGrad projects every ``e_t / T`` and sums; DualProj projects
``1 / T``.

Conventions (those of TorchJD, which the reference values of issue 6 follow):

* ``G`` is divided by its trace, so the weights do not depend on the scale of
  the gradients, and ``reg_eps × I`` is added, 1e-4 by default. The
  regulariser makes (1) strictly convex, but it is part of the problem: the
  KKT conditions give ``(G v)_t >= -reg_eps · tr(G) · v_t``, so with the
  default an update may conflict with a task by that little. Relative to one
  task's squared norm the ridge is about ``T × reg_eps``, so it matters more
  with many tasks (and the solver then frees more coordinates: slower).
  ``reg_eps = 0`` gives the exact projection, up to a floor of
  ``MIN_REG_EPS = 1e-7`` (the float32 resolution of a trace-normalised
  matrix) that keeps the systems of rank-deficient or zero Gramians solvable.
* A zero Gramian gives ``v = u``.

The solver is the active-set method of Lawson and Hanson for non-negative
least squares, applied to ``z = v - u >= 0``:
``min ½ zᵀAz + zᵀ(Au)`` with ``A = G/tr(G) + reg_eps·I``. It keeps ``z``
feasible; each iteration takes the unconstrained minimiser on the current
free set: if it is positive, it is accepted and the coordinate with the most
violated KKT condition is freed; otherwise the step moves towards it until a
coordinate hits zero, and that one is fixed. The objective decreases and
the free sets never repeat, so it ends after finitely many steps (on random
problems about T/2 + 2, one per coordinate that ends up free). The inverse
of ``A`` on the free set is kept up to date by one rank-one term per step
(bordering when a coordinate is freed, its reverse when one is fixed), plus
one step of iterative refinement against ``A``, so a step costs O(T²), not a
new O(T³) factorisation. **Start**: the coordinates whose constraint the
lower bound violates start free, with one inversion of ``A`` on them, when
that inverse is accurate (its condition number below ``1e-3 / eps``); on many
nearly orthogonal gradients that is (nearly) the final free set, and the
solve takes a few steps instead of about T/2. Otherwise (rank-deficient
gradients) it starts with nothing free. It stops when every KKT condition holds to a
relative tolerance, after ``max_iters`` steps, or when rounding makes the
coordinate just freed come back non-positive (float32 cannot make progress
then). It is ``lax.while_loop`` and ``jnp.where`` only: it runs under
``jit`` and ``vmap`` (over several lower bounds, as UPGrad does).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src import numerics
from mtl_optax._src.solvers.result import SolverResult

MIN_REG_EPS = 1e-7
# A coordinate is freed when its KKT residual exceeds this fraction of
# √T · max(diag A) · max|v|, about the size of the rounding error in A v.
_KKT_RTOL = 5e-8


def default_max_iters(num_tasks: int) -> int:
  """Iteration cap: each iteration frees or fixes one coordinate."""
  return 4 * num_tasks + 10


def normalised_gram(gram: jax.Array, reg_eps) -> jax.Array:
  """``A = G / tr(G) + max(reg_eps, MIN_REG_EPS) · I`` (``G / tr(G) = 0`` if G = 0)."""
  dtype = jnp.promote_types(gram.dtype, jnp.float32)
  gram = gram.astype(dtype)
  trace = jnp.trace(gram)
  reg = jnp.maximum(jnp.asarray(reg_eps, dtype), MIN_REG_EPS)
  identity = jnp.eye(gram.shape[0], dtype=dtype)
  return numerics.safe_div(gram, trace) + reg * identity


# The solver's result: weights v of (1), v >= u; converged: KKT conditions met.
Solution = SolverResult


class _Iterate(NamedTuple):
  offset: jax.Array  # shape=[T], dtype=float32 (or float64); z = v - u >= 0
  free: jax.Array  # shape=[T], dtype=bool; coordinates not held at z = 0
  inverse: jax.Array  # shape=[T, T], offset's dtype; A_FF⁻¹ on free, I off it
  last_freed: jax.Array  # shape=(), dtype=int32
  just_freed: jax.Array  # shape=(), dtype=bool; the last step freed last_freed
  iteration: jax.Array  # shape=(), dtype=int32
  converged: jax.Array  # shape=(), dtype=bool
  stalled: jax.Array  # shape=(), dtype=bool


def _kkt_tolerance(matrix: jax.Array, weights: jax.Array) -> jax.Array:
  """The residual above which a KKT condition counts as violated.

  One global tolerance. A per-task one (√A_tt Σ_j √A_jj |v_j|, smaller for
  small tasks) was measured to give NaN at T = 512 (property suite): the
  extra coordinates it frees have rounding-noise Schur complements. It grows
  as √T, like the rounding error of the sums in A v.
  """
  return _KKT_RTOL * weights.shape[0] ** 0.5 * jnp.max(
      jnp.diagonal(matrix)) * jnp.max(jnp.abs(weights))


def _free_set_minimiser(matrix, linear, free, inverse):
  """``argmin ½ zᵀAz + zᵀ linear`` over ``z`` with ``z = 0`` off ``free``.

  One product with the maintained inverse, then one step of iterative
  refinement against ``A`` itself, which removes most of the error the
  inverse accumulates through its updates.
  """
  target = jnp.where(free, -(inverse @ jnp.where(free, linear, 0.0)), 0.0)
  residual = jnp.where(free, -linear - matrix @ target, 0.0)
  return jnp.where(free, target + inverse @ residual, 0.0)


def _step(matrix, lower, linear, it: _Iterate) -> _Iterate:
  num_tasks = lower.shape[0]
  positions = jnp.arange(num_tasks)
  target = _free_set_minimiser(matrix, linear, it.free, it.inverse)
  target_feasible = jnp.all(jnp.where(it.free, target > 0, True))

  # Either accept the free-set minimiser and free the coordinate with the
  # most violated KKT condition, the negative gradient -(A v)_t > 0 where
  # z_t = 0 ...
  weights = lower + target
  descent = -(matrix @ weights)
  violated = ~it.free & (descent > _kkt_tolerance(matrix, weights))
  any_violated = jnp.any(violated)
  to_free = jnp.argmax(jnp.where(violated, descent, -jnp.inf)).astype(
      jnp.int32)

  # ... or move from z towards the minimiser until the first free coordinate
  # reaches zero, and fix that one there.
  blocking = it.free & (target <= 0)
  ratios = jnp.where(
      blocking, numerics.safe_div(it.offset, it.offset - target), jnp.inf)
  to_fix = jnp.argmin(ratios).astype(jnp.int32)
  moved = jnp.maximum(it.offset + ratios[to_fix] * (target - it.offset), 0.0)

  # Both change the inverse of A on the free set by one rank-one term and one
  # diagonal entry. Freeing j (bordering, with h = A_FF⁻¹ A_Fj and the Schur
  # complement s = A_jj − A_jF h): H − e_j e_jᵀ + (h − e_j)(h − e_j)ᵀ / s.
  # Fixing k (c = H e_k): H − c cᵀ / c_k + e_k e_kᵀ.
  column = jnp.where(it.free, matrix[:, to_free], 0.0)
  border = jnp.where(it.free, it.inverse @ column, 0.0)
  # s >= reg_eps in exact arithmetic, since A − reg_eps·I is PSD.
  schur = jnp.maximum(matrix[to_free, to_free] - column @ border, MIN_REG_EPS)
  fixed_column = jnp.where(it.free, it.inverse[:, to_fix], 0.0)
  index = jnp.where(target_feasible, to_free, to_fix)
  vector = jnp.where(target_feasible,
                     border - (positions == to_free), fixed_column)
  coefficient = jnp.where(
      target_feasible, jnp.where(any_violated, 1.0 / schur, 0.0),
      -numerics.safe_div(1.0, fixed_column[to_fix]))
  corner = jnp.where(target_feasible, jnp.where(any_violated, -1.0, 0.0), 1.0)
  unit = positions == index
  inverse = (it.inverse + coefficient * jnp.outer(vector, vector)
             + corner * (unit[:, None] & unit[None, :]))

  freed = it.free | (any_violated & (positions == to_free))
  still_free = it.free & (positions != to_fix)
  # The coordinate freed last must enter with a positive value; if rounding
  # says otherwise, float32 cannot make progress: stop at the current z.
  stalled = ~target_feasible & it.just_freed & blocking[it.last_freed]
  new = _Iterate(
      offset=jnp.where(target_feasible, target,
                       jnp.where(still_free, moved, 0.0)),
      free=jnp.where(target_feasible, freed, still_free),
      inverse=inverse,
      last_freed=jnp.where(target_feasible & any_violated, to_free,
                           it.last_freed),
      just_freed=target_feasible & any_violated,
      iteration=it.iteration + 1,
      converged=target_feasible & ~any_violated,
      stalled=it.stalled | stalled)
  # A coordinate freed on rounding noise (a Schur complement at the floor,
  # possible when many tasks share few directions) can make the inverse
  # non-finite: stop at the last finite iterate, as for a stall.
  finite = jnp.all(jnp.isfinite(new.offset)) & jnp.all(
      jnp.isfinite(new.inverse))
  kept = it._replace(iteration=it.iteration + 1, stalled=jnp.ones([], bool))
  return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, kept)


def project(matrix: jax.Array, lower: jax.Array, max_iters: int) -> Solution:
  """Solves (1) for one lower bound ``u`` on ``A`` from :func:`normalised_gram`.

  Args:
    matrix: ``[T, T]`` symmetric positive definite ``A``.
    lower: ``[T]`` lower bound ``u``.
    max_iters: Python int, the iteration cap.

  Returns:
    A :class:`Solution`; ``weights >= lower`` always holds, the optimality
    conditions when ``converged``.
  """
  dtype = jnp.promote_types(jnp.promote_types(matrix.dtype, lower.dtype),
                            jnp.float32)
  matrix = matrix.astype(dtype)
  lower = lower.astype(dtype)
  num_tasks = lower.shape[0]
  linear = matrix @ lower
  # Warm start: the coordinates whose constraint the lower bound violates,
  # -(A u)_t above the KKT tolerance, start free, with A_FF⁻¹ from one
  # inversion (A with the identity off F inverts to A_FF⁻¹ with the identity
  # off F). From z = 0 a free coordinate that should not be is fixed by the
  # first steps; on many nearly orthogonal gradients F is already (nearly)
  # the final free set, where freeing one coordinate per step took ~T/2
  # steps (UPGrad at T = 128: 77 ms, 20 ms warm).
  free = -linear > _kkt_tolerance(matrix, lower)  # At z = 0, v = u.
  embedded = jnp.where(free[:, None] & free[None, :], matrix,
                       jnp.eye(num_tasks, dtype=dtype))
  inverse = jnp.linalg.inv(embedded)
  # Only with an inverse good to 1e-3 (condition number, in the ∞-norm,
  # below 1e-3 / eps): on rank-deficient gradients A_FF is nearly singular,
  # and the cold start, which frees one coordinate at a time, is needed.
  condition = (jnp.max(jnp.sum(jnp.abs(embedded), axis=1))
               * jnp.max(jnp.sum(jnp.abs(inverse), axis=1)))
  warm = jnp.isfinite(condition) & (
      condition * jnp.finfo(dtype).eps < 1e-3)
  start = _Iterate(
      offset=jnp.zeros([num_tasks], dtype),
      free=free & warm,
      inverse=jnp.where(warm, inverse, jnp.eye(num_tasks, dtype=dtype)),
      last_freed=jnp.zeros([], jnp.int32),
      just_freed=jnp.zeros([], bool),
      iteration=jnp.zeros([], jnp.int32),
      converged=jnp.zeros([], bool),
      stalled=jnp.zeros([], bool))

  def running(it):
    return ~it.converged & ~it.stalled & (it.iteration < max_iters)

  end = lax.while_loop(
      running, lambda it: _step(matrix, lower, linear, it), start)
  return Solution(lower + end.offset, end.iteration, end.converged)


# Lower bounds solved side by side hold one [T, T] inverse each; beyond this
# many floats in flight (8 MiB) they go through lax.map in chunks. Each step
# reads every inverse of a chunk several times, so a chunk that stays in the
# cache is faster: UPGrad on a [T, 8] Jacobian took 0.73x (T = 256) and
# 0.75x (T = 512) the time of 2^22-float chunks
# (benchmarks/results/cpu_limits.md).
_MAX_BATCH_FLOATS = 2 ** 21


def project_each(matrix: jax.Array, lowers: jax.Array,
                 max_iters: int) -> Solution:
  """:func:`project` for every row of ``lowers`` (``[K, T]``), same ``A``.

  Vectorised; for large T the rows go through ``lax.map`` in chunks so that
  the K inverses in flight stay under ``_MAX_BATCH_FLOATS`` floats.
  """
  num_rows, num_tasks = lowers.shape
  batch_size = max(1, min(num_rows, _MAX_BATCH_FLOATS // num_tasks ** 2))
  return lax.map(lambda lower: project(matrix, lower, max_iters), lowers,
                 batch_size=batch_size)
