"""FAMO: learned task logits that even out the rates at which losses fall."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics


class FAMOState(NamedTuple):
  logits: jax.Array  # shape=[T], dtype=float32; ξ, with z = softmax(ξ)
  previous_losses: jax.Array  # shape=[T], dtype=float32; floored losses
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; updates seen, saturating
  optimizer_state: Any  # the inner optimizer's state for the logits


def _softmax_vjp(logits: jax.Array, cotangent: jax.Array) -> jax.Array:
  """``(∂ softmax(ξ) / ∂ξ)ᵀ δ = z ⊙ (δ − zᵀδ)``."""
  z = jax.nn.softmax(logits)
  return z * (cotangent - jnp.dot(z, cotangent))


def famo(
    *,
    learning_rate: float = 0.025,
    weight_decay: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    loss_floor: float = 1e-8,
    floor: float | None = None,
) -> base.Weighting:
  r"""Weights tasks by ``z_t / L_t`` with learned ``z = softmax(ξ)``.

  Liu, Liu, Jin, Stone and Liu, "FAMO: Fast Adaptive Multitask Optimization"
  (NeurIPS 2023), Algorithm 1. The update descends ``Σ_t z_t log L_t``,
  rescaled so that its weights sum to 1:

  ``w_t = c z_t / L_t`` with ``c = (Σ_s z_s / L_s)^{-1}``, i.e.
  ``w = softmax(ξ − log L)``.

  The logits ``ξ`` (0 at the start) learn from the observed decrease of the
  log losses, ``δ_t = log L_t(k−1) − log L_t(k)``:

  ``ξ ← ξ − β ((∂z/∂ξ)ᵀ δ + γ ξ)``,

  so a task whose loss fell less gains weight. The authors' code takes this
  step with Adam (``β`` = 0.025) and ``γ`` as its coupled weight decay
  (1e-3 in their QM9 runs, 1e-2 in their CelebA runs); the default here is
  the same Adam with ``γ`` = 1e-3:
  ``optax.chain(optax.add_decayed_weights(γ), optax.adam(β))``. Pass
  ``optimizer=optax.chain(optax.add_decayed_weights(γ), optax.sgd(β))`` for
  the plain step of Algorithm 1.

  **Timing.** The paper measures ``δ`` on the same batch before and after
  the model step, at the cost of a second forward pass. A transformation
  sees each update's losses once, so here ``δ`` compares the losses of two
  consecutive updates, stored in the state: the logit step for the losses
  of update ``k`` happens at update ``k+1``, when the new losses are seen,
  before that update's weights are computed. The first update has no
  ``δ`` and uses ``ξ = 0``: ``w ∝ 1/L``. With mini-batches, ``δ`` also
  carries the change of batch; the logits average it out over many steps.

  A loss below ``loss_floor`` is treated as ``loss_floor`` (the logarithm and ``1/L``
  need positive losses; the authors add 1e-8 instead), so the weights stay
  finite and on the simplex.

  Args:
    learning_rate: ``β`` > 0, the logits' learning rate (default optimizer
      only).
    weight_decay: ``γ`` >= 0, the logits' weight decay (default optimizer
      only).
    optimizer: the inner optax optimizer that moves ``ξ``; it receives
      ``(∂z/∂ξ)ᵀ δ`` as the gradient. Default: Adam with coupled weight
      decay, as above.
    loss_floor: smallest loss used, > 0.
    floor: deprecated (0.1) name of ``loss_floor``, removed in 0.3.

  Returns:
    A loss-level :class:`Weighting` with state :class:`FAMOState`; it needs
    the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.famo(2)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> losses = jnp.array([1.0, 3.0])  # ξ = 0 at first: w ∝ [1, 1/3]
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)),
    ...                            task_losses=losses)
    >>> updates.round(4)
    Array([0.75, 0.25], dtype=float32)
  """
  base.check_range('learning_rate', learning_rate, 0.0, low_open=True)
  base.check_range('weight_decay', weight_decay, 0.0)
  loss_floor = base.renamed('famo', 'floor', floor, 'loss_floor', loss_floor)
  base.check_range('loss_floor', loss_floor, 0.0, low_open=True)
  if optimizer is None:
    optimizer = optax.chain(optax.add_decayed_weights(weight_decay),
                            optax.adam(learning_rate))

  def init(num_tasks):
    logits = jnp.zeros([num_tasks], jnp.float32)
    return FAMOState(logits=logits,
                     previous_losses=jnp.ones([num_tasks], jnp.float32),
                     count=jnp.zeros([], jnp.int32),
                     optimizer_state=optimizer.init(logits))

  def learn_logits(log_losses, state):
    """One step of ξ on the decrease since the previous update."""
    decrease = jnp.log(state.previous_losses) - log_losses  # δ
    logit_grads = _softmax_vjp(state.logits, decrease)
    steps, optimizer_state = optimizer.update(
        logit_grads, state.optimizer_state, state.logits)
    logits = optax.apply_updates(state.logits, steps)
    return logits, optimizer_state

  def weigh(stats, state):
    losses = numerics.floor_losses(stats.losses, loss_floor)
    log_losses = jnp.log(losses)
    stepped = learn_logits(log_losses, state)
    # No previous losses at the first update: nothing to learn from yet.
    logits, optimizer_state = jax.tree.map(
        lambda new, old: jnp.where(state.count > 0, new, old),
        stepped, (state.logits, state.optimizer_state))
    weights = jax.nn.softmax(logits - log_losses)  # c z_t / L_t
    return weights, state._replace(
        logits=logits, previous_losses=losses,
        count=optax.safe_increment(state.count),
        optimizer_state=optimizer_state)

  return base.Weighting(weigh=weigh, init=init, name='famo', reads_gram=False,
                        reads_losses=True)
