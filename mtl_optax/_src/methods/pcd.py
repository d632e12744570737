"""PCD: follow the primary task's gradient, guaranteeing progress to the rest."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics
from mtl_optax._src.solvers import pcd as pcd_solver

_FLOAT32_MAX = float(jnp.finfo(jnp.float32).max)
# Relative precision of a float32 Gramian (TorchJD's 10 ε): a direction whose
# squared norm is below this share of its terms' is zero up to rounding.
_PRECISION = 10.0 * float(jnp.finfo(jnp.float32).eps)


class PCDState(NamedTuple):
  squared_norm_ema: jax.Array  # shape=[T], dtype=float32; EMA of ‖g_t‖²
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; updates seen, saturating


def _check_tau(tau: Any) -> Any:
  if isinstance(tau, jax.core.Tracer):
    return tau
  if np.ndim(tau) == 0:
    return base.check_range('tau', tau, 0.0, 1.0)
  values = np.asarray(tau, np.float64)
  if values.ndim != 1 or not np.all((values >= 0) & (values <= 1)):
    raise ValueError('tau must be a number in [0, 1] or a 1-D sequence of '
                     f'them (one per secondary task), got {tau!r}.')
  return values


def pcd(
    *,
    tau: Any = 0.02,
    beta: float = 0.999,
    eps: float = 1e-8,
    max_iters: int | None = None,
) -> base.Weighting:
  r"""PCD: the step closest to the primary gradient that helps every other task.

  Priority-Constrained Descent, as defined in TorchJD 0.18 (``PCD``), from
  "Not All Objectives Are Born Equal: Priority-Constrained Descent for
  Hierarchical Multi-Objective Optimization" (TMLR 2026, as TorchJD cites
  it). Task 1 (row 0 of the
  gradients) is the primary objective; every other task ``j`` is guaranteed
  a share ``τ`` of the first-order progress that a step along its own
  normalised gradient would give:

  ``d̃ = argmin_d ½ ‖d − g̃_1‖²  s.t.  g̃_jᵀ d >= τ ‖g̃_j‖²  (j >= 2)``,

  with ``g̃_t = s_t g_t``, ``s_t = 1 / √(v̂_t + ε)`` and ``v̂_t`` the
  bias-corrected exponential moving average of ``‖g_t‖²`` over the updates,
  ``v_t ← β v_t + (1 − β) ‖g_t‖²`` (``v_t = 0`` at first) and
  ``v̂_t = v_t / (1 − β^k)`` after ``k`` updates (so on the first update
  ``v̂_t = ‖g_t‖²``). The update is ``d̃`` rescaled to the length of
  ``g_1``: ``d = d̃ ‖g_1‖ / ‖d̃‖``. Because of the normalisation, ``τ`` is a
  scale-free fraction.

  The quadratic program is solved on the normalised Gramian
  ``G̃ = diag(s) G diag(s)`` by a compiled dual active-set method
  (Goldfarb–Idnani, as in TorchJD; ``mtl_optax._src.solvers.pcd``):
  ``d̃ = g̃_1 + Σ_{j>=2} μ_j g̃_j`` with multipliers ``μ >= 0``, so the
  weights are ``w = [1, μ] ⊙ s · ‖g_1‖ / ‖d̃‖``.

  Special cases (TorchJD's): ``g_1 = 0`` gives ``d = 0``; constraints that
  cannot hold together (two opposite secondary gradients) are dropped, and
  ``d = g_1``; ``d̃ = 0`` up to float32 rounding gives ``d = 0``; a task
  whose moving average is 0 gets ``s_t = 0``. Squared norms above the
  largest float32 are counted as that.

  PCD is not symmetric in the tasks (task 1 is the primary one) and does not
  promise ``g_1 · d >= 0``; with ``ε = 0`` it is linear under scaling.

  Args:
    tau: ``τ`` in [0, 1], or one value per secondary task (length T − 1).
    beta: ``β`` in [0, 1), the decay of the moving average.
    eps: ``ε`` >= 0, added to ``v̂_t`` before the square root.
    max_iters: Python int >= 1, the solver's step cap (default 10 T).

  Returns:
    A :class:`Weighting` of the Gramian with state :class:`PCDState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.pcd(2)
    >>> grads = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(3)))
    >>> [round(float(x), 4) for x in updates]  # TorchJD 0.18: same values.
    [-0.82, 2.9434, 2.9434]
  """
  tau = _check_tau(tau)
  base.check_range('beta', beta, 0.0, 1.0, high_open=True)
  base.check_range('eps', eps, 0.0)
  if max_iters is not None:
    base.check_positive_int('max_iters', max_iters)

  def init(num_tasks):
    if np.ndim(tau) == 1 and np.shape(tau)[0] != num_tasks - 1:
      raise ValueError(f'pcd: tau has {np.shape(tau)[0]} values, but there '
                       f'are {num_tasks - 1} secondary tasks (T − 1).')
    return PCDState(squared_norm_ema=jnp.zeros([num_tasks], jnp.float32),
                    count=jnp.zeros([], jnp.int32))

  def weigh(stats, state):
    num_tasks = stats.num_tasks
    gram = stats.gram.astype(jnp.float32)
    scale = stats.scale.astype(jnp.float32)
    norms = numerics.safe_sqrt(jnp.diagonal(gram))  # In units of scale.
    squared_norms = jnp.minimum((norms * scale) ** 2, _FLOAT32_MAX)
    ema = beta * state.squared_norm_ema + (1.0 - beta) * squared_norms
    count = optax.safe_increment(state.count)
    debias = 1.0 - jnp.power(jnp.asarray(beta, jnp.float32),
                             count.astype(jnp.float32))
    debiased = jnp.minimum(numerics.safe_div(ema, debias), _FLOAT32_MAX)
    # u_t = scale · s_t, so that G̃ = gram · u uᵀ stays in range.
    denominators = numerics.safe_sqrt(debiased + eps)
    units = numerics.safe_div(scale, denominators)
    normalised = gram * units[:, None] * units[None, :]

    taus = jnp.broadcast_to(jnp.asarray(tau, jnp.float32), [num_tasks - 1])
    limit = max_iters or pcd_solver.default_max_iters(num_tasks)
    solution = pcd_solver.solve(normalised, taus, max_iters=limit,
                                tol=1e-6, dependence_tol=_PRECISION)
    weights = solution.weights
    direction = weights @ normalised @ weights  # ‖d̃‖².
    magnitude = (jnp.abs(weights) @ numerics.safe_sqrt(
        jnp.diagonal(normalised))) ** 2
    nonzero = (direction > _PRECISION * magnitude) & (norms[0] > 0)
    length = numerics.safe_div(norms[0], numerics.safe_sqrt(direction))
    weights = jnp.where(nonzero, weights * units * length, 0.0)
    return weights, PCDState(squared_norm_ema=ema, count=count)

  return base.Weighting(weigh=weigh, init=init, name='pcd')
