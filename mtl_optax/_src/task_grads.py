"""Per-task gradients: one forward pass, one backward pass per task."""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from mtl_optax._src import validation


def map_over_tasks(fn: Callable[[jax.Array], Any], num_tasks: int, dtype,
                   chunk_size: int | None) -> Any:
  """``fn(e_t)`` for every unit vector ``e_t``, stacked on a leading task axis.

  ``chunk_size`` None (or >= T) unrolls one call per task; otherwise the unit
  vectors go ``chunk_size`` at a time through a ``lax.map`` of a ``vmap``,
  which bounds the memory of the calls to ``chunk_size`` of them at once.
  """
  basis = jnp.eye(num_tasks, dtype=dtype)
  if chunk_size is None or chunk_size >= num_tasks:
    results = [fn(basis[t]) for t in range(num_tasks)]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *results)
  num_chunks = -(-num_tasks // chunk_size)
  padded = jnp.zeros((num_chunks * chunk_size, num_tasks), dtype)
  chunks = padded.at[:num_tasks].set(basis).reshape(
      num_chunks, chunk_size, num_tasks)
  chunked = jax.lax.map(jax.vmap(fn), chunks)
  return jax.tree.map(
      lambda leaf: leaf.reshape((-1,) + leaf.shape[2:])[:num_tasks], chunked)


def value_and_task_grads(
    fn: Callable[..., Any],
    *,
    has_aux: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
  """Turns a function returning per-task losses into one returning their grads.

  ``fn(params, *args)`` returns the task losses, shape ``[T]`` (and an auxiliary
  value if ``has_aux``). The returned function computes ``fn`` once, keeps its
  linearisation, and pulls back one unit cotangent per task, so the cost is one
  forward plus T backward passes: about ``(1 + 2T) / 3`` times the gradient of
  the summed loss, the FLOP bound for T separate gradients that share a
  forward pass. Recomputing the forward per task (``vmap(grad)``) costs more.

  Args:
    fn: ``fn(params, *args) -> task_losses`` or ``(task_losses, aux)``.
    has_aux: whether ``fn`` returns an auxiliary value.
    chunk_size: if given, tasks are pulled back ``chunk_size`` at a time inside
      a ``lax.map`` (vectorised within a chunk), which bounds the memory of the
      backward passes at the price of less parallelism. ``None`` unrolls one
      backward pass per task, which measured fastest on CPU. On CPU, XLA
      runs convolution gradients 15-23x slower inside the ``lax.map``: keep
      ``None`` for convolutional models there (docs/guides/many_tasks.md).

  Returns:
    A function of ``(params, *args)`` returning ``(task_losses, task_grads)``,
    or ``((task_losses, aux), task_grads)`` if ``has_aux``. ``task_grads`` has
    the structure of ``params`` and every leaf gains a leading task axis of
    size T. It equals T separate ``jax.grad`` calls.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> losses_fn = lambda w: jnp.stack([jnp.sum(w ** 2), jnp.sum(3.0 * w)])
    >>> losses, grads = mtl.value_and_task_grads(losses_fn)(jnp.ones(2))
    >>> grads
    Array([[2., 2.],
           [3., 3.]], dtype=float32)
  """
  if chunk_size is not None:
    validation.check_positive_int('chunk_size', chunk_size)

  def wrapped(params, *args):
    outputs = jax.vjp(lambda p: fn(p, *args), params, has_aux=has_aux)
    if has_aux:
      task_losses, pullback, aux = outputs
    else:
      task_losses, pullback = outputs
    task_losses = jnp.asarray(task_losses)
    if task_losses.ndim != 1:
      raise ValueError(
          'value_and_task_grads: fn must return per-task losses of shape [T], '
          f'got shape {task_losses.shape}.')
    task_grads = map_over_tasks(lambda unit: pullback(unit)[0],
                                task_losses.shape[0], task_losses.dtype,
                                chunk_size)
    value = (task_losses, aux) if has_aux else task_losses
    return value, task_grads

  return wrapped
