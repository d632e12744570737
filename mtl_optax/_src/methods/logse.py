"""LogSE: the log of each task's loss, from Kendall's likelihood with σ² = L."""

from mtl_optax._src import base
from mtl_optax._src import numerics


def logse(*, loss_floor: float = 1e-8,
          floor: float | None = None) -> base.Weighting:
  r"""Balances tasks by the gradient of ``½ Σ_t log L_t``: ``w_t = 1 / (2 L_t)``.

  Ghasemi-Naraghi, Nickabadi and Safabakhsh, "LogSE: An Uncertainty-Based
  Multi-Task Loss Function for Learning Two Regression Tasks". Replacing each
  variance of Kendall's Gaussian likelihood by its estimate ``σ_t² = L_t``
  gives, up to constants, ``L_LogSE = ½ Σ_t log L_t`` (eqs. 12–13), whose
  gradient is ``Σ_t g_t / (2 L_t)``. The paper derives it for two MSE tasks;
  the formula applies to any positive loss.

  A loss below ``loss_floor`` (zero or negative losses have no logarithm) is
  treated as ``loss_floor``, so every weight stays finite: at most
  ``1 / (2 loss_floor)``.

  Args:
    loss_floor: smallest loss used in ``1/(2 L_t)``, > 0.
    floor: deprecated (0.1) name of ``loss_floor``, removed in 0.3.

  Returns:
    A stateless loss-level :class:`Weighting`; it needs the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.logse(2)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> losses = jnp.array([0.5, 2.0])
    >>> tx.update(grads, tx.init(jnp.zeros(2)), task_losses=losses)[0]
    Array([1.  , 0.25], dtype=float32)
  """
  loss_floor = base.renamed('logse', 'floor', floor, 'loss_floor', loss_floor)
  base.check_range('loss_floor', loss_floor, 0.0, low_open=True)

  def weigh(stats, state):
    return 0.5 / numerics.floor_losses(stats.losses, loss_floor), state  # Eq. 13.

  return base.Weighting(weigh=weigh, name='logse', reads_gram=False,
                        reads_losses=True)
