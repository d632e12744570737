"""DB-MTL: log scaling, a per-task gradient EMA, then max-norm balancing.

A composition, not a weighting: it chains three public methods, so it sits
one floor above ``methods/`` (where no method imports another).
"""

import optax

from mtl_optax._src import base
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
  an average (step 12). It is exactly::

    optax.chain(log_scaling(T, eps=eps), gradient_ema(T, beta=beta,
                beta_sigma=beta_sigma), balancer(T,
                weightings.max_norm_weighting(eps=eps)))

  (each with ``task_specific``); the three pieces are public so that each
  combines with other methods (the paper's Table 5 and Fig. 1).

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
  return optax.chain(
      log_scaling_lib.log_scaling(  # Step 6.
          num_tasks, eps=eps, task_specific=task_specific),
      gradient_ema_lib.gradient_ema(  # Step 7.
          num_tasks, beta=beta, beta_sigma=beta_sigma,
          task_specific=task_specific),
      base.balancer(  # Steps 9 and 12.
          num_tasks, max_norm_weighting_lib.max_norm_weighting(eps=eps),
          task_specific=task_specific))
