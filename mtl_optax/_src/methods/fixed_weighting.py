"""Fixed weighting: user-given constant task weights."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_optax._src import base


def fixed_weighting(weights) -> base.Weighting:
  """Weights task t by the constant ``weights[t]``: ``d = Σ_t weights[t] g_t``.

  The hand-tuned baseline of the multi-task literature (e.g. the "best fixed
  weights" of the LogSE paper, Ghasemi-Naraghi et al., §4).

  Args:
    weights: ``[T]`` finite non-negative numbers (traced values are allowed
      under ``optax.inject_hyperparams``). Their length is checked against T
      when the balancer is built.

  Returns:
    A stateless loss-level :class:`Weighting` (it reads neither the Gramian
    nor the losses).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.fixed_weighting(2, [0.25, 2.0])
    >>> grads = jnp.array([[4.0, 0.0], [0.0, 1.0]])
    >>> tx.update(grads, tx.init(jnp.zeros(2)))[0]
    Array([1., 2.], dtype=float32)
  """
  if not isinstance(weights, jax.core.Tracer):
    concrete = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(concrete)) or np.any(concrete < 0):
      raise ValueError(f'weights must be finite and >= 0, got {weights!r}.')
  fixed = jnp.asarray(weights, jnp.float32)

  def init(num_tasks):
    if fixed.shape != (num_tasks,):
      raise ValueError(f'weights must have shape ({num_tasks},), got '
                       f'{fixed.shape}.')
    return optax.EmptyState()

  def weigh(stats, state):
    del stats
    return fixed, state

  return base.Weighting(weigh=weigh, init=init, name='fixed_weighting',
                        reads_gram=False)
