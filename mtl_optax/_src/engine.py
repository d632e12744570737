"""The Gramian engine: balance tasks without ever holding the T x P gradients.

With ``J`` the T x P Jacobian of the task losses with respect to the shared
parameters, column t of the Gramian is

  ``G e_t = J (Jᵀ e_t)``,

a forward-mode product (``J v``) of a reverse-mode product (``Jᵀ e_t``). Both
come from one linearisation of the loss function, so the Gramian is built a
few tasks at a time: memory O(k P + T²) for chunks of k tasks, never T x P.
The update ``d = Jᵀ w`` is one more reverse pass with cotangent ``w``.

Cost: one forward pass, then per task one reverse and one forward-mode pass
(about 3 forward passes' worth), then one reverse pass for ``d``; the stacked
path (:func:`value_and_task_grads`) costs one forward and T reverse passes.

Loss-level weightings read no Gramian: the engine then makes one reverse pass
of ``Σ_t w_t L_t`` (the one-backward path).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics
from mtl_optax._src import task_grads as task_grads_lib


def _check_chunk_size(chunk_size):
  if chunk_size is not None:
    base.check_positive_int('chunk_size', chunk_size)


def _max_abs_per_task(leaves: list) -> jax.Array:
  """``[k]`` largest magnitude of each row of ``k`` stacked vectors.

  ``max(max x, −min x)``: XLA may write ``|x|`` out in full before reducing
  it, the two reductions read ``x`` in place (gramian.py's ``_max_abs``).
  """
  rows = [leaf.reshape(leaf.shape[0], -1) for leaf in leaves if leaf.size]
  return jnp.max(jnp.stack([
      jnp.maximum(jnp.max(row, axis=1), -jnp.min(row, axis=1))
      for row in rows]), axis=0)


class _Linearised:
  """``fn`` linearised at ``params``: its JVP and VJP on (shared, specific)."""

  def __init__(self, name, fn, params, args, flags, has_aux):
    treedef = jax.tree.structure(params)
    shared, specific = base.split_leaves(flags, params)
    base.check_shared(name, shared)

    def of_leaves(leaves):
      shared_leaves, specific_leaves = leaves
      return fn(base.merge_leaves(flags, treedef, shared_leaves,
                                  specific_leaves), *args)

    outputs = jax.linearize(of_leaves, (shared, specific), has_aux=has_aux)
    if has_aux:
      losses, self.jvp, self.aux = outputs
    else:
      (losses, self.jvp), self.aux = outputs, None
    losses = jnp.asarray(losses)
    if losses.ndim != 1 or not jnp.issubdtype(losses.dtype, jnp.floating):
      raise ValueError(
          f'{name}: fn must return per-task losses, a float array of shape '
          f'[T]; got {losses.dtype} of shape {losses.shape}.')
    self.losses = losses
    self.num_tasks = losses.shape[0]
    self.shared, self.specific = shared, specific
    transpose = jax.linear_transpose(self.jvp, (shared, specific))
    self.vjp = lambda cotangent: transpose(cotangent)[0]

  def gramian(self, chunk_size):
    """``(gram, scale)`` of the shared leaves, as TaskStats expects them."""
    zero_specific = [jnp.zeros_like(leaf) for leaf in self.specific]

    def column(unit):
      pulled = self.vjp(unit.astype(self.losses.dtype))[0]  # Jᵀ e_t
      # Jᵀ e_t is rescaled by a power of two before J is applied, so that
      # neither product leaves the float range (recorded, undone below).
      scale = numerics.power_of_two_near(_max_abs_per_task(
          [leaf[None] for leaf in pulled])[0])
      tangent = [(leaf / scale.astype(leaf.dtype)) for leaf in pulled]
      return self.jvp((tangent, zero_specific)), scale  # G e_t / scale

    columns, scales = task_grads_lib.map_over_tasks(
        column, self.num_tasks, self.losses.dtype, chunk_size)
    accumulate = jnp.promote_types(columns.dtype, jnp.float32)
    columns, scales = columns.astype(accumulate), scales.astype(accumulate)
    # Row t holds G[t, :] / s_t. With S = max_t s_t, the Gramian over S² is
    # G[t, :] / s_t · (s_t / S) / S: every factor stays in range.
    largest = jnp.max(scales)
    gram = columns * (scales / largest)[:, None] / largest
    gram = 0.5 * (gram + gram.T)  # Forward-mode round-off is not symmetric.
    return gram, largest

  def combine(self, weights, specific_weights):
    """``Σ_t w_t g_t`` on shared leaves, ``Σ_t s_t g_t`` on the others.

    A task-specific leaf has one task's gradient only, so ``s = 1`` gives it
    that gradient as is.
    """
    dtype = self.losses.dtype
    if not self.specific:
      return self.vjp(weights.astype(dtype))[0], []
    cotangents = jnp.stack([weights.astype(dtype),
                            specific_weights.astype(dtype)])
    shared, specific = jax.vmap(self.vjp)(cotangents)  # One batched pass.
    return [leaf[0] for leaf in shared], [leaf[1] for leaf in specific]


def value_and_gramian(
    fn: Callable[..., Any],
    *,
    has_aux: bool = False,
    chunk_size: int | None = None,
    task_specific: base.TaskSpecific = None,
) -> Callable[..., Any]:
  """The task losses and the Gramian of their gradients, without the gradients.

  ``G[i, j] = <∇L_i, ∇L_j>`` over the shared parameters is built column by
  column as ``G e_t = J (Jᵀ e_t)`` (a reverse-mode then a forward-mode product
  of one linearisation of ``fn``), ``chunk_size`` tasks at a time, so the
  T x P per-task gradients are never materialised.

  Args:
    fn: ``fn(params, *args) -> task_losses`` (shape ``[T]``), or
      ``(task_losses, aux)`` if ``has_aux``.
    has_aux: whether ``fn`` returns an auxiliary value.
    chunk_size: tasks per chunk (vectorised within a chunk, a ``lax.map``
      across chunks); memory grows with it. ``None`` unrolls one column per
      task. On CPU, XLA runs convolution gradients 15-23x slower inside the
      ``lax.map``: keep ``None`` for convolutional models there.
    task_specific: parameter leaves that belong to one task (as for the
      balancers); they stay out of the Gramian.

  Returns:
    A function of ``(params, *args)`` returning ``(task_losses, gram)``, or
    ``((task_losses, aux), gram)``, with ``gram`` the ``[T, T]`` Gramian in
    float32 (float64 for float64 parameters).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> fn = lambda w: jnp.stack([jnp.sum(w ** 2), jnp.sum(3.0 * w)])
    >>> losses, gram = mtl.value_and_gramian(fn)(jnp.ones(2))
    >>> gram  # rows of J: [2, 2] and [3, 3]
    Array([[ 8., 12.],
           [12., 18.]], dtype=float32)
  """
  _check_chunk_size(chunk_size)

  def wrapped(params, *args):
    flags = base.task_specific_flags(task_specific, params)
    linear = _Linearised('value_and_gramian', fn, params, args, flags, has_aux)
    gram, scale = linear.gramian(chunk_size)
    value = (linear.losses, linear.aux) if has_aux else linear.losses
    return value, gram * scale * scale

  return wrapped


def value_and_balanced_grad(
    fn: Callable[..., Any],
    weighting: base.Weighting,
    *,
    has_aux: bool = False,
    chunk_size: int | None = None,
    task_specific: base.TaskSpecific = None,
) -> Callable[..., Any]:
  """The balanced gradient of task losses, through the Gramian engine.

  Computes what ``mtl.balancer(T, weighting)`` returns on the stacked
  per-task gradients, ``Σ_t w_t ∇L_t`` on the shared parameters and each
  task-specific leaf's own-task gradient, without materialising the per-task
  gradients: the weighting reads the Gramian from :func:`value_and_gramian`
  and ``d = Jᵀ w`` is one reverse pass. A loss-level weighting (which reads no
  Gramian) costs a single reverse pass of ``Σ_t w_t L_t``: this is also the
  one-backward path of those methods.

  The result is a plain gradient: give it to any optax optimizer. The
  weighting's state lives next to the optimizer's and follows the balancers'
  rules: a non-finite loss or Gramian makes ``grads`` NaN (so
  ``optax.apply_if_finite`` skips the step) and returns the state unchanged.

  Methods that need the per-coordinate gradients (GradDrop, the gradient EMA
  and so DB-MTL) are transformations, not weightings: pass them
  ``mtl.value_and_task_grads``' stacked gradients instead.

  Args:
    fn: ``fn(params, *args) -> task_losses`` (shape ``[T]``), or
      ``(task_losses, aux)`` if ``has_aux``.
    weighting: a :class:`Weighting`, e.g. ``mtl.weightings.upgrad()``.
    has_aux: whether ``fn`` returns an auxiliary value.
    chunk_size: tasks per chunk of the Gramian (see
      :func:`value_and_gramian`).
    task_specific: parameter leaves that belong to one task.

  Returns:
    A function of ``(params, weighting_state, *args)`` returning
    ``(task_losses, grads, new_weighting_state)`` (``task_losses`` is
    ``(task_losses, aux)`` if ``has_aux``), with
    ``weighting_state = weighting.init(T)`` at the start.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> fn = lambda w: jnp.stack([jnp.sum(w * jnp.array([-4., 1., 1.])),
    ...                           jnp.sum(w * jnp.array([6., 1., 1.]))])
    >>> weighting = mtl.weightings.mgda()
    >>> step = mtl.value_and_balanced_grad(fn, weighting)
    >>> losses, grads, state = step(jnp.zeros(3), weighting.init(2))
    >>> bool(jnp.allclose(grads, jnp.array([0.0, 1.0, 1.0]), atol=1e-6))
    True
  """
  if not isinstance(weighting, base.Weighting):
    kind = ('a transformation over the stacked per-task gradients'
            if isinstance(weighting, optax.GradientTransformation) else
            type(weighting).__name__)
    raise ValueError(
        'value_and_balanced_grad needs a weighting from mtl.weightings, got '
        f'{kind}; methods that need the per-coordinate gradients (graddrop, '
        'gradient_ema, db_mtl) run on the stacked path: '
        'mtl.value_and_task_grads(fn) then the transformation.')
  _check_chunk_size(chunk_size)
  name = weighting.name

  def wrapped(params, weighting_state, *args):
    flags = base.task_specific_flags(task_specific, params)
    linear = _Linearised(name, fn, params, args, flags, has_aux)
    num_tasks = linear.num_tasks
    losses = base.check_task_losses(name, num_tasks, linear.losses,
                                    required=True)
    if weighting.reads_gram:
      gram, scale = linear.gramian(chunk_size)
    else:
      gram = scale = None
    stats = base.TaskStats(gram, scale, losses, num_tasks)
    finite = numerics.all_finite(losses, gram, scale)
    weighed = base.weigh_and_guard(weighting, stats, weighting_state, finite)
    shared, specific = linear.combine(*jax.lax.stop_gradient(
        (weighed.weights, weighed.specific_weights)))
    finite = finite & numerics.all_finite(*specific)
    if not weighting.reads_gram:  # The shared leaves were never checked.
      finite = finite & numerics.all_finite(*shared)
    # One pass over P (not T x P): every entry NaN, as on the stacked path,
    # even where a zero derivative would hide the NaN weights.
    shared = [jnp.where(finite, leaf, jnp.nan) for leaf in shared]
    specific = [jnp.where(finite, leaf, jnp.nan) for leaf in specific]
    new_state = base.keep_if_not_finite(finite, weighed.state,
                                        weighting_state)
    grads = base.merge_leaves(flags, jax.tree.structure(params), shared,
                              specific)
    value = (linear.losses, linear.aux) if has_aux else linear.losses
    return value, grads, new_state

  return wrapped
