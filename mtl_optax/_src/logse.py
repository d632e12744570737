"""LogSE: the log of each task's loss, from Kendall's likelihood with σ² = L."""

from mtl_optax._src import base
from mtl_optax._src import numerics


def logse(
    num_tasks: int,
    *,
    floor: float = 1e-8,
    task_specific: base.TaskSpecific = None,
) -> base.LossBalancer:
  r"""Balances tasks by the gradient of ``½ Σ_t log L_t``: ``w_t = 1 / (2 L_t)``.

  Ghasemi-Naraghi, Nickabadi and Safabakhsh, "LogSE: An Uncertainty-Based
  Multi-Task Loss Function for Learning Two Regression Tasks". Replacing each
  variance of Kendall's Gaussian likelihood by its estimate ``σ_t² = L_t``
  gives, up to constants, ``L_LogSE = ½ Σ_t log L_t`` (eqs. 12–13), whose
  gradient is ``Σ_t g_t / (2 L_t)``. The paper derives it for two MSE tasks;
  the formula applies to any positive loss.

  A loss below ``floor`` (zero or negative losses have no logarithm) is
  treated as ``floor``, so every weight stays finite: at most
  ``1 / (2 floor)``.

  Args:
    num_tasks: T.
    floor: smallest loss used in ``1/(2 L_t)``, > 0.
    task_specific: leaves that belong to one task (see :func:`balancer`).

  Returns:
    A :class:`LossBalancer`; ``update`` needs ``task_losses``.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.logse(2)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> losses = jnp.array([0.5, 2.0])
    >>> tx.update(grads, tx.init(jnp.zeros(2)), task_losses=losses)[0]
    Array([1.  , 0.25], dtype=float32)
  """
  base.check_num_tasks(num_tasks)
  base.check_range('floor', floor, 0.0, low_open=True)

  def weigh(stats, state):
    return 0.5 / numerics.floor_losses(stats.losses, floor), state  # Eq. 13.

  return base.balancer(num_tasks, weigh, name='logse', needs_losses=True,
                       uses_gram=False, task_specific=task_specific)
