"""FairGrad: α-fair shares of the improvement, the root of G w = w^{-1/α}."""

import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src.solvers import fair_allocation


def fairgrad(
    *,
    alpha: float = 1.0,
    max_iters: int = 100,
    tol: float = 1e-6,
) -> base.Weighting:
  r"""Weights tasks so that their improvements are α-fair: ``G w = w^{-1/α}``.

  Ban and Ji, "Fair Resource Allocation in Multi-Task Learning" (ICML 2024),
  §4 and Algorithm 1. The update ``d = Σ_t w_t g_t`` maximises the α-fair
  utility ``Σ_t (g_t · d)^{1−α} / (1−α)`` (``Σ_t log(g_t · d)`` at ``α = 1``)
  over a ball; its optimality condition is

  ``G w = w^{-1/α}`` (elementwise), ``w > 0``,

  so every task improves: ``g_t · d = w_t^{-1/α} > 0``. ``α → 0`` tends to
  the plain sum, ``α = 1`` is proportional fairness (the Nash bargaining
  solution, see :func:`nash_mtl`), ``α → ∞`` max-min fairness.

  The authors solve the system with ``scipy.optimize.least_squares``; here a
  jit-compiled damped Newton method minimises the strictly convex potential
  whose gradient is ``G w − w^{-1/α}`` (see ``fair_allocation``), in
  ``lax.while_loop``, until every equation holds to ``tol`` relative to the
  size of its terms (float32 reaches about 1e-7), or ``max_iters`` steps.

  **Decisions.** The Gramian is the true one (no normalisation, as in the
  authors' code), so the update scales like ``c^{(1−α)/(1+α)}`` when every
  gradient is multiplied by ``c``: at ``α = 1`` its size does not depend on
  the gradients' scale. When no positive root exists (some convex
  combination of the gradients is zero, e.g. two exactly opposite
  gradients), the solver's ridge (``fair_allocation.RIDGE``) gives finite,
  large weights whose update is close to 0 along the conflicting
  directions. A zero-norm task gets weight 0 (its equation has no root and
  it adds nothing to ``d``).

  Args:
    alpha: the fairness ``α`` > 0. The paper tunes it per benchmark; 1 is
      proportional fairness.
    max_iters: Newton steps at most, a Python int >= 1.
    tol: relative residual at which the solver stops, > 0.

  Returns:
    A stateless :class:`Weighting` of the Gramian.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.fairgrad(2)
    >>> grads = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(3)))
    >>> [round(float(w), 4) for w in state.weights]
    [0.5915, 0.4071]
  """
  base.check_range('alpha', alpha, 0.0, low_open=True)
  base.check_positive_int('max_iters', max_iters)
  base.check_range('tol', tol, 0.0, low_open=True)

  def weigh(stats, state):
    weights = fair_allocation.fair_weights(  # G w = w^{-1/α}, §4.
        stats.gram, jnp.log(stats.scale), alpha, max_iters=max_iters, tol=tol)
    return weights, state

  return base.Weighting(weigh=weigh, name='fairgrad')
