"""PBI: penalty-based boundary intersection scalarisation of the losses."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics


def _check(theta, preference, reference):
  base.check_range('theta', theta, 0.0)
  base.check_task_vector('preference', preference, nonnegative=True)
  base.check_task_vector('reference', reference)


def _norm(vector):
  """``‖v‖`` computed on ``v / max|v|`` (no overflow; 0 with a 0 derivative
  at ``v = 0``)."""
  largest = jax.lax.stop_gradient(jnp.max(jnp.abs(vector)))
  unit = numerics.safe_div(vector, largest)
  return largest * numerics.safe_sqrt(jnp.sum(unit ** 2)), unit


def _decompose(losses, preference, reference):
  """``(ŵ, d1, p)``: unit direction, distance along it, perpendicular part."""
  num_tasks = losses.shape[0]
  preference = base.task_vector('pbi', 'preference', preference, num_tasks,
                                1.0).astype(losses.dtype)
  reference = base.task_vector('pbi', 'reference', reference, num_tasks,
                               0.0).astype(losses.dtype)
  direction = preference / _norm(preference)[0]
  gaps = losses - reference
  along = jnp.dot(gaps, direction)  # d1.
  return direction, along, gaps - along * direction


def pbi_value(task_losses: jax.Array, theta: float = 5.0, *,
              preference: Any = None, reference: Any = None) -> jax.Array:
  r"""The PBI scalarisation ``d₁ + θ d₂`` of the losses.

  Zhang and Li, "MOEA/D: A Multiobjective Evolutionary Algorithm Based on
  Decomposition" (IEEE TEVC 2007), §II-C: with ``f = L − z`` and the unit
  preference direction ``ŵ = w / ‖w‖``, ``d₁ = fᵀŵ`` and
  ``d₂ = ‖f − d₁ ŵ‖``. Its gradient with respect to the losses is exactly the
  weights of :func:`mtl_optax.weightings.pbi` (where ``d₂ > 0``).

  Args:
    task_losses: ``[T]`` losses.
    theta: ``θ >= 0``, the penalty on the distance to the preference ray.
    preference: ``w``, ``[T]`` non-negative preference weights with a
      positive sum (default uniform); only its direction matters.
    reference: ``z``, the ``[T]`` reference (ideal) point (default 0).

  Returns:
    The scalar value, in the losses' dtype (at least float32).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> mtl.pbi_value(jnp.array([3.0, 4.0]), 5.0, preference=[1.0, 0.0])
    Array(23., dtype=float32)
  """
  _check(theta, preference, reference)
  losses = base.loss_vector('pbi_value', task_losses)
  _, along, perpendicular = _decompose(losses, preference, reference)
  return along + theta * _norm(perpendicular)[0]


def pbi(theta: float = 5.0, *, preference: Any = None,
        reference: Any = None) -> base.Weighting:
  r"""Weights the losses by the gradient of their PBI value.

  Penalty-based boundary intersection, Zhang and Li, "MOEA/D: A
  Multiobjective Evolutionary Algorithm Based on Decomposition" (IEEE TEVC
  2007), §II-C. The loss vector relative to the reference point,
  ``f = L − z``, splits into its length along the unit preference direction
  ``ŵ = w / ‖w‖`` and its distance to that ray:

  ``d₁ = fᵀŵ``, ``d₂ = ‖f − d₁ ŵ‖``, ``P(L) = d₁ + θ d₂``.

  Its gradient is ``Σ_t w_t ∇L_t`` with

  ``weights = ∂P/∂L = ŵ + θ (f − d₁ ŵ) / d₂``,

  so one backward pass of ``Σ_t weights_t L_t`` (held constant, see
  :func:`mtl_optax.weigh_losses`) gives the scalarisation's gradient. The
  weights are often negative: the penalty pulls the losses towards the ray.
  :func:`mtl_optax.pbi_value` computes ``P`` itself.

  **Decisions.** ``θ = 5``, the value of the MOEA/D paper's experiments.
  ``d₁`` is signed (the paper writes its absolute value, the same for losses
  above the reference point). On the ray (``d₂ = 0``) ``P`` is not
  differentiable; the weights are then ``ŵ`` (the subgradient whose
  perpendicular part is 0), also when ``d₂`` is at the round-off level of
  ``f`` (16 ulps), where its direction is noise. Norms are taken after
  dividing by the largest entry, so no square overflows.

  Args:
    theta: ``θ >= 0``, the penalty on the distance to the preference ray
      (0: the projection ``d₁`` alone, ``weights = ŵ``).
    preference: ``w``, ``[T]`` non-negative preference weights with a
      positive sum (default uniform); only its direction matters.
    reference: ``z``, the ``[T]`` reference (ideal) point (default 0).

  Returns:
    A stateless loss-level :class:`Weighting`; it needs the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.pbi(2, 5.0, preference=[1.0, 0.0])
    >>> updates, _ = tx.update(jnp.eye(2), tx.init(jnp.zeros(2)),
    ...                        task_losses=jnp.array([3.0, 4.0]))
    >>> updates  # ŵ + 5 (0, 4) / 4
    Array([1., 5.], dtype=float32)
  """
  _check(theta, preference, reference)

  def init(num_tasks):
    base.task_vector('pbi', 'preference', preference, num_tasks, 0.0)
    base.task_vector('pbi', 'reference', reference, num_tasks, 0.0)
    return optax.EmptyState()

  def weigh(stats, state):
    losses = stats.losses
    direction, along, perpendicular = _decompose(losses, preference,
                                                 reference)
    distance, unit_perpendicular = _norm(perpendicular)
    # p / ‖p‖ = u / ‖u‖ with u = p / max|p|.
    outward = numerics.safe_div(
        unit_perpendicular,
        numerics.safe_sqrt(jnp.sum(unit_perpendicular ** 2)))
    # A p at the round-off level of f = d₁ŵ + p has no direction: on the ray.
    round_off = (16 * jnp.finfo(losses.dtype).eps *
                 (jnp.abs(along) + distance))
    weights = direction + theta * jnp.where(distance > round_off, outward, 0.0)
    return weights.astype(jnp.float32), state

  return base.Weighting(weigh=weigh, init=init, name='pbi', reads_gram=False,
                        reads_losses=True)
