"""DB-MTL: log scaling, a per-task gradient EMA, then max-norm balancing."""

from typing import Any, NamedTuple

import jax
import optax

from mtl_optax._src import base
from mtl_optax._src.methods import gradient_ema as gradient_ema_lib
from mtl_optax._src.methods import log_scaling as log_scaling_lib
from mtl_optax._src.methods import max_norm_weighting as max_norm_weighting_lib


class DBMTLState(NamedTuple):
  """State of :func:`db_mtl`: T x P floats for P shared parameters."""
  weights: jax.Array  # shape=[T], dtype=float32; weights of the averages ĝ_t
  count: jax.Array  # shape=(), dtype=int32; updates applied so far (k - 1)
  task_grads_ema: Any  # params' structure; shared leaves [T, *leaf.shape] in
  # the leaf's dtype, task-specific leaves optax.MaskedNode()


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
  an average (step 12). It is exactly ``optax.chain(log_scaling(T),
  gradient_ema(T), max_norm_weighting(T))`` with one flat state; the three
  pieces are public so that each combines with other methods (the paper's
  Table 5 and Fig. 1).

  **Decisions** (METHODS.md): ``β_k = beta / k^beta_sigma`` covers both the
  constant ``β`` (``beta_sigma=0``) and the decayed ``β/√k`` of the paper's
  grid; the default is ``0.9/√k``. A negative loss is treated as 0 in the log
  (divisor ``ε``; the update stays finite). A non-finite gradient or loss
  makes the update NaN (so ``optax.apply_if_finite`` skips it) and leaves the
  whole state as it was.

  Args:
    num_tasks: T.
    beta: the EMA forgetting rate ``β`` in ``[0, 1)``.
    beta_sigma: ``σ >= 0`` of the decay ``β_k = β / k^σ``.
    eps: ``ε > 0`` in the log and in the norms (the paper's ``1e-8``).
    task_specific: leaves that belong to one task (see :func:`balancer`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`DBMTLState` (``weights`` are those of the averages ``ĝ_t``);
    ``update`` needs ``task_losses``.

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
  """
  base.check_num_tasks(num_tasks)
  log_scaling = log_scaling_lib.log_scaling(
      num_tasks, eps=eps, task_specific=task_specific)
  gradient_ema = gradient_ema_lib.gradient_ema(
      num_tasks, beta=beta, beta_sigma=beta_sigma,
      task_specific=task_specific)
  max_norm = base.balancer(
      num_tasks, max_norm_weighting_lib.max_norm_weighting(eps=eps),
      task_specific=task_specific)

  def init_fn(params):
    ema_state = gradient_ema.init(params)
    return DBMTLState(weights=max_norm.init(params).weights,
                      count=ema_state.count,
                      task_grads_ema=ema_state.task_grads_ema)

  def update_fn(task_grads, state, params=None, *, task_losses=None,
                **extra_args):
    del params, extra_args
    log_scaled, _ = log_scaling.update(  # Step 6.
        task_grads, optax.EmptyState(), task_losses=task_losses)
    averaged, ema_state = gradient_ema.update(  # Step 7.
        log_scaled, gradient_ema_lib.GradientEmaState(
            count=state.count, task_grads_ema=state.task_grads_ema))
    updates, weights_state = max_norm.update(  # Steps 9 and 12.
        averaged, base.BalancerState(weights=state.weights,
                                     weighting_state=optax.EmptyState()))
    return updates, DBMTLState(weights=weights_state.weights,
                               count=ema_state.count,
                               task_grads_ema=ema_state.task_grads_ema)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
