"""Equal weighting: the plain sum (or mean) of the task gradients."""

import jax.numpy as jnp

from mtl_optax._src import base


def equal_weighting(*, reduction: str = 'sum') -> base.Weighting:
  """Weights every task the same: ``w_t = 1`` (sum) or ``w_t = 1/T`` (mean).

  The baseline of every multi-task paper ("EW" in Lin et al., Dual-Balancing
  for Multi-Task Learning, Table 1). Needs no losses.

  Args:
    reduction: ``'sum'`` or ``'mean'``.

  Returns:
    A stateless loss-level :class:`Weighting` (it reads neither the Gramian
    nor the losses).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.equal_weighting(2, reduction='mean')
    >>> grads = jnp.array([[2.0, 0.0], [0.0, 4.0]])
    >>> tx.update(grads, tx.init(jnp.zeros(2)))[0]
    Array([1., 2.], dtype=float32)
  """
  base.check_choice('reduction', reduction, ('sum', 'mean'))

  def weigh(stats, state):
    value = 1.0 if reduction == 'sum' else 1.0 / stats.num_tasks
    return jnp.full([stats.num_tasks], value, jnp.float32), state

  return base.Weighting(weigh=weigh, name='equal_weighting', reads_gram=False)
