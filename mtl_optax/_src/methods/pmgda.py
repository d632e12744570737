"""PMGDA: MGDA that keeps the losses on a preference ray (predict, correct)."""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mtl_optax._src import base
from mtl_optax._src import numerics
from mtl_optax._src.solvers import linear_program
from mtl_optax._src.solvers import min_norm

_FLOAT32_MAX = float(jnp.finfo(jnp.float32).max)
_EPS = float(jnp.finfo(jnp.float32).eps)


def ray_distance(losses: jax.Array, preference: jax.Array) -> tuple[
    jax.Array, jax.Array]:
  """``(h, ∂h/∂L)``: the distance of ``L`` to the ray of ``λ``, and its slope.

  ``h = ‖L − (Lᵀλ̂) λ̂‖`` with ``λ̂ = λ / ‖λ‖`` (PBI's ``d₂``), and
  ``∂h/∂L = r / h`` with ``r = L − (Lᵀλ̂) λ̂``. ``h`` has no slope on the
  ray: a distance below the float32 rounding of ``L`` (``4 ε ‖L‖``) counts
  as 0, with slope 0, as a residual of rounding errors has no direction.
  """
  direction = numerics.safe_div(
      preference, numerics.safe_sqrt(jnp.sum(preference ** 2)))
  residual = losses - jnp.dot(losses, direction) * direction
  residual = residual - jnp.dot(residual, direction) * direction  # Refined.
  distance = numerics.safe_sqrt(jnp.sum(residual ** 2))
  rounding = 4.0 * _EPS * numerics.safe_sqrt(jnp.sum(losses ** 2))
  distance = jnp.where(distance > rounding, distance, 0.0)
  return distance, numerics.safe_div(residual, distance)


def _prediction(gram: jax.Array, slope: jax.Array, max_iters: int,
                tol: float) -> jax.Array:
  """Weights of ``min_{μ∈Δ, ν∈R} ‖Jᵀ(μ + ν a)‖²`` (eq. 11): ``μ + ν a``.

  For a given ``μ`` the best ``ν`` is ``−aᵀGμ / aᵀGa``; what is left is the
  min-norm problem on the Gramian of the gradients projected off
  ``∇h = Jᵀa``, ``P = G − (Ga)(Ga)ᵀ / aᵀGa`` (``P = G`` when ``∇h = 0``).
  """
  gram = min_norm.normalise_scale(gram)
  along = gram @ slope  # G a
  length = jnp.dot(slope, along)  # aᵀGa = ‖∇h‖²
  has_slope = length > 0
  projected = gram - numerics.safe_div(along[:, None] * along[None, :],
                                       length)
  projected = jnp.where(has_slope, 0.5 * (projected + projected.T), gram)
  mix = min_norm.min_norm_weights(projected, max_iters=max_iters, tol=tol)
  shift = -numerics.safe_div(jnp.dot(along, mix), length)
  return mix + shift * slope


def _correction(gram: jax.Array, slope: jax.Array, sigma: Any,
                max_iters: int) -> jax.Array:
  """Weights of the correction step's linear program (eq. 20, libmoon's form).

  With the unit vectors ``ĝ_j`` of the T gradients and of ``∇h`` (column
  T), ``M[i, j] = g_iᵀĝ_j`` and ``d = Σ_j μ_j ĝ_j``:

  ``max_{μ∈Δ_{T+1}, s} s  s.t.  (Mμ)_i >= s (i < T),  (Mμ)_T >= σ‖∇h‖``,

  i.e. the direction of the hull of the unit vectors that lowers the worst
  loss fastest among those that lower ``h`` at rate ``σ‖∇h‖`` or more. It
  is solved in standard form (``s = s' − K``, slacks ``e``, surplus ``f``)
  from the feasible vertex ``μ = e_T`` (``d = ∇h/‖∇h‖``), so no first phase
  is needed. The weights of the raw gradients are ``μ_t / ‖g_t‖ +
  μ_T a_t / ‖∇h‖`` (eq. 18).
  """
  num_tasks = gram.shape[0]
  size = num_tasks + 1
  along = gram @ slope
  extended = jnp.block([[gram, along[:, None]],
                        [along[None, :], jnp.dot(slope, along)[None, None]]])
  norms = numerics.safe_sqrt(jnp.diagonal(extended))
  products = numerics.safe_div(extended, norms[None, :])  # M
  # Entries of order 1, for the solver's absolute tolerance.
  largest = jnp.max(jnp.abs(products))
  products = numerics.safe_div(products, largest)
  bound = 2.0 * jnp.max(jnp.abs(products)) + 1.0  # K: s' = s + K >= 0.
  target = sigma * products[num_tasks, num_tasks]  # σ‖∇h‖, scaled.

  # Columns: μ (T + 1), s', e (T), f; rows: T constraints on s, one on h,
  # Σμ = 1.
  eye = jnp.eye(num_tasks, dtype=gram.dtype)
  zeros = jnp.zeros
  matrix = jnp.block([
      [-products[:num_tasks], jnp.ones([num_tasks, 1]), eye,
       zeros([num_tasks, 1])],
      [products[num_tasks:], zeros([1, 1]), zeros([1, num_tasks]),
       -jnp.ones([1, 1])],
      [jnp.ones([1, size]), zeros([1, 1]), zeros([1, num_tasks]),
       zeros([1, 1])],
  ])
  rhs = jnp.concatenate([jnp.full([num_tasks], bound), target[None],
                         jnp.ones([1])])
  objective = jnp.zeros([matrix.shape[1]]).at[size].set(1.0)
  # The start μ = e_T: basic μ_T (column T), s' (T + 1), f (2T + 2) and
  # every slack e_i (T + 2 + i) but the tightest constraint's.
  tightest = jnp.argmin(products[:num_tasks, num_tasks])
  tasks = jnp.arange(num_tasks)
  slacks = jnp.where(tasks == tightest, 2 * num_tasks + 2, size + 1 + tasks)
  basis = jnp.concatenate([jnp.asarray([num_tasks, size]), slacks])
  solution = linear_program.solve(matrix, rhs, objective, basis,
                                  max_iters=max_iters)
  mix = solution.weights[:size]
  unit = numerics.safe_div(mix, norms)  # μ_j / ‖g_j‖, in Gramian units
  return unit[:num_tasks] + unit[num_tasks] * slope  # eq. 18


def pmgda(
    *,
    preference: Any = None,
    h_tol: float = 1e-2,
    sigma: float = 0.95,
    max_iters: int = min_norm.DEFAULT_MAX_ITERS,
    tol: float = min_norm.DEFAULT_TOL,
) -> base.Weighting:
  r"""PMGDA: predict along the preference ray, or correct toward it.

  Zhang, Lin and Zhang, "PMGDA: A Preference-based Multiple Gradient
  Descent Algorithm" (2024, arXiv:2402.09492); code in
  ``xzhang2523/libmoon`` (``pmgda_solver.py``, defaults from
  ``config/pmgda.json``). The losses ``L`` should stay on the ray of the
  preference ``λ``: the constraint is ``h(L) = ‖L − (Lᵀλ̂) λ̂‖ = 0``
  (PBI's distance to the ray, the code's choice), with ``λ̂ = λ / ‖λ‖``,
  ``a = ∂h/∂L`` and ``∇h = Σ_t a_t g_t``.

  **Prediction** (``h <= h_tol``): the MGDA direction within the tangent
  space of the constraint (eqs. 8 and 11),

  ``min_{μ∈Δ_T, ν∈R} ‖Σ_t μ_t g_t + ν ∇h‖²``,  ``w = μ + ν a``,

  solved as the min-norm problem of the gradients projected off ``∇h``
  (:func:`mtl_optax.min_norm_weights`), so ``∇hᵀd = 0``.

  **Correction** (``h > h_tol``): among the convex combinations ``d`` of the
  unit gradients and the unit ``∇h`` that lower ``h`` at a rate of at least
  ``σ‖∇h‖`` (``∇hᵀd >= σ‖∇h‖``), the one that maximises ``min_t g_tᵀd``: a
  linear program (the code's, solved by cvxopt there) solved here by a
  compiled simplex method (``mtl_optax._src.solvers.linear_program``); the
  weights of the raw gradients follow by eq. 18.

  **Decisions.** The code's prediction step is plain MGDA; the paper's (eq.
  11, followed here) also keeps ``∇hᵀd = 0``. The code divides each
  gradient by its norm plus 1e-4; here the unit vectors are exact (a zero
  gradient stays zero). A zero ``∇h`` (the constraint does not depend on
  the shared parameters) makes the prediction MGDA. ``d`` in the correction
  is a mix of unit vectors, so it does not scale with the gradients. The
  update is ``d = Σ_t w_t g_t``; the weights are constants to autodiff.

  Args:
    preference: ``λ``, ``[T]`` non-negative with a positive sum (default:
      uniform).
    h_tol: ``ε >= 0``; ``h <= ε`` takes the prediction step (0.01 in the
      code).
    sigma: ``σ`` in [0, 1], the least rate of decrease of ``h`` in the
      correction, relative to ``‖∇h‖`` (0.95 in the code).
    max_iters: Python int >= 1, the iteration cap of each solver.
    tol: the min-norm solver's tolerance.

  Returns:
    A :class:`Weighting` of the Gramian and the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.pmgda(2)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> losses = jnp.array([1.0, 1.0])  # On the ray: MGDA, tangent to it.
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)),
    ...                            task_losses=losses)
    >>> updates
    Array([0.5, 0.5], dtype=float32)
  """
  base.check_task_vector('preference', preference, nonnegative=True)
  base.check_range('h_tol', h_tol, 0.0)
  base.check_range('sigma', sigma, 0.0, 1.0)
  base.check_positive_int('max_iters', max_iters)

  def preference_for(num_tasks):
    return base.task_vector('pmgda', 'preference', preference, num_tasks, 1.0)

  def init(num_tasks):
    preference_for(num_tasks)
    return optax.EmptyState()

  def weigh(stats, state):
    num_tasks = stats.num_tasks
    gram = lax.stop_gradient(stats.gram)
    losses = lax.stop_gradient(stats.losses).astype(jnp.float32)
    losses = jnp.clip(losses, -_FLOAT32_MAX, _FLOAT32_MAX)
    distance, slope = ray_distance(losses, preference_for(num_tasks))
    slope = slope.astype(gram.dtype)
    weights = lax.cond(
        distance <= h_tol,
        lambda: _prediction(gram, slope, max_iters, tol).astype(gram.dtype),
        lambda: (_correction(gram, slope, sigma, 10 * max_iters)
                 / stats.scale).astype(gram.dtype))
    return weights.astype(jnp.float32), state

  return base.Weighting(weigh=weigh, init=init, name='pmgda',
                        reads_losses=True)
