"""Per-task gradient normalisation: ``g_t / ‖g_t‖``, ``g_t / L_t`` or both."""

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics

MODES = ('l2', 'loss', 'loss+')
# The smallest normal float32: a task's largest entry is floored here before
# it is inverted, so the inverse stays finite.
_TINY = float(jnp.finfo(jnp.float32).tiny)


def _scale_rows(leaves: list, scales: jax.Array) -> list:
  """``scales[t] · g_t`` on every leaf, in float32; each leaf keeps its dtype."""

  def scale_leaf(leaf):
    shape = (-1,) + (1,) * (leaf.ndim - 1)
    return (leaf.astype(jnp.float32) * scales.reshape(shape)).astype(
        leaf.dtype)

  return [scale_leaf(leaf) for leaf in leaves]


def _task_norms(leaves: list) -> tuple[jax.Array, jax.Array]:
  """``(inverse_largest, relative_norms)``, both ``[T]`` float32.

  ``‖g_t‖ = relative_norms[t] / inverse_largest[t]``: each task is first
  divided by its own largest entry, so the sum of squares neither overflows
  nor underflows whatever the task's scale.
  """
  largest = jnp.max(jnp.stack([
      jnp.max(jnp.abs(leaf.astype(jnp.float32)),
              axis=tuple(range(1, leaf.ndim))) for leaf in leaves]), axis=0)
  inverse_largest = jnp.where(largest > 0, 1.0 / jnp.maximum(largest, _TINY),
                              0.0)
  squares = jnp.zeros([], jnp.float32)
  for leaf in leaves:
    unit = leaf.astype(jnp.float32) * inverse_largest.reshape(
        (-1,) + (1,) * (leaf.ndim - 1))
    squares = squares + jnp.sum(unit ** 2, axis=tuple(range(1, leaf.ndim)))
  return inverse_largest, numerics.safe_sqrt(squares)


def normalize_task_grads(
    num_tasks: int,
    normalization: str = 'l2',
    *,
    loss_floor: float = 1e-8,
    task_specific: base.TaskSpecific = None,
    mode: str | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Normalises each task's gradient before a balancer combines them.

  The gradient normalisations of Sener and Koltun, "Multi-Task Learning as
  Multi-Objective Optimization" (NeurIPS 2018), §3.2 and their code's
  ``gradient_normalizers``, as a pre-transform that works with any balancer:

  * ``'l2'``: ``g_t ← g_t / ‖g_t‖`` (every task gets a unit gradient);
  * ``'loss'``: ``g_t ← g_t / L_t``, the gradient of ``log L_t``;
  * ``'loss+'``: ``g_t ← g_t / (L_t ‖g_t‖)``.

  The output keeps the task axis ``[T, ...]``, so it goes in front of any
  balancer, e.g. MGDA on unit gradients (the directions alone decide both
  the weights and the update)::

    optax.chain(mtl.normalize_task_grads(T), mtl.mgda(T), optax.adam(1e-3))

  This differs from ``mtl.mgda(T, normalization=...)``, which chooses the
  weights on the normalised gradients but combines the raw ones (the
  authors' code); here the balancer sees, and combines, the normalised ones.

  **Decisions.** ``‖g_t‖`` is the norm of task ``t``'s gradient over the
  shared leaves (those the balancer combines). Task-specific leaves pass
  through unchanged in every mode: a head's gradient has no share in the
  conflict the normalisation addresses, and its step stays that of its own
  loss (as in MGDA, where only the shared gradients are normalised). A zero
  gradient stays zero (its direction is undefined; the division is guarded
  so that neither the value nor its derivative is NaN). Losses below
  ``loss_floor`` (zero or negative ones) count as ``loss_floor``, as in
  :func:`mtl_optax.weightings.mgda`. The norm is computed on each task
  divided by its own largest entry, so gradients from ``1e-30`` to ``1e30``
  normalise correctly in float32. It runs on the skeleton of every
  transformation (:func:`task_transformation`): a non-finite loss or
  gradient makes the whole output NaN, so ``optax.apply_if_finite`` skips
  the step. ``optax.chain`` passes ``task_losses`` to every piece; the
  pieces after this one see the raw losses.

  Properties: with ``'l2'`` the output does not depend on the gradients'
  scale (so a scale-linear balancer after it is no longer scale-linear);
  ``'loss'`` is linear in the gradients. Permuting the tasks permutes the
  output. Non-conflict carries over: ``g_t·d >= 0`` exactly when
  ``(c_t g_t)·d >= 0`` for a factor ``c_t > 0``.

  Args:
    num_tasks: T.
    normalization: ``'l2'``, ``'loss'`` or ``'loss+'`` (the name
      :func:`mtl_optax.mgda` uses for the same choice).
    loss_floor: > 0, the smallest loss a gradient is divided by.
    task_specific: which parameter leaves belong to one task (see
      :func:`balancer`); they are left unchanged.
    mode: deprecated name of ``normalization``, removed in 0.3.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with an empty state whose
    ``update(task_grads, state, params=None, *, task_losses=None)`` returns
    the normalised ``task_grads`` (same structure, shapes and dtypes);
    ``task_losses`` is required for ``'loss'`` and ``'loss+'``.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.normalize_task_grads(2)
    >>> grads = jnp.array([[3.0, 4.0], [0.0, 0.5]])
    >>> tx.update(grads, tx.init(jnp.zeros(2)))[0]
    Array([[0.6, 0.8],
           [0. , 1. ]], dtype=float32)
  """
  normalization = base.renamed('normalize_task_grads', 'mode', mode,
                               'normalization', normalization)
  base.check_choice('normalization', normalization, MODES)
  base.check_range('loss_floor', loss_floor, 0.0, low_open=True)
  name = 'normalize_task_grads'
  needs_losses = normalization != 'l2'

  def init(shared_params):
    del shared_params
    return optax.EmptyState()

  def step(shared, specific, losses, state, inputs_finite):
    if not shared:
      raise ValueError(f'{name}: every leaf is task-specific; nothing to '
                       'normalise.')
    finite = inputs_finite & numerics.all_finite(*shared)
    if normalization == 'loss':
      first = jnp.ones([num_tasks], jnp.float32)
      divisors = numerics.floor_losses(losses, loss_floor)
    else:
      # g_t / ‖g_t‖ = (g_t / m_t) / ‖g_t / m_t‖ with m_t the largest entry.
      first, divisors = _task_norms(shared)
      if normalization == 'loss+':
        divisors = divisors * numerics.floor_losses(losses, loss_floor)
    scales = numerics.safe_div(first, divisors)  # A zero gradient stays 0.
    scales = jnp.where(finite, scales, jnp.nan)
    return base.StepResult(shared=_scale_rows(shared, scales),
                           specific=list(specific), state=state,
                           finite=finite)

  return base.task_transformation(num_tasks, name, init, step,
                                  needs_losses=needs_losses,
                                  task_specific=task_specific)
