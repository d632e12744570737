"""Per-task exponential moving average of the shared task gradients."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics


class GradientEmaState(NamedTuple):
  """State of :func:`gradient_ema`: T x P floats for P shared parameters."""
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; updates applied so far (k - 1)
  task_grads_ema: tuple  # one [T, *leaf.shape] array per shared parameter
  # leaf (in jax.tree.leaves order, task-specific leaves left out), in the
  # leaf's dtype


def ema_decay(count: jax.Array, beta, beta_sigma) -> jax.Array:
  """``β_k = beta / k^beta_sigma`` with ``k = count + 1`` (k counts from 1)."""
  k = count.astype(jnp.float32) + 1.0
  return beta * jnp.power(k, -jnp.asarray(beta_sigma, jnp.float32))


def initial_state(num_tasks: int, shared_params: list) -> GradientEmaState:
  """Zero averages ``[T, *leaf.shape]``, in each leaf's dtype and layout."""
  return GradientEmaState(
      count=jnp.zeros([], jnp.int32),
      task_grads_ema=base.stacked_zeros(num_tasks, shared_params))


def averaged(averages: tuple, shared: list, decay: jax.Array,
             finite: jax.Array) -> tuple:
  """``β ĝ + (1 − β) g`` per leaf (eq. 1), or ``ĝ`` unchanged if not ``finite``.

  The guard is in the same elementwise pass as the average: the state holds
  T x P floats, and a separate ``where`` over it would read and write them
  all again.
  """
  return tuple(
      jnp.where(finite, decay * average + (1.0 - decay) * (
          gramian_lib.sharded_like(grad, average)),
                average).astype(average.dtype)
      for average, grad in zip(averages, shared))


def gradient_ema(
    num_tasks: int,
    *,
    beta: float = 0.9,
    beta_sigma: float = 0.5,
    task_specific: base.TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Replaces each shared task gradient by its moving average over steps.

  The EMA step of DB-MTL (Lin et al., "Dual-Balancing for Multi-Task
  Learning", Algorithm 1, step 7; eq. 1), one average per task:

  .. math::
    \hat g_{t,k} = β_k \hat g_{t,k-1} + (1 - β_k) g_{t,k},
    \qquad β_k = \mathrm{beta} / k^{\mathrm{beta\_sigma}},

  with ``ĝ_{t,0} = 0`` and no bias correction (as in the paper), ``k``
  counting the updates from 1. **Decision**: the paper grid-searches
  constant ``β`` and ``β/k^0.5``; both are this formula (``beta_sigma=0``
  gives a constant). The default is ``0.9/√k``.

  It is a pre-transform: the output keeps the task axis ``[T, ...]``, so it
  goes in front of any balancer, e.g. EMA + central direction::

    optax.chain(mtl.gradient_ema(T), mtl.central_direction(T), optax.sgd(0.1))

  The state holds ``ĝ``, **T x P floats** for P shared parameters (T times
  the memory of the shared parameters), in each parameter's dtype, as a
  tuple with one array per shared leaf. Task-specific leaves have no average
  and pass through unchanged (DB-MTL's heads step on their own current
  gradient, Algorithm 1, step 12).

  It runs on the skeleton of every transformation
  (:func:`task_transformation`): a non-finite entry anywhere in
  ``task_grads`` (or in ``task_losses``, when given) leaves the averages and
  the counter as they were (the output is then non-finite, so that
  ``optax.apply_if_finite`` skips the step), and the next finite step
  proceeds as if the bad one had never happened.

  Args:
    num_tasks: T.
    beta: the forgetting rate ``β`` in ``[0, 1)``; 0 disables the average.
    beta_sigma: ``σ >= 0`` of the decay ``β_k = β / k^σ``.
    task_specific: leaves that belong to one task (see :func:`balancer`);
      they are not averaged.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`GradientEmaState` whose ``update(task_grads, state, params=None)``
    returns the averaged ``task_grads`` (same structure, shapes and dtypes).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.gradient_ema(2, beta=0.5, beta_sigma=0.0)
    >>> state = tx.init(jnp.zeros(1))
    >>> grads = jnp.array([[2.0], [4.0]])
    >>> ema, state = tx.update(grads, state)  # 0.5 * 0 + 0.5 * g
    >>> ema, state = tx.update(grads, state)  # 0.5 * ema + 0.5 * g
    >>> ema
    Array([[1.5],
           [3. ]], dtype=float32)
  """
  base.check_range('beta', beta, 0.0, 1.0, high_open=True)
  base.check_range('beta_sigma', beta_sigma, 0.0)
  name = 'gradient_ema'

  def init(shared_params):
    return initial_state(num_tasks, shared_params)

  def step(shared, specific, losses, state, inputs_finite):
    del losses
    base.check_stacked_state(name, 'averages', state.task_grads_ema, shared)
    finite = inputs_finite & numerics.all_finite(*shared)
    decay = ema_decay(state.count, beta, beta_sigma)
    averages = averaged(  # Eq. 1 (Algorithm 1, step 7).
        state.task_grads_ema, shared, decay, finite)
    poison = jnp.where(finite, 1.0, jnp.nan)
    outputs = [(average * poison).astype(average.dtype)
               for average in averages]
    return base.StepResult(
        shared=outputs, specific=specific,
        state=GradientEmaState(count=optax.safe_increment(state.count),
                               task_grads_ema=averages),
        finite=finite, state_guarded=True)

  return base.task_transformation(num_tasks, name, init, step,
                                  task_specific=task_specific)
