r"""Projection onto the dual cone of the task gradients, as weights.

The dual cone of the task gradients is ``{x : g_t·x >= 0 for every t}``. For
``x = Jᵀu`` (weights ``u`` on the rows of ``J``), its Euclidean projection is
``Jᵀv`` with

  ``v = argmin_{v >= u} vᵀ G v``                                     (1)

(Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
Proposition 1), a T x T problem that only needs the Gramian. UPGrad projects
every ``e_t / T`` and sums; DualProj projects ``1 / T``.

Conventions (those of TorchJD, which the reference values of issue 6 follow):

* ``G`` is divided by its trace, so the weights do not depend on the scale of
  the gradients, and ``reg_eps × I`` is added, 1e-4 by default. The
  regulariser makes (1) strictly convex, but it is part of the problem: the
  KKT conditions give ``(G v)_t >= -reg_eps · tr(G) · v_t``, so with the
  default an update may conflict with a task by that little. ``reg_eps = 0``
  gives the exact projection, up to a floor of ``MIN_REG_EPS = 1e-7`` (the
  float32 resolution of a trace-normalised matrix) that keeps the systems of
  rank-deficient or zero Gramians solvable.
* A zero Gramian gives ``v = u``.

The solver is the active-set method of Lawson and Hanson for non-negative
least squares, applied to ``z = v - u >= 0``:
``min ½ zᵀAz + zᵀ(Au)`` with ``A = G/tr(G) + reg_eps·I``. It keeps ``z``
feasible and each iteration solves the unconstrained problem on the current
free set (one T x T linear solve): if that solution is positive, it is
accepted and the most violated KKT condition frees one more coordinate;
otherwise the step moves towards it until a coordinate hits zero, which
leaves the free set. The objective decreases at every step and the active
sets never repeat, so it ends after finitely many steps: on the problems of
the tests, at most about T. It stops when every KKT condition holds to a
relative tolerance, or after ``max_iters`` iterations, or when rounding makes
the coordinate just freed come back non-positive (then no further progress
is possible in float32). Everything is ``lax.while_loop``, ``jnp.where``
and ``jnp.linalg.solve``: it runs under ``jit`` and ``vmap`` (over several
lower bounds, as UPGrad does).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src import numerics

MIN_REG_EPS = 1e-7
# A coordinate is freed when its KKT residual exceeds this fraction of
# max(diag A) · max|v|, the size of the rounding error in A v.
_KKT_RTOL = 1e-6


def default_max_iters(num_tasks: int) -> int:
  """Iteration cap: each iteration frees or fixes one coordinate."""
  return 4 * num_tasks + 10


def normalised_gram(gram: jax.Array, reg_eps) -> jax.Array:
  """``A = G / tr(G) + max(reg_eps, MIN_REG_EPS) · I`` (``G / tr(G) = 0`` if G = 0)."""
  trace = jnp.trace(gram)
  reg = jnp.maximum(jnp.asarray(reg_eps, jnp.float32), MIN_REG_EPS)
  identity = jnp.eye(gram.shape[0], dtype=jnp.float32)
  return numerics.safe_div(gram, trace) + reg * identity


class Solution(NamedTuple):
  weights: jax.Array  # shape=[T], dtype=float32; v of (1), v >= u
  iterations: jax.Array  # shape=(), dtype=int32
  converged: jax.Array  # shape=(), dtype=bool; KKT conditions met


class _Iterate(NamedTuple):
  offset: jax.Array  # shape=[T], dtype=float32; z = v - u >= 0
  free: jax.Array  # shape=[T], dtype=bool; coordinates not held at z = 0
  inverse: jax.Array  # shape=[T, T], dtype=float32; A_FF⁻¹ on free, I off it
  last_freed: jax.Array  # shape=(), dtype=int32
  just_freed: jax.Array  # shape=(), dtype=bool; the last step freed last_freed
  iteration: jax.Array  # shape=(), dtype=int32
  converged: jax.Array  # shape=(), dtype=bool
  stalled: jax.Array  # shape=(), dtype=bool


def _free_set_minimiser(matrix, linear, free, inverse):
  """``argmin ½ zᵀAz + zᵀ linear`` over ``z`` with ``z = 0`` off ``free``.

  One product with the maintained inverse, then one step of iterative
  refinement against ``A`` itself, which removes most of the error the
  inverse has accumulated through its updates.
  """
  target = jnp.where(free, -(inverse @ jnp.where(free, linear, 0.0)), 0.0)
  residual = jnp.where(free, -linear - matrix @ target, 0.0)
  return jnp.where(free, target + inverse @ residual, 0.0)


def _free_coordinate(matrix, free, inverse, index):
  """Inverse of ``A`` on ``F ∪ {index}`` from the one on ``F`` (bordering).

  With ``h = A_FF⁻¹ A_F,j`` and the Schur complement ``s = A_jj − A_jF h``,
  the new inverse is ``A_FF⁻¹ + h hᵀ/s`` with border ``−h/s`` and corner
  ``1/s``: ``inverse − e_j e_jᵀ + (h − e_j)(h − e_j)ᵀ / s``.
  """
  column = jnp.where(free, matrix[:, index], 0.0)
  border = jnp.where(free, inverse @ column, 0.0)
  # s >= reg_eps in exact arithmetic, since A - reg_eps·I is PSD.
  schur = jnp.maximum(matrix[index, index] - column @ border, MIN_REG_EPS)
  unit = jax.nn.one_hot(index, free.shape[0], dtype=inverse.dtype)
  bordered = border - unit
  return inverse - jnp.outer(unit, unit) + jnp.outer(bordered, bordered) / schur


def _fix_coordinate(free, inverse, index):
  """Inverse of ``A`` on ``F`` without ``index``, from the one on ``F``."""
  column = jnp.where(free, inverse[:, index], 0.0)
  reduced = inverse - jnp.outer(column, column) / column[index]
  unit = jax.nn.one_hot(index, free.shape[0], dtype=bool)
  on_border = unit[:, None] | unit[None, :]
  return jnp.where(on_border, jnp.eye(free.shape[0], dtype=inverse.dtype),
                   reduced)


def _step(matrix, lower, linear, it: _Iterate) -> _Iterate:
  num_tasks = lower.shape[0]
  target = _free_set_minimiser(matrix, linear, it.free, it.inverse)
  target_feasible = jnp.all(jnp.where(it.free, target > 0, True))

  # Accept the free-set minimiser; free the most violated KKT condition:
  # the negative gradient -(A v)_t > 0 at a coordinate held at z_t = 0.
  weights = lower + target
  descent = -(matrix @ weights)
  tolerance = _KKT_RTOL * jnp.max(jnp.diagonal(matrix)) * jnp.max(
      jnp.abs(weights))
  violated = ~it.free & (descent > tolerance)
  any_violated = jnp.any(violated)
  to_free = jnp.argmax(jnp.where(violated, descent, -jnp.inf))
  freed_inverse = _free_coordinate(matrix, it.free, it.inverse, to_free)
  accepted = _Iterate(
      offset=target,
      free=it.free | (any_violated & (jnp.arange(num_tasks) == to_free)),
      inverse=jnp.where(any_violated, freed_inverse, it.inverse),
      last_freed=jnp.where(any_violated, to_free, it.last_freed),
      just_freed=any_violated,
      iteration=it.iteration + 1,
      converged=~any_violated,
      stalled=it.stalled)

  # Move from z towards the minimiser until the first free coordinate reaches
  # zero, and fix that one there.
  blocking = it.free & (target <= 0)
  ratios = jnp.where(
      blocking, numerics.safe_div(it.offset, it.offset - target), jnp.inf)
  to_fix = jnp.argmin(ratios)
  step = ratios[to_fix]
  moved = jnp.maximum(it.offset + step * (target - it.offset), 0.0)
  still_free = it.free & (jnp.arange(num_tasks) != to_fix)
  # The coordinate freed last must enter with a positive value; if rounding
  # says otherwise, float32 cannot make progress: stop at the current z.
  stalled = it.just_freed & blocking[it.last_freed]
  shortened = _Iterate(
      offset=jnp.where(still_free, moved, 0.0),
      free=still_free,
      inverse=_fix_coordinate(it.free, it.inverse, to_fix),
      last_freed=it.last_freed,
      just_freed=jnp.zeros([], bool),
      iteration=it.iteration + 1,
      converged=it.converged,
      stalled=stalled)
  return jax.tree.map(
      lambda a, b: jnp.where(target_feasible, a, b), accepted, shortened)


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
  matrix = matrix.astype(jnp.float32)
  lower = lower.astype(jnp.float32)
  num_tasks = lower.shape[0]
  linear = matrix @ lower
  start = _Iterate(
      offset=jnp.zeros([num_tasks], jnp.float32),
      free=jnp.zeros([num_tasks], bool),
      inverse=jnp.eye(num_tasks, dtype=jnp.float32),
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
