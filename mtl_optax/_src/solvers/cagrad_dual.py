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

If the hull contains 0 and ``F >= 0`` on it, the minimum is ``g_w = 0``
(``h < 0`` already at ``τ_lo``); the solver returns ``α(μ_lo)``, whose
``g_w`` is (nearly) 0, and CAGrad's update is then ``g_0``.
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
    (the dual weights do not matter then) returns uniform weights.
  """
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
    return ~carry[-1] & (carry[8] < MAX_ROOT_STEPS + 3)

  def body(carry):
    # Step 0 solves μ = 0 (the min-norm point, for the bracket's lower end),
    # step 1 the lower end, step 2 the upper end, then regula falsi. One
    # min-norm loop in the program, whatever the step.
    (lo, lo_h, lo_w, hi, hi_h, hi_w, last_w, side, step, iters, _) = carry
    low = jnp.log(jnp.maximum(norm_of(last_w), _TINY * largest)) - log_radius
    point = jnp.where(step == 1, low, jnp.where(
        step == 2, hi, regula_falsi(lo, lo_h, hi, hi_h)))
    mu = jnp.where(step == 0, 0.0, jnp.exp(point))
    result = min_norm._wolfe(  # Problem (2).
        gram, active, max_iters, min_norm.DEFAULT_TOL,
        linear=mu * mean_alignment, weights0=last_w,
        interior_first=step == 0)  # The cold start.
    weights = result.weights
    value = (jnp.log(jnp.maximum(norm_of(weights), _TINY * largest))
             - log_radius - point)  # h(τ).
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
    # h(τ_lo) < 0: 0 is in the hull and F >= 0 on it; x(μ_lo) ≈ 0 is the
    # minimiser (CAGrad's update is then g_0).
    zero_minimum = (step == 1) & (value < 0)
    done = (moves & (jnp.abs(value) <= tol)) | narrow | zero_minimum
    return (new_lo, new_lo_h, new_lo_w, new_hi, new_hi_h, new_hi_w, weights,
            new_side, step + 1, iters + result.iterations, done)

  zero = jnp.zeros([], dtype)
  start = (zero, zero, vertex, high_end, zero, vertex, vertex,
           jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32),
           jnp.zeros([], jnp.int32), trivial)
  final = lax.while_loop(not_done, body, start)
  weights = jnp.where(trivial, uniform, final[6])
  return SolverResult(weights, final[9], final[10])
