"""Adam's moment estimates, kept per task (MTAdam, AdaTask, M-ConFIG).

Adam (Kingma and Ba, ICLR 2015) keeps, per parameter entry, an exponential
moving average of the gradient, ``m ← β₁ m + (1 − β₁) g``, and of its
square, ``v ← β₂ v + (1 − β₂) g²``, and steps along
``m̂ / (√v̂ + ε)`` with the bias corrections ``m̂ = m / (1 − β₁^k)`` and
``v̂ = v / (1 − β₂^k)`` at update ``k = 1, 2, …``.

The per-task optimizers keep these estimates for every task on the shared
parameters (T x P floats each). Here the second moment is stored as its root,
``r = √v``, updated as ``r ← hypot(√β₂ r, √(1 − β₂) g)``: the same numbers,
but neither ``g²`` nor ``v`` is ever formed, so the state stays finite and
exact for float32 gradients near 1e±20, whose squares leave the float32
range (optax's ``scale_by_adam`` stores ``v`` and overflows there).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics

LearningRate = float | jax.Array | Callable[[jax.Array], Any]


def opened_state(name: str, state: Any, field: str, verb: str,
                 shared: list) -> Any:
  """``state`` behind an optimization barrier, its T x P field checked.

  A state that jit closes over is a constant, which XLA would fold into the
  arithmetic (reassociating it): the update would then depend on how it was
  compiled. The barrier keeps the state opaque.
  """
  state = jax.lax.optimization_barrier(state)
  base.check_shared(name, shared)
  base.check_stacked_state(name, verb, getattr(state, field), shared)
  return state


def per_task_moments(shared: list, specific: list, num_tasks: int) -> dict:
  """Zero moments: ``mu``/``root_nu`` per task on the shared leaves,
  ``specific_mu``/``specific_root_nu`` on the task-specific ones."""
  return dict(mu=zeros_like_leaves(shared, num_tasks),
              root_nu=zeros_like_leaves(shared, num_tasks),
              specific_mu=zeros_like_leaves(specific),
              specific_root_nu=zeros_like_leaves(specific))


def check_hyperparameters(b1: Any, b2: Any, eps: Any,
                          learning_rate: Any = None) -> None:
  """One-line ``ValueError`` for a concrete hyper-parameter out of range."""
  if learning_rate is not None and not callable(learning_rate):
    base.check_range('learning_rate', learning_rate, 0.0)
  base.check_range('b1', b1, 0.0, 1.0, high_open=True)
  base.check_range('b2', b2, 0.0, 1.0, high_open=True)
  base.check_range('eps', eps, 0.0)


def learning_rate_at(learning_rate: LearningRate,
                     count: jax.Array) -> jax.Array:
  """The step size of the update after ``count`` updates (optax's rule)."""
  if callable(learning_rate):
    return jnp.asarray(learning_rate(count), jnp.float32)
  return jnp.asarray(learning_rate, jnp.float32)


def zeros_like_leaves(leaves: list, num_tasks: int | None = None) -> tuple:
  """Zeros per leaf in its dtype promoted to float32, laid out as the leaf.

  With ``num_tasks``, ``[T, *leaf.shape]`` per leaf (a T x P state);
  otherwise ``leaf.shape``.
  """
  if num_tasks is not None:
    return base.stacked_zeros(num_tasks, leaves, jnp.float32)
  return tuple(
      jnp.zeros_like(leaf, jnp.promote_types(jnp.asarray(leaf).dtype,
                                             jnp.float32))
      for leaf in leaves)


def split_params(task_specific: base.TaskSpecific,
                 params: Any) -> tuple[list, list]:
  """``(shared, task-specific)`` parameter leaves, as the skeleton splits."""
  flags = base.task_specific_flags(task_specific, params)
  return base.split_leaves(flags, params)


def bias_corrections(count: jax.Array, b1: Any,
                     b2: Any) -> tuple[jax.Array, jax.Array]:
  """``(1 / (1 − β₁^k), 1 / √(1 − β₂^k))`` at update ``k = count + 1``.

  The moments are multiplied by these inverses: one division per step
  rather than one per entry.
  """
  k = count.astype(jnp.float32) + 1.0
  first = 1.0 - jnp.power(jnp.asarray(b1, jnp.float32), k)
  second = jnp.sqrt(1.0 - jnp.power(jnp.asarray(b2, jnp.float32), k))
  return 1.0 / first, 1.0 / second


def moments(mean: jax.Array, root: jax.Array, grads: jax.Array, b1: Any,
            b2: Any, finite: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(m, √v)`` after one more gradient, or as they were if not ``finite``.

  The guard is in the pass that writes the moments: a second ``where`` over
  T x P floats would read and write them all again.
  """
  grads = gramian_lib.sharded_like(grads.astype(mean.dtype), mean)
  b1 = jnp.asarray(b1, mean.dtype)
  b2 = jnp.asarray(b2, mean.dtype)
  new_mean = b1 * mean + (1.0 - b1) * grads
  old_part, new_part = jnp.sqrt(b2) * root, jnp.sqrt(1.0 - b2) * grads
  # hypot's derivative is NaN at (0, 0) on newer JAX: the double where keeps
  # the value 0 there with a zero derivative.
  both_zero = (old_part == 0) & (new_part == 0)
  new_root = jnp.where(
      both_zero, 0.0,
      jnp.hypot(jnp.where(both_zero, 1.0, old_part), new_part))
  return (jnp.where(finite, new_mean, mean).astype(mean.dtype),
          jnp.where(finite, new_root, root).astype(root.dtype))


def direction(mean: jax.Array, root: jax.Array, corrections, eps: Any
              ) -> jax.Array:
  """Adam's ``m̂ / (√v̂ + ε)`` (0 where ``√v̂ + ε`` is 0, i.e. ε = 0, g = 0)."""
  inverse_first, inverse_second = corrections
  return numerics.safe_div(mean * inverse_first.astype(mean.dtype),
                           root * inverse_second.astype(root.dtype) + eps)


def own_task_adam(specific: list, means: tuple, roots: tuple, count, b1, b2,
                  eps, finite) -> tuple[list, tuple, tuple]:
  """Plain Adam on each task-specific leaf's own-task gradient.

  Returns ``(directions, means, roots)``: the ``m̂ / (√v̂ + ε)`` of every
  leaf (not yet scaled by the learning rate) and its new moments.
  """
  grads = base.own_task_updates(specific)
  corrections = bias_corrections(count, b1, b2)
  new_means, new_roots, directions = [], [], []
  for grad, mean, root in zip(grads, means, roots):
    mean, root = moments(mean, root, grad, b1, b2, finite)
    new_means.append(mean)
    new_roots.append(root)
    directions.append(direction(mean, root, corrections, eps))
  return directions, tuple(new_means), tuple(new_roots)
