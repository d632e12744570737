"""Central direction: the min-norm point of the *unit* task gradients, rescaled."""

from mtl_optax._src import base
from mtl_optax._src.solvers import min_norm
from mtl_optax._src.solvers.min_norm import central_direction_weights


def central_direction(
    *,
    max_iters: int | None = None,
    tol: float | None = None,
    solver: str = 'wolfe',
) -> base.Weighting:
  r"""Central direction: equal angles with every task, inside the gradients' hull.

  Katrutsa, Merkulov, Tursynbek and Oseledets (2020), as used in Nakamura's
  thesis §4.2. With ``n_t = ‖g_t‖`` and unit gradients ``ḡ_t = g_t / n_t``:

  ``k* = argmin_{k ∈ Δ_T} ‖Σ_t k_t ḡ_t‖²`` (eq. 4.6, the min-norm problem on
  ``Ĝ[i, j] = G[i, j] / (n_i n_j)``), and
  ``v = γ Σ_t k*_t ḡ_t`` with ``γ = (Σ_t k*_t / n_t)^{-1}`` (eq. 4.7).

  On the raw gradients, ``v = Σ_t w_t g_t`` with
  ``w_t = (k*_t / n_t) / Σ_j (k*_j / n_j)``: the weights are on the simplex
  and ``v`` lies in the convex hull of the gradients. Since ``Σ k*_t ḡ_t`` is
  the min-norm point of the unit gradients, ``g_t · v >= 0`` for every task
  (no conflict), and scaling every gradient by ``c > 0`` scales ``v`` by ``c``.

  Edge cases (**Decision**, not in the thesis, which divides by ``n_t``): a
  task whose gradient is zero has no direction; it is left out of eq. 4.6 and
  gets weight 0, so the other tasks still move (its ``g_t · v = 0``). If every
  gradient is zero, the weights are ``1/T`` and the update is 0. T = 1 gives
  ``w = [1]``.

  Args:
    max_iters: Python int >= 1, the min-norm solver's iteration cap (T > 2);
      None: the solver's default.
    tol: >= 0, the min-norm solver's tolerance (:func:`mgda`); None: the
      solver's default.
    solver: the min-norm solver of eq. 4.6, ``'wolfe'`` (exact, the
      default) or ``'frank_wolfe'`` (the MGDA paper's Algorithm 2, see
      :func:`mgda`).

  Returns:
    A stateless :class:`Weighting` of the Gramian. It needs no losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.central_direction(2)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 4.0]])  # Orthogonal, norms 1, 4.
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> state.weights  # k* = [½, ½]; w ∝ [½ / 1, ½ / 4].
    Array([0.8, 0.2], dtype=float32)
    >>> updates  # Equal angles (45°) with both gradients.
    Array([0.8, 0.8], dtype=float32)
  """
  if max_iters is not None:
    base.check_positive_int('max_iters', max_iters)
  if tol is not None:
    base.check_range('tol', tol, 0.0)
  base.check_choice('solver', solver, min_norm.SOLVERS)

  def weigh(stats, state):
    weights = central_direction_weights(stats.gram, max_iters=max_iters,
                                        tol=tol, solver=solver)
    return weights, state

  return base.Weighting(weigh=weigh, name='central_direction')
