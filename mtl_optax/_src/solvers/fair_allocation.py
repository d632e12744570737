"""α-fair task weights: the positive root of ``G w = w^{-1/α}``.

FairGrad (any ``α > 0``) and Nash-MTL (``α = 1``) both ask for weights
``w > 0`` whose update ``d = Σ_t w_t g_t`` satisfies ``g_t · d = w_t^{-1/α}``
for every task. The root is the minimiser of the strictly convex potential

  ``F(w) = ½ wᵀGw − Σ_t φ_α(w_t)``,  with ``φ_α'(w) = w^{-1/α}``

(``φ_1 = log``), so a damped Newton method on ``F`` finds it from any
positive start, staying positive by construction.

Two changes of variables keep the solve well conditioned in float32 whatever
the gradients' scales. With ``n_t = ‖g_t‖`` and the cosine matrix
``C = diag(n)⁻¹ G diag(n)⁻¹`` (unit diagonal), ``w_t = v_t / n_t`` turns the
system into ``C v = s ⊙ v^{-1/α}`` with ``s_t = n_t^{1/α − 1}``. The shares
``s`` are divided by their largest entry, which rescales ``v`` by a known
power. For ``α = 1`` every share is 1: the weights depend on the gradients'
directions and, through ``1/n_t``, on nothing else.

A root exists only if no convex combination of the gradients is zero (no
Pareto-stationary point; two exactly opposite gradients have none). The
solver therefore first works on ``C + ρI`` with a small ridge
``ρ = RIDGE · T`` (relative to the unit diagonal of ``C``): that root always
exists and stays bounded. The ridge moves the root by
``δv ≈ −ρ H⁻¹ v``, ``H = C + diag(s_t v_t^{-1/α-1} / α)`` the Hessian of the
potential at the root: a relative ``O(ρ)`` when the gradients are well
separated, but up to ``ρ / λ_min(H)``, about ``ρ · cond(C)``, near a
Pareto-stationary point (measured: 6e-4 … 2e-1 on strongly conflicting
gradients at T = 10, issue 24). So the ridged root is then **polished** on
``C`` itself by at most ``POLISH_STEPS`` Newton steps: where the exact root
exists it is close by and the polish converges to it (the ridge vanishes
from the answer); where it does not (0 in the hull), the potential is
unbounded below, the iterates run away (every equation then misses its
right-hand side by about 100 %, against float32 rounding at a root; the
test is ``POLISH_ACCEPT``), and the ridged root is kept.
A task with a zero gradient has no root at all (``0 = w^{-1/α}``); it gets
weight 0 and does not affect the others.
"""

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src.solvers import scaling
from mtl_optax._src.solvers.result import SolverResult

# Ridge added to the cosine matrix, per task: C + RIDGE·T·I. It must exceed
# the float32 rounding of C's eigenvalues (≈ T·eps·‖C‖), or the Newton system
# could lose positive definiteness on a rank-deficient C.
RIDGE = 1e-6
# Shares below e^-60 relative to the largest are treated as e^-60 (float32
# cannot resolve the weight of such a task next to the others anyway).
_LOG_SHARE_FLOOR = -60.0
# Below this scaled residual, a Newton step that fails to halve the residual
# means float32 rounding has been reached: the solver stops there.
_NEAR_ROOT = 1e-3
_ARMIJO = 0.25
_MAX_HALVINGS = 40
# Newton steps at most on C without the ridge, from the ridged root.
POLISH_STEPS = 20
# The polished point is taken as the exact root when every equation holds to
# this fraction of its right-hand side: a root does to float32 rounding
# (measured: at most 7e-3 on strongly conflicting gradients at T = 10 whose
# cosine matrix has condition up to 2e5), a runaway iterate (no root) misses
# by about 1.
POLISH_ACCEPT = 0.1


def cosines(gram: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(C, n, active)``: unit-diagonal cosine matrix, norms, non-zero tasks.

  ``n`` are the norms in ``gram``'s own scale. A zero-norm task's row and
  column of ``C`` are those of the identity, so it is decoupled from the
  others.
  """
  cos, norms = scaling.cosine_gram(gram)  # Zero-norm task: zero row, column.
  eye = jnp.eye(gram.shape[0], dtype=bool)
  # The diagonal is 1 by definition (rounding should not decide it), and 1
  # for a zero-norm task too, which decouples it from the others.
  return jnp.where(eye, jnp.ones([], cos.dtype), cos), norms, norms > 0


def _relative_expm1(z: jax.Array) -> jax.Array:
  """``(e^z − 1) / z``, 1 at ``z = 0``, with a finite derivative there."""
  small = jnp.abs(z) < 1e-4
  safe_z = jnp.where(small, 1.0, z)
  return jnp.where(small, 1.0 + 0.5 * z, jnp.expm1(safe_z) / safe_z)


def solve(cos: jax.Array, shares: jax.Array, alpha, *, max_iters: int,
          tol) -> SolverResult:
  """The root ``v > 0`` of ``(C + ρI) v = s ⊙ v^{-1/α}`` by damped Newton.

  Args:
    cos: ``[T, T]`` unit-diagonal positive semi-definite matrix.
    shares: ``[T]`` positive shares ``s``, at most 1.
    alpha: ``α > 0`` (may be traced).
    max_iters: Newton steps at most.
    tol: stop when every equation holds to this residual, relative to the
      size of its terms; the solver also stops once float32 rounding is
      reached (a Newton step near the root that fails to halve it).

  Returns:
    A :class:`SolverResult` with ``weights = v``; ``converged`` when the
    residual is below ``tol`` or at the float rounding floor.
  """
  num_tasks = cos.shape[0]
  ridged = cos + RIDGE * num_tasks * jnp.eye(num_tasks, dtype=cos.dtype)
  # The root for a diagonal C: a good start when the tasks are not too
  # correlated, and always positive.
  start = jnp.exp(alpha / (1.0 + alpha) * jnp.log(
      shares / jnp.diagonal(ridged)))
  ridged_result = _newton(ridged, shares, alpha, start, max_iters, tol)
  # Polish on C itself, from the ridged root: where the exact root exists it
  # is close by and Newton reaches it in a few steps; where it does not (0
  # in the hull: the potential is unbounded below), the iterates run away
  # along the null direction of C. The scaled residual cannot tell the two
  # apart (it is relative to |C|v, which grows); the residual relative to
  # the right-hand side alone can: a runaway has (Cv)_t ≈ 0 and a residual
  # near 1.
  exact = _newton(cos, shares, alpha, ridged_result.weights,
                  min(max_iters, POLISH_STEPS), tol)
  demand = shares * jnp.exp(-jnp.log(exact.weights) / alpha)
  own_residual = jnp.max(jnp.abs(
      jnp.matmul(cos, exact.weights, precision=lax.Precision.HIGHEST)
      - demand) / demand)
  use_exact = (exact.converged & jnp.all(jnp.isfinite(exact.weights))
               & (own_residual <= POLISH_ACCEPT))
  return SolverResult(
      jnp.where(use_exact, exact.weights, ridged_result.weights),
      ridged_result.iterations + exact.iterations,
      use_exact | ridged_result.converged)


def _newton(matrix, shares, alpha, start, max_iters, tol) -> SolverResult:
  """Damped Newton on ``½vᵀMv − Σ_t s_t φ_α(v_t)`` from ``start > 0``."""
  inverse_alpha = 1.0 / alpha
  power = 1.0 - inverse_alpha  # φ_α(v) = (v^power − 1) / power.

  def potential_changes(v, step, lengths):
    """``F(v + L·step) − F(v)`` for each length ``L``, without cancellation.

    The quadratic part is expanded in ``L``; for the utility part,
    ``φ(v(1+r)) − φ(v) = v^power · ℓ · (e^{power·ℓ} − 1)/(power·ℓ)`` with
    ``ℓ = log1p(r)``, accurate however small ``r`` is. So the Armijo test
    stays meaningful down to float32's last bits.
    """
    linear_term = step @ matrix @ v
    curvature = step @ matrix @ step
    quadratic = lengths * linear_term + 0.5 * lengths ** 2 * curvature
    log_ratio = jnp.log1p(lengths[:, None] * step[None, :] / v[None, :])
    utility = jnp.exp(power * jnp.log(v)) * log_ratio * _relative_expm1(
        power * log_ratio)
    return quadratic - jnp.sum(shares * utility, axis=1)

  def demand(v):  # s ⊙ v^{-1/α}, the right-hand side.
    return shares * jnp.exp(-inverse_alpha * jnp.log(v))

  def scaled_residual(v):
    # Relative to the size of the terms that cancel, so that the float32
    # rounding floor (≈ eps · sqrt(T)) is reachable whatever the conditioning.
    rhs = demand(v)
    size = jnp.abs(matrix) @ v + rhs
    return jnp.max(jnp.abs(matrix @ v - rhs) / size)

  def newton_step(v):
    rhs = demand(v)
    grad = matrix @ v - rhs
    hessian = matrix + jnp.diag(inverse_alpha * rhs / v)
    step = -jnp.linalg.solve(hessian, grad)
    decrement = -grad @ step
    # Rounding can make a nearly singular Hessian indefinite; fall back to a
    # diagonally scaled gradient step, always a descent direction.
    usable = (decrement > 0) & jnp.all(jnp.isfinite(step))
    diagonal_step = -grad / jnp.diagonal(hessian)
    step = jnp.where(usable, step, diagonal_step)
    decrement = jnp.where(usable, decrement, -grad @ diagonal_step)
    return grad, step, decrement

  def step_length(v, step, decrement):
    # Largest step that keeps v > 0, shortened by 1 %, then backtracking:
    # the first of its halvings that passes the Armijo test (the last one if
    # none does). All of them at once rather than in a while loop: a loop
    # nested in the Newton loop made a vmapped solve run for minutes.
    shrinking = step < 0
    limits = jnp.where(shrinking, -v / jnp.where(shrinking, step, -1.0),
                       jnp.inf)
    longest = jnp.minimum(1.0, 0.99 * jnp.min(limits))
    lengths = longest * 0.5 ** jnp.arange(_MAX_HALVINGS + 1, dtype=v.dtype)
    passes = potential_changes(v, step, lengths) <= (
        -_ARMIJO * lengths * decrement)
    passes = passes.at[-1].set(True)
    return lengths[jnp.argmax(passes)]

  def not_done(carry):
    _, _, num_steps, done = carry
    return (~done) & (num_steps < max_iters)

  def body(carry):
    v, residual, num_steps, _ = carry
    _, step, decrement = newton_step(v)
    length = step_length(v, step, decrement)
    new_v = v + length * step
    new_v = jnp.where(jnp.all(jnp.isfinite(new_v) & (new_v > 0)), new_v, v)
    new_residual = scaled_residual(new_v)
    # Close to the root, Newton at least halves the residual at every step;
    # when it no longer does, float32 rounding has been reached.
    stalled = (new_residual < _NEAR_ROOT) & (new_residual > 0.5 * residual)
    done = (new_residual <= tol) | stalled
    return new_v, new_residual, num_steps + 1, done

  residual = scaled_residual(start)
  v, _, num_steps, done = lax.while_loop(
      not_done, body, (start, residual, jnp.zeros([], jnp.int32),
                       residual <= tol))
  return SolverResult(v, num_steps, done)


def fair_weights(gram: jax.Array, log_scale: jax.Array, alpha, *,
                 max_iters: int, tol) -> jax.Array:
  """Weights ``w`` with ``(scale² G) w = w^{-1/α}``; 0 for zero-norm tasks.

  Args:
    gram: ``[T, T]`` Gramian divided by ``scale²``.
    log_scale: ``log(scale)``, so that the true norms are ``n · scale``.
    alpha: ``α > 0``.
    max_iters: Newton steps at most.
    tol: relative residual at which the solver stops.

  Returns:
    ``[T]`` float32 weights, finite.
  """
  cos, norms, active = cosines(gram)
  log_norms = jnp.log(jnp.where(active, norms, 1.0)) + log_scale
  log_shares = (1.0 / alpha - 1.0) * log_norms
  largest = jnp.max(jnp.where(active, log_shares, -jnp.inf))
  largest = jnp.where(jnp.any(active), largest, 0.0)
  shares = jnp.where(
      active, jnp.exp(jnp.maximum(log_shares - largest, _LOG_SHARE_FLOOR)), 1.0)
  v = solve(cos, shares, alpha, max_iters=max_iters, tol=tol).weights
  # Undo both changes of variables: v = v̂ · largest_share^{α/(1+α)}, w = v / n.
  log_weights = alpha / (1.0 + alpha) * largest + jnp.log(v) - log_norms
  return jnp.where(active, jnp.exp(log_weights), 0.0)
