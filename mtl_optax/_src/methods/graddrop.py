"""GradDrop: per coordinate, keep the positive or the negative gradients."""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics


class GradDropState(NamedTuple):
  weights: jax.Array  # shape=[T], dtype=float32; share of ‖g_t‖² kept
  key: jax.Array  # shape=[2], dtype=uint32; a raw PRNG key, split every step


def _drop_leaf(leaf: jax.Array, key: jax.Array, leak: jax.Array,
               purity_fn: Callable[[jax.Array], jax.Array] | None):
  """``(update, kept², total²)`` of one shared leaf, in float32.

  ``kept²`` and ``total²`` are per-task sums of squares of the kept and of
  all entries, relative to the leaf's largest entry (returned as well) so
  that they neither overflow nor underflow.
  """
  grads = leaf.astype(jnp.float32)
  total = jnp.sum(grads, axis=0)
  magnitude = jnp.sum(jnp.abs(grads), axis=0)
  purity = 0.5 * (1.0 + numerics.safe_div(total, magnitude))  # Eq. 1, P.
  if purity_fn is not None:
    purity = jnp.asarray(purity_fn(purity), jnp.float32)  # f(P).
  draw = jax.random.uniform(key, total.shape, jnp.float32)
  keep_positive = purity > draw  # One draw per coordinate, for every task.
  mask = jnp.where(keep_positive, grads > 0, grads < 0)  # M_t.
  kept = jnp.where(mask, grads, 0.0)
  # Σ_t (ℓ_t + (1 − ℓ_t) M_t) g_t, with one leak per task.
  rows = leak.reshape((-1,) + (1,) * (grads.ndim - 1))
  update = jnp.sum(rows * grads + (1.0 - rows) * kept, axis=0)
  largest = jnp.max(jnp.abs(grads))
  unit = numerics.safe_div(1.0, largest, 1.0)
  # Summed over every axis but the task axis; no reshape, which would need an
  # explicit output sharding on a sharded leaf.
  entry_axes = tuple(range(1, grads.ndim))
  return (update, jnp.sum((kept * unit) ** 2, axis=entry_axes),
          jnp.sum((grads * unit) ** 2, axis=entry_axes), largest)


def _kept_shares(kept_squares, total_squares, largests):
  """``‖M_t g_t‖² / ‖g_t‖²`` over all leaves, each leaf in its own scale."""
  overall = jnp.max(jnp.stack(largests))
  kept = jnp.zeros_like(kept_squares[0])
  total = jnp.zeros_like(total_squares[0])
  for leaf_kept, leaf_total, largest in zip(kept_squares, total_squares,
                                            largests):
    ratio = numerics.safe_div(largest, overall) ** 2  # <= 1: no overflow.
    kept = kept + ratio * leaf_kept
    total = total + ratio * leaf_total
  return numerics.safe_div(kept, total, 1.0)


def graddrop(
    num_tasks: int,
    *,
    leak: Any = 0.0,
    key: Any = 0,
    purity_fn: Callable[[jax.Array], jax.Array] | None = None,
    task_specific: base.TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Keeps, coordinate by coordinate, only the gradients of one sign.

  Chen, Ngiam, Huang, Luong, Kretzschmar, Chai and Anguelov, "Just Pick a
  Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout"
  (NeurIPS 2020), §3 and Algorithm 1. For every coordinate, the positive
  sign purity

  ``P = ½ (1 + Σ_t g_t / Σ_t |g_t|)``  (eq. 1)

  is the chance of keeping the positive entries: with one uniform draw
  ``U`` per coordinate, shared by all tasks, the mask of task ``t`` is
  ``M_t = 1[P > U] 1[g_t > 0] + 1[P < U] 1[g_t < 0]``. The update is
  ``Σ_t (ℓ_t + (1 − ℓ_t) M_t) g_t`` with the leak ``ℓ_t`` of task ``t`` (0
  in the paper's main experiments: full GradDrop; 1 is the plain sum; one
  value or one per task, as TorchJD's ``leak`` tensor). ``purity_fn`` is
  the paper's ``f`` (TorchJD's ``f``), applied to ``P`` before the draw:
  ``M_t = 1[f(P) > U] 1[g_t > 0] + 1[f(P) < U] 1[g_t < 0]``; it should
  increase monotonically and map [0, 1] to [0, 1] (default: the identity). A coordinate where every
  gradient is 0 has ``P = ½`` and stays 0.

  GradDrop is not a weighting of the Gramian: it acts per coordinate, so it
  is its own transformation on the skeleton every balancer uses
  (:func:`task_transformation`: task axis check, task-specific leaves,
  non-finite input gives a non-finite update and leaves the state, key
  included, as it was).

  **Decisions.** The paper applies GradDrop to the gradients at the
  activations where the task-specific heads meet the shared trunk; here it
  acts on the gradients of the shared parameters, coordinate by coordinate.
  Task-specific leaves get their own task's gradient untouched. The state's
  ``weights[t]`` is the share of task ``t``'s squared gradient norm that
  survives, ``ℓ + (1 − ℓ) ‖M_t g_t‖² / ‖g_t‖²`` (1 for a zero gradient):
  the coefficient that best explains the task's masked gradient by its raw
  one. ``purity_fn`` is a Python callable traced into the update (it must
  be a jnp function of an array); being no number, it is a static argument
  for ``optax.inject_hyperparams``, which can still inject ``leak``. It is a
  diagnostic; the update is not ``Σ_t w_t g_t``. The key is
  split at every update; a non-finite update keeps the old key.

  Args:
    num_tasks: T.
    leak: ``ℓ`` in [0, 1], the share of every gradient kept unmasked: a
      number, or a ``[T]`` array of one leak per task.
    key: a PRNG key (raw ``uint32[2]`` or typed) or an int seed.
    purity_fn: ``f``, a monotonically increasing jnp function applied
      elementwise to the purity ``P`` (None: the identity).
    task_specific: leaves that belong to one task (see :func:`balancer`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`GradDropState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.graddrop(2)
    >>> grads = jnp.array([[1.0, 2.0, -1.0], [3.0, -2.0, 0.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(3)))
    >>> updates[0], updates[2]  # P = 1 and P = 0: nothing to drop there.
    (Array(4., dtype=float32), Array(-1., dtype=float32))
  """
  name = 'graddrop'
  base.check_num_tasks(num_tasks)
  if purity_fn is not None and not callable(purity_fn):
    raise ValueError(f'purity_fn must be callable or None, got {purity_fn!r}.')
  if isinstance(leak, jax.core.Tracer) or jnp.ndim(leak) == 0:
    base.check_range('leak', leak, 0.0, 1.0)
  else:
    leak_array = np.asarray(leak, np.float64)
    if leak_array.shape != (num_tasks,):
      raise ValueError(f'leak must be a number or a [{num_tasks}] array, got '
                       f'shape {leak_array.shape}.')
    if not np.all((leak_array >= 0) & (leak_array <= 1)):
      raise ValueError(f'leak must be in [0, 1], got {leak_array.tolist()}.')

  def init(shared_params):
    del shared_params
    return GradDropState(weights=jnp.zeros([num_tasks], jnp.float32),
                         key=numerics.as_raw_key(key))

  def step(shared, specific, losses, state, inputs_finite):
    del losses  # Not used, but a non-finite one marks a bad step.
    base.check_shared(name, shared)
    next_key, draw_key = jax.random.split(state.key)
    leaf_keys = jax.random.split(draw_key, len(shared))
    leaks = jnp.broadcast_to(jnp.asarray(leak, jnp.float32), (num_tasks,))
    dropped = [_drop_leaf(leaf, leaf_key, leaks, purity_fn)
               for leaf, leaf_key in zip(shared, leaf_keys)]
    updates, kept_squares, total_squares, largests = zip(*dropped)
    weights = leaks + (1.0 - leaks) * _kept_shares(
        kept_squares, total_squares, largests)
    finite = inputs_finite & numerics.all_finite(*shared)
    # A NaN in every entry, so that optax.apply_if_finite skips the step.
    poison = jnp.where(finite, 1.0, jnp.nan)
    shared_updates = [(update * poison).astype(leaf.dtype)
                      for update, leaf in zip(updates, shared)]
    specific_updates = [jnp.sum(leaf.astype(jnp.float32), axis=0).astype(
        leaf.dtype) for leaf in specific]
    return base.StepResult(
        shared=shared_updates, specific=specific_updates,
        state=GradDropState(weights=weights.astype(jnp.float32),
                            key=next_key),
        finite=finite)

  return base.task_transformation(num_tasks, name, init, step,
                                  task_specific=task_specific)
