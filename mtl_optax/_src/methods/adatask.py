"""AdaTask: Adam with separate moments for every task on shared parameters."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import adam_moments
from mtl_optax._src import base
from mtl_optax._src import numerics


class AdaTaskState(NamedTuple):
  """State of :func:`adatask`: 2 T x P floats for P shared parameters."""
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; finite updates so far,
  # saturating
  mu: tuple  # one [T, *leaf.shape] array per shared leaf, in the leaf's
  # dtype promoted to float32: m_t, each task's first moment
  root_nu: tuple  # like mu: √v_t, the root of each task's second moment
  specific_mu: tuple  # one leaf.shape array per task-specific leaf: Adam's
  # first moment of its own task's gradient
  specific_root_nu: tuple  # like specific_mu: the root of the second moment

  def task_weights(self) -> jax.Array:
    """``[T]`` ones: every task's Adam direction enters the update once."""
    return jnp.ones(jnp.shape(self.mu[0])[:1], jnp.float32)


def adatask(
    num_tasks: int,
    learning_rate: adam_moments.LearningRate = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    task_specific: base.TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam with task-wise moments on the shared parameters (AdaTask).

  Yang et al., "AdaTask: A Task-Aware Adaptive Learning Rate Approach to
  Multi-Task Learning" (AAAI 2023). With one
  Adam accumulator for the summed gradient, the task with the largest
  gradients dominates the second moment and shrinks every other task's
  steps. AdaTask keeps the moments per task, so each task's gradient is
  scaled by its own history. At update ``k = 1, 2, …``, on the shared
  parameters:

  ``m_t ← β₁ m_t + (1 − β₁) g_t``,  ``v_t ← β₂ v_t + (1 − β₂) g_t²``,

  ``Δθ = −η Σ_t m̂_t / (√v̂_t + ε)``,

  with ``m̂_t = m_t / (1 − β₁^k)`` and ``v̂_t = v_t / (1 − β₂^k)``: the sum
  of T Adam directions. Task-specific leaves get plain Adam on their own
  task's gradient. AdaTask replaces Adam: its output is the parameter
  update, already multiplied by ``−learning_rate`` (as ``optax.adam``'s),
  so nothing is chained after it::

    tx = mtl.adatask(T, learning_rate=1e-3)  # instead of optax.adam(1e-3)

  **State: 2 T x P floats** for P shared parameters (``m_t`` and ``√v_t``
  per task, in each leaf's dtype promoted to float32), plus Adam's moments
  of the task-specific leaves.

  **Where this follows the official code** (``EnnengYang/AdaTask``,
  ``adatask.py``): the defaults ``η = 1e-3``, ``β = (0.9, 0.999)``,
  ``ε = 1e-8``; one step counter for all tasks; the per-task Adam
  directions summed with weight 1; plain Adam on the task-specific
  parameters with their own task's gradient. **Where it departs**: its
  per-task loss factors ``task_weight`` (1 by default) are not offered
  (Adam ignores a positive factor on a task's gradient, up to ε); weight
  decay and AMSGrad (off there) are not offered; ``v`` is stored as its
  root (the same numbers, finite for float32 gradients near 1e±20). A
  non-finite input leaves the whole state as it was.

  The update depends on each task's gradient direction and history, not on
  its scale: scaling every gradient leaves it unchanged (up to ε), and
  permuting the tasks leaves it unchanged.

  Args:
    num_tasks: T.
    learning_rate: ``η >= 0``, or a schedule ``count -> η``.
    b1: ``β₁`` in ``[0, 1)``, the decay of the first moments.
    b2: ``β₂`` in ``[0, 1)``, the decay of the second moments.
    eps: ``ε >= 0``, added to each denominator.
    task_specific: leaves that belong to one task (see
      :func:`mtl_optax.balancer`); they get plain Adam.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`AdaTaskState`, whose ``update(task_grads, state, params=None)``
    returns the parameter update.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.adatask(2, learning_rate=0.1)
    >>> grads = jnp.array([[3.0, -4.0], [0.0, 100.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> updates.round(6)  # Step 1: −0.1 Σ_t sign(g_t): (−0.1, 0.1 − 0.1).
    Array([-0.1,  0. ], dtype=float32)
  """
  base.check_num_tasks(num_tasks)
  adam_moments.check_hyperparameters(b1, b2, eps, learning_rate)
  name = 'adatask'

  def init_fn(params):
    shared, specific = adam_moments.split_params(task_specific, params)
    return AdaTaskState(
        count=jnp.zeros([], jnp.int32),
        **adam_moments.per_task_moments(shared, specific, num_tasks))

  def step(shared, specific, losses, state, inputs_finite):
    del losses  # Not used, but a non-finite one marks a bad step.
    state = adam_moments.opened_state(name, state, 'mu', 'holds moments of',
                                      shared)
    finite = inputs_finite & numerics.all_finite(*shared)
    corrections = adam_moments.bias_corrections(state.count, b1, b2)
    rate = adam_moments.learning_rate_at(learning_rate, state.count)
    poison = jnp.where(finite, 1.0, jnp.nan)

    means, roots, updates = [], [], []
    for grads, mean, root in zip(shared, state.mu, state.root_nu):
      mean, root = adam_moments.moments(mean, root, grads, b1, b2, finite)
      # Σ_t m̂_t / (√v̂_t + ε): one Adam direction per task, summed.
      directions = adam_moments.direction(mean, root, corrections, eps)
      updates.append((-rate * poison * jnp.sum(directions, axis=0)).astype(
          grads.dtype))
      means.append(mean)
      roots.append(root)

    directions, specific_mu, specific_root_nu = adam_moments.own_task_adam(
        specific, state.specific_mu, state.specific_root_nu, state.count,
        b1, b2, eps, finite)
    specific_updates = [(-rate * d).astype(g.dtype)
                        for d, g in zip(directions, specific)]
    new_state = AdaTaskState(
        count=optax.safe_increment(state.count),
        mu=tuple(means), root_nu=tuple(roots),
        specific_mu=specific_mu, specific_root_nu=specific_root_nu)
    return base.StepResult(updates, specific_updates, new_state, finite,
                           state_guarded=True)

  transformation = base.task_transformation(
      num_tasks, name, lambda shared: None, step,
      task_specific=task_specific)
  return optax.GradientTransformationExtraArgs(init_fn,
                                               transformation.update)
