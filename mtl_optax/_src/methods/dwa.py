"""DWA: dynamic weight average, from the rate at which each loss descends."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics

_FLOAT32_MAX = float(jnp.finfo(jnp.float32).max)


class DWAState(NamedTuple):
  running_mean: jax.Array  # shape=[T], dtype=float32; mean loss of this period
  updates_in_period: jax.Array  # shape=(), dtype=int32; updates seen in it
  last_means: jax.Array  # shape=[T], dtype=float32; L(k−1), last full period
  earlier_means: jax.Array  # shape=[T], dtype=float32; L(k−2)
  periods_done: jax.Array  # shape=(), dtype=int32; saturating


def dwa(
    *,
    temperature: float = 2.0,
    period: int = 1,
    loss_floor: float = 1e-8,
    floor: float | None = None,
) -> base.Weighting:
  r"""Weights tasks by how slowly their losses descend: ``T · softmax(r / τ)``.

  Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention"
  (CVPR 2019), dynamic weight average, eq. 7:

  ``w_t(k) = T exp(r_t(k−1)/τ) / Σ_s exp(r_s(k−1)/τ)``, with
  ``r_t(k−1) = L_t(k−1) / L_t(k−2)``,

  where ``L_t(k)`` is task t's mean loss over period ``k``. A task whose loss
  fell less over the last period (larger ``r_t``) gets more weight; the
  weights sum to T. ``τ = 2`` is the paper's temperature; a larger ``τ``
  brings the weights closer to 1.

  The paper's period is an epoch. Here ``period`` counts updates: the losses
  of ``period`` consecutive updates are averaged into one ``L_t(k)``
  (default 1: every update is a period). The weights of an update use the
  last two *completed* periods, so the first two periods use ``w = 1`` as in
  the paper, and an update's own losses first count when its period ends.
  For epoch-level weights as in the paper, set ``period`` to the number of
  updates per epoch.

  A loss below ``loss_floor`` is treated as ``loss_floor`` (a ratio needs positive
  losses), and ratios and logits are capped at the largest float32, so the
  weights stay finite for any finite losses.

  Args:
    temperature: ``τ`` > 0.
    period: number of updates whose mean loss makes one ``L_t(k)``, a Python
      int >= 1.
    loss_floor: smallest loss used, > 0.
    floor: deprecated (0.1) name of ``loss_floor``, removed in 0.3.

  Returns:
    A loss-level :class:`Weighting` with state :class:`DWAState`; it needs
    the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.dwa(2)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> state = tx.init(jnp.zeros(2))
    >>> for losses in ([1.0, 1.0], [1.0, 1.0]):  # two periods of weight 1
    ...   updates, state = tx.update(grads, state, task_losses=jnp.array(losses))
    >>> updates
    Array([1., 1.], dtype=float32)
  """
  base.check_range('temperature', temperature, 0.0, low_open=True)
  base.check_positive_int('period', period)
  loss_floor = base.renamed('dwa', 'floor', floor, 'loss_floor', loss_floor)
  base.check_range('loss_floor', loss_floor, 0.0, low_open=True)

  def init(num_tasks):
    zeros = jnp.zeros([num_tasks], jnp.float32)
    ones = jnp.ones([num_tasks], jnp.float32)  # Any positive value: unused.
    count = jnp.zeros([], jnp.int32)
    return DWAState(running_mean=zeros, updates_in_period=count,
                    last_means=ones, earlier_means=ones, periods_done=count)

  def current_weights(state):
    # r_t(k−1) of eq. 7. Both means are >= loss_floor > 0, but the quotient can
    # overflow.
    ratios = jnp.minimum(state.last_means / state.earlier_means, _FLOAT32_MAX)
    logits = jnp.minimum(ratios / temperature, _FLOAT32_MAX)
    weights = logits.shape[0] * jax.nn.softmax(logits)  # Eq. 7.
    return jnp.where(state.periods_done >= 2, weights, 1.0)

  def record(losses, state):
    # An incremental mean stays between its inputs, so it cannot overflow.
    seen = state.updates_in_period + 1
    mean = state.running_mean + (losses - state.running_mean) / seen
    ends = seen == period
    return state._replace(
        running_mean=jnp.where(ends, 0.0, mean),
        updates_in_period=jnp.where(ends, 0, seen),
        last_means=jnp.where(ends, mean, state.last_means),
        earlier_means=jnp.where(ends, state.last_means, state.earlier_means),
        periods_done=jnp.where(ends, optax.safe_increment(state.periods_done),
                               state.periods_done))

  def weigh(stats, state):
    losses = numerics.floor_losses(stats.losses, loss_floor)
    return current_weights(state), record(losses, state)

  return base.Weighting(weigh=weigh, init=init, name='dwa', reads_gram=False,
                        reads_losses=True)
