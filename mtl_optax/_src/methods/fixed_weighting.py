"""Fixed weighting: user-given constant task weights."""

import jax
import jax.numpy as jnp
import numpy as np

from mtl_optax._src import base


def fixed_weighting(
    num_tasks: int,
    weights,
    *,
    task_specific: base.TaskSpecific = None,
) -> base.LossBalancer:
  """Weights task t by the constant ``weights[t]``: ``d = Σ_t weights[t] g_t``.

  The hand-tuned baseline of the multi-task literature (e.g. the "best fixed
  weights" of the LogSE paper, Ghasemi-Naraghi et al., §4).

  Args:
    num_tasks: T.
    weights: ``[T]`` finite non-negative numbers (traced values are allowed
      under ``optax.inject_hyperparams``).
    task_specific: leaves that belong to one task (see :func:`balancer`).

  Returns:
    A :class:`LossBalancer`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.fixed_weighting(2, [0.25, 2.0])
    >>> grads = jnp.array([[4.0, 0.0], [0.0, 1.0]])
    >>> tx.update(grads, tx.init(jnp.zeros(2)))[0]
    Array([1., 2.], dtype=float32)
  """
  base.check_num_tasks(num_tasks)
  if not isinstance(weights, jax.core.Tracer):
    concrete = np.asarray(weights, dtype=np.float64)
    if concrete.shape != (num_tasks,):
      raise ValueError(f'weights must have shape ({num_tasks},), got '
                       f'{concrete.shape}.')
    if not np.all(np.isfinite(concrete)) or np.any(concrete < 0):
      raise ValueError(f'weights must be finite and >= 0, got {weights!r}.')
  fixed = jnp.asarray(weights, jnp.float32)

  def weigh(stats, state):
    del stats
    return fixed, state

  return base.balancer(num_tasks, weigh, name='fixed_weighting',
                       uses_gram=False, task_specific=task_specific)
