"""The two operations every Gramian method performs on the stacked gradients.

``task_grads`` is a pytree whose leaves carry a leading task axis of size T.
The T x P Jacobian ``J`` is never concatenated: the Gramian ``G = J Jᵀ`` is a
sum of one small matmul per leaf, and the update ``d = wᵀ J`` is one
dot product per leaf. Everything between the two is T x T arithmetic.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

_PRECISION = lax.Precision.HIGHEST
# Squares of float32 entries overflow above ~1.8e19 and flush to zero below
# ~1e-19. A Gramian whose diagonal leaves this band is recomputed on gradients
# rescaled by a power of two, which is exact.
_SMALLEST_SAFE_DIAGONAL = 1e-30


def _as_matrix(leaf: jax.Array) -> jax.Array:
  return leaf.reshape(leaf.shape[0], -1)


def _raw_gramian(task_grads: Any, inverse_scale: jax.Array) -> jax.Array:
  """Sum over leaves of ``(s⁻¹ J_leaf)(s⁻¹ J_leaf)ᵀ``, accumulated in float32."""
  leaves = jax.tree.leaves(task_grads)
  num_tasks = leaves[0].shape[0]
  gram = jnp.zeros((num_tasks, num_tasks), jnp.float32)
  for leaf in leaves:
    matrix = _as_matrix(leaf)
    matrix = matrix * inverse_scale.astype(matrix.dtype)
    gram += lax.dot_general(
        matrix, matrix, (((1,), (1,)), ((), ())),
        precision=_PRECISION, preferred_element_type=jnp.float32)
  return gram


def _max_abs(task_grads: Any) -> jax.Array:
  return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)).astype(jnp.float32)
                            for leaf in jax.tree.leaves(task_grads)]))


def gramian(task_grads: Any) -> tuple[jax.Array, jax.Array]:
  """Gramian of the task gradients, safe against float32 over/underflow.

  Args:
    task_grads: pytree of arrays, each with a leading task axis of size T.

  Returns:
    ``(gram, scale)``: ``gram`` is ``[T, T]`` float32 and the true Gramian is
    ``scale**2 * gram``. ``scale`` is 1 unless the gradients are so large or so
    small that their squares leave the float32 range; then it is the power of
    two nearest to the largest entry. A non-finite gradient gives a non-finite
    ``scale``.
  """
  one = jnp.ones((), jnp.float32)
  gram = _raw_gramian(task_grads, one)
  largest = jnp.max(jnp.diagonal(gram))
  in_range = jnp.isfinite(largest) & (largest > _SMALLEST_SAFE_DIAGONAL)

  def rescaled(_):
    biggest = _max_abs(task_grads)
    # frexp/ldexp give an exact power of two (exp2 is approximate on CPU).
    mantissa, exponent = jnp.frexp(biggest)
    scale = jnp.ldexp(one, exponent - (mantissa < 0.7071).astype(exponent.dtype))
    scale = jnp.where(biggest == 0, one, scale)  # All-zero gradients.
    return _raw_gramian(task_grads, 1.0 / scale), scale

  return lax.cond(in_range, lambda _: (gram, one), rescaled, None)


def weighted_sum(weights: jax.Array, task_grads: Any) -> Any:
  """``Σ_t weights[t] · task_grads[t]`` for every leaf, as one dot product each.

  The result has the leaves' shapes without the task axis and their dtypes;
  products accumulate in float32.
  """
  weights = weights.astype(jnp.float32)

  def combine(leaf):
    total = lax.dot_general(
        weights, _as_matrix(leaf), (((0,), (0,)), ((), ())),
        precision=_PRECISION, preferred_element_type=jnp.float32)
    return total.reshape(leaf.shape[1:]).astype(leaf.dtype)

  return jax.tree.map(combine, task_grads)
