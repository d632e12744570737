"""GradVac: pull each pair of task gradients towards an EMA of its cosine."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src import base
from mtl_optax._src import numerics


class GradVacState(NamedTuple):
  targets: jax.Array  # shape=[T, T], dtype=float32; φ̂_ij, diagonal unused
  key: jax.Array  # shape=[2], dtype=uint32; a raw PRNG key, split every step


def _vaccinate_one_task(task, order, gram, targets, beta):
  """Modifies ``g_task`` against every other task in ``order``.

  The modified gradient is tracked as coefficients ``a`` over the raw
  gradients (``g' = Σ_k a_k g_k``) together with ``h = G a`` (its inner
  product with every raw gradient), so each pair costs O(T).

  Returns:
    ``(a, targets)``: the coefficients of ``g'_task`` and the task's updated
    row of ``φ̂``.
  """
  num_tasks = gram.shape[0]
  squared_norms = jnp.diagonal(gram)

  def visit(position, carry):
    coefficients, inner, targets = carry
    other = order[position]
    own_norm = numerics.safe_sqrt(coefficients @ inner)  # ‖g'_i‖
    other_norm = numerics.safe_sqrt(squared_norms[other])  # ‖g_j‖
    valid = (other != task) & (own_norm > 0) & (other_norm > 0)
    cosine = jnp.clip(
        numerics.safe_div(inner[other], own_norm * other_norm), -1.0, 1.0)
    target = targets[other]
    target_sine = numerics.safe_sqrt(1.0 - target ** 2)
    sine = numerics.safe_sqrt(1.0 - cosine ** 2)
    # The multiple of g_j that sets cos(g'_i, g_j) to φ̂_ij (Algorithm 1).
    # φ̂_ij = 1 exactly cannot be reached by a finite step: no change.
    amount = numerics.safe_div(
        own_norm * (target * sine - cosine * target_sine),
        other_norm * target_sine)
    amount = jnp.where(valid & (cosine < target), amount, 0.0)
    coefficients = coefficients.at[other].add(amount)
    inner = inner + amount * gram[other]
    # φ̂_ij ← (1 − β) φ̂_ij + β φ_ij, with φ_ij measured before the change.
    targets = targets.at[other].set(
        jnp.where(valid, (1.0 - beta) * target + beta * cosine, target))
    return coefficients, inner, targets

  coefficients = jax.nn.one_hot(task, num_tasks, dtype=gram.dtype)
  coefficients, _, targets = lax.fori_loop(
      0, num_tasks, visit, (coefficients, gram[task], targets))
  return coefficients, targets


def gradvac(
    *,
    beta: float = 0.01,
    key: Any = 0,
) -> base.Weighting:
  r"""Raises each pair's gradient cosine to an EMA target (Gradient Vaccine).

  Wang, Tsvetkov, Firat and Cao, "Gradient Vaccine: Investigating and
  Improving Multi-task Optimization in Massively Multilingual Models" (ICLR
  2021), §3 and Algorithm 1. For every task ``i``, visit the other tasks
  ``j`` in a random order; with ``g'_i`` the gradient modified so far,
  ``φ_ij = cos(g'_i, g_j)`` and ``φ̂_ij`` the target:

  * if ``φ_ij < φ̂_ij``, ``g'_i ← g'_i + ‖g'_i‖ (φ̂_ij √(1−φ_ij²) −
    φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) · g_j``, which makes the
    cosine exactly ``φ̂_ij``;
  * ``φ̂_ij ← (1 − β) φ̂_ij + β φ_ij`` (an EMA of the observed cosines).

  The update is ``d = Σ_i g'_i``. With ``φ̂ = 0`` (the start) the step is
  PCGrad's projection; positive targets pull related tasks closer.

  Every ``g'_i`` is a combination of the raw gradients, so the whole
  procedure runs on ``G`` (T×T) and the T×P gradients are combined once:
  the weights are ``w_k = Σ_i a_ik`` for the coefficients ``a_i`` of
  ``g'_i``. No modified copy of the gradients is ever formed.

  **Decisions.** The paper applies the procedure per layer (one target per
  layer and pair); here it acts on the whole shared parameter vector (one
  target per pair, LibMTL's ``whole_model`` granularity). ``φ̂`` starts at 0
  and the EMA is updated for every visited pair, whether or not the
  gradient was modified, with the cosine measured before the modification.
  A pair involving a zero-norm gradient is skipped and its target kept. The
  task order comes from ``key``, stored in the state and split at every
  update; a non-finite update keeps the old state, key included. ``β``
  defaults to the paper's 1e-2 (LibMTL's default is 0.5).

  Args:
    beta: EMA rate of the targets, in [0, 1].
    key: a PRNG key (raw ``uint32[2]`` or typed) or an int seed.

  Returns:
    A :class:`Weighting` of the Gramian with state :class:`GradVacState`
    (the targets ``φ̂`` and the key of the next step).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.gradvac(2)
    >>> grads = jnp.array([[1.0, 0.0], [-1.0, 1.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> updates  # φ̂ = 0 at the start: PCGrad's projections, summed.
    Array([0.5, 1.5], dtype=float32)
    >>> targets = state.weighting_state.targets
    >>> round(float(targets[0, 1]), 4)  # EMA of cos = -0.7071, β = 0.01.
    -0.0071
  """
  base.check_range('beta', beta, 0.0, 1.0)

  def init(num_tasks):
    return GradVacState(
        targets=jnp.zeros([num_tasks, num_tasks], jnp.float32),
        key=numerics.as_raw_key(key))

  def weigh(stats, state):
    # The cosines and ‖g'_i‖/‖g_j‖ do not depend on the scale.
    num_tasks = stats.num_tasks
    next_key, order_key = jax.random.split(state.key)
    orders = jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(
        jax.random.split(order_key, num_tasks))
    coefficients, targets = jax.vmap(
        _vaccinate_one_task, in_axes=(0, 0, None, 0, None))(
            jnp.arange(num_tasks), orders, stats.gram, state.targets, beta)
    weights = jnp.sum(coefficients, axis=0)  # d = Σ_i g'_i = Σ_k w_k g_k.
    return weights, state._replace(targets=targets, key=next_key)

  return base.Weighting(weigh=weigh, init=init, name='gradvac')
