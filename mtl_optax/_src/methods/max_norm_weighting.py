"""Gradient-magnitude balancing: every task gradient rescaled to the largest norm."""

import jax
import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src import numerics


def max_norm_weights(gram: jax.Array, scale: jax.Array,
                     eps: float | jax.Array) -> jax.Array:
  """``w_t = max_s ‖g_s‖ / (‖g_t‖ + ε)`` from a Gramian ``scale² · gram``.

  Computed on the rescaled norms (``ε`` divided by ``scale``), so neither the
  norms nor their ratio leave the float32 range.
  """
  norms = numerics.safe_sqrt(jnp.diagonal(gram))  # True norms / scale.
  # A zero-norm task gets max‖g‖/ε; its gradient is zero, so it adds nothing.
  return numerics.safe_div(jnp.max(norms), norms + eps / scale)


def max_norm_weighting(
    *,
    eps: float = 1e-8,
) -> base.Weighting:
  r"""Rescales every task gradient to the largest norm, then sums them.

  The gradient-magnitude balancing step of DB-MTL (Lin et al.,
  "Dual-Balancing for Multi-Task Learning", Algorithm 1, step 9; eq. 2 with
  ``α_k = max_t ‖g_t‖``):

  .. math::
    d = \max_s \|g_s\| \sum_t \frac{g_t}{\|g_t\| + ε},
    \qquad w_t = \frac{\max_s \|g_s\|}{\|g_t\| + ε}.

  A weighting of the Gramian (norms are its diagonal), so it combines with any
  pre-transform: DB-MTL is :func:`log_scaling`, :func:`gradient_ema`, then
  this. ``ε`` is on the true scale of the gradients, also when they are so
  small or large that the Gramian is rescaled.

  Behaviour on bad input: a zero gradient gets the (finite) weight
  ``max‖g‖/ε`` and contributes nothing; all-zero gradients give ``d = 0``.
  With ``T = 1`` it is ``d = g·‖g‖/(‖g‖ + ε) ≈ g``. Linear under a common
  scaling of the gradients up to ``ε``; not non-conflicting (three unit
  gradients, two equal and one opposite, sum to a direction against the
  third).

  Args:
    eps: ``ε > 0`` added to every norm (the paper's ``1e-8``).

  Returns:
    A stateless :class:`Weighting` of the Gramian.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.max_norm_weighting(2)
    >>> grads = jnp.array([[3.0, 4.0], [0.0, 1.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> state.weights  # max norm 5, norms [5, 1]; ε is below float32 precision
    Array([1., 5.], dtype=float32)
    >>> updates
    Array([3., 9.], dtype=float32)
  """
  base.check_range('eps', eps, 0.0, low_open=True)

  def weigh(stats, state):
    return max_norm_weights(stats.gram, stats.scale, eps), state  # Eq. 2.

  return base.Weighting(weigh=weigh, name='max_norm_weighting')
