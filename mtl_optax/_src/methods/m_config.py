"""M-ConFIG: the ConFIG direction of per-task momenta, one task per step."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import optax

from mtl_optax import weightings
from mtl_optax._src import adam_moments
from mtl_optax._src import base
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics


class MConFIGState(NamedTuple):
  """State of :func:`m_config`: T x P floats for P parameters."""
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; finite updates so far
  # (saturating): the round robin updates task count mod T
  task_counts: jax.Array  # shape=[T], dtype=int32; updates of each task's
  # momentum, k_t (saturating)
  steps: jax.Array  # shape=(), dtype=int32; updates since every task has a
  # momentum, k (saturating)
  momentum_weights: jax.Array  # shape=[T], dtype=float32; ConFIG's weights
  # of the bias-corrected momenta at the last update, before the Adam-like
  # scaling (0 until every task has one; what mtl_optax.last_weights
  # reports)
  momenta: tuple  # one [T, *leaf.shape] array per shared leaf, in the
  # leaf's dtype promoted to float32: m_t
  specific_momenta: tuple  # the same for each task-specific leaf
  direction_mean: tuple  # one leaf.shape array per shared leaf, then one
  # per task-specific leaf: (1 − β₁^k) d, the pseudo first moment
  direction_root: tuple  # like direction_mean: √s, the root of the pseudo
  # second moment

  def task_weights(self) -> jax.Array:
    return self.momentum_weights


def m_config(
    num_tasks: int,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    update_all_tasks: bool = False,
    task_specific: base.TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  r"""ConFIG on per-task momenta, with Adam-like scaling (M-ConFIG).

  Liu, Chu and Thuerey, "ConFIG: Towards Conflict-free Training of Physics
  Informed Neural Networks" (ICLR 2025), the momentum variant; the official
  ``PseudoMomentumOperator`` (``tum-pbs/ConFIG``,
  ``conflictfree/momentum_operator.py``). Each task keeps a momentum of its
  own gradient, and only one task's momentum moves per step, which in the
  paper saves all but one backward pass. At every update:

  ``m_i ← β₁ m_i + (1 − β₁) g_i``, ``k_i ← k_i + 1`` for the chosen task
  ``i`` (round robin: ``i = step mod T``);

  once every task has a momentum (``k_t >= 1`` for all t), with ``k`` the
  updates since then and ``m̂_t = m_t / (1 − β₁^{k_t})``:

  ``d = ConFIG(m̂_1, …, m̂_T)``  (:func:`mtl_optax.weightings.config`),

  ``ĥ ← (1 − β₁^k) d``,  ``h = (ĥ − β₁ ĥ_prev) / (1 − β₁)``  (the
  gradient a momentum ``ĥ`` of bias-corrected value ``d`` would have
  seen),

  ``s ← β₂ s + (1 − β₂) h²``,  ``output = d / (√(s / (1 − β₂^k)) + ε)``.

  Before every task has a momentum the output is zero. The output is
  already scaled per coordinate like Adam's step: chain a plain SGD after
  it (the official code advises against Adam)::

    optax.chain(mtl.m_config(T), optax.sgd(1e-3))

  **State: T x P floats** for P parameters (the momenta, in each leaf's
  dtype promoted to float32), plus ``ĥ`` and ``√s`` (2 x P).

  **Decisions.** Which task moves: the official operator takes the indices
  from the caller, and its documented training loop picks
  ``step mod T``; here the step counter of the state does the same (round
  robin from task 0). With stacked gradients every task's gradient is at
  hand anyway: ``update_all_tasks=True`` moves every momentum at every step
  (the official operator given all indices). The defaults
  ``β = (0.9, 0.999)`` and ``ε = 1e-8`` are the official ones. ConFIG
  acts on the shared leaves only; each task-specific leaf's direction is
  its own task's bias-corrected momentum (kept, like the shared ones, per
  task), and the pseudo-second-moment scaling acts on every coordinate of
  the output, as in the official code. ``s`` is stored as its root (the
  same numbers, finite for float32 gradients near 1e±20). The gradients of
  the tasks not chosen are still checked: a non-finite input leaves the
  whole state as it was.

  The output does not grow with the gradients (scaling them all leaves it
  unchanged, up to ε); the round robin makes it depend on the tasks' order.

  Args:
    num_tasks: T.
    b1: ``β₁`` in ``[0, 1)``, the decay of the task momenta.
    b2: ``β₂`` in ``[0, 1)``, the decay of the pseudo second moment.
    eps: ``ε >= 0``, added to the denominator.
    update_all_tasks: move every task's momentum at every step (a Python
      bool) instead of one task's, round robin.
    task_specific: leaves that belong to one task (see
      :func:`mtl_optax.balancer`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`MConFIGState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.m_config(2)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 3.0]])
    >>> state = tx.init(jnp.zeros(2))
    >>> updates, state = tx.update(grads, state)
    >>> updates  # Only task 0 has a momentum yet.
    Array([0., 0.], dtype=float32)
    >>> updates, state = tx.update(grads, state)
    >>> state.momentum_weights  # ConFIG of m̂ = (1, 0), (0, 3): d = (2, 2).
    Array([2.       , 0.6666667], dtype=float32)
    >>> updates.round(6)  # d / |d| at the first scaled step.
    Array([1., 1.], dtype=float32)
  """
  base.check_num_tasks(num_tasks)
  adam_moments.check_hyperparameters(b1, b2, eps)
  if not isinstance(update_all_tasks, bool):
    raise ValueError('update_all_tasks must be a Python bool, got '
                     f'{update_all_tasks!r}.')
  name = 'm_config'
  config = weightings.config()

  def init_fn(params):
    shared, specific = adam_moments.split_params(task_specific, params)
    return MConFIGState(
        count=jnp.zeros([], jnp.int32),
        task_counts=jnp.zeros([num_tasks], jnp.int32),
        steps=jnp.zeros([], jnp.int32),
        momentum_weights=jnp.zeros([num_tasks], jnp.float32),
        momenta=adam_moments.zeros_like_leaves(shared, num_tasks),
        specific_momenta=adam_moments.zeros_like_leaves(specific, num_tasks),
        direction_mean=adam_moments.zeros_like_leaves(shared + specific),
        direction_root=adam_moments.zeros_like_leaves(shared + specific))

  def move(momentum, grads, task, decay, finite):
    """``m_i ← β₁ m_i + (1 − β₁) g_i`` for the chosen task(s), if finite."""
    grads = gramian_lib.sharded_like(grads.astype(momentum.dtype), momentum)
    decay = jnp.asarray(decay, momentum.dtype)
    if update_all_tasks:
      return jnp.where(finite, decay * momentum + (1.0 - decay) * grads,
                       momentum).astype(momentum.dtype)
    # One row read and written: the other tasks' momenta stay in place.
    old = lax.dynamic_index_in_dim(momentum, task, keepdims=False)
    new = lax.dynamic_index_in_dim(grads, task, keepdims=False)
    row = jnp.where(finite, decay * old + (1.0 - decay) * new, old)
    return lax.dynamic_update_index_in_dim(
        momentum, row.astype(momentum.dtype), task, 0)

  def step(shared, specific, losses, state, inputs_finite):
    del losses  # Not used, but a non-finite one marks a bad step.
    state = adam_moments.opened_state(name, state, 'momenta',
                                      'holds momenta of', shared)
    finite = inputs_finite & numerics.all_finite(*shared)
    task = state.count % num_tasks
    chosen = (jnp.ones([num_tasks], jnp.int32) if update_all_tasks else
              jax.nn.one_hot(task, num_tasks, dtype=jnp.int32))
    task_counts = jnp.where(chosen > 0,
                            optax.safe_increment(state.task_counts),
                            state.task_counts)
    momenta = tuple(move(m, g, task, b1, finite)
                    for m, g in zip(state.momenta, shared))
    specific_momenta = tuple(move(m, g, task, b1, finite)
                             for m, g in zip(state.specific_momenta,
                                             specific))

    # m̂_t = c_t m_t with c_t = 1 / (1 − β₁^{k_t}) (0 before its first move).
    b1_ = jnp.asarray(b1, jnp.float32)
    corrections = numerics.safe_div(
        1.0, 1.0 - jnp.power(b1_, task_counts.astype(jnp.float32)))
    ready = jnp.all(task_counts > 0)
    gram, scale = gramian_lib.gramian(list(momenta))
    corrected_gram = gram * jnp.outer(corrections, corrections)
    # ConFIG's weights of m̂ (invariant to the Gramian's scale).
    weights, _ = config.weigh(
        base.TaskStats(gram=corrected_gram, scale=scale, losses=None,
                       num_tasks=num_tasks),
        config.init(num_tasks))
    weights = jnp.where(ready, weights, 0.0)
    # ConFIG on the shared leaves; each task-specific leaf gets Σ_t m̂_t
    # (its own task's, the other rows being zero). Shared leaves first.
    directions = [
        *gramian_lib.weighted_sum(weights * corrections, list(momenta)),
        *gramian_lib.weighted_sum(corrections, list(specific_momenta))]

    # The pseudo second moment of the direction, from update k = 1 on.
    steps = jnp.where(ready, optax.safe_increment(state.steps), state.steps)
    k = jnp.maximum(steps, 1).astype(jnp.float32)
    first = 1.0 - jnp.power(b1_, k)
    inverse_second = 1.0 / jnp.sqrt(
        1.0 - jnp.power(jnp.asarray(b2, jnp.float32), k))
    moving = finite & ready
    means, roots, outputs = [], [], []
    for d, old_mean, old_root in zip(directions, state.direction_mean,
                                     state.direction_root):
      mean = first.astype(d.dtype) * d
      pseudo_grad = (mean - b1_.astype(d.dtype) * old_mean) / (
          1.0 - b1_.astype(d.dtype))
      root = jnp.hypot(jnp.sqrt(jnp.asarray(b2, d.dtype)) * old_root,
                       jnp.sqrt(1.0 - jnp.asarray(b2, d.dtype)) * pseudo_grad)
      means.append(jnp.where(moving, mean, old_mean))
      roots.append(jnp.where(moving, root, old_root))
      outputs.append(jnp.where(
          ready,
          numerics.safe_div(d, root * inverse_second.astype(d.dtype) + eps),
          0.0))

    poison = jnp.where(finite, 1.0, jnp.nan)
    grads = shared + specific
    outputs = [(poison * out).astype(g.dtype)
               for out, g in zip(outputs, grads)]
    new_state = MConFIGState(
        count=optax.safe_increment(state.count), task_counts=task_counts,
        steps=steps, momentum_weights=weights.astype(jnp.float32),
        momenta=momenta,
        specific_momenta=specific_momenta, direction_mean=tuple(means),
        direction_root=tuple(roots))
    return base.StepResult(outputs[:len(shared)], outputs[len(shared):],
                           new_state, finite, state_guarded=True)

  transformation = base.task_transformation(
      num_tasks, name, lambda shared: None, step,
      task_specific=task_specific)
  return optax.GradientTransformationExtraArgs(init_fn,
                                               transformation.update)
