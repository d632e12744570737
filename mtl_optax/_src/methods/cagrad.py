"""CAGrad: the best worst-case improvement in a ball around the mean gradient."""

import jax

from mtl_optax._src import base
from mtl_optax._src.solvers import cagrad_dual

RESCALES = ('none', 'one_plus_c_squared', 'one_plus_c')


def solve_dual(gram: jax.Array, c, *, max_iters: int, tol) -> jax.Array:
  """``argmin_{w ∈ Δ} g_wᵀg_0 + c‖g_0‖ ‖g_w‖``; see :mod:`solvers.cagrad_dual`."""
  return cagrad_dual.solve(gram, c, max_iters=max_iters, tol=tol).weights


def cagrad(
    *,
    c: float = 0.5,
    rescale: str = 'none',
    max_iters: int = 1000,
    tol: float = 1e-6,
) -> base.Weighting:
  r"""Maximises the worst task's improvement near the mean gradient (CAGrad).

  Liu, Liu, Jin, Stone and Liu, "Conflict-Averse Gradient Descent for
  Multi-task Learning" (NeurIPS 2021), §3 and Algorithm 1. With the average
  gradient ``g_0 = (1/T) Σ_t g_t``, the update solves

  ``max_d min_t g_t · d``  subject to  ``‖d − g_0‖ <= c ‖g_0‖``.

  Its dual is a problem on the simplex ``Δ``, with ``g_w = Σ_t w_t g_t`` and
  ``φ = c² ‖g_0‖²``:

  ``w* = argmin_{w ∈ Δ} g_wᵀ g_0 + √φ ‖g_w‖``,  then
  ``d = g_0 + (√φ / ‖g_w*‖) g_w*``.

  So ``d`` is a combination of the raw gradients with weights
  ``1/T + λ w*``, ``λ = c ‖g_0‖ / ‖g_w*‖``. ``c = 0`` is the mean gradient;
  larger ``c`` moves towards the worst-off task.

  The authors solve the dual with ``scipy.optimize.minimize`` (SLSQP); here
  it is reduced to a few shifted min-norm problems (the projection of
  ``−μ g_0`` onto the gradients' hull, with ``μ`` found by a root search),
  jit-compiled in ``lax.while_loop``; the stopping rules are scale-free
  (see ``mtl_optax/_src/solvers/cagrad_dual.py`` and ``docs/solvers.md``).

  **Decisions.** ``g_0`` is the *mean* gradient and the result is not
  rescaled, as in the paper's Algorithm 1: on ``J = [[-4, 1, 1], [6, 1, 1]]``
  with ``c = 0.5`` this gives ``d = [0.1835, 1.2041, 1.2041]`` and weights
  ``[0.7041, 0.5]``. The authors' code can also divide ``d`` by ``1 + c²``
  or ``1 + c`` (``rescale='one_plus_c_squared'`` / ``'one_plus_c'``). When
  ``g_w* = 0`` (a zero-norm task, or a Pareto-stationary point with ``c``
  large), the direction of the correction is undefined and ``d = g_0``.
  When the hull contains 0 with ``c < 1`` (e.g. opposite gradients), the
  minimiser is not 0 but the far end of the hull: on ``g_2 = −0.5 g_1``,
  ``c = 0.5``, ``g_w* = −0.5 g_1`` and ``d = 0.25 g_1 − 0.125 g_1 =
  0.125 g_1`` (TorchJD and LibMTL agree).
  With ``T = 1``, ``d = (1 + c) g_1``. The weights depend on the directions
  only, so ``d`` is linear in the gradients' scale.

  Args:
    c: radius of the ball around ``g_0``, relative to ``‖g_0‖``, >= 0. The
      paper uses 0.5 on its supervised benchmarks.
    rescale: ``'none'`` (the paper), ``'one_plus_c_squared'`` or
      ``'one_plus_c'`` (divide ``d`` by ``1 + c²`` or ``1 + c``); LibMTL's
      codes ``0``, ``1``, ``2`` name the same three. The default differs
      from LibMTL's (1): the paper's Algorithm 1 does not rescale.
    max_iters: solver steps at most, a Python int >= 1.
    tol: relative duality gap at which the solver stops, > 0.

  Returns:
    A stateless :class:`Weighting` of the Gramian.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.cagrad(2, c=0.5)
    >>> grads = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(3)))
    >>> [round(float(x), 4) for x in updates]
    [0.1835, 1.2041, 1.2041]
    >>> [round(float(w), 4) for w in state.weights]
    [0.7041, 0.5]
  """
  base.check_range('c', c, 0.0)
  if not isinstance(rescale, bool) and rescale in (0, 1, 2):
    rescale = RESCALES[int(rescale)]  # LibMTL's rescale codes 0, 1, 2.
  base.check_choice('rescale', rescale, RESCALES)
  base.check_positive_int('max_iters', max_iters)
  base.check_range('tol', tol, 0.0, low_open=True)

  def weigh(stats, state):
    # The weights ignore the scale: both terms of the dual are ∝ ‖g‖².
    # d = g_0 + (√φ/‖g_w*‖) g_w*, or g_0 when the dual's minimum is g_w* = 0.
    weights = cagrad_dual.update_weights(stats.gram, c, max_iters=max_iters,
                                         tol=tol)
    if rescale == 'one_plus_c_squared':
      weights = weights / (1.0 + c ** 2)
    elif rescale == 'one_plus_c':
      weights = weights / (1.0 + c)
    return weights, state

  return base.Weighting(weigh=weigh, name='cagrad')
