"""Trimmed mean: per coordinate, the mean without the extreme task values."""

import math
from typing import NamedTuple

import warnings

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics


class TrimmedMeanState(NamedTuple):
  """State of :func:`trimmed_mean`.

  Each coordinate drops its own extreme tasks, so the update is not
  ``Σ_t w_t g_t``; ``kept_share[t]`` (what :func:`mtl_optax.last_weights`
  reports) is the share of task ``t``'s coordinates that the last finite
  update kept, divided by the number of tasks averaged.
  """
  kept_share: jax.Array  # shape=[T], dtype=float32; share of g_t in the update

  def task_weights(self) -> jax.Array:
    return self.kept_share

  @property
  def weights(self) -> jax.Array:
    """Deprecated name of ``kept_share`` (removed in 0.3)."""
    warnings.warn('TrimmedMeanState.weights is deprecated and will be removed in 0.3; '
                  'use TrimmedMeanState.kept_share (the update is not Σ_t w_t g_t).',
                  DeprecationWarning, stacklevel=2)
    return self.kept_share


def _unsharded_task_axis(values: jax.Array) -> jax.Array:
  """``values`` with its task axis gathered on every device, if it is sharded.

  A sort needs the whole task axis; on a mesh with Explicit axes the
  resharding must be asked for (the parameter axes keep their sharding).
  """
  sharding = jax.typeof(values).sharding
  if sharding.mesh.empty or not sharding.spec or sharding.spec[0] is None:
    return values
  return jax.sharding.reshard(values, jax.sharding.NamedSharding(
      sharding.mesh, jax.sharding.PartitionSpec(None, *sharding.spec[1:])))


def _trim_leaf(leaf: jax.Array, trim_number: int):
  """``(update, kept)`` of one shared leaf: its trimmed mean over the task
  axis (in float32) and, per task, how many of its entries were kept."""
  num_tasks = leaf.shape[0]
  values = _unsharded_task_axis(leaf.astype(jnp.float32))
  # Each entry's rank along the task axis (stable: ties keep the task
  # order), as the inverse of the sorting permutation.
  ranks = jnp.argsort(jnp.argsort(values, axis=0, stable=True), axis=0)
  kept = (ranks >= trim_number) & (ranks < num_tasks - trim_number)
  update = jnp.sum(jnp.where(kept, values, 0.0), axis=0) / (
      num_tasks - 2 * trim_number)
  # Summed over every axis but the task axis, without a reshape (which a
  # sharded leaf would need an explicit output sharding for).
  entry_axes = tuple(range(1, values.ndim))
  counts = jnp.sum(kept.astype(jnp.float32), axis=entry_axes)
  return update.astype(leaf.dtype), counts


def trimmed_mean(
    num_tasks: int,
    *,
    trim_number: int,
    task_specific: base.TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Coordinate-wise trimmed mean of the task gradients (Byzantine-robust).

  Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed
  Learning: Towards Optimal Statistical Rates" (ICML 2018), the
  coordinate-wise trimmed mean; TorchJD's ``TrimmedMean(trim_number)``.
  For every coordinate ``i`` of the shared parameters, the T task values
  ``g_1[i], …, g_T[i]`` are sorted, the ``k`` largest and the ``k`` smallest
  are removed, and the update is the mean of the ``T − 2k`` that remain:

  ``d[i] = (1 / (T − 2k)) Σ_{r = k+1}^{T−k} g_(r)[i]``,

  with ``g_(r)[i]`` the r-th smallest value. ``k = 0`` is the mean.

  It acts per coordinate, so it is no weighting of the Gramian: it is its
  own transformation on the shared skeleton (task axis check,
  task-specific leaves get their own task's gradient, a non-finite input
  gives a non-finite update and keeps the state). The state's ``kept_share[t]``
  is task ``t``'s average coefficient in the update: the share of the
  shared coordinates where its value was kept, divided by ``T − 2k`` (so
  ``1/T`` each for ``k = 0``; they sum to 1). It is a diagnostic; the update
  is not ``Σ_t w_t g_t``. Equal values are ranked by task index.

  Args:
    num_tasks: T, at least ``2k + 1``.
    trim_number: ``k``, Python int >= 0, values removed at each end.
    task_specific: leaves that belong to one task (see :func:`balancer`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`TrimmedMeanState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.trimmed_mean(5, trim_number=1)
    >>> grads = jnp.array([[-4.0, 1, 1, 0], [6, 1, 1, 2], [1, -2, 0, 1],
    ...                    [0.5, 0.5, 3, -1], [2, 2, 2, 2]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(4)))
    >>> [round(float(x), 4) for x in updates]  # TorchJD 0.18: the same.
    [1.1667, 0.8333, 1.3333, 1.0]
  """
  base.check_num_tasks(num_tasks)
  if (isinstance(trim_number, bool) or not isinstance(trim_number, int)
      or trim_number < 0):
    raise ValueError('trim_number must be a Python int >= 0, got '
                     f'{trim_number!r}.')
  if num_tasks < 2 * trim_number + 1:
    raise ValueError(f'trimmed_mean needs num_tasks >= 2 * trim_number + 1 = '
                     f'{2 * trim_number + 1}, got num_tasks={num_tasks}.')
  name = 'trimmed_mean'

  def init(shared_params):
    del shared_params
    return TrimmedMeanState(kept_share=jnp.zeros([num_tasks], jnp.float32))

  def step(shared, specific, losses, state, inputs_finite):
    del losses, state
    base.check_shared(name, shared)
    finite = inputs_finite & numerics.all_finite(*shared)
    trimmed = [_trim_leaf(leaf, trim_number) for leaf in shared]
    updates = [update for update, _ in trimmed]
    kept = sum(count for _, count in trimmed)
    entries = sum(math.prod(leaf.shape[1:]) for leaf in shared)
    weights = kept / (entries * (num_tasks - 2 * trim_number))
    poison = jnp.where(finite, 1.0, jnp.nan)
    updates = [(update * poison).astype(update.dtype) for update in updates]
    specific_updates = base.own_task_updates(specific)
    return base.StepResult(updates, specific_updates,
                           TrimmedMeanState(kept_share=weights), finite)

  transformation = base.task_transformation(
      num_tasks, name, init, step, task_specific=task_specific)
  return optax.GradientTransformationExtraArgs(
      lambda params: init(None), transformation.update)
