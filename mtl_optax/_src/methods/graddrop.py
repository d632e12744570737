"""GradDrop: per coordinate, keep the positive or the negative gradients."""

from typing import Any, Callable, NamedTuple

import warnings

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import optax

from mtl_optax._src import base
from mtl_optax._src import column_blocks
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics


class GradDropState(NamedTuple):
  """State of :func:`graddrop`.

  The update keeps each coordinate of some tasks' gradients and drops the
  others, so it is not ``Σ_t w_t g_t``; ``kept_share[t]`` (what
  :func:`mtl_optax.last_weights` reports) is the share of ``‖g_t‖²`` that
  the last finite update kept.
  """
  kept_share: jax.Array  # shape=[T], dtype=float32; share of ‖g_t‖² kept
  key: jax.Array  # shape=[2], dtype=uint32; a raw PRNG key, split every step

  def task_weights(self) -> jax.Array:
    return self.kept_share

  @property
  def weights(self) -> jax.Array:
    """Deprecated name of ``kept_share`` (removed in 0.3)."""
    warnings.warn('GradDropState.weights is deprecated and will be removed in 0.3; '
                  'use GradDropState.kept_share (the update is not Σ_t w_t g_t).',
                  DeprecationWarning, stacklevel=2)
    return self.kept_share


# Below this sum of squares (or above float32's range) a task's squares are
# summed again on gradients divided by a power of two: an entry whose square
# flushes to zero (|g| < 1e-19) then costs under 1e-7 of the sum for up to
# 1e10 entries.
_SMALLEST_SAFE_SQUARES = 1e-20


class _Dropped(NamedTuple):
  """GradDrop on some columns: their update and per-task sums."""
  kept_squares: jax.Array  # [T]; Σ (M_t g_t / s)², s the scale
  squares: jax.Array  # [T]; Σ (g_t / s)²
  magnitudes: jax.Array  # [T]; Σ |g_t|, only to tell 0 from underflow
  update: jax.Array  # the columns' Σ_t (ℓ_t + (1 − ℓ_t) M_t) g_t


def _task_sum(weights: jax.Array, grads: jax.Array) -> jax.Array:
  """``Σ_t weights[t] · grads[t]`` in float32."""
  return gramian_lib.weighted_sum(weights, [grads])[0]


def _drop_columns(grads: jax.Array, draw: jax.Array, leaks: jax.Array | None,
                  purity_fn: Callable[[jax.Array], jax.Array] | None,
                  inverse_scale: jax.Array | None) -> _Dropped:
  """GradDrop on gradients ``[T, ...]`` with one draw per column ``[...]``.

  ``inverse_scale`` (None: 1) multiplies the entries before they are
  squared, never the update.
  """
  grads = grads.astype(jnp.float32)
  # Sums over the task axis are dot products: on CPU, XLA's reduction over
  # the leading axis is several times slower, even in cache. The barrier
  # hides the constant weights, which XLA would turn back into a reduction.
  ones = lax.optimization_barrier(jnp.ones([grads.shape[0]], jnp.float32))
  magnitudes = jnp.abs(grads)
  total = _task_sum(ones, grads)
  magnitude = _task_sum(ones, magnitudes)
  if purity_fn is None:
    # P > U, i.e. ½ (1 + total / magnitude) > U, without the division. Where
    # every gradient is 0 the coordinate stays 0 whichever sign is kept.
    keep_positive = total > (2.0 * draw - 1.0) * magnitude  # Eq. 1.
  else:
    purity = 0.5 * (1.0 + numerics.safe_div(total, magnitude))  # Eq. 1, P.
    keep_positive = jnp.asarray(purity_fn(purity), jnp.float32) > draw
  # M_t g_t: the positive entries where that sign is kept, else the negative.
  kept = jnp.where(keep_positive, jnp.maximum(grads, 0.0),
                   jnp.minimum(grads, 0.0))
  # Σ_t (ℓ_t + (1 − ℓ_t) M_t) g_t, with one leak per task (None: ℓ = 0).
  if leaks is None:
    update = _task_sum(ones, kept)
  else:
    update = _task_sum(leaks, grads) + _task_sum(1.0 - leaks, kept)
  if inverse_scale is not None:
    grads, kept = grads * inverse_scale, kept * inverse_scale
  # Summed over every axis but the task axis; no reshape, which would need an
  # explicit output sharding on a sharded leaf.
  entry_axes = tuple(range(1, grads.ndim))
  return _Dropped(jnp.sum(kept * kept, axis=entry_axes),
                  jnp.sum(grads * grads, axis=entry_axes),
                  jnp.sum(magnitudes, axis=entry_axes), update)


def _drop_leaf(leaf: jax.Array, draw: jax.Array, leaks: jax.Array | None,
               purity_fn: Callable[[jax.Array], jax.Array] | None,
               inverse_scale: jax.Array | None) -> _Dropped:
  """:func:`_drop_columns` on a whole leaf.

  A large leaf on CPU goes through column blocks that stay in cache: its
  sums over the task axis are then over 10 times faster
  (column_blocks.py). The draws are the same either way.
  """
  columns = column_blocks.width(leaf)
  if columns is None:
    return _drop_columns(leaf, draw, leaks, purity_fn, inverse_scale)
  sums, update = column_blocks.scan(
      lambda block, block_draw: _split_update(_drop_columns(
          block, block_draw, leaks, purity_fn, inverse_scale)),
      leaf.reshape(leaf.shape[0], -1), draw.reshape(-1), columns=columns)
  kept_squares, squares, magnitudes = sums
  assert update is not None  # The blocks' updates, concatenated.
  return _Dropped(kept_squares, squares, magnitudes,
                  update.reshape(leaf.shape[1:]))


def _split_update(dropped: _Dropped):
  """``(sums, update)``: what :func:`column_blocks.scan` adds up and joins."""
  return (dropped.kept_squares, dropped.squares, dropped.magnitudes), (
      dropped.update)


def _drop(shared: list, draws: list, leaks: jax.Array | None,
          purity_fn: Callable[[jax.Array], jax.Array] | None,
          inverse_scale: jax.Array | None = None):
  """``(updates, kept², total², Σ|g|)`` over the shared leaves."""
  dropped = [_drop_leaf(leaf, draw, leaks, purity_fn, inverse_scale)
             for leaf, draw in zip(shared, draws)]
  return ([d.update for d in dropped],
          sum(d.kept_squares for d in dropped),
          sum(d.squares for d in dropped),
          sum(d.magnitudes for d in dropped))


def uniform_draws(key: jax.Array, shapes) -> tuple[list[jax.Array], jax.Array]:
  """``(draws, next_key)``: float32 draws, uniform in [0, 1), of each shape.

  The bits come from XLA's own threefry generator
  (``lax.rng_bit_generator``), seeded by four words drawn from a split of
  ``key``: the hash of ``jax.random.uniform`` (threefry-2x32), another
  stream, evaluated by XLA in one pass: 0.59x the time of
  ``jax.random.uniform`` for 1e6 draws, 0.30x for 1e7 on CPU
  (benchmarks/results/cpu_limits.md). ``key`` is a raw ``uint32[2]`` key;
  ``next_key`` follows it.
  """
  next_key, draw_key = jax.random.split(key)
  draws = []
  for shape, leaf_key in zip(shapes, jax.random.split(draw_key, len(shapes))):
    seed = jax.random.bits(leaf_key, (4,), jnp.uint32)
    size = int(np.prod(shape, dtype=np.int64))
    _, bits = lax.rng_bit_generator(
        seed, (max(size, 1),), jnp.uint32,
        algorithm=lax.RandomAlgorithm.RNG_THREE_FRY)
    # The top 23 bits as the mantissa of a float in [1, 2), minus 1.
    unit = lax.bitcast_convert_type(
        (bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0
    draws.append(unit[:size].reshape(shape))
  return draws, next_key


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

  no_leak = (not isinstance(leak, jax.core.Tracer)
             and bool(np.all(np.asarray(leak) == 0)))

  def init(shared_params):
    del shared_params
    return GradDropState(kept_share=jnp.zeros([num_tasks], jnp.float32),
                         key=numerics.as_raw_key(key))

  def step(shared, specific, losses, state, inputs_finite):
    del losses  # Not used, but a non-finite one marks a bad step.
    base.check_shared(name, shared)
    draws, next_key = uniform_draws(state.key,
                                    [leaf.shape[1:] for leaf in shared])
    # A leak known to be 0 (the paper's GradDrop) costs no pass over J.
    leaks = None if no_leak else jnp.broadcast_to(
        jnp.asarray(leak, jnp.float32), (num_tasks,))
    dropped = _drop(shared, draws, leaks, purity_fn)
    _, _, squares, magnitudes = dropped
    in_range = jnp.all(jnp.isfinite(squares) & (
        (squares > _SMALLEST_SAFE_SQUARES) | (magnitudes == 0)))
    # Squares out of float32's range (or non-finite entries): sum them again
    # on the entries divided by a power of two, as the Gramian does.
    updates, kept_squares, squares, _ = lax.cond(
        in_range, lambda: dropped,
        lambda: _drop(shared, draws, leaks, purity_fn,
                      1.0 / gramian_lib.power_of_two_scale(shared)))
    shares = numerics.safe_div(kept_squares, squares, 1.0)
    weights = shares if no_leak else leaks + (1.0 - leaks) * shares
    # A sum of squares is non-finite exactly when an entry is (a max can
    # miss a NaN on CPU).
    finite = inputs_finite & numerics.all_finite(squares)
    # A NaN in every entry, so that optax.apply_if_finite skips the step.
    poison = jnp.where(finite, 1.0, jnp.nan)
    shared_updates = [(update * poison).astype(leaf.dtype)
                      for update, leaf in zip(updates, shared)]
    specific_updates = base.own_task_updates(specific)
    return base.StepResult(
        shared=shared_updates, specific=specific_updates,
        state=GradDropState(kept_share=weights.astype(jnp.float32),
                            key=next_key),
        finite=finite)

  return base.task_transformation(num_tasks, name, init, step,
                                  task_specific=task_specific)
