"""MoCo: MGDA-like weights on tracked gradients, one projected step each."""

from typing import NamedTuple

import warnings

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics
from mtl_optax._src.solvers import simplex

WEIGHT_UPDATES = ('projection', 'softmax')


class MoCoState(NamedTuple):
  """State of :func:`moco`: T x P floats for P shared parameters."""
  tracked_weights: jax.Array  # shape=[T], dtype=float32; λ, on the simplex,
  # 1/T at first: the update is Σ_t λ_t y_t over the tracked gradients y_t,
  # not the raw ones (what mtl_optax.last_weights reports)
  tracked: tuple  # one [T, *leaf.shape] array per shared leaf, in the
  # leaf's dtype promoted to float32: y_t, the tracked task gradients
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; finite updates so far (k − 1),
  # saturating

  def task_weights(self) -> jax.Array:
    return self.tracked_weights

  @property
  def weights(self) -> jax.Array:
    """Deprecated name of ``tracked_weights`` (removed in 0.3)."""
    warnings.warn('MoCoState.weights is deprecated and will be removed in 0.3; '
                  'use MoCoState.tracked_weights (the update is not Σ_t w_t g_t).',
                  DeprecationWarning, stacklevel=2)
    return self.tracked_weights


def moco(
    num_tasks: int,
    *,
    tracking_rate: float = 0.5,
    tracking_rate_sigma: float = 0.5,
    learning_rate: float = 0.1,
    learning_rate_sigma: float = 0.5,
    rho: float = 0.0,
    weight_update: str = 'projection',
    task_specific: base.TaskSpecific = None,
    beta: float | None = None,
    beta_sigma: float | None = None,
    gamma: float | None = None,
    gamma_sigma: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Steps along MGDA-like weights of tracked, loss-scaled unit gradients.

  Fernando, Shen, Liu, Chaudhury, Murugesan and Chen, "Mitigating Gradient
  Bias in Multi-objective Learning: A Provably Convergent Approach" (ICLR
  2023), §3, Algorithm 1. Stochastic MGDA is biased because its weights
  depend on noisy gradients; MoCo instead tracks each task's gradient with a
  moving average ``y_t`` and moves the weights ``λ`` by one projected
  gradient step of the MGDA objective ``½‖Σ_t λ_t y_t‖² + ½ρ‖λ‖²`` per
  update. At update ``k = 1, 2, …``, with ``β_k = β / k^{σ_β}`` and
  ``γ_k = γ / k^{σ_γ}``:

  ``h_t = L_t g_t / ‖g_t‖``  (loss-scaled unit gradient),

  ``y_t ← y_t − β_k (y_t − h_t)``  (gradient tracking, ``y_t = 0`` at first),

  ``λ ← Π_Δ(λ − γ_k (Y Yᵀ + ρ I) λ)``  (``λ = 1/T`` at first),

  and the update is ``d = Σ_t λ_t y_t``, with the new ``y`` and ``λ``.
  ``Π_Δ`` is the Euclidean projection onto the simplex.

  **State: T x P floats** for P shared parameters (the tracked ``y``, in
  each leaf's dtype promoted to float32), plus ``λ``.

  **Decisions.** The defaults ``β = 0.5``, ``σ_β = 0.5``, ``γ = 0.1``,
  ``σ_γ = 0.5``, ``ρ = 0`` and the loss-scaled unit gradients ``h_t`` come
  from the authors' multi-task code (as shipped in LibMTL); the paper's
  analysis tracks the raw stochastic gradients and projects ``y_t`` onto a
  bounded set, which the code omits, as here. The weight step projects onto
  the simplex as in the paper (``weight_update='projection'``);
  ``'softmax'`` replaces ``Π_Δ`` by a softmax of the stepped weights, as
  the authors' code does. A zero gradient gives ``h_t = 0`` (no ``1e-8``
  added to the norm), so ``d`` depends on the gradients' directions and the
  losses only: scaling every gradient leaves it unchanged. The update uses
  the tracked gradients, not the current ones, and task-specific leaves get
  their own task's current gradient. The weights are constants to autodiff.

  Args:
    num_tasks: T.
    tracking_rate: ``β`` in ``(0, 1]``, the weight of the new gradient in
      the tracking average (the paper's β; ``beta`` elsewhere in this
      library weighs the old value).
    tracking_rate_sigma: ``σ_β >= 0``, the decay exponent of ``β_k``.
    learning_rate: ``γ >= 0``, the weight step size (0 keeps ``λ = 1/T``).
    learning_rate_sigma: ``σ_γ >= 0``, the decay exponent of ``γ_k``.
    rho: ``ρ >= 0``, the ridge on the weights.
    weight_update: ``'projection'`` (paper) or ``'softmax'`` (authors'
      code).
    task_specific: leaves that belong to one task (see :func:`balancer`).
    beta, beta_sigma, gamma, gamma_sigma: deprecated names of
      ``tracking_rate``, ``tracking_rate_sigma``, ``learning_rate`` and
      ``learning_rate_sigma``, removed in 0.3.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`MoCoState`; it needs the losses. ``state.tracked_weights`` is ``λ``.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.moco(2)
    >>> grads = jnp.array([[3.0, 0.0], [0.0, 2.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)),
    ...                            task_losses=jnp.array([1.0, 2.0]))
    >>> state.tracked_weights  # Π_Δ([0.5, 0.5] − 0.1 diag(0.25, 1) [0.5, 0.5])
    Array([0.51875, 0.48125], dtype=float32)
    >>> updates  # y = 0.5 h = [[0.5, 0], [0, 1]]
    Array([0.259375, 0.48125 ], dtype=float32)
  """
  base.check_num_tasks(num_tasks)
  beta = base.renamed('moco', 'beta', beta, 'tracking_rate', tracking_rate)
  beta_sigma = base.renamed('moco', 'beta_sigma', beta_sigma,
                            'tracking_rate_sigma', tracking_rate_sigma)
  gamma = base.renamed('moco', 'gamma', gamma, 'learning_rate', learning_rate)
  gamma_sigma = base.renamed('moco', 'gamma_sigma', gamma_sigma,
                             'learning_rate_sigma', learning_rate_sigma)
  base.check_range('tracking_rate', beta, 0.0, 1.0, low_open=True)
  base.check_range('tracking_rate_sigma', beta_sigma, 0.0)
  base.check_range('learning_rate', gamma, 0.0)
  base.check_range('learning_rate_sigma', gamma_sigma, 0.0)
  base.check_range('rho', rho, 0.0)
  base.check_choice('weight_update', weight_update, WEIGHT_UPDATES)
  name = 'moco'

  def init(shared_params):
    tracked = base.stacked_zeros(num_tasks, shared_params, jnp.float32)
    return MoCoState(
        tracked_weights=jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32),
        tracked=tracked, count=jnp.zeros([], jnp.int32))

  def step(shared, specific, losses, state, inputs_finite):
    base.check_shared(name, shared)
    base.check_stacked_state(name, 'tracks', state.tracked, shared)
    shared_constant = [jax.lax.stop_gradient(leaf) for leaf in shared]
    losses = jax.lax.stop_gradient(losses)
    gram, scale = gramian_lib.gramian(shared_constant)
    norms = numerics.safe_sqrt(jnp.diagonal(gram)) * scale
    # h_t = L_t g_t / ‖g_t‖, 0 for a zero gradient.
    coefficients = numerics.safe_div(losses, norms)

    k = state.count.astype(jnp.float32) + 1.0
    beta_k = beta * jnp.power(k, -jnp.asarray(beta_sigma, jnp.float32))
    gamma_k = gamma * jnp.power(k, -jnp.asarray(gamma_sigma, jnp.float32))

    finite = inputs_finite & numerics.all_finite(gram, scale)

    def track(tracked, grads):
      # Guarded in the pass that writes the T x P state: kept if not finite.
      grads = gramian_lib.sharded_like(grads.astype(tracked.dtype), tracked)
      targets = grads * coefficients.astype(tracked.dtype).reshape(
          (num_tasks,) + (1,) * (grads.ndim - 1))
      return jnp.where(finite, tracked - beta_k * (tracked - targets),
                       tracked).astype(tracked.dtype)

    tracked = tuple(track(y, g) for y, g in zip(state.tracked,
                                                 shared_constant))
    tracked_gram, tracked_scale = gramian_lib.gramian(list(tracked))
    products = tracked_scale ** 2 * (tracked_gram @ state.tracked_weights)  # Y Yᵀλ.
    stepped = state.tracked_weights - gamma_k * (
        products + rho * state.tracked_weights)
    if weight_update == 'projection':
      weights = simplex.project_to_simplex(stepped)
    else:
      weights = jax.nn.softmax(stepped)

    used = jnp.where(finite, weights, jnp.nan)
    shared_updates = [
        update.astype(grads.dtype) for update, grads in zip(
            gramian_lib.weighted_sum(used, list(tracked)), shared)]
    specific_updates = base.own_task_updates(specific)
    new_state = MoCoState(tracked_weights=weights.astype(jnp.float32),
                          tracked=tracked,
                          count=optax.safe_increment(state.count))
    return base.StepResult(shared_updates, specific_updates, new_state,
                           finite, state_guarded=True)

  return base.task_transformation(num_tasks, name, init, step,
                                  needs_losses=True,
                                  task_specific=task_specific)
