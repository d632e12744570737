"""PCGrad: project each task gradient off the ones it conflicts with, then sum."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src import base
from mtl_optax._src import numerics


class PCGradState(NamedTuple):
  key: jax.Array  # shape=[2], dtype=uint32; a raw PRNG key, split every step


def _projected_coefficients(gram: jax.Array, task: jax.Array,
                            order: jax.Array) -> jax.Array:
  """Coefficients ``c`` of ``g_task^PC = Σ_j c_j g_j``, from the Gramian only.

  ``g^PC`` starts as ``e_task``; for each other task ``j`` in ``order``, if
  ``g^PC · g_j = (c G)_j < 0`` the projection
  ``g^PC − (g^PC · g_j)/‖g_j‖² g_j`` changes only ``c_j``.
  """
  num_tasks = gram.shape[0]
  squared_norms = jnp.diagonal(gram)

  def project(position, coefficients):
    other = order[position]
    inner = coefficients @ gram[:, other]
    conflicts = (other != task) & (inner < 0)
    # A zero gradient has inner == 0, hence never conflicts; safe_div keeps
    # the unused branch finite.
    shift = jnp.where(conflicts, numerics.safe_div(inner, squared_norms[other]),
                      0.0)
    return coefficients - shift * jax.nn.one_hot(  # Alg. 1
        other, num_tasks, dtype=coefficients.dtype)

  start = jax.nn.one_hot(task, num_tasks,
                         dtype=jnp.promote_types(gram.dtype, jnp.float32))
  return lax.fori_loop(0, num_tasks, project, start)


def pcgrad_weights(gram: jax.Array, key: jax.Array) -> jax.Array:
  """Weights of ``Σ_i g_i^PC``, each task projected in its own random order."""
  num_tasks = gram.shape[0]
  orders = jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(
      jax.random.split(key, num_tasks))
  coefficients = jax.vmap(_projected_coefficients, in_axes=(None, 0, 0))(
      gram, jnp.arange(num_tasks), orders)
  return jnp.sum(coefficients, axis=0)


def pcgrad(
    *,
    key: Any = 0,
) -> base.Weighting:
  r"""Projecting Conflicting Gradients: the sum of the de-conflicted gradients.

  Yu et al., "Gradient Surgery for Multi-Task Learning" (NeurIPS 2020),
  Algorithm 1. For every task ``i``, ``g_i^PC`` starts as ``g_i``; the other
  tasks ``j`` are visited in a random order and, whenever
  ``g_i^PC · g_j < 0``,

    ``g_i^PC ← g_i^PC − (g_i^PC · g_j) / ‖g_j‖² · g_j``  (Algorithm 1),

  projecting ``g_i^PC`` onto the normal plane of ``g_j`` (the original ``g_j``,
  as in the paper). The update is the *sum* of the projected gradients,
  ``d = Σ_i g_i^PC``, as in Algorithm 1 (some ports average them instead,
  which divides the update by T).

  Every ``g_i^PC`` is a linear combination of the task gradients, and every
  inner product it needs is one of the Gramian's: the projection only changes
  the coefficient of ``g_j``. So the T projected copies are never
  materialised: the weights are the sums of those coefficients.

  Randomness: each task gets its own order of the others (as Algorithm 1
  draws one per task), from a key kept in the state and split every step.
  The default seed is 0, so runs are reproducible; pass your own key for
  independent runs. With T = 2 the order does not matter.

  Properties: linear under scaling (projections are scale-free); not
  permutation invariant for T > 2 (the orders are random); not
  non-conflicting in general (the paper's guarantee is for T = 2). A zero
  gradient conflicts with nothing and is left as is.

  Args:
    key: PRNG key for the projection orders (raw ``uint32[2]`` or typed) or an
      int seed; default 0.

  Returns:
    A :class:`Weighting` of the Gramian with state :class:`PCGradState`
    (the key of the next step).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.pcgrad(2)
    >>> grads = jnp.array([[1.0, 0.0], [-1.0, 1.0]])
    >>> tx.update(grads, tx.init(jnp.zeros(2)))[0]  # (0.5, 0.5) + (0, 1)
    Array([0.5, 1.5], dtype=float32)
  """
  start_key = numerics.as_raw_key(key)

  def init(num_tasks):
    del num_tasks
    return PCGradState(key=start_key)

  def weigh(stats, state):
    next_key, step_key = jax.random.split(state.key)
    weights = pcgrad_weights(stats.gram, step_key)
    return weights, state._replace(key=next_key)

  return base.Weighting(weigh=weigh, init=init, name='pcgrad')
