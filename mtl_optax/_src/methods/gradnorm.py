"""GradNorm: learned task weights that equalise weighted gradient norms."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics


class GradNormState(NamedTuple):
  loss_weights: jax.Array  # shape=[T], dtype=float32; learned w, Σ w = T
  initial_losses: jax.Array  # shape=[T], dtype=float32; floored L_t(0)
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; updates seen, saturating
  optimizer_state: Any  # the inner optimizer's state for loss_weights


def _gradnorm_targets(norms, loss_weights, losses, initial_losses, alpha):
  """``Ḡ_W · r_t^α``, the gradient norm each task should have (eq. 1)."""
  mean_norm = jnp.mean(loss_weights * norms)  # Ḡ_W
  # r_t = L̃_t / mean_s L̃_s with L̃_t = L_t / L_t(0), in log space so that no
  # ratio overflows; r_t <= T, so r_t^α is finite.
  log_ratios = jnp.log(losses) - jnp.log(initial_losses)
  log_relative = log_ratios - jax.nn.logsumexp(log_ratios) + jnp.log(
      log_ratios.shape[0])
  return mean_norm * jnp.exp(alpha * log_relative)


def _renormalise(loss_weights: jax.Array) -> jax.Array:
  """``w ← T w / Σ w`` (Algorithm 1), after clipping negative weights to 0."""
  num_tasks = loss_weights.shape[0]
  loss_weights = jnp.maximum(loss_weights, 0.0)
  total = jnp.sum(loss_weights)
  return jnp.where(total > 0,
                   num_tasks * numerics.safe_div(loss_weights, total), 1.0)


def gradnorm(
    *,
    alpha: float = 1.5,
    learning_rate: float = 0.025,
    optimizer: optax.GradientTransformation | None = None,
    loss_floor: float = 1e-8,
    floor: float | None = None,
) -> base.Weighting:
  r"""Learns task weights so that ``‖w_t g_t‖`` tracks each task's training rate.

  Chen, Badrinarayanan, Lee and Rabinovich, "GradNorm: Gradient
  Normalization for Adaptive Loss Balancing in Deep Multitask Networks"
  (ICML 2018), Algorithm 1. The state holds weights ``w`` (1 at the start).
  Each update returns the current ``w`` and then moves it:

  * ``G_t = ‖w_t g_t‖ = w_t √G_tt`` and ``Ḡ = mean_t G_t``;
  * ``L̃_t = L_t / L_t(0)`` and ``r_t = L̃_t / mean_s L̃_s``, the relative
    inverse training rate; ``L_t(0)`` are the losses of the first update,
    stored in the state;
  * target ``G_t → Ḡ · r_t^α`` (eq. 1), held constant;
  * ``L_grad = Σ_t |G_t − Ḡ r_t^α|`` (eq. 2), differentiated w.r.t. ``w``
    only, ``∂L_grad/∂w_t = sign(G_t − Ḡ r_t^α) √G_tt``;
  * one step of the inner ``optimizer`` on ``w``, then ``w ← T w / Σ w``.

  ``α`` = 1.5 is the default of the common implementations; ``α`` = 0 asks
  for equal weighted norms, a larger ``α`` pulls harder on slow tasks.

  **Which parameters.** The paper measures the norms on the last shared
  layer only, to save the T extra backward passes. Here the norms come for
  free from the Gramian of *all* shared leaves; leaves marked
  ``task_specific`` are left out (and, as for every balancer, step on their
  own task's unweighted gradient, whereas the paper weights the heads' losses
  too).

  **Inner optimizer.** The paper does not fix it; the default is
  ``optax.adam(learning_rate)`` with ``learning_rate`` = 0.025, whose step
  does not depend on the scale of the gradient norms while they are well
  above Adam's ``ε`` = 1e-8 (SGD's step on ``∂L_grad/∂w`` is proportional to
  them). The norms it sees are the
  true ones unless the gradients' squares leave the float32 range; then they
  are divided by the power of two of :class:`TaskStats` (``scale``).

  **Robustness.** Losses below ``loss_floor`` are treated as ``loss_floor``. A weight
  pushed below 0 is clipped to 0 before renormalising (a negative weight
  would flip its task's gradient); if every weight is 0 they restart at 1.
  Zero-norm gradients give ``∂L_grad/∂w = 0``: the weights stay.

  Args:
    alpha: ``α`` >= 0, the asymmetry of eq. 1.
    learning_rate: > 0, used by the default optimizer only.
    optimizer: the inner optax optimizer that moves ``w``.
    loss_floor: smallest loss used, > 0.
    floor: deprecated (0.1) name of ``loss_floor``, removed in 0.3.

  Returns:
    A :class:`Weighting` of the Gramian and the losses, with state
    :class:`GradNormState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.gradnorm(2)
    >>> grads = jnp.array([[3.0, 0.0], [0.0, 1.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)),
    ...                            task_losses=jnp.ones(2))
    >>> updates  # w = 1 at the first update
    Array([3., 1.], dtype=float32)
    >>> [round(float(w), 4)  # Adam steps ∓0.025
    ...  for w in state.weighting_state.loss_weights]
    [0.975, 1.025]
  """
  base.check_range('alpha', alpha, 0.0)
  base.check_range('learning_rate', learning_rate, 0.0, low_open=True)
  loss_floor = base.renamed('gradnorm', 'floor', floor, 'loss_floor',
                            loss_floor)
  base.check_range('loss_floor', loss_floor, 0.0, low_open=True)
  if optimizer is None:
    optimizer = optax.adam(learning_rate)

  def init(num_tasks):
    loss_weights = jnp.ones([num_tasks], jnp.float32)
    return GradNormState(loss_weights=loss_weights,
                         initial_losses=jnp.ones([num_tasks], jnp.float32),
                         count=jnp.zeros([], jnp.int32),
                         optimizer_state=optimizer.init(loss_weights))

  def weigh(stats, state):
    losses = numerics.floor_losses(stats.losses, loss_floor)
    initial_losses = jnp.where(state.count == 0, losses, state.initial_losses)
    # Norms in the Gramian's units: the true norms unless float32 squares
    # would leave range, then divided by a power of two. Eq. 2 is linear in
    # the norms, so this only rescales ∂L_grad/∂w, and the inner optimizer
    # never squares an overflowing gradient.
    norms = numerics.safe_sqrt(jnp.diagonal(stats.gram))
    targets = _gradnorm_targets(
        norms, state.loss_weights, losses, initial_losses, alpha)
    # ∂/∂w_t of eq. 2 with the targets held constant (w_t >= 0). sign(0) = 0:
    # a task already at its target does not move.
    weight_grads = jnp.sign(state.loss_weights * norms - targets) * norms
    steps, optimizer_state = optimizer.update(
        weight_grads, state.optimizer_state, state.loss_weights)
    loss_weights = _renormalise(
        optax.apply_updates(state.loss_weights, steps))
    return state.loss_weights, state._replace(
        loss_weights=loss_weights, initial_losses=initial_losses,
        count=optax.safe_increment(state.count),
        optimizer_state=optimizer_state)

  return base.Weighting(weigh=weigh, init=init, name='gradnorm',
                        reads_losses=True)
