"""STCH: smooth Tchebycheff scalarisation of the task losses."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base


def _check(mu, preference, reference):
  base.check_range('mu', mu, 0.0, low_open=True)
  base.check_task_vector('preference', preference, nonnegative=True)
  base.check_task_vector('reference', reference)


def _scaled_gaps(losses, preference, reference):
  """``(λ, λ_t (L_t − z_t))``, uniform ``λ = 1/T`` and ``z = 0`` by default."""
  num_tasks = losses.shape[0]
  preference = base.task_vector('stch', 'preference', preference, num_tasks,
                                1.0 / num_tasks).astype(losses.dtype)
  reference = base.task_vector('stch', 'reference', reference, num_tasks,
                               0.0).astype(losses.dtype)
  return preference, preference * (losses - reference)


def stch_value(task_losses: jax.Array, mu: float = 1.0, *,
               preference: Any = None, reference: Any = None) -> jax.Array:
  r"""The smooth Tchebycheff scalarisation ``μ log Σ_t exp(λ_t (L_t − z_t)/μ)``.

  Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective
  Optimization" (ICML 2024), §3.2, eq. 9. Computed as
  ``m + μ log Σ_t exp((y_t − m)/μ)`` with ``y_t = λ_t (L_t − z_t)`` and
  ``m = max_t y_t``, so it neither overflows nor underflows for small ``μ``;
  its gradient with respect to the losses is exactly the weights of
  :func:`mtl_optax.weightings.stch`.

  Args:
    task_losses: ``[T]`` losses.
    mu: the smoothing ``μ > 0``; as ``μ → 0`` the value tends to the
      Tchebycheff scalarisation ``max_t λ_t (L_t − z_t)``.
    preference: ``λ``, ``[T]`` non-negative preference weights (default
      uniform ``1/T``).
    reference: ``z``, the ``[T]`` reference (ideal) point (default 0).

  Returns:
    The scalar value, in the losses' dtype (at least float32).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> value = mtl.stch_value(jnp.array([0.5, 2.0, 8.0]), mu=0.1)
    >>> round(float(value), 4)  # ≈ max_t L_t / 3
    2.6667
  """
  _check(mu, preference, reference)
  losses = base.loss_vector('stch_value', task_losses)
  _, gaps = _scaled_gaps(losses, preference, reference)
  # Any constant shift gives the same value and gradient; the maximum keeps
  # the exponents <= 0.
  largest = jax.lax.stop_gradient(jnp.max(gaps))
  return largest + mu * jnp.log(jnp.sum(jnp.exp((gaps - largest) / mu)))


def stch(mu: float = 1.0, *, preference: Any = None,
         reference: Any = None) -> base.Weighting:
  r"""Weights the losses by the gradient of their smooth Tchebycheff value.

  Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective
  Optimization" (ICML 2024), §3.2. The scalarisation (eq. 9)

  ``g_μ(L) = μ log Σ_t exp(λ_t (L_t − z_t) / μ)``

  is a smooth upper bound of the Tchebycheff scalarisation
  ``max_t λ_t (L_t − z_t)``, larger by at most ``μ log T``. Its
  gradient is a weighted sum of the task gradients,
  ``∇g_μ = Σ_t w_t ∇L_t`` with

  ``w_t = ∂g_μ/∂L_t = λ_t softmax_t(λ (L − z) / μ)``,

  so one backward pass of ``Σ_t w_t L_t`` (with ``w`` held constant, see
  :func:`mtl_optax.weigh_losses`) gives the scalarisation's gradient. The
  softmax is taken after subtracting the largest exponent, so it stays finite
  for any ``μ > 0``. :func:`mtl_optax.stch_value` computes ``g_μ`` itself.

  **Decisions.** ``μ = 1`` by default, the default of the authors' multi-task
  code (the paper evaluates ``μ ∈ {0.01, 0.1, 0.5, 1}`` and reports no single
  best value). The authors' multi-task runs also divide each loss by its mean
  over a warm-up epoch and take the ``log`` before scalarising; here the
  scalarisation is applied to the losses as given.

  Args:
    mu: the smoothing ``μ > 0``; smaller values approach the Tchebycheff
      maximum (all weight on the worst weighted gap).
    preference: ``λ``, ``[T]`` non-negative preference weights with a
      positive sum (default uniform ``1/T``).
    reference: ``z``, the ``[T]`` reference (ideal) point (default 0).

  Returns:
    A stateless loss-level :class:`Weighting`; it needs the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.stch(3, mu=0.1)
    >>> grads = jnp.eye(3)  # identity gradients: the update is the weights
    >>> updates, _ = tx.update(grads, tx.init(jnp.zeros(3)),
    ...                        task_losses=jnp.array([0.5, 2.0, 8.0]))
    >>> updates.round(4)  # λ = 1/3 on the worst task
    Array([0.    , 0.    , 0.3333], dtype=float32)
  """
  _check(mu, preference, reference)

  def init(num_tasks):
    base.task_vector('stch', 'preference', preference, num_tasks, 0.0)
    base.task_vector('stch', 'reference', reference, num_tasks, 0.0)
    return optax.EmptyState()

  def weigh(stats, state):
    preference_vector, gaps = _scaled_gaps(stats.losses, preference,
                                           reference)
    exponents = (gaps - jnp.max(gaps)) / mu  # <= 0: no overflow.
    weights = preference_vector * jax.nn.softmax(exponents)
    return weights.astype(jnp.float32), state

  return base.Weighting(weigh=weigh, init=init, name='stch', reads_gram=False,
                        reads_losses=True)
