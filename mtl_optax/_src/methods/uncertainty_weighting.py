"""Uncertainty weighting: learned log-variances, in three published forms."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics

FORMS = ('kendall', 'liebel', 'bentaieb')


class UncertaintyWeightingState(NamedTuple):
  log_vars: jax.Array  # shape=[T], dtype=float32; s_t = log σ_t²
  optimizer_state: Any  # the inner optimizer's state for log_vars


def _weights_and_log_var_grads(form: str, log_vars: jax.Array,
                               losses: jax.Array):
  """``(w, ∂objective/∂s)`` for each form's objective in ``s = log σ²``."""
  precision = jnp.exp(-log_vars)
  if form == 'kendall':  # ½ e^{-s} L + ½ s
    return 0.5 * precision, 0.5 * (1.0 - precision * losses)
  if form == 'liebel':  # ½ e^{-s} L + ln(1 + e^{s})  (Liebel & Körner, eq. 3)
    return 0.5 * precision, jax.nn.sigmoid(log_vars) - 0.5 * precision * losses
  # bentaieb: e^{-s} L + s  (BenTaieb & Hamarneh, eqs. 5, 6, 8, 9)
  return precision, 1.0 - precision * losses


def uncertainty_weighting(
    *,
    form: str = 'kendall',
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-2,
    init_log_vars: Any = None,
    loss_floor: float = 1e-8,
) -> base.Weighting:
  r"""Weights tasks by learned homoscedastic uncertainties ``s_t = log σ_t²``.

  The state holds ``s`` (T floats, 0 at the start unless ``init_log_vars`` is
  given). Each update weights the tasks by the current ``s``, then moves ``s``
  by its own gradient through the inner ``optimizer``, as if ``s`` were a
  parameter trained jointly with the network. The three forms:

  * ``'kendall'``, Kendall, Gal and Cipolla, "Multi-Task Learning Using
    Uncertainty to Weigh Losses" (CVPR 2018): ``½ e^{-s_t} L_t + ½ s_t``;
    ``w_t = ½ e^{-s_t}``; fixed point ``s_t = log L_t``.
  * ``'liebel'``, Liebel and Körner, "Auxiliary Tasks in Multi-task Learning"
    (2018), eq. 3 of the LogSE paper: ``½ e^{-s_t} L_t + ln(1 + e^{s_t})``,
    whose regulariser is positive; ``w_t = ½ e^{-s_t}``; fixed point: the root
    of ``½ e^{-s} L = sigmoid(s)``.
  * ``'bentaieb'``, BenTaieb and Hamarneh, "Uncertainty Driven Multi-Loss
    Fully Convolutional Networks for Histopathology" (MICCAI 2017), eqs. 5–9:
    ``e^{-s_t} L_t + s_t``; ``w_t = e^{-s_t}``; fixed point ``s_t = log L_t``.

  Losses below ``loss_floor`` are floored in the gradient of ``s``, so a zero
  or negative loss drives ``s`` towards ``log(loss_floor)`` and no further:
  the weights stay finite.

  Args:
    form: ``'kendall'``, ``'liebel'`` or ``'bentaieb'``.
    optimizer: the inner optax optimizer that moves ``s``. Default:
      ``optax.adam(learning_rate)``, the usual choice when ``s`` is trained
      with the network.
    learning_rate: > 0, used by the default optimizer only.
    init_log_vars: initial ``s``, a scalar or ``[T]``; default 0.
    loss_floor: > 0, smallest loss used in the gradient of ``s``.

  Returns:
    A loss-level :class:`Weighting` with state
    :class:`UncertaintyWeightingState`; it needs the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.uncertainty_weighting(2, form='bentaieb')
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> state = tx.init(jnp.zeros(2))
    >>> updates, state = tx.update(grads, state, task_losses=jnp.ones(2))
    >>> updates  # e^{-0} = 1 for both tasks at s = 0
    Array([1., 1.], dtype=float32)
  """
  base.check_choice('form', form, FORMS)
  base.check_range('learning_rate', learning_rate, 0.0, low_open=True)
  base.check_range('loss_floor', loss_floor, 0.0, low_open=True)
  if optimizer is None:
    optimizer = optax.adam(learning_rate)
  if init_log_vars is None:
    init_log_vars = 0.0

  def init(num_tasks):
    if jnp.ndim(init_log_vars) and jnp.shape(init_log_vars) != (num_tasks,):
      raise ValueError(f'init_log_vars must be a scalar or have shape '
                       f'({num_tasks},), got {jnp.shape(init_log_vars)}.')
    log_vars = jnp.broadcast_to(
        jnp.asarray(init_log_vars, jnp.float32), (num_tasks,))
    return UncertaintyWeightingState(
        log_vars=log_vars, optimizer_state=optimizer.init(log_vars))

  def weigh(stats, state):
    losses = numerics.floor_losses(stats.losses, loss_floor)
    weights, log_var_grads = _weights_and_log_var_grads(
        form, state.log_vars, losses)
    steps, optimizer_state = optimizer.update(
        log_var_grads, state.optimizer_state, state.log_vars)
    log_vars = optax.apply_updates(state.log_vars, steps)
    return weights, state._replace(log_vars=log_vars,
                                   optimizer_state=optimizer_state)

  return base.Weighting(weigh=weigh, init=init, name='uncertainty_weighting',
                        reads_gram=False, reads_losses=True)
