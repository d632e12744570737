"""Equal weighting: the plain sum (or mean) of the task gradients."""

import jax.numpy as jnp

from mtl_optax._src import base


def equal_weighting(
    num_tasks: int,
    *,
    reduction: str = 'sum',
    task_specific: base.TaskSpecific = None,
) -> base.LossBalancer:
  """Weights every task the same: ``w_t = 1`` (sum) or ``w_t = 1/T`` (mean).

  The baseline of every multi-task paper ("EW" in Lin et al., Dual-Balancing
  for Multi-Task Learning, Table 1). Needs no losses.

  Args:
    num_tasks: T.
    reduction: ``'sum'`` or ``'mean'``.
    task_specific: leaves that belong to one task (see :func:`balancer`).

  Returns:
    A :class:`LossBalancer`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.equal_weighting(2, reduction='mean')
    >>> grads = jnp.array([[2.0, 0.0], [0.0, 4.0]])
    >>> tx.update(grads, tx.init(jnp.zeros(2)))[0]
    Array([1., 2.], dtype=float32)
  """
  base.check_num_tasks(num_tasks)
  base.check_choice('reduction', reduction, ('sum', 'mean'))
  value = 1.0 if reduction == 'sum' else 1.0 / num_tasks
  weights = jnp.full([num_tasks], value, jnp.float32)

  def weigh(stats, state):
    del stats
    return weights, state

  return base.balancer(num_tasks, weigh, name='equal_weighting',
                       uses_gram=False, task_specific=task_specific)
