r"""The quadratic program of PCD, solved on the Gramian.

With ``g_1`` the primary gradient and ``g_2, …, g_T`` the secondary ones,

  ``min_d ½ ‖d − g_1‖²  s.t.  g_jᵀ d >= τ_j ‖g_j‖²  (j >= 2)``        (1)

has the solution ``d = g_1 + Σ_{j>=2} μ_j g_j`` with multipliers ``μ >= 0``
that solve the dual ``min_{μ >= 0} ½ μᵀ H μ − bᵀ μ``, where
``H = G[1:, 1:]`` and ``b_j = τ_j G_jj − G_j1`` (``b_j > 0`` exactly when
``g_1`` violates constraint j). Only the Gramian ``G`` is needed.

The solver is the dual active-set method of Goldfarb and Idnani, "A
numerically stable dual method for solving strictly convex quadratic
programs" (Math. Programming 27, 1983), for an identity Hessian in ``d``
(the method TorchJD uses for its PCD). Starting from the unconstrained
minimiser ``d = g_1`` (``μ = 0``), it repeatedly picks the most violated
constraint ``p`` and moves ``μ_p`` up while the active constraints stay
tight (the active ``μ`` move by ``−t r`` with ``r = H_AA⁻¹ H_Ap``); if an
active multiplier reaches 0 first, that constraint leaves the active set
and the step is retried. The primal objective increases at every step and
no active set repeats, so it ends after finitely many steps (about T in
practice). A step that is unbounded (``g_p`` is a combination of the active
gradients and no active multiplier can shrink) proves (1) infeasible; then,
as in TorchJD, the constraints are dropped: ``μ = 0``, ``d = g_1``.

The inverse of ``H`` on the active set is kept by one rank-one term per
step (bordering when a constraint enters, its reverse when one leaves), and
``r`` gets one step of iterative refinement against ``H``: a step costs
O(T²). It is ``lax.while_loop`` and ``jnp.where`` only, so it compiles.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src import numerics


def default_max_iters(num_tasks: int) -> int:
  """Iteration cap (TorchJD's): 10 steps per task; it only stops cycling."""
  return 10 * num_tasks


class Solution(NamedTuple):
  weights: jax.Array  # shape=[T], dtype=float32; [1, μ_2, …, μ_T]
  iterations: jax.Array  # shape=(), dtype=int32
  feasible: jax.Array  # shape=(), dtype=bool; False: constraints dropped
  converged: jax.Array  # shape=(), dtype=bool; no constraint is violated


class _Iterate(NamedTuple):
  multipliers: jax.Array  # shape=[T-1]; μ >= 0
  active: jax.Array  # shape=[T-1], dtype=bool
  inverse: jax.Array  # shape=[T-1, T-1]; H_AA⁻¹ on the active set, I off it
  adding: jax.Array  # shape=(), dtype=bool; a constraint is being added
  entering: jax.Array  # shape=(), dtype=int32; the constraint being added
  slack: jax.Array  # shape=(); its current slack (H μ − b)_p < 0
  iteration: jax.Array  # shape=(), dtype=int32
  done: jax.Array  # shape=(), dtype=bool
  feasible: jax.Array  # shape=(), dtype=bool


def _step(hessian, linear, atol, dependence_tol, it: _Iterate) -> _Iterate:
  size = linear.shape[0]
  positions = jnp.arange(size)
  both_active = it.active[:, None] & it.active[None, :]

  # Pick the most violated constraint, unless one is being added already.
  slacks = jnp.where(it.active, 0.0, hessian @ it.multipliers - linear)
  # Each constraint is measured against its own tolerance, so a task with a
  # tiny normalised gradient is held to its own scale (atol > 0).
  most_violated = jnp.argmin(slacks / atol).astype(jnp.int32)
  violated = slacks[most_violated] < -atol[most_violated]
  entering = jnp.where(it.adding, it.entering, most_violated)
  slack = jnp.where(it.adding, it.slack, slacks[most_violated])
  finished = ~it.adding & ~violated

  # The step: μ_p += t, μ_A −= t r, with r = H_AA⁻¹ H_Ap (refined once).
  column = jnp.where(it.active, hessian[:, entering], 0.0)
  masked = jnp.where(both_active, hessian, 0.0)
  r = jnp.where(it.active, it.inverse @ column, 0.0)
  r = r + jnp.where(it.active, it.inverse @ (column - masked @ r), 0.0)
  # ‖z‖² of the part of g_p orthogonal to the active gradients.
  orthogonal = hessian[entering, entering] - column @ r
  shrinking = it.active & (r > 0)
  ratios = jnp.where(
      shrinking, it.multipliers / jnp.where(shrinking, r, 1.0), jnp.inf)
  leaving = jnp.argmin(ratios).astype(jnp.int32)
  partial = ratios[leaving]
  independent = orthogonal > dependence_tol * hessian[entering, entering]
  full = jnp.where(independent,
                   -slack / jnp.where(independent, orthogonal, 1.0), jnp.inf)
  step = jnp.minimum(partial, full)
  unbounded = jnp.isinf(step)
  safe_step = jnp.where(unbounded, 0.0, step)
  enters = full <= partial
  is_entering = positions == entering
  is_leaving = positions == leaving

  multipliers = it.multipliers - safe_step * r + safe_step * is_entering
  multipliers = jnp.where(~enters & is_leaving, 0.0, multipliers)
  active = jnp.where(enters, it.active | is_entering,
                     it.active & ~is_leaving)
  # Entering p (bordering, Schur complement s = ‖z‖²):
  # H − e_p e_pᵀ + (r − e_p)(r − e_p)ᵀ / s. Leaving k (c = H e_k):
  # H − c cᵀ / c_k + e_k e_kᵀ.
  schur = jnp.where(independent, orthogonal, 1.0)
  bordered = r - is_entering
  entered_inverse = (it.inverse - jnp.outer(is_entering, is_entering)
                     + jnp.outer(bordered, bordered) / schur)
  leaving_column = jnp.where(it.active, it.inverse[:, leaving], 0.0)
  pivot = leaving_column[leaving]
  left_inverse = (it.inverse - jnp.outer(leaving_column, leaving_column)
                  * numerics.safe_div(1.0, pivot)
                  + jnp.outer(is_leaving, is_leaving))
  inverse = jnp.where(enters, entered_inverse, left_inverse)
  new_slack = hessian[entering] @ multipliers - linear[entering]

  moved = _Iterate(
      multipliers=multipliers, active=active, inverse=inverse,
      adding=~enters, entering=entering, slack=new_slack,
      iteration=it.iteration + 1, done=unbounded, feasible=~unbounded)
  stopped = it._replace(done=jnp.asarray(True))
  return jax.tree.map(lambda a, b: jnp.where(finished, a, b), stopped, moved)


def solve(gram: jax.Array, taus: jax.Array, *, max_iters: int,
          tol: float = 1e-6, dependence_tol: float = 1e-6) -> Solution:
  """Solves (1) on the Gramian ``gram`` of ``g_1, …, g_T`` (row 0 primary).

  Args:
    gram: ``[T, T]`` PSD Gramian (of the normalised gradients, for PCD),
      with entries of order 1.
    taus: ``[T-1]`` fractions ``τ_j``.
    max_iters: Python int, the step cap (it only guards against cycling
      from rounding; the current iterate is returned when it is reached).
    tol: a constraint ``j`` counts as met when violated by at most ``tol``
      times ``‖g̃_j‖ · max_t ‖g̃_t‖``, so a small task is held to its own
      scale.
    dependence_tol: ``g_p`` counts as a combination of the active gradients
      when its orthogonal part's squared norm is at most this fraction of
      its own; above float32 rounding, so dependent gradients do not get
      huge multipliers.

  Returns:
    A :class:`Solution` with ``weights = [1, μ]``, ``d = Σ_t weights_t g_t``;
    ``[1, 0, …, 0]`` when (1) is infeasible.
  """
  gram = gram.astype(jnp.float32)
  num_tasks = gram.shape[0]
  one_hot = (jnp.arange(num_tasks) == 0).astype(jnp.float32)
  if num_tasks == 1:
    return Solution(one_hot, jnp.zeros([], jnp.int32), jnp.ones([], bool),
                    jnp.ones([], bool))
  hessian = gram[1:, 1:]
  linear = taus.astype(jnp.float32) * jnp.diagonal(hessian) - gram[1:, 0]
  # ``g̃_j · d`` is computed to about eps ‖g̃_j‖ ‖d‖: the tolerance of
  # constraint j scales with ‖g̃_j‖ times the largest norm, not with the
  # largest squared norm alone (which would accept a small task's violation).
  diagonal = jnp.maximum(jnp.diagonal(hessian), 0.0)
  atol = tol * jnp.maximum(jnp.sqrt(diagonal * jnp.max(jnp.diagonal(gram))),
                           jnp.finfo(jnp.float32).tiny)
  size = num_tasks - 1
  start = _Iterate(
      multipliers=jnp.zeros([size], jnp.float32),
      active=jnp.zeros([size], bool),
      inverse=jnp.eye(size, dtype=jnp.float32),
      adding=jnp.zeros([], bool),
      entering=jnp.zeros([], jnp.int32),
      slack=jnp.zeros([], jnp.float32),
      iteration=jnp.zeros([], jnp.int32),
      done=~numerics.all_finite(gram),  # Nothing to solve: the caller skips.
      feasible=jnp.ones([], bool))

  def running(it):
    return ~it.done & (it.iteration < max_iters)

  end = lax.while_loop(
      running, lambda it: _step(hessian, linear, atol, dependence_tol, it),
      start)
  multipliers = jnp.where(end.feasible, jnp.maximum(end.multipliers, 0.0),
                          0.0)
  weights = jnp.concatenate([jnp.ones([1], jnp.float32), multipliers])
  converged = end.done & end.feasible
  return Solution(weights, end.iteration, end.feasible, converged)
