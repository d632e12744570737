"""Log scaling: each task gradient becomes the gradient of ``log(L_t + ε)``."""

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics


def log_scaled_losses(task_losses: jax.Array, eps: float | jax.Array):
  """``L_t + ε`` with a negative loss floored at 0, so the divisor is >= ε."""
  return jnp.maximum(task_losses, 0.0) + eps


def scale_task_grads(task_grads, scales: jax.Array):
  """``scales[t] · g_t`` on every leaf; each leaf keeps its dtype."""

  def scale_leaf(leaf):
    shape = (-1,) + (1,) * (leaf.ndim - 1)
    return (leaf * scales.reshape(shape)).astype(leaf.dtype)

  return jax.tree.map(scale_leaf, task_grads)


def log_scaling(
    num_tasks: int,
    *,
    eps: float = 1e-8,
    task_specific: base.TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Replaces each task gradient by the gradient of ``log(L_t + ε)``.

  The loss-scale balancing step of DB-MTL (Lin et al., "Dual-Balancing for
  Multi-Task Learning", Algorithm 1, step 6; section 3.1):

  .. math::
    g_t \leftarrow \nabla \log(L_t + ε) = g_t / (L_t + ε).

  It is a pre-transform: the output keeps the task axis ``[T, ...]``, so it
  goes in front of any balancer, e.g. log scaling + MGDA (the paper's Fig. 1)::

    optax.chain(mtl.log_scaling(T), mtl.mgda(T), optax.adam(1e-3))

  ``optax.chain`` passes ``task_losses`` to every piece; the pieces after this
  one still see the raw losses, not their logarithms.

  Every leaf is scaled, task-specific ones included: in DB-MTL the heads step
  on the gradient of their own task's log loss (Algorithm 1, step 12), so
  ``task_specific`` is accepted for a uniform signature and only validated.

  A loss below 0 has no logarithm; it is treated as 0, so the divisor is at
  least ``ε`` and the scale at most ``1/ε``: always finite. It runs on the
  skeleton of every transformation (:func:`task_transformation`): a
  non-finite loss or gradient makes the whole output NaN (a loss of ``+inf``
  would otherwise silently zero its task), so that ``optax.apply_if_finite``
  skips the step.

  Args:
    num_tasks: T.
    eps: ``ε > 0`` added to every loss (the paper's ``1e-8``).
    task_specific: accepted for a uniform signature; see above.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with an empty state whose
    ``update(task_grads, state, params=None, *, task_losses)`` returns the
    scaled ``task_grads`` (same structure, shapes and dtypes).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.log_scaling(2)
    >>> grads = jnp.array([[1.0, 2.0], [4.0, 8.0]])
    >>> losses = jnp.array([0.5, 4.0])
    >>> tx.update(grads, tx.init(jnp.zeros(2)), task_losses=losses)[0]
    Array([[2., 4.],
           [1., 2.]], dtype=float32)
  """
  base.check_range('eps', eps, 0.0, low_open=True)

  def init(shared_params):
    del shared_params
    return optax.EmptyState()

  def step(shared, specific, losses, state, inputs_finite):
    # Algorithm 1, step 6: ∇ log(L_t + ε) = g_t / (L_t + ε).
    finite = inputs_finite & numerics.all_finite(*shared)
    scales = jnp.where(finite, 1.0 / log_scaled_losses(losses, eps), jnp.nan)
    return base.StepResult(shared=scale_task_grads(shared, scales),
                           specific=scale_task_grads(specific, scales),
                           state=state, finite=finite)

  return base.task_transformation(num_tasks, 'log_scaling', init, step,
                                  needs_losses=True,
                                  task_specific=task_specific)
