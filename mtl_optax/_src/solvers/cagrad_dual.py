r"""CAGrad's dual on the simplex, solved with the min-norm machinery.

CAGrad (Liu et al., NeurIPS 2021, §3) needs

  ``w* = argmin_{w ∈ Δ} F(w)``,  ``F(w) = bᵀw + r ‖g_w‖``,            (1)

with ``g_w = Σ_t w_t g_t``, ``b = G 1/T`` (so ``bᵀw = g_wᵀg_0``, ``g_0`` the
mean gradient) and ``r = c ‖g_0‖``. Only the Gramian is needed.

**Reduction to min-norm problems.** For ``μ > 0`` let ``α(μ)`` minimise the
shifted min-norm problem

  ``‖g_α + μ g_0‖² = αᵀGα + 2μ bᵀα + μ²‖g_0‖²``  over ``α ∈ Δ``,    (2)

i.e. ``x(μ) = g_α(μ)`` is the projection of ``−μ g_0`` onto the convex hull
of the gradients. Its optimality condition, ``x + μ g_0 ∈ −N(x)``, is the one
of (1), ``g_0 + r x/‖x‖ ∈ −N(x)``, exactly when ``μ = ‖x(μ)‖ / r``. So (1) is
solved by finding the root of the scalar function

  ``h(τ) = log ‖x(e^τ)‖ − log r − τ``,

which is nearly linear (slope about −1, since ``‖x‖`` stays between the
min-norm value ``m`` and ``max_t ‖g_t‖``), and bracketed by
``τ_lo = log(m / r)`` (``h >= 0``) and ``τ_hi = log(max_t ‖g_t‖ / r)``
(``h <= 0``). The root is found by the Illinois variant of regula falsi;
each evaluation of ``h`` solves (2) with the min-norm solver
(:mod:`min_norm`: Wolfe's active-set method with a linear term, warm-started
from the previous ``α``, whose support is affinely independent), which
handles rank-deficient and ill-conditioned Gramians and stops on its
scale-free rule.

**Stopping rule, scale-free.** The outer loop stops once ``|h| <= tol``: the
fixed point ``‖x‖ = r μ`` holds to a relative ``tol`` (``h`` is a difference
of logarithms, so it does not depend on any scale), or when the bracket has
shrunk to float resolution, or after ``MAX_ROOT_STEPS`` evaluations. The
inner solves use the min-norm rule (no task improves the objective by more
than ``1e-8 ‖x‖²`` plus its rounding error).

**When the hull contains 0** (opposite, collinear or linearly dependent
gradients, a zero gradient) the min-norm value ``m`` is 0, or rounding noise:
``‖g_α‖²`` computed from a float32 Gramian carries an error of about
``eps · (Σ_t α_t ‖g_t‖)²``, so below ``√eps · Σ_t α_t ‖g_t‖`` a norm is not
resolved and neither is ``h``. The lower end then moves up to
``ρ_lo = RESOLVED · √eps · Σ_t α_t ‖g_t‖`` (``α`` the min-norm weights; 3e-3
of those terms in float32), where ``‖x‖²`` is known to ``1/RESOLVED²``
relative. There ``h`` decides: near 0 the
hull looks like its tangent cone ``K`` at 0, ``x(μ) = μ P_K(−g_0)`` and
``h = log(‖P_K(−g_0)‖ / (c ‖g_0‖))``, independent of ``μ``. ``h >= 0``: a
root lies above (e.g. opposite gradients with ``c < 1``: the minimiser is the
far end of the hull, ``g_w ≠ 0``); ``h < 0``: ``F >= 0`` on the hull and the
minimum is ``g_w = 0`` (``c > 1``, or ``K`` leaves ``−g_0`` out). In that
case the solver returns the min-norm weights and :func:`update_weights` gives
CAGrad's update ``g_0``. A root whose ``‖g_w‖`` lies below ``ρ_lo`` is not
resolved by the float32 Gramian and is taken as ``g_w = 0``. (Before, the
lower end was ``1e-12`` of the largest norm, where ``h`` is rounding noise:
on ``g_2 = −0.5 g_1`` with ``c = 0.5`` it returned ``g_0 = 0.25 g_1``
instead of ``0.125 g_1``.)
"""

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src import numerics
from mtl_optax._src.solvers import min_norm
from mtl_optax._src.solvers.result import SolverResult

DEFAULT_TOL = 1e-7
# Evaluations of h at most (each one a min-norm solve).
MAX_ROOT_STEPS = 60
# With a zero min-norm value m, the lower end of the bracket uses this
# fraction of the largest norm instead.
_TINY = 1e-12
# When 0 is in the hull, the lower end of the bracket is RESOLVED · √eps ·
# Σ_t α_t ‖g_t‖ (3e-3 of the terms in float32): there ‖x‖², known from G to
# eps · (Σ_t α_t ‖g_t‖)², carries a relative error of at most 1/RESOLVED²
# (1.6e-2), and h one of half that, against |h| = |log(1/c)| = 0.69 at c = 0.5.
RESOLVED = 8.0


def solve(gram: jax.Array, c, *, max_iters: int = min_norm.DEFAULT_MAX_ITERS,
          tol=DEFAULT_TOL) -> SolverResult:
  """``argmin_{w ∈ Δ} g_wᵀg_0 + c ‖g_0‖ ‖g_w‖`` (problem (1)), from G alone.

  Args:
    gram: ``[T, T]`` Gramian (any positive scale: ``F`` is homogeneous).
    c: CAGrad's radius ``c >= 0`` (may be traced).
    max_iters: Python int, cap on the iterations of each min-norm solve.
    tol: stop when ``|log(‖g_w‖ / (r μ))| <= tol``.

  Returns:
    A :class:`SolverResult`; ``iterations`` counts the min-norm iterations
    of every solve, ``converged`` the outer rule. ``c = 0`` or ``g_0 = 0``
    (the dual weights do not matter then) returns uniform weights; a
    minimum at ``g_w = 0`` returns the min-norm weights (``g_w ≈ 0``).
  """
  return _solve(gram, c, max_iters=max_iters, tol=tol)[0]


def update_weights(gram: jax.Array, c, *,
                   max_iters: int = min_norm.DEFAULT_MAX_ITERS,
                   tol=DEFAULT_TOL) -> jax.Array:
  """CAGrad's update ``d = g_0 + c ‖g_0‖ g_w*/‖g_w*‖`` as weights of the ``g_t``.

  ``1/T + λ w*`` with ``λ = c ‖g_0‖ / ‖g_w*‖``, and ``λ = 0`` (``d = g_0``)
  when the dual's minimum is at ``g_w* = 0``: the solver says so, rather
  than the caller dividing by a norm that is rounding noise.
  """
  num_tasks = gram.shape[0]
  result, zero_minimum = _solve(gram, c, max_iters=max_iters, tol=tol)
  gram = min_norm.normalise_scale(
      lax.stop_gradient(gram).astype(result.weights.dtype))
  dual = result.weights
  mean_norm = numerics.safe_sqrt(jnp.mean(gram))  # ‖g_0‖.
  combined_norm = numerics.safe_sqrt(dual @ min_norm._matvec(gram, dual))
  step = numerics.safe_div(jnp.asarray(c, dual.dtype) * mean_norm,
                           combined_norm)  # √φ / ‖g_w*‖.
  step = jnp.where(zero_minimum, 0.0, step)
  return 1.0 / num_tasks + step * dual  # d = g_0 + (√φ/‖g_w‖) g_w.


def _solve(gram, c, *, max_iters, tol) -> tuple[SolverResult, jax.Array]:
  """:func:`solve`, and whether the minimum is at ``g_w = 0``."""
  num_tasks = gram.shape[0]
  dtype = jnp.promote_types(gram.dtype, jnp.float32)
  gram = min_norm.normalise_scale(lax.stop_gradient(gram).astype(dtype))
  mean_alignment = jnp.mean(gram, axis=1)  # b = J g_0.
  mean_norm_sq = jnp.maximum(jnp.mean(mean_alignment), 0.0)  # ‖g_0‖².
  radius = jnp.asarray(c, dtype) * numerics.safe_sqrt(mean_norm_sq)  # c‖g_0‖.
  largest = numerics.safe_sqrt(jnp.max(jnp.diagonal(gram)))
  active = jnp.ones([num_tasks], bool)
  uniform = jnp.full([num_tasks], 1.0 / num_tasks, dtype)
  vertex = min_norm.first_vertex(gram, active)  # Wolfe's cold start.
  trivial = ~(radius > 0) | ~(largest > 0)
  safe_radius = jnp.where(trivial, 1.0, radius)
  log_radius = jnp.log(safe_radius)
  high_end = jnp.log(jnp.where(largest > 0, largest, 1.0)) - log_radius

  def norm_of(weights):
    return numerics.safe_sqrt(weights @ min_norm._matvec(gram, weights))

  def regula_falsi(lo, lo_h, hi, hi_h):
    span = lo_h - hi_h  # > 0 while the bracket holds.
    point = hi - hi_h * (hi - lo) / jnp.where(span > 0, span, 1.0)
    return jnp.where((span > 0) & (point > lo) & (point < hi), point,
                     0.5 * (lo + hi))

  def not_done(carry):
    return ~carry[10] & (carry[8] < MAX_ROOT_STEPS + 3)

  def body(carry):
    # Step 0 solves μ = 0 (the min-norm point, for the bracket's lower end),
    # step 1 the lower end, step 2 the upper end, then regula falsi. One
    # min-norm loop in the program, whatever the step.
    (lo, lo_h, lo_w, hi, hi_h, hi_w, last_w, side, step, iters, _, _) = carry
    # At step 1, last_w is the min-norm point α: 0 is in the hull to within
    # rounding when ‖g_α‖ is below the resolution of norms near it (module
    # docstring); the lower end then moves up to that resolution.
    resolution = RESOLVED * jnp.sqrt(jnp.finfo(dtype).eps) * jnp.sum(
        last_w * numerics.safe_sqrt(jnp.diagonal(gram)))
    min_norm_value = norm_of(last_w)  # m.
    in_hull = min_norm_value <= resolution
    low = jnp.log(jnp.maximum(
        jnp.where(in_hull, resolution, min_norm_value), _TINY * largest)
                  ) - log_radius
    point = jnp.where(step == 1, low, jnp.where(
        step == 2, hi, regula_falsi(lo, lo_h, hi, hi_h)))
    mu = jnp.where(step == 0, 0.0, jnp.exp(point))
    result = min_norm._wolfe(  # Problem (2).
        gram, active, max_iters, min_norm.DEFAULT_TOL,
        linear=mu * mean_alignment, weights0=last_w,
        interior_first=step == 0)  # The cold start.
    weights = result.weights
    # h(τ); the floor only avoids log(0) (a floor at the lower end's own
    # radius would make h = 0 there whatever x is).
    value = (jnp.log(jnp.maximum(norm_of(weights), jnp.finfo(dtype).tiny))
             - log_radius - point)
    on_low = jnp.where(step == 1, True, jnp.where(step == 2, False,
                                                  value >= 0))
    moves = step >= 1
    new_lo, new_lo_h, new_lo_w = (
        jnp.where(moves & on_low, point, lo),
        jnp.where(moves & on_low, value, lo_h),
        jnp.where(moves & on_low, weights, lo_w))
    new_hi, new_hi_h, new_hi_w = (
        jnp.where(moves & ~on_low, point, hi),
        jnp.where(moves & ~on_low, value, hi_h),
        jnp.where(moves & ~on_low, weights, hi_w))
    # Illinois: halve the kept end's value when the same side moves twice.
    falsi = step >= 3
    new_hi_h = jnp.where(falsi & on_low & (side > 0), 0.5 * new_hi_h,
                         new_hi_h)
    new_lo_h = jnp.where(falsi & ~on_low & (side < 0), 0.5 * new_lo_h,
                         new_lo_h)
    new_side = jnp.where(falsi, jnp.where(on_low, jnp.int32(1),
                                          jnp.int32(-1)), jnp.int32(0))
    narrow = falsi & (new_hi - new_lo <= 4 * jnp.finfo(dtype).eps * (
        1.0 + jnp.abs(new_hi)))
    # h(τ_lo) < 0 with 0 in the hull: F >= 0 on it and g_w = 0 is the
    # minimiser (CAGrad's update is then g_0); the min-norm weights are
    # kept. With 0 outside the hull, h(τ_lo) >= 0 holds exactly (‖x‖ >= m),
    # and a negative value is rounding: τ_lo stays the lower end.
    zero_minimum = (step == 1) & in_hull & (value < 0)
    done = (moves & (jnp.abs(value) <= tol)) | narrow | zero_minimum
    return (new_lo, new_lo_h, new_lo_w, new_hi, new_hi_h, new_hi_w,
            jnp.where(zero_minimum, last_w, weights), new_side, step + 1,
            iters + result.iterations, done, zero_minimum)

  zero = jnp.zeros([], dtype)
  start = (zero, zero, vertex, high_end, zero, vertex, vertex,
           jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32),
           jnp.zeros([], jnp.int32), trivial, jnp.zeros([], bool))
  final = lax.while_loop(not_done, body, start)
  weights = jnp.where(trivial, uniform, final[6])
  return SolverResult(weights, final[9], final[10]), final[11] & ~trivial
