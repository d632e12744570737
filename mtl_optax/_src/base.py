"""The contract every balancing method follows, and the code that enforces it.

A method is a *weighting*: a function of the task Gramian, the task losses and
its own state that returns task weights ``w``. :func:`balancer` turns a
weighting into an ``optax.GradientTransformationExtraArgs`` that

1. checks the task axis of ``task_grads`` (and ``task_losses``) at trace time,
2. splits the leaves into shared and task-specific ones,
3. computes the Gramian of the shared leaves (never concatenating them),
4. asks the weighting for ``w``,
5. returns ``Σ_t w_t g_t`` on shared leaves and each task-specific leaf's own
   task gradient, and
6. keeps the previous state whenever an input is not finite, while making the
   update non-finite, so that ``optax.apply_if_finite`` skips the step.
"""

import math
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics

TaskSpecific = Any  # None, a boolean pytree like params (or a prefix of
# it), or a callable params -> such a pytree.


class TaskStats(NamedTuple):
  """What a weighting may read about the current step.

  Attributes:
    gram: ``[T, T]`` float32 Gramian of the shared task gradients divided by
      ``scale**2`` (None for loss-level methods, which never compute it).
    scale: ``()`` float32 power of two; the true Gramian is
      ``scale**2 * gram``. It is 1 unless the gradients' squares leave the
      float32 range. A weighting that is invariant to a positive factor on the
      Gramian (most are) can ignore it.
    losses: ``[T]`` float32 task losses, or None when the user gave none.
  """
  gram: jax.Array | None
  scale: jax.Array | None
  losses: jax.Array | None

  @property
  def norms(self) -> jax.Array:
    """``[T]`` Euclidean norms of the shared task gradients (true scale)."""
    return numerics.safe_sqrt(jnp.diagonal(self.gram)) * self.scale


class WeightsState(NamedTuple):
  """State of a stateless weighting: only the weights of the last update."""
  weights: jax.Array  # shape=[T], dtype=float32


class Weigh(Protocol):

  def __call__(self, stats: TaskStats, state: Any) -> tuple[jax.Array, Any]:
    ...


class LossBalancer(optax.GradientTransformationExtraArgs):
  """A balancer whose weights depend on the losses only.

  Besides the per-task-gradient path (``init``/``update``), it offers the
  one-backward path: ``weigh_losses(task_losses, state)`` returns the same
  weights (with ``stop_gradient``) and the next state, so a user can
  differentiate ``jnp.dot(weights, task_losses)`` once instead of computing
  per-task gradients. Both paths give the same update.
  """

  def __new__(cls, init, update, weigh_losses):
    transformation = super().__new__(cls, init, update)
    transformation.weigh_losses = weigh_losses
    return transformation


# --------------------------------------------------------------------------
# Validation, shared by every factory.


def check_num_tasks(num_tasks: Any) -> int:
  if isinstance(num_tasks, bool) or not isinstance(num_tasks, int):
    raise ValueError(
        f'num_tasks must be a Python int >= 1, got {num_tasks!r}.')
  if num_tasks < 1:
    raise ValueError(f'num_tasks must be >= 1, got {num_tasks}.')
  return num_tasks


def check_positive_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f'{name} must be a Python int >= 1, got {value!r}.')
  return value


def check_range(name: str, value: Any, low: float | None = None,
                high: float | None = None, *, low_open: bool = False,
                high_open: bool = False) -> Any:
  """Raises ``ValueError`` if a concrete ``value`` is outside the range.

  Traced values (under ``optax.inject_hyperparams``) are not checked.
  """
  if isinstance(value, jax.core.Tracer):
    return value
  try:
    number = float(value)
  except TypeError as error:
    raise ValueError(f'{name} must be a number, got {value!r}.') from error
  too_low = low is not None and (number <= low if low_open else number < low)
  too_high = high is not None and (
      number >= high if high_open else number > high)
  if not math.isfinite(number) or too_low or too_high:
    left = '(' if low_open else '['
    right = ')' if high_open else ']'
    low_text = '-inf' if low is None else f'{low:g}'
    high_text = 'inf' if high is None else f'{high:g}'
    raise ValueError(f'{name} must be in {left}{low_text}, {high_text}{right}, '
                     f'got {value!r}.')
  return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
  if value not in choices:
    raise ValueError(f'{name} must be one of {choices}, got {value!r}.')
  return value


# --------------------------------------------------------------------------
# Inputs.


def check_task_axis(name: str, num_tasks: int, task_grads: Any) -> None:
  leaves = jax.tree.leaves(task_grads)
  if not leaves:
    raise ValueError(f'{name}: task_grads has no leaves.')
  for leaf in leaves:
    if jnp.ndim(leaf) == 0 or leaf.shape[0] != num_tasks:
      raise ValueError(
          f'{name} was built for num_tasks={num_tasks}, but a task_grads leaf '
          f'has shape {jnp.shape(leaf)}; every leaf needs a leading task axis '
          f'of size {num_tasks}.')


def check_task_losses(name: str, num_tasks: int, task_losses: Any,
                      required: bool) -> jax.Array | None:
  if task_losses is None:
    if required:
      raise ValueError(
          f'{name} needs the per-task losses: call '
          f'update(task_grads, state, params, task_losses=losses) with a '
          f'[{num_tasks}] array.')
    return None
  task_losses = jnp.asarray(task_losses)
  if task_losses.shape != (num_tasks,):
    raise ValueError(
        f'{name} was built for num_tasks={num_tasks}, but task_losses has '
        f'shape {task_losses.shape}; expected ({num_tasks},).')
  return task_losses.astype(jnp.float32)


def task_specific_flags(task_specific: TaskSpecific, tree: Any) -> list[bool]:
  """One bool per leaf of ``tree``: True where the leaf is task-specific."""
  num_leaves = len(jax.tree.leaves(tree))
  if task_specific is None:
    return [False] * num_leaves
  mask = task_specific(tree) if callable(task_specific) else task_specific
  try:
    # The mask may be a prefix of the tree: a boolean at a subtree covers
    # every leaf below it, e.g. {'trunk': False, 'heads': True}.
    mask = jax.tree.map(
        lambda flag, subtree: jax.tree.map(lambda _: bool(flag), subtree),
        mask, tree)
  except ValueError as error:
    raise ValueError(
        'task_specific must be a boolean pytree matching params (or a prefix '
        f'of it), or a callable returning one: {error}') from error
  flags = jax.tree.leaves(mask)
  if len(flags) != num_leaves:
    raise ValueError(
        f'task_specific must give one boolean per parameter leaf '
        f'({num_leaves}), got {len(flags)}.')
  return flags


def split_leaves(flags: list[bool], tree: Any) -> tuple[list, list]:
  """``(shared_leaves, specific_leaves)`` of ``tree`` according to ``flags``."""
  leaves = jax.tree.leaves(tree)
  shared = [leaf for leaf, flag in zip(leaves, flags) if not flag]
  specific = [leaf for leaf, flag in zip(leaves, flags) if flag]
  return shared, specific


def merge_leaves(flags: list[bool], treedef, shared: list, specific: list):
  shared, specific = iter(shared), iter(specific)
  leaves = [next(specific) if flag else next(shared) for flag in flags]
  return jax.tree.unflatten(treedef, leaves)


# --------------------------------------------------------------------------
# The transformation.


def balancer(
    num_tasks: int,
    weigh: Weigh,
    *,
    name: str,
    init_state: Callable[[Any], Any] | None = None,
    needs_losses: bool = False,
    uses_gram: bool = True,
    task_specific: TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  """Builds a balancing transformation from a weighting.

  Args:
    num_tasks: T, the size of the leading task axis of every gradient leaf.
    weigh: ``weigh(stats, state) -> (weights, state)`` with ``weights`` of
      shape ``[T]``. Called once per update under trace.
    name: the method's public name, used in error messages.
    init_state: ``params -> state``, a NamedTuple with a ``weights`` field.
      Defaults to :class:`WeightsState`.
    needs_losses: whether ``update`` requires ``task_losses``.
    uses_gram: False for loss-level methods: no Gramian is computed, and the
      result is a :class:`LossBalancer` offering the one-backward path.
    task_specific: which parameter leaves belong to one task only (a boolean
      pytree like params, or a callable returning one). They are left out of
      the Gramian and get their own task's gradient. Default: all shared.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (a :class:`LossBalancer` if
    ``uses_gram`` is False).
  """
  check_num_tasks(num_tasks)

  def init_fn(params):
    del params
    return WeightsState(weights=jnp.zeros([num_tasks], jnp.float32))

  init = init_fn if init_state is None else init_state

  def update_fn(task_grads, state, params=None, *, task_losses=None,
                **extra_args):
    del params, extra_args
    check_task_axis(name, num_tasks, task_grads)
    losses = check_task_losses(name, num_tasks, task_losses, needs_losses)
    flags = task_specific_flags(task_specific, task_grads)
    shared, specific = split_leaves(flags, task_grads)

    if uses_gram:
      if not shared:
        raise ValueError(f'{name}: every leaf is task-specific; nothing to '
                         'balance.')
      gram, scale = gramian_lib.gramian(shared)
      inputs_finite = numerics.all_finite(gram, scale, losses)
    else:
      gram = scale = None
      inputs_finite = numerics.all_finite(losses)

    weights, new_state = weigh(TaskStats(gram, scale, losses), state)
    weights = jnp.where(inputs_finite, weights.astype(jnp.float32), jnp.nan)
    own_task = jnp.where(inputs_finite, 1.0, jnp.nan) * jnp.ones(
        [num_tasks], jnp.float32)
    shared_updates = gramian_lib.weighted_sum(weights, shared)
    specific_updates = gramian_lib.weighted_sum(own_task, specific)

    # Leaves the Gramian did not see can still hold a NaN or an Inf.
    unchecked = specific_updates if uses_gram else (
        shared_updates + specific_updates)
    finite = inputs_finite & numerics.all_finite(*unchecked)
    new_state = numerics.where_finite(
        finite, new_state._replace(weights=weights), state)
    treedef = jax.tree.structure(task_grads)
    updates = merge_leaves(flags, treedef, shared_updates, specific_updates)
    return updates, new_state

  if uses_gram:
    return optax.GradientTransformationExtraArgs(init, update_fn)

  def weigh_losses(task_losses, state):
    losses = jax.lax.stop_gradient(
        check_task_losses(name, num_tasks, task_losses, needs_losses))
    weights, new_state = weigh(TaskStats(None, None, losses), state)
    weights = jax.lax.stop_gradient(weights.astype(jnp.float32))
    new_state = numerics.where_finite(
        numerics.all_finite(losses), new_state._replace(weights=weights), state)
    return weights, new_state

  return LossBalancer(init, update_fn, weigh_losses)
