"""Task tensioners: pull a common direction towards the tasks that fall behind."""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import optax

# `base` is the factory's public argument (the base direction), so the
# contract module goes by base_lib here.
from mtl_optax._src import base as base_lib
from mtl_optax._src.solvers import min_norm
from mtl_optax._src import numerics

BASES = ('central_direction', 'mgda')
# ‖g_t − v‖² is computed from G, to about float32 resolution of G's largest
# diagonal. Below this fraction of it (per unit of ‖e_t − w‖₁²) the direction
# of g_t − v is rounding noise, and the task counts as equal to v.
_SAME_AS_BASE = 1e-6
_PRECISION = lax.Precision.HIGHEST


class TaskTensionerState(NamedTuple):
  norm_history: jax.Array  # shape=[period, T], dtype=float32; ring of ‖g_t‖
  write_index: jax.Array  # shape=(), dtype=int32; next row of norm_history
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; steps taken (saturating)
  previous_zeta: jax.Array  # shape=[T], dtype=float32; ζ_t of the last step
  base_state: Any  # the base weighting's own state (EmptyState for strings)


def tension_factors(zeta: jax.Array, previous_zeta: jax.Array,
                    losses: jax.Array, alpha) -> jax.Array:
  """``c_t`` of eq. 4.11 from ``δ_t`` of eq. 4.10.

  ``losses`` must be positive (floored by the caller). A task whose previous
  ``ζ_t`` is 0 (zero gradients for a whole period) counts as unchanged: its
  ratio is 1.
  """
  ratio = numerics.safe_div(zeta, previous_zeta, fallback=1.0)
  delta = ratio + jnp.log10(losses)  # Eq. 4.10.
  # α / (1 + exp(−e δ + e)) + 1 − α, written with a sigmoid (no overflow).
  return alpha * jax.nn.sigmoid(math.e * (delta - 1.0)) + 1.0 - alpha  # 4.11.


def tensioned_weights(gram: jax.Array, scale: jax.Array, weights: jax.Array,
                      factors: jax.Array) -> jax.Array:
  """Weights of ``v_n = v + λ Σ_t c_t (g_t − v)/‖g_t − v‖`` (eq. 4.12), from G.

  Args:
    gram: ``[T, T]`` Gramian divided by ``scale**2`` (as in TaskStats).
    scale: the factor of the gradients that ``gram`` left out.
    weights: ``[T]`` weights ``w`` of the base direction ``v = Σ w_t g_t``;
      a task with ``g_t · v < 0`` counts as ``g_t · v = 0`` (it bounds
      ``λ`` to 0 if the tension is against it).
    factors: ``[T]`` tension factors ``c_t >= 0``.

  Returns:
    ``[T]`` weights of ``v_n``. ``λ ∈ [0, 1]`` is the largest step along the
    summed tension ``u`` with ``g_t · (v + λ u) >= 0`` for every task at once.
  """
  num_tasks = gram.shape[0]
  # Row t holds e_t − w, the weights of g_t − v.
  offsets = jnp.eye(num_tasks, dtype=jnp.float32) - weights[None, :]
  gram_offsets = jnp.matmul(offsets, gram, precision=_PRECISION)
  distances_sq = jnp.sum(gram_offsets * offsets, axis=1)  # ‖g_t − v‖²/scale².
  resolution = _SAME_AS_BASE * jnp.max(jnp.diagonal(gram)) * jnp.sum(
      jnp.abs(offsets), axis=1) ** 2
  # Decision: a task whose gradient equals v adds no tension.
  distinct = distances_sq > resolution
  pulls = jnp.where(distinct, numerics.safe_div(
      factors, numerics.safe_sqrt(distances_sq)), 0.0)
  # Σ_t c_t (e_t − w) / ‖g_t − v‖, in units of the rescaled gradients: the
  # tension is a sum of unit vectors whatever the gradients' scale (eq. 4.12),
  # so on the true gradients its weights are tension / scale.
  tension = jnp.sum(pulls[:, None] * offsets, axis=0)

  # g_t · v = scale² (G w)_t >= 0 and g_t · u = scale (G tension)_t; each
  # constraint g_t · (v + λu) >= 0 bounds λ when g_t · u < 0.
  base_dots = scale * jnp.maximum(jnp.sum(gram * weights[None, :], axis=1), 0)
  tension_dots = jnp.sum(gram * tension[None, :], axis=1)
  against = tension_dots < 0
  limits = jnp.where(
      against, base_dots / jnp.where(against, -tension_dots, 1.0), jnp.inf)
  step = jnp.minimum(1.0, jnp.min(limits))
  return weights + step * tension / scale


def _shortcut(base: str, max_iters: int | None, tol,
              solver: str) -> base_lib.Weighting:
  """The base weighting a string names, built on the min-norm solver.

  Both are stateless and read the Gramian only: the min-norm point of the raw
  gradients (MGDA without normalisation, eq. 4.5) or the central direction
  (eqs. 4.6–4.7). They are the solver functions themselves, not the MGDA and
  central-direction methods, so that no method imports another.
  """
  solve = {'mgda': min_norm.min_norm_weights,
            'central_direction': min_norm.central_direction_weights}[base]

  def weigh(stats, state):
    return solve(stats.gram, max_iters=max_iters, tol=tol,
                 solver=solver), state

  return base_lib.Weighting(weigh=weigh, name=base)


def _base_weighting(base: Any, max_iters: int | None, tol,
                    solver: str) -> base_lib.Weighting:
  if isinstance(base, base_lib.Weighting):
    # Any weighting: the tensioner computes the Gramian and reads the losses
    # anyway, so a loss-level base costs nothing more.
    return base
  if isinstance(base, str) and base in BASES:
    return _shortcut(base, max_iters, tol, solver)
  raise ValueError(f'base must be one of {BASES} or a mtl.Weighting, got '
                   f'{base!r}.')


def task_tensioner(
    *,
    base: str | base_lib.Weighting = 'central_direction',
    alpha: float = 0.3,
    period: int = 10,
    max_iters: int | None = None,
    tol: float | None = None,
    loss_floor: float = 1e-8,
    solver: str = 'wolfe',
) -> base_lib.Weighting:
  r"""Task tensioners: bends a common direction towards the diverging tasks.

  Nakamura's thesis §4.3, Algorithms 1–2. Each step:

  1. the base direction ``v = Σ_t w_t g_t``: the central direction (eq. 4.7,
     :func:`central_direction`), the min-norm point (eq. 4.5,
     :func:`mgda`, no normalisation) or the weights of any other weighting
     of the Gramian;
  2. ``‖g_t‖`` is written into a ring buffer of the last ``period`` norms at
     row ``step mod period``, after ``v`` is computed;
  3. ``ζ_t`` = the mean of the buffer (eq. 4.9); once the buffer has been full
     on a previous step (0-based steps ``k >= period``, as Algorithm 1's
     ``i >= T``), the tension is applied, before that ``v_n = v``:

     ``δ_t = ζ_t(now) / ζ_t(previous) + log10(L_t)`` (eq. 4.10),
     ``c_t = α / (1 + exp(−e δ_t + e)) + 1 − α`` (eq. 4.11),
     ``v_n = v + λ Σ_t c_t (g_t − v) / ‖g_t − v‖`` (eq. 4.12).

  Eq. 4.11 gives ``c_t ∈ (1 − α, 1)``, so ``α = 0`` means ``c_t = 1`` for
  every task, not ``v_n = v`` as the thesis' text says; this follows the
  equation and the authors' code. Equal ``c_t`` still bend ``v`` when
  T > 2; for T = 2 the two tensions are opposite and cancel.

  The tensions are unit vectors scaled by ``c_t``, whatever the scale of the
  gradients, so the method is not linear under a rescaling of the gradients.
  ``v_n`` is still a combination of the ``g_t``: with
  ``‖g_t − v‖² = (e_t − w)ᵀ G (e_t − w)`` its weights are
  ``w + λ Σ_t c_t (e_t − w) / ‖g_t − v‖``, all computed from ``G``.

  **Decisions**: a task whose gradient equals ``v`` (MGDA often returns a
  vertex) adds no tension; so does one within float32 resolution of ``v``
  (``‖g_t − v‖² <= 1e-6 · max_s ‖g_s‖² · ‖e_t − w‖₁²``), whose direction
  ``g_t − v`` would be rounding noise. The constraint of eq. 4.12,
  ``g_t · v_n >= 0``, holds for all tasks at once: ``v`` satisfies it (it is a
  min-norm point), and ``λ ∈ [0, 1]`` is the largest step along the summed
  tension that keeps every ``g_t · v_n >= 0`` (closed form). The authors'
  code instead projects violations away one task at a time, which can break
  an earlier task's constraint. Losses below ``loss_floor`` (no logarithm)
  count as ``loss_floor`` in eq. 4.10, where they give a small ``c_t``. A task
  whose ``ζ_t`` was 0 on the previous step has ratio 1 in eq. 4.10.

  **Any base.** ``base`` may be any :class:`Weighting`, e.g.
  ``mtl.weightings.upgrad()`` or ``mtl.weightings.smoothed(
  mtl.weightings.mgda())`` (a loss-level one works too: the tensioner
  computes the Gramian and reads the losses anyway); its state is nested in
  this one. The guarantee
  ``g_t · v_n >= 0`` then holds for the tasks with ``g_t · v >= 0``, i.e. for
  every task when the base is non-conflicting (MGDA, the central direction,
  UPGrad, DualProj); a task the base already conflicts with stays where the
  base put it (``λ`` is 0 if the tension would worsen it).

  The state holds the ``[period, T]`` ring buffer, its write index (it wraps),
  a saturating step counter, the previous ``ζ`` and the base's state; a
  non-finite gradient or loss leaves all of it unchanged.

  Args:
    base: ``'central_direction'`` (default) or ``'mgda'``, the two bases the
      thesis reports, or any :class:`Weighting`: the direction the tensions
      bend.
    alpha: ``α ∈ [0, 1]`` of eq. 4.11, the sensitivity of ``c_t`` to
      ``δ_t``: ``c_t`` ranges over ``(1 − α, 1)``. Default 0.3, the thesis'
      choice (§5.2).
    period: Python int >= 1, the thesis' ``T``, the number of steps in
      ``ζ``. Default 10, the thesis' choice (§5.2).
    max_iters: Python int >= 1, the min-norm solver's iteration cap (string
      bases only); None: the solver's default.
    tol: >= 0, the min-norm solver's tolerance (string bases only); None:
      the solver's default.
    loss_floor: > 0, smallest loss used in ``log10(L_t)``.
    solver: the min-norm solver of the string bases, ``'wolfe'`` (exact,
      the default) or ``'frank_wolfe'`` (the MGDA paper's Algorithm 2, see
      :func:`mgda`). A :class:`Weighting` base brings its own.

  Returns:
    A :class:`Weighting` of the Gramian with state
    :class:`TaskTensionerState`; it reads the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.task_tensioner(2, period=3)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 4.0]])
    >>> losses = jnp.array([1.0, 10.0])
    >>> state = tx.init(jnp.zeros(2))
    >>> for _ in range(3):  # Filling the buffer: the central direction.
    ...   updates, state = tx.update(grads, state, task_losses=losses)
    >>> updates
    Array([0.8, 0.8], dtype=float32)
    >>> updates, state = tx.update(grads, state, task_losses=losses)
    >>> # From step 3 on, task 2's larger loss pulls towards g_2.
    >>> [round(float(x), 4) for x in updates]
    [0.7681, 0.9275]
  """
  base_lib.check_range('alpha', alpha, 0.0, 1.0)
  base_lib.check_positive_int('period', period)
  if max_iters is not None:
    base_lib.check_positive_int('max_iters', max_iters)
  if tol is not None:
    base_lib.check_range('tol', tol, 0.0)
  base_lib.check_range('loss_floor', loss_floor, 0.0, low_open=True)
  base_lib.check_choice('solver', solver, min_norm.SOLVERS)
  base_weighting = _base_weighting(base, max_iters, tol, solver)

  def init(num_tasks):
    return TaskTensionerState(
        norm_history=jnp.zeros([period, num_tasks], jnp.float32),
        write_index=jnp.zeros([], jnp.int32),
        count=jnp.zeros([], jnp.int32),
        previous_zeta=jnp.zeros([num_tasks], jnp.float32),
        base_state=base_weighting.init(num_tasks))

  def weigh(stats, state):
    weights, base_state = base_weighting.weigh(stats, state.base_state)
    weights = weights.astype(jnp.float32)
    history = state.norm_history.at[state.write_index].set(stats.norms)
    zeta = jnp.mean(history, axis=0)  # Eq. 4.9.
    losses = numerics.floor_losses(stats.losses, loss_floor)
    factors = tension_factors(zeta, state.previous_zeta, losses, alpha)
    tensioned = tensioned_weights(stats.gram, stats.scale, weights, factors)
    # Algorithm 1, line 8: tension once a previous ζ exists (step >= period).
    weights = jnp.where(state.count >= period, tensioned, weights)
    buffer_full = state.count >= period - 1
    return weights, TaskTensionerState(
        norm_history=history,
        write_index=(state.write_index + 1) % period,
        count=optax.safe_increment(state.count),
        previous_zeta=jnp.where(buffer_full, zeta, state.previous_zeta),
        base_state=base_state)

  return base_lib.Weighting(weigh=weigh, init=init, name='task_tensioner',
                            reads_losses=True)
