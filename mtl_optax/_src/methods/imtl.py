"""IMTL: impartial multi-task learning, by gradient balance, loss balance or both."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics
from mtl_optax._src.solvers import scaling
from mtl_optax._src.solvers import spectral

MODES = ('gradient', 'loss', 'hybrid')
# |Σ_t c_t| below this fraction of Σ_t |c_t| leaves IMTL-G's normalisation
# Σ α = 1 undefined (the equal-projection direction is orthogonal to it).
_SUM_RTOL = 1e-6


class IMTLState(NamedTuple):
  log_scales: jax.Array  # shape=[T], dtype=float32; s_t, the loss scale e^{s_t}
  optimizer_state: Any  # the inner optimizer's state for log_scales


def imtl_g_weights(gram: jax.Array) -> jax.Array:
  """IMTL-G: weights summing to 1 whose update projects equally on every u_t.

  The paper's closed form ``α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹``, ``α_1 = 1 − Σ α_{2:T}``
  (``D``, ``U``: differences of the raw and unit gradients with the first)
  solves ``d·u_1 = d·u_t`` for all t with ``Σ α = 1``. In Gramian terms the
  same conditions read ``G α = c ‖g‖``, so ``α ∝ D⁻¹ Ĝ⁺ 1`` on the cosines
  ``Ĝ`` (see :func:`spectral.equal_projection_coefficients`), normalised to
  sum to one. The pseudo-inverse also covers a singular ``D Uᵀ`` (dependent
  gradients), where the paper's inverse does not exist.
  """
  coefficients = spectral.equal_projection_coefficients(gram)
  total = jnp.sum(coefficients)
  defined = jnp.abs(total) > _SUM_RTOL * jnp.sum(jnp.abs(coefficients))
  return jnp.where(defined, numerics.safe_div(coefficients, total), 0.0)


def imtl(
    *,
    mode: str = 'hybrid',
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-2,
    loss_floor: float = 1e-8,
    scale_task_specific: bool = False,
) -> base.Weighting:
  r"""Impartial multi-task learning: IMTL-G, IMTL-L or the hybrid IMTL.

  Liu et al., "Towards Impartial Multi-task Learning" (ICLR 2021).

  * ``mode='gradient'`` (IMTL-G, gradient balance): weights ``α`` with
    ``Σ_t α_t = 1`` such that the update ``d = Σ_t α_t g_t`` has the same
    projection on every unit gradient, ``d·u_1 = d·u_t`` with
    ``u_t = g_t/‖g_t‖``. The paper's closed form,
    ``α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹`` and ``α_1 = 1 − 1ᵀα_{2:T}``, is computed
    from the Gramian as ``α ∝ D⁻¹ Ĝ⁺ 1`` (``Ĝ`` the cosine matrix,
    ``D = diag‖g_t‖``), normalised to sum to 1: the same numbers when the
    gradients are independent, and the least-squares answer (pseudo-inverse,
    rank threshold of :mod:`spectral`) when they are not. Stateless.
  * ``mode='loss'`` (IMTL-L, loss balance): each loss is scaled as
    ``e^{s_t} L_t − s_t`` with a learned ``s_t``, so ``w_t = e^{s_t}``. ``s``
    lives in the state (0 at the start) and moves by its own gradient
    ``∂/∂s_t = e^{s_t} L_t − 1`` through the inner ``optimizer``, as if
    trained with the network; its fixed point is ``e^{s_t} L_t = 1``. Needs
    the losses; the Gramian is not read (a loss-level weighting).
  * ``mode='hybrid'`` (IMTL, the paper's full method, default): IMTL-G applied
    to the gradients of the scaled losses, ``e^{s_t} g_t``; the weights on the
    raw gradients are ``α_t e^{s_t}``, and ``s`` moves as in IMTL-L.

  Decisions: the projection direction is scale-free per task, so in the
  hybrid the scales only set the update's length through ``Σ α = 1``, as in
  the paper. Losses below ``loss_floor`` (zero or negative) are floored in
  the gradient of ``s``, so ``s`` stops near ``−log(loss_floor)`` instead of
  growing without bound. IMTL-G's ``α`` is undefined when the equal-projection
  direction is orthogonal to the constraint ``Σ α = 1``
  (``|Σ c| ≤ 1e-6 Σ |c|``): the weights are then zero (no update). A zero
  gradient gets ``α_t = 0``. The paper trains every parameter on the
  scaled loss ``e^{s_t} L_t − s_t``, so a task-specific parameter (a head)
  steps along ``e^{s_t} ∇L_t``: ``scale_task_specific=True`` does this
  (IMTL-L and hybrid), through :class:`Weighting`'s ``specific_weights``
  hook, with the same ``s`` as the shared weights. The default, False,
  gives task-specific leaves their own task's raw gradient, as every
  method of the library does (and as earlier versions did). On the
  one-backward loss path (``'loss'`` mode, differentiating
  ``Σ_t w_t L_t``) the heads are always scaled by ``w_t = e^{s_t}``.

  Properties (IMTL-G and hybrid at a given ``s``): permutation invariant and
  linear under scaling. Not non-conflicting in general: ``d·g_t`` has the
  sign of ``Σ_t c_t`` in the normalisation, which can be negative when
  three or more gradients are nearly dependent.

  Args:
    mode: ``'gradient'``, ``'loss'`` or ``'hybrid'``.
    optimizer: inner optax optimizer that moves ``s`` (IMTL-L and hybrid).
      Default: ``optax.adam(learning_rate)``, as for uncertainty weighting.
    learning_rate: > 0, used by the default optimizer only.
    loss_floor: > 0, smallest loss used in the gradient of ``s``.
    scale_task_specific: whether task-specific leaves get ``e^{s_t} g_t``
      (the paper) instead of ``g_t``; IMTL-L and hybrid only.

  Returns:
    A :class:`Weighting`: for ``'gradient'``, stateless and reading the
    Gramian; for ``'loss'``, loss-level with state :class:`IMTLState`,
    needing the losses; for ``'hybrid'``, reading the Gramian and the losses,
    with state :class:`IMTLState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.imtl(2, mode='gradient')
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    >>> updates, _ = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> [round(float(x), 4) for x in updates]  # equal projections
    [0.6667, 0.6667]
  """
  base.check_choice('mode', mode, MODES)
  base.check_range('learning_rate', learning_rate, 0.0, low_open=True)
  base.check_range('loss_floor', loss_floor, 0.0, low_open=True)

  if scale_task_specific not in (False, True):
    raise ValueError('scale_task_specific must be a bool, got '
                     f'{scale_task_specific!r}.')
  if mode == 'gradient' and scale_task_specific:
    raise ValueError("scale_task_specific needs the loss scales of mode='loss'"
                     " or 'hybrid'; mode='gradient' has none.")
  if mode == 'gradient':

    def weigh_gradients(stats, state):
      return imtl_g_weights(stats.gram), state

    return base.Weighting(weigh=weigh_gradients, name='imtl')

  if optimizer is None:
    optimizer = optax.adam(learning_rate)

  def init(num_tasks):
    log_scales = jnp.zeros([num_tasks], jnp.float32)
    return IMTLState(log_scales=log_scales,
                     optimizer_state=optimizer.init(log_scales))

  def weigh(stats, state):
    scales = jnp.exp(state.log_scales)  # IMTL-L: L_t -> e^{s_t} L_t - s_t.
    if mode == 'loss':
      weights = scales
    else:
      # IMTL-G on the scaled gradients e^{s_t} g_t, mapped back to raw ones.
      # α does not change when every scale is multiplied by the same factor,
      # so the Gramian sees scales relative to the largest (no overflow).
      # The scaled gradients are g_t / c_t with c_t = e^{max s − s_t} >= 1.
      scaled_gram = scaling.scale_gram(
          stats.gram, jnp.exp(jnp.max(state.log_scales) - state.log_scales))
      weights = imtl_g_weights(scaled_gram) * scales
    losses = numerics.floor_losses(stats.losses, loss_floor)
    log_scale_grads = scales * losses - 1.0  # ∂(e^s L − s)/∂s
    steps, optimizer_state = optimizer.update(
        log_scale_grads, state.optimizer_state, state.log_scales)
    log_scales = optax.apply_updates(state.log_scales, steps)
    return weights, state._replace(log_scales=log_scales,
                                   optimizer_state=optimizer_state)

  def specific_weights(stats, state):
    del stats
    return jnp.exp(state.log_scales)  # The heads' loss scale e^{s_t}.

  return base.Weighting(
      weigh=weigh, init=init, name='imtl', reads_gram=mode == 'hybrid',
      reads_losses=True,
      specific_weights=specific_weights if scale_task_specific else None)
