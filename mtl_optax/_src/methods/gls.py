"""GLS: the geometric mean of the task losses."""

import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src import numerics

_FLOAT32_MAX = float(jnp.finfo(jnp.float32).max)


def gls(*, loss_floor: float = 1e-8,
        floor: float | None = None) -> base.Weighting:
  r"""Minimises the geometric mean of the losses: ``w_t = GLS / (T L_t)``.

  Chennupati, Sistu, Yogamani and Rawashdeh, "MultiNet++: Multi-Stream
  Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning"
  (CVPR Workshops 2019), the geometric loss strategy; "GLS" in Lin et al.,
  "Dual-Balancing for Multi-Task Learning", Table 1. The objective is

  ``GLS = (Π_t L_t)^{1/T}``, whose gradient is ``Σ_t GLS / (T L_t) · g_t``,

  so the weights are ``w_t = GLS / (T L_t)``. A task whose loss is small gets a
  large weight, and scaling one loss by ``c`` leaves the update direction
  unchanged (``GLS`` grows by ``c^{1/T}``, ``w_t L_t`` by the same factor for
  every task).

  The weights are computed in log space, ``w_t = exp(mean_s log L_s − log
  L_t) / T``, so the product of the losses never overflows. A loss below
  ``loss_floor`` (zero or negative losses have no geometric mean) is treated as
  ``loss_floor``, and a weight is capped at the largest float32, so every weight
  is finite.

  Args:
    loss_floor: smallest loss used, > 0.
    floor: deprecated (0.1) name of ``loss_floor``, removed in 0.3.

  Returns:
    A stateless loss-level :class:`Weighting`; it needs the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.gls(2)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> losses = jnp.array([1.0, 4.0])  # GLS = 2: w = [2/2, 2/8]
    >>> tx.update(grads, tx.init(jnp.zeros(2)), task_losses=losses)[0]
    Array([1.  , 0.25], dtype=float32)
  """
  loss_floor = base.renamed('gls', 'floor', floor, 'loss_floor', loss_floor)
  base.check_range('loss_floor', loss_floor, 0.0, low_open=True)

  def weigh(stats, state):
    log_losses = jnp.log(numerics.floor_losses(stats.losses, loss_floor))
    log_gls = jnp.mean(log_losses)  # log (Π_t L_t)^{1/T}
    num_tasks = log_losses.shape[0]
    log_weights = log_gls - log_losses - jnp.log(num_tasks)  # GLS / (T L_t)
    # A weight beyond float32 (a loss near the floor beside huge ones) is
    # capped rather than infinite.
    return jnp.minimum(jnp.exp(log_weights), _FLOAT32_MAX), state

  return base.Weighting(weigh=weigh, name='gls', reads_gram=False,
                        reads_losses=True)
