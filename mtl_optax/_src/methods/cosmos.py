"""COSMOS: linear scalarisation minus a cosine-similarity reward."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics


def _check(cosine_penalty, preference):
  base.check_range('cosine_penalty', cosine_penalty, 0.0)
  base.check_task_vector('preference', preference, nonnegative=True)


def _parts(losses, preference):
  """``(r, u, m)`` with ``L = m u``, ``m = max_t |L_t|`` (``u = 0`` if L = 0).

  The cosine is invariant to the scale of ``L``, so it is computed on ``u``,
  whose squares neither overflow nor underflow.
  """
  num_tasks = losses.shape[0]
  preference = base.task_vector('cosmos', 'preference', preference, num_tasks,
                                1.0 / num_tasks).astype(losses.dtype)
  largest = jax.lax.stop_gradient(jnp.max(jnp.abs(losses)))
  return preference, numerics.safe_div(losses, largest), largest


def cosmos_value(task_losses: jax.Array, cosine_penalty: float, *,
                 preference: Any = None) -> jax.Array:
  r"""The COSMOS scalarisation ``rᵀL − λ rᵀL / (‖r‖ ‖L‖)``.

  Ruchte and Grabocka, "Scalable Pareto Front Approximation for Deep
  Multi-Objective Learning" (ICDM 2021), eq. 5. The cosine term is taken as 0
  when every loss is 0 (where it is undefined). Its gradient with respect to
  the losses is exactly the weights of :func:`mtl_optax.weightings.cosmos`.

  Args:
    task_losses: ``[T]`` losses.
    cosine_penalty: ``λ >= 0``, the weight of the cosine similarity between
      the losses and the preference (0: the linear scalarisation ``rᵀL``).
    preference: ``r``, ``[T]`` non-negative preference weights with a
      positive sum (default uniform ``1/T``).

  Returns:
    The scalar value, in the losses' dtype (at least float32).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> mtl.cosmos_value(jnp.array([3.0, 4.0]), 1.0, preference=[1.0, 0.0])
    Array(2.4, dtype=float32)
  """
  _check(cosine_penalty, preference)
  losses = base.loss_vector('cosmos_value', task_losses)
  preference_vector, unit, _ = _parts(losses, preference)
  cosine = numerics.safe_div(
      jnp.dot(preference_vector, unit),
      jnp.linalg.norm(preference_vector) * numerics.safe_sqrt(
          jnp.sum(unit ** 2)))
  return jnp.dot(preference_vector, losses) - cosine_penalty * cosine


def cosmos(cosine_penalty: float, *, preference: Any = None) -> base.Weighting:
  r"""Weights the losses by the gradient of their COSMOS value.

  Ruchte and Grabocka, "Scalable Pareto Front Approximation for Deep
  Multi-Objective Learning" (ICDM 2021), eq. 5: the linear scalarisation with
  preference ``r`` minus ``λ`` times the cosine similarity between the loss
  vector and ``r``,

  ``C(L) = rᵀL − λ cos(r, L)``, ``cos(r, L) = rᵀL / (‖r‖ ‖L‖)``,

  which rewards a loss vector pointing along the preference ray. Its
  gradient is ``Σ_t w_t ∇L_t`` with

  ``w = ∂C/∂L = r − λ / (‖r‖ ‖L‖) · (r − (rᵀL / ‖L‖²) L)``,

  so one backward pass of ``Σ_t w_t L_t`` (``w`` held constant, see
  :func:`mtl_optax.weigh_losses`) gives the scalarisation's gradient.
  :func:`mtl_optax.cosmos_value` computes ``C`` itself. The weights may be
  negative.

  **Decisions.** ``λ`` has no default: the paper tunes it per data set
  (from 0.01 to 8). The paper also samples ``r`` from a Dirichlet
  distribution at each step and feeds it to the network as an input; that
  is a modelling choice left to the user (build a new weighting, or pass the
  losses through :func:`mtl_optax.weigh_losses` with a fresh preference).
  When every loss is 0 the cosine is undefined and the weights are ``r``.
  The cosine is computed on the losses divided by their largest magnitude,
  so no square overflows.

  Args:
    cosine_penalty: ``λ >= 0`` (0: plain linear scalarisation, ``w = r``).
    preference: ``r``, ``[T]`` non-negative preference weights with a
      positive sum (default uniform ``1/T``).

  Returns:
    A stateless loss-level :class:`Weighting`; it needs the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.cosmos(2, 1.0, preference=[1.0, 0.0])
    >>> updates, _ = tx.update(jnp.eye(2), tx.init(jnp.zeros(2)),
    ...                        task_losses=jnp.array([3.0, 4.0]))
    >>> updates  # r − (r − 0.12 L) / 5
    Array([0.872, 0.096], dtype=float32)
  """
  _check(cosine_penalty, preference)

  def init(num_tasks):
    base.task_vector('cosmos', 'preference', preference, num_tasks, 0.0)
    return optax.EmptyState()

  def weigh(stats, state):
    preference_vector, unit, largest = _parts(stats.losses, preference)
    # With L = m u: λ/(‖r‖ m ‖u‖) · (r − (rᵀu / ‖u‖²) u).
    unit_squared = jnp.sum(unit ** 2)
    direction = preference_vector - numerics.safe_div(
        jnp.dot(preference_vector, unit), unit_squared) * unit
    scale = numerics.safe_div(
        1.0, jnp.linalg.norm(preference_vector) *
        numerics.safe_sqrt(unit_squared) * largest)
    weights = preference_vector - cosine_penalty * scale * direction
    return weights.astype(jnp.float32), state

  return base.Weighting(weigh=weigh, init=init, name='cosmos',
                        reads_gram=False, reads_losses=True)
