"""MTAdam: Adam with per-task moments and per-layer balanced gradient norms."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import adam_moments
from mtl_optax._src import base
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics

# The smallest normal float32: a task's largest entry is floored here before
# it is inverted, so the inverse stays finite.
_TINY = float(jnp.finfo(jnp.float32).tiny)


class MTAdamState(NamedTuple):
  """State of :func:`mtadam`: 2 T x P floats for P shared parameters."""
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; finite updates so far,
  # saturating
  balancing_factors: jax.Array  # shape=[T], dtype=float32; r_t n_a / n_t
  # of the last finite update, averaged over the shared leaves (1 at first;
  # what mtl_optax.last_weights reports)
  norms: jax.Array  # shape=[L, T], dtype=float32; n_t^l, the moving average
  # of ‖g_t‖ on each of the L shared leaves
  mu: tuple  # one [T, *leaf.shape] array per shared leaf, in the leaf's
  # dtype promoted to float32: m_t, the first moments of the balanced
  # gradients
  root_nu: tuple  # like mu: √v_t, the root of the second moments
  specific_mu: tuple  # one leaf.shape array per task-specific leaf: Adam's
  # first moment of its own task's gradient
  specific_root_nu: tuple  # like specific_mu: the root of the second moment

  def task_weights(self) -> jax.Array:
    return self.balancing_factors


def _task_norms(leaf: jax.Array) -> jax.Array:
  """``[T]`` norms ``‖g_t‖`` of one leaf, without over- or underflow.

  Each task's entries are divided by its largest one before squaring, so
  the sum of squares stays in range whatever the gradients' scale.
  """
  dtype = jnp.promote_types(leaf.dtype, jnp.float32)
  entries = leaf.astype(dtype)
  axes = tuple(range(1, leaf.ndim))
  shape = (-1,) + (1,) * (leaf.ndim - 1)
  largest = jnp.max(jnp.abs(entries), axis=axes)
  inverse = jnp.where(largest > 0, 1.0 / jnp.maximum(largest, _TINY), 0.0)
  unit = entries * inverse.reshape(shape)
  return largest * numerics.safe_sqrt(jnp.sum(unit * unit, axis=axes))


def balancing_factors(norms: jax.Array, ratios: jax.Array) -> jax.Array:
  """``[T]`` factors ``r_t n_a / n_t`` of one leaf, 1 where ``n_t = 0``.

  The anchor ``a`` is the first task whose norm average is positive.
  """
  positive = norms > 0
  anchor = jnp.argmax(positive)  # The first True (0 if there is none).
  factors = ratios * numerics.safe_div(norms[anchor], norms)
  return jnp.where(positive, factors, 1.0)


def mtadam(
    num_tasks: int,
    learning_rate: adam_moments.LearningRate = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: float = 0.9,
    eps: float = 1e-8,
    ratios: Any = None,
    task_specific: base.TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam with per-task moments, each task's gradient balanced per layer.

  Malkiel and Wolf, "MTAdam: Automatic Balancing of Multiple Training Loss
  Terms" (EMNLP 2021). MTAdam replaces Adam: its output is the
  parameter update, already multiplied by ``−learning_rate`` (as
  ``optax.adam``'s), so nothing is chained after it::

    tx = mtl.mtadam(T, learning_rate=1e-3)  # instead of optax.adam(1e-3)

  At update ``k = 1, 2, …``, on every shared parameter leaf ``l`` (the
  paper's "layer") with task gradients ``g_t = g_t^l``:

  ``n_t ← β₃ n_t + (1 − β₃) ‖g_t‖``  (``n_t = ‖g_t‖`` at ``k = 1``),

  ``ĝ_t = r_t (n_a / n_t) g_t``  (``a``: the first task with ``n_a > 0``;
  ``ĝ_t = g_t`` if ``n_t = 0``),

  ``m_t ← β₁ m_t + (1 − β₁) ĝ_t``,  ``v_t ← β₂ v_t + (1 − β₂) ĝ_t²``,

  ``Δθ = −η Σ_t m̂_t / (max_t √v̂_t + ε)``,

  with ``m̂_t = m_t / (1 − β₁^k)``, ``v̂_t = v_t / (1 − β₂^k)`` and the
  maximum taken entry by entry. Every task's gradient on a leaf is rescaled
  to the running magnitude of the first task's (times ``r_t``), so no loss
  term dominates a layer, and the step is divided by the largest second
  moment among the tasks, so it is small wherever any task is sensitive.

  **State: 2 T x P floats** for P shared parameters (``m_t`` and ``√v_t``
  per task, in each leaf's dtype promoted to float32), plus ``n`` (L x T).

  **Where this follows the official code** (``ItzikMalkiel/MTAdam``,
  ``mtadam.py``): the defaults ``η = 1e-3``, ``β = (0.9, 0.999, 0.9)``,
  ``ε = 1e-8`` and ``r_t = 1`` (its ``ranks``); the norm average set to
  the first norm at the first step (no bias correction); the anchor chosen
  as the first task with a positive norm average, and its own factor
  ``r_a``; the update ``−η Σ_t m̂_t / max_t(√v̂_t + ε)`` (the same as
  above); a "layer" is one parameter array (a leaf here, a PyTorch
  parameter there: a module's weight and bias are balanced separately in
  both). **Where it departs**: a
  norm average counts as zero only when it is exactly zero (the official
  code uses ``1e-10``, which leaves every task unscaled when the gradients
  are small, so here the update does not depend on the gradients' unit);
  ``v`` is stored as its root (the same numbers, finite for float32
  gradients near 1e±20); weight decay and AMSGrad, off by default there,
  are not offered. Task-specific leaves get plain Adam on their own task's gradient
  (what the official code computes on a head: the other tasks' moments
  there are zero, and Adam ignores the factor ``r_t``). A non-finite input
  leaves the whole state as it was.

  The update depends on the gradients' directions and relative sizes only:
  scaling every gradient leaves it unchanged (up to ε). The anchor is task
  0 whenever its gradient is non-zero, so the method is not invariant to
  the order of the tasks.

  Args:
    num_tasks: T.
    learning_rate: ``η >= 0``, or a schedule ``count -> η``.
    b1: ``β₁`` in ``[0, 1)``, the decay of the first moments.
    b2: ``β₂`` in ``[0, 1)``, the decay of the second moments.
    b3: ``β₃`` in ``[0, 1)``, the decay of the per-leaf norm averages.
    eps: ``ε >= 0``, added to the denominator.
    ratios: ``[T]`` factors ``r_t >= 0`` (default 1 each): the size of
      task ``t``'s balanced gradient relative to the anchor's.
    task_specific: leaves that belong to one task (see
      :func:`mtl_optax.balancer`); they get plain Adam.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`MTAdamState`, whose ``update(task_grads, state, params=None)``
    returns the parameter update. ``state.balancing_factors`` (what
    :func:`mtl_optax.last_weights` reports) holds the factors
    ``r_t n_a / n_t`` of the last update, averaged over the shared leaves.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.mtadam(2, learning_rate=0.1)
    >>> grads = jnp.array([[3.0, 4.0, 0.0], [0.0, 0.0, 50.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(3)))
    >>> state.balancing_factors  # ‖g_1‖ = 5, ‖g_2‖ = 50: task 2 × 1/10.
    Array([1. , 0.1], dtype=float32)
    >>> updates.round(6)  # −0.1 Σ_t ĝ_t / max_t |ĝ_t|, ĝ_2 = (0, 0, 5).
    Array([-0.1, -0.1, -0.1], dtype=float32)
  """
  base.check_num_tasks(num_tasks)
  adam_moments.check_hyperparameters(b1, b2, eps, learning_rate)
  base.check_range('b3', b3, 0.0, 1.0, high_open=True)
  base.check_task_vector('ratios', ratios, nonnegative=True)
  ratio_vector = base.task_vector('mtadam', 'ratios', ratios, num_tasks, 1.0)
  name = 'mtadam'

  def init_fn(params):
    shared, specific = adam_moments.split_params(task_specific, params)
    return MTAdamState(
        count=jnp.zeros([], jnp.int32),
        balancing_factors=jnp.ones([num_tasks], jnp.float32),
        norms=jnp.zeros([len(shared), num_tasks], jnp.float32),
        **adam_moments.per_task_moments(shared, specific, num_tasks))

  def step(shared, specific, losses, state, inputs_finite):
    del losses  # Not used, but a non-finite one marks a bad step.
    state = adam_moments.opened_state(name, state, 'mu', 'holds moments of',
                                      shared)
    if state.norms.shape[0] != len(shared):
      raise ValueError(
          f'{name}: the state holds norms for {state.norms.shape[0]} shared '
          f'leaves, but the gradients have {len(shared)}; call init with '
          'the params.')
    # Replicated: task-sharded gradients give task-sharded norms, which the
    # anchor's lookup cannot index on a mesh with Explicit axes.
    norms = gramian_lib.replicated(jnp.stack(
        [_task_norms(leaf) for leaf in shared]).astype(jnp.float32))
    finite = inputs_finite & numerics.all_finite(norms)
    b3_ = jnp.asarray(b3, jnp.float32)
    # n_t: the norm at the first step, then its moving average.
    averages = jnp.where(state.count == 0, norms,
                         b3_ * state.norms + (1.0 - b3_) * norms)
    factors = jax.vmap(balancing_factors, in_axes=(0, None))(
        averages, ratio_vector)  # [L, T]
    corrections = adam_moments.bias_corrections(state.count, b1, b2)
    rate = adam_moments.learning_rate_at(learning_rate, state.count)
    poison = jnp.where(finite, 1.0, jnp.nan)

    means, roots, updates = [], [], []
    for grads, mean, root, leaf_factors in zip(shared, state.mu,
                                               state.root_nu, factors):
      shape = (num_tasks,) + (1,) * (grads.ndim - 1)
      balanced = grads.astype(mean.dtype) * leaf_factors.astype(
          mean.dtype).reshape(shape)
      mean, root = adam_moments.moments(mean, root, balanced, b1, b2, finite)
      inverse_first, inverse_second = corrections
      # Σ_t m̂_t / (max_t √v̂_t + ε): the official code's last loop, which
      # divides every task's m̂_t by the largest denominator.
      denominator = jnp.max(root, axis=0) * inverse_second.astype(
          root.dtype) + eps
      step_ = numerics.safe_div(jnp.sum(mean, axis=0) * inverse_first.astype(
          mean.dtype), denominator)
      updates.append((-rate * poison * step_).astype(grads.dtype))
      means.append(mean)
      roots.append(root)

    directions, specific_mu, specific_root_nu = adam_moments.own_task_adam(
        specific, state.specific_mu, state.specific_root_nu, state.count,
        b1, b2, eps, finite)
    specific_updates = [(-rate * d).astype(g.dtype)
                        for d, g in zip(directions, specific)]
    new_state = MTAdamState(
        count=optax.safe_increment(state.count),
        balancing_factors=jnp.mean(factors, axis=0).astype(jnp.float32),
        norms=jnp.where(finite, averages, state.norms),
        mu=tuple(means), root_nu=tuple(roots),
        specific_mu=specific_mu, specific_root_nu=specific_root_nu)
    return base.StepResult(updates, specific_updates, new_state, finite,
                           state_guarded=True)

  transformation = base.task_transformation(
      num_tasks, name, lambda shared: None, step,
      task_specific=task_specific)
  return optax.GradientTransformationExtraArgs(init_fn,
                                               transformation.update)
