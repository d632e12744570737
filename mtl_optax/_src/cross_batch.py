"""Weights from independent batches: the cross Gramian and its balancer.

Stochastic multi-objective methods (SDMGrad, MoDo) choose the task weights
from ``J₂ J₃ᵀ``, the products of the task gradients of two *independent*
mini-batches, and apply them to the gradients ``J₁`` of a third: with one
batch, ``E[J Jᵀ] ≠ E[J] E[J]ᵀ`` and the weights are biased; with two
independent ones, ``E[J₂ J₃ᵀ] = E[J] E[J]ᵀ``.

:func:`cross_gramian` computes ``J₂ J₃ᵀ`` leaf by leaf, never concatenating
the gradients, like :func:`mtl_optax.gramian`. :func:`cross_balancer` is
:func:`mtl_optax.balancer` with two more gradient inputs:
``update(task_grads, state, params, *, task_losses=None, task_grads_2=None,
task_grads_3=None)``; the weighting sees ``J₂ J₃ᵀ`` as
``TaskStats.cross_gram`` and the update is ``Σ_t w_t g_t`` over the rows
``g_t`` of ``task_grads``. A batch that is not given is ``task_grads`` itself.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
import optax

from mtl_optax._src import balancer as balancer_lib
from mtl_optax._src import base
from mtl_optax._src import column_blocks
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics

# Entries whose products stay well inside float32 over any realistic
# parameter count: |x| in [2^-40, 2^40] gives products in [2^-80, 2^80].
_SMALLEST_SAFE_PRODUCT = 1e-30


def _dot_cross(leaf_1: jax.Array, leaf_2: jax.Array,
               inverse_scale: jax.Array | None) -> jax.Array:
  if inverse_scale is not None:
    leaf_1 = leaf_1 * inverse_scale.astype(leaf_1.dtype)
    leaf_2 = leaf_2 * inverse_scale.astype(leaf_2.dtype)
  axes = tuple(range(1, leaf_1.ndim))
  return lax.dot_general(
      leaf_1, leaf_2, ((axes, axes), ((), ())),
      precision=gramian_lib._PRECISION,  # pylint: disable=protected-access
      preferred_element_type=jnp.float32,
      out_sharding=gramian_lib._replicated(leaf_1))  # pylint: disable=protected-access


def _leaf_cross(leaf_1: jax.Array, leaf_2: jax.Array,
                inverse_scale: jax.Array | None) -> jax.Array:
  """``J₁ J₂ᵀ`` of one leaf; on CPU, a large unsharded leaf block by block
  (one dot over the long contraction is several times slower there:
  column_blocks.py)."""
  columns = column_blocks.width(leaf_1)
  if columns is None or column_blocks.width(leaf_2) is None:
    return _dot_cross(leaf_1, leaf_2, inverse_scale)
  num_tasks = leaf_1.shape[0]
  cross, _ = column_blocks.scan(
      lambda block_1, block_2: (_dot_cross(block_1, block_2, inverse_scale),
                                None),
      leaf_1.reshape(num_tasks, -1), leaf_2.reshape(num_tasks, -1),
      columns=columns)
  return cross


def _raw_cross(leaves_1: list, leaves_2: list,
               inverse_scale: jax.Array | None = None) -> jax.Array:
  cross = _leaf_cross(leaves_1[0], leaves_2[0], inverse_scale)
  for leaf_1, leaf_2 in zip(leaves_1[1:], leaves_2[1:]):
    cross += _leaf_cross(leaf_1, leaf_2, inverse_scale)
  return cross


def _check_same_layout(task_grads_1: Any, task_grads_2: Any) -> None:
  structure_1 = jax.tree.structure(task_grads_1)
  structure_2 = jax.tree.structure(task_grads_2)
  if structure_1 != structure_2:  # type: ignore[operator]
    raise ValueError('cross_gramian: the two task-gradient trees differ in '
                     f'structure: {structure_1} and {structure_2}.')
  for leaf_1, leaf_2 in zip(jax.tree.leaves(task_grads_1),
                            jax.tree.leaves(task_grads_2)):
    if jnp.shape(leaf_1) != jnp.shape(leaf_2):
      raise ValueError('cross_gramian: the two task-gradient trees have '
                       f'leaves of shapes {jnp.shape(leaf_1)} and '
                       f'{jnp.shape(leaf_2)}; they must match.')


def cross_gramian(task_grads_1: Any,
                  task_grads_2: Any) -> tuple[jax.Array, jax.Array]:
  """``J₁ J₂ᵀ`` of two stacks of task gradients, safe against over/underflow.

  ``cross[s, t] = g_s(batch 1) · g_t(batch 2)``, summed leaf by leaf with
  float32 accumulation; the T x P gradients are never concatenated. Unlike a
  Gramian it is not symmetric and its diagonal may be negative.

  Args:
    task_grads_1: pytree of arrays with a leading task axis of size T.
    task_grads_2: a pytree of the same structure and leaf shapes.

  Returns:
    ``(cross, scale)``: ``cross`` is ``[T, T]`` float32 and the true product
    is ``scale**2 * cross``. ``scale`` is 1 unless the products leave the
    float32 range; then both stacks are divided by the power of two nearest
    to their largest entry (exact). A non-finite gradient gives a non-finite
    ``scale``.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> batch_1 = jnp.array([[1.0, 2.0], [0.0, 1.0]])
    >>> batch_2 = jnp.array([[3.0, 0.0], [1.0, -1.0]])
    >>> cross, scale = mtl.cross_gramian(batch_1, batch_2)
    >>> cross
    Array([[ 3., -1.],
           [ 0., -1.]], dtype=float32)
  """
  _check_same_layout(task_grads_1, task_grads_2)
  leaves_1 = jax.tree.leaves(task_grads_1)
  leaves_2 = jax.tree.leaves(task_grads_2)
  if not leaves_1:
    raise ValueError('cross_gramian: the task gradients have no leaves.')
  one = jnp.ones((), jnp.float32)
  cross = _raw_cross(leaves_1, leaves_2)
  largest = jnp.max(jnp.abs(cross))
  # Overflow shows as a non-finite entry; underflow cannot be told apart
  # from orthogonal batches, so an all-tiny result is recomputed (rare).
  in_range = jnp.isfinite(largest) & (largest > _SMALLEST_SAFE_PRODUCT)

  def rescaled(_):
    scale = gramian_lib.power_of_two_scale((leaves_1, leaves_2))
    return _raw_cross(leaves_1, leaves_2, 1.0 / scale), scale

  return lax.cond(in_range, lambda _: (cross, one), rescaled, None)


def _check_other_batch(name: str, task_grads: list, other: list | None,
                       keyword: str) -> list:
  """The shared leaves of an extra batch (``task_grads``' own if None)."""
  if other is None:
    return task_grads
  for leaf, other_leaf in zip(task_grads, other):
    if jnp.shape(leaf) != jnp.shape(other_leaf):
      raise ValueError(f'{name}: a {keyword} leaf has shape '
                       f'{jnp.shape(other_leaf)}, but task_grads has '
                       f'{jnp.shape(leaf)} there.')
  return other


def cross_balancer(
    num_tasks: int,
    weighting: base.Weighting,
    *,
    task_specific: base.TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  """A balancer whose weights come from two further, independent batches.

  ``update(task_grads, state, params=None, *, task_losses=None,
  task_grads_2=None, task_grads_3=None)``: the weighting reads
  ``stats.cross_gram = J₂ J₃ᵀ / scale²`` (:func:`cross_gramian` of the
  shared leaves of ``task_grads_2`` and ``task_grads_3``; ``stats.gram`` is
  None) and the update is ``Σ_t w_t g_t`` over the rows of ``task_grads``
  (``J₁``) on the shared leaves, and each task-specific leaf's own-task
  gradient from ``task_grads``. A batch that is not given is ``task_grads``
  itself: no extra batch gives ``J₁ J₁ᵀ`` (the deterministic variant), one
  gives ``J₂ J₁ᵀ``, two give the independent ``J₂ J₃ᵀ``. A non-finite entry
  in any batch makes the update non-finite and keeps the state. The state is
  a :class:`BalancerState`.

  Args:
    num_tasks: T.
    weighting: a :class:`Weighting` that reads ``stats.cross_gram``
      (``mtl.weightings.sdmgrad()``, ``mtl.weightings.modo()``).
    task_specific: leaves that belong to one task (see :func:`balancer`).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  name = weighting.name

  def stats_of(shared, losses, task_grads_2=None, task_grads_3=None):
    # The shared leaves of the extra batches (the task-specific ones are
    # not read).
    other_2 = None if task_grads_2 is None else task_grads_2[0]
    other_3 = None if task_grads_3 is None else task_grads_3[0]
    for other in (other_2, other_3):
      if other is not None:
        base.check_task_grads(name, num_tasks, other)
    shared_2 = _check_other_batch(name, shared, other_2, 'task_grads_2')
    shared_3 = _check_other_batch(name, shared, other_3, 'task_grads_3')
    cross, scale = cross_gramian(shared_2, shared_3)
    # A Gramian is finite exactly when its inputs are; the update's own
    # batch needs a check of its own when it is not in the product.
    covered = task_grads_2 is None or task_grads_3 is None
    finite = numerics.all_finite(cross, scale, *(() if covered else shared))
    return (base.TaskStats(None, scale, losses, num_tasks, cross_gram=cross),
            finite)

  return base.weighted_balancer(
      num_tasks, weighting, stats_of, task_specific=task_specific,
      extra_inputs=('task_grads_2', 'task_grads_3'))


def cross_balancer_factory(make_weighting):
  """``factory(num_tasks, *args, task_specific=None, **kwargs)``, as
  :func:`balancer_factory` but building a :func:`cross_balancer`: ``update``
  also takes ``task_grads_2`` and ``task_grads_3``, the weights come from
  ``J₂ J₃ᵀ`` of the two extra batches (each defaults to ``task_grads``), the
  update from ``task_grads``."""
  return balancer_lib.factory_of(make_weighting, cross_balancer,
                                 'cross_balancer')
