"""Checks shared by every factory and update: one-line ``ValueError``s.

Shape-setting hyper-parameters are Python ints checked when a method is
built; float hyper-parameters are checked only when concrete (under
``optax.inject_hyperparams`` they are traced). Inputs to ``update`` are
checked at trace time, never inside the compiled step.
"""

import math
from typing import Any, Callable
import warnings

import jax
import jax.numpy as jnp
import numpy as np

# --------------------------------------------------------------------------
# Hyper-parameters.


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


def check_task_vector(name: str, value: Any, *,
                      nonnegative: bool = False) -> Any:
  """Checks a concrete per-task vector hyper-parameter (None passes).

  The vector must be 1-D and finite; with ``nonnegative`` its entries must be
  >= 0 with a positive sum (a preference). Its length is checked against T
  by :func:`task_vector`. Traced values are not checked.
  """
  if value is None or isinstance(value, jax.core.Tracer):
    return value
  try:
    concrete = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError) as error:
    raise ValueError(f'{name} must be a vector of numbers, got {value!r}.'
                     ) from error
  if concrete.ndim != 1 or not np.all(np.isfinite(concrete)):
    raise ValueError(f'{name} must be a finite 1-D vector, got {value!r}.')
  if nonnegative and (np.any(concrete < 0) or concrete.sum() <= 0):
    raise ValueError(f'{name} must be >= 0 with a positive sum, got '
                     f'{value!r}.')
  return value


def loss_vector(name: str, task_losses: Any) -> jax.Array:
  """``[T]`` losses for a scalarisation's value, at least float32."""
  losses = jnp.asarray(task_losses)
  if losses.ndim != 1:
    raise ValueError(f'{name}: task_losses must have shape [T], got '
                     f'{losses.shape}.')
  return losses.astype(jnp.promote_types(losses.dtype, jnp.float32))


def task_vector(method: str, name: str, value: Any, num_tasks: int,
                default: float) -> jax.Array:
  """``value`` as a ``[T]`` float32 vector (``default`` everywhere if None)."""
  if value is None:
    return jnp.full([num_tasks], default, jnp.float32)
  vector = jnp.asarray(value, jnp.float32)
  if vector.shape != (num_tasks,):
    raise ValueError(f'{method}: {name} has shape {vector.shape}, but there '
                     f'are {num_tasks} tasks; expected ({num_tasks},).')
  return vector


def preference_vector(name: str, preference: Any) -> Callable[[int], Any]:
  """``num_tasks -> [T] float32`` preference, None for the method's default.

  ``preference`` is None or anything that broadcasts to ``[T]``; the shape is
  checked when the returned function first sees T (a weighting's ``init``).
  """
  if preference is not None:
    preference = jnp.asarray(preference, jnp.float32)

  def preference_for(num_tasks: int):
    if preference is None:
      return None
    try:
      return jnp.broadcast_to(preference, (num_tasks,))
    except ValueError:
      raise ValueError(
          f'{name}: preference has shape {preference.shape}, which does not '
          f'broadcast to ({num_tasks},).') from None

  return preference_for



# --------------------------------------------------------------------------
# Inputs of ``update``.


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



def check_shared(name: str, shared: list) -> None:
  """A balancer needs at least one shared leaf."""
  if not shared:
    raise ValueError(f'{name}: every leaf is task-specific; nothing to '
                     'balance.')


def check_task_grads(name: str, num_tasks: int, task_grads: Any) -> None:
  """Every leaf is a floating-point array with a leading task axis of size T."""
  check_task_axis(name, num_tasks, task_grads)
  for path, leaf in jax.tree_util.tree_leaves_with_path(task_grads):
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise ValueError(
          f'{name}: task_grads{jax.tree_util.keystr(path)} has dtype '
          f'{jnp.result_type(leaf)}; gradients must be floating point.')


def check_stacked_state(name: str, verb: str, stacked: tuple,
                        shared: list) -> None:
  """A T x P state holds one array per shared leaf of the task gradients."""
  if len(stacked) != len(shared):
    raise ValueError(
        f'{name}: the state {verb} {len(stacked)} shared leaves but '
        f'task_grads has {len(shared)}; init and update must see the same '
        'parameter tree and task_specific mask.')



# --------------------------------------------------------------------------
# Renamed arguments.

REMOVAL_VERSION = '0.3'  # of the 0.1 interfaces and the renamed arguments


def renamed(method: str, old: str, old_value: Any, new: str,
            new_value: Any) -> Any:
  """``new_value``, or ``old_value`` when the caller used the old name.

  The old name still works for one minor version and warns
  (``DeprecationWarning``) with the version that removes it.
  """
  if old_value is None:
    return new_value
  warnings.warn(f'{method}: the argument {old}= is deprecated and will be '
                f'removed in {REMOVAL_VERSION}; use {new}= instead.',
                DeprecationWarning, stacklevel=3)
  return old_value
