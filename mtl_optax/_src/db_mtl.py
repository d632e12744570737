"""DB-MTL: log scaling, a per-task gradient EMA, then max-norm balancing.

A composition, not a weighting: it runs three public methods in one step, so
it sits one floor above ``methods/`` (where no method imports another).
"""

import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics
from mtl_optax._src.methods import gradient_ema as gradient_ema_lib
from mtl_optax._src.methods import log_scaling as log_scaling_lib
from mtl_optax._src.methods import max_norm_weighting as max_norm_weighting_lib

DBMTLState = tuple[optax.EmptyState, gradient_ema_lib.GradientEmaState,
                   base.BalancerState]
"""State of :func:`db_mtl`: ``optax.chain``'s tuple of its pieces' states.

``(log scaling's EmptyState, GradientEmaState, BalancerState)``, so
``state[1].task_grads_ema`` holds the averages ``ĝ_t`` (T x P floats for P
shared parameters) and ``mtl.last_weights(state)`` the weights of the last
update.
"""


def db_mtl(
    num_tasks: int,
    *,
    beta: float = 0.9,
    beta_sigma: float = 0.5,
    eps: float = 1e-8,
    task_specific: base.TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Dual-balancing MTL: balances the loss scales, then the gradient norms.

  Lin et al., "Dual-Balancing for Multi-Task Learning", Algorithm 1. Per step
  ``k = 1, 2, …`` (the paper counts from 0; here ``k`` is the update number):

  1. log scaling (step 6): ``g_t ← ∇ log(L_t + ε) = g_t / (L_t + ε)``;
  2. per-task EMA (step 7, eq. 1): ``ĝ_t ← β_k ĝ_t + (1 − β_k) g_t``,
     ``ĝ_t = 0`` at the start, no bias correction, ``β_k = beta/k^beta_sigma``;
  3. max-norm balancing (step 9, eq. 2):
     ``d = max_t ‖ĝ_t‖ Σ_t ĝ_t / (‖ĝ_t‖ + ε)``.

  Task-specific leaves step on ``∇ log(L_t + ε)`` of their own task, without
  an average (step 12). It computes exactly::

    optax.chain(log_scaling(T, eps=eps), gradient_ema(T, beta=beta,
                beta_sigma=beta_sigma), balancer(T,
                weightings.max_norm_weighting(eps=eps)))

  (each with ``task_specific``), with the same state; the three pieces are
  public so that each combines with other methods (the paper's Table 5 and
  Fig. 1). Here they run as one step: the log scaling, the average and the
  finiteness guard of the state are one pass over the T x P average, so the
  update reads and writes it once, then reads it for the Gramian and the sum.

  **Decisions**: ``β_k = beta / k^beta_sigma`` covers both the constant ``β``
  (``beta_sigma=0``) and the decayed ``β/√k`` of the paper's grid; the
  default is ``0.9/√k``. A negative loss is treated as 0 in the log (divisor
  ``ε``; the update stays finite). A non-finite gradient or loss makes the
  update NaN (so ``optax.apply_if_finite`` skips it) and leaves every piece's
  state as it was.

  Args:
    num_tasks: T.
    beta: the EMA forgetting rate ``β`` in ``[0, 1)``.
    beta_sigma: ``σ >= 0`` of the decay ``β_k = β / k^σ``.
    eps: ``ε > 0`` in the log and in the norms (the paper's ``1e-8``).
    task_specific: leaves that belong to one task (see :func:`balancer`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (an ``optax.chain``) with
    state :data:`DBMTLState`; ``mtl.last_weights(state)`` gives the weights
    of the averages ``ĝ_t``. ``update`` needs ``task_losses``.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.db_mtl(2, beta=0.0)  # No average: one step of eqs. 1-2.
    >>> grads = jnp.array([[3.0, 4.0], [0.0, 2.0]])
    >>> losses = jnp.array([5.0, 1.0])  # Log-scaled: [0.6, 0.8] and [0, 2].
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)),
    ...                            task_losses=losses)
    >>> updates  # 2 · ([0.6, 0.8] / 1 + [0, 2] / 2)
    Array([1.2, 3.6], dtype=float32)
    >>> mtl.last_weights(state)
    Array([2., 1.], dtype=float32)
  """
  base.check_num_tasks(num_tasks)
  weighting = max_norm_weighting_lib.max_norm_weighting(eps=eps)

  def init(shared_params):  # optax.chain's state of the three pieces.
    return (optax.EmptyState(),
            gradient_ema_lib.initial_state(num_tasks, shared_params),
            base.BalancerState(weights=jnp.zeros([num_tasks], jnp.float32),
                               weighting_state=weighting.init(num_tasks)))

  def step(shared, specific, losses, state, inputs_finite):
    scaling_state, ema_state, balancer_state = state
    base.check_stacked_state('db_mtl', 'averages', ema_state.task_grads_ema,
                             shared)
    base.check_shared('db_mtl', shared)
    finite = inputs_finite & numerics.all_finite(*shared)
    scales = 1.0 / log_scaling_lib.log_scaled_losses(losses, eps)  # Step 6.
    decay = gradient_ema_lib.ema_decay(ema_state.count, beta, beta_sigma)
    averages = gradient_ema_lib.averaged(  # Step 7, eq. 1.
        ema_state.task_grads_ema,
        log_scaling_lib.scale_task_grads(shared, scales), decay, finite)
    gram, scale = gramian_lib.gramian(averages)
    weights = base.weigh_and_guard(  # Step 9, eq. 2.
        weighting, base.TaskStats(gram, scale, losses, num_tasks),
        balancer_state.weighting_state, finite).weights
    new_state = (
        scaling_state,
        gradient_ema_lib.GradientEmaState(
            count=optax.safe_increment(ema_state.count),
            task_grads_ema=averages),
        base.BalancerState(weights=weights,
                           weighting_state=balancer_state.weighting_state))
    return base.StepResult(
        shared=gramian_lib.weighted_sum(weights, averages),
        specific=gramian_lib.weighted_sum(scales, specific),  # Step 12.
        state=new_state, finite=finite, state_guarded=True)

  return base.task_transformation(num_tasks, 'db_mtl', init, step,
                                  needs_losses=True,
                                  task_specific=task_specific)
