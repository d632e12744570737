"""CAGrad: the best worst-case improvement in a ball around the mean gradient."""

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src import base
from mtl_optax._src import numerics

RESCALES = ('none', 'one_plus_c_squared', 'one_plus_c')
_MAX_HALVINGS = 60


def project_to_simplex(point: jax.Array) -> jax.Array:
  """Euclidean projection onto ``{w >= 0, Σ w = 1}`` (sort and threshold)."""
  num_tasks = point.shape[0]
  descending = jnp.sort(point)[::-1]
  excess = jnp.cumsum(descending) - 1.0
  counts = jnp.arange(1, num_tasks + 1, dtype=point.dtype)
  in_support = descending - excess / counts > 0
  support_size = jnp.sum(in_support)  # The condition holds on a prefix.
  threshold = excess[support_size - 1] / support_size.astype(point.dtype)
  return jnp.maximum(point - threshold, 0.0)


def solve_dual(gram: jax.Array, c, *, max_iters: int, tol) -> jax.Array:
  """``argmin_{w ∈ Δ} g_wᵀg_0 + c‖g_0‖ ‖g_w‖`` by projected gradient descent.

  ``g_w = Σ_t w_t g_t`` and ``g_0`` is the mean gradient; only ``G`` is
  needed: ``g_wᵀg_0 = bᵀw`` with ``b = G 1/T`` and ``‖g_w‖² = wᵀGw``. The
  step length adapts by backtracking (halve until the quadratic upper bound
  holds, double after each step). The decrease is evaluated as
  ``bᵀδ + c‖g_0‖ δᵀG(w' + w) / (‖g_w'‖ + ‖g_w‖)`` rather than as a
  difference of objective values, which float32 cancellation would drown.
  The loop stops when the Frank-Wolfe gap ``∇fᵀw − min ∇f``, an upper bound
  on the suboptimality, is below ``tol · ‖g_0‖ · max_t ‖g_t‖``.
  """
  num_tasks = gram.shape[0]
  mean_alignment = jnp.mean(gram, axis=1)  # b = J g_0.
  mean_norm = numerics.safe_sqrt(jnp.mean(mean_alignment))  # ‖g_0‖.
  radius = c * mean_norm  # √φ = c‖g_0‖.
  largest_norm = numerics.safe_sqrt(jnp.max(jnp.diagonal(gram)))
  target_gap = tol * mean_norm * largest_norm

  def norm_of(w):
    return numerics.safe_sqrt(w @ gram @ w)

  def gradient(w):
    norm = norm_of(w)
    # At g_w = 0 the norm has no gradient; 0 is in its subdifferential.
    return mean_alignment + radius * numerics.safe_div(gram @ w, norm)

  def gap(w, grad):
    return grad @ w - jnp.min(grad)

  def projected_step(w, grad, length):
    new_w = project_to_simplex(w - length * grad)
    delta = new_w - w
    norms = norm_of(new_w) + norm_of(w)
    decrease = mean_alignment @ delta + radius * numerics.safe_div(
        delta @ gram @ (new_w + w), norms)
    bound = grad @ delta + 0.5 / length * (delta @ delta)
    return new_w, decrease > bound

  def not_done(carry):
    _, _, grad_gap, num_steps = carry
    return (grad_gap > target_gap) & (num_steps < max_iters)

  def body(carry):
    w, length, _, num_steps = carry
    grad = gradient(w)

    def too_long(inner):
      length, halvings = inner
      _, exceeds = projected_step(w, grad, length)
      return exceeds & (halvings < _MAX_HALVINGS)

    length, _ = lax.while_loop(
        too_long, lambda inner: (0.5 * inner[0], inner[1] + 1), (length, 0))
    new_w, _ = projected_step(w, grad, length)
    return new_w, 2.0 * length, gap(new_w, gradient(new_w)), num_steps + 1

  start = jnp.full([num_tasks], 1.0 / num_tasks, gram.dtype)
  first_length = numerics.safe_div(1.0, jnp.max(jnp.diagonal(gram)), 1.0)
  w, _, _, _ = lax.while_loop(
      not_done, body, (start, first_length, gap(start, gradient(start)), 0))
  return w


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
  a jit-compiled projected gradient method with adaptive steps runs in
  ``lax.while_loop`` until the Frank-Wolfe duality gap is below
  ``tol · ‖g_0‖ · max_t ‖g_t‖`` (or ``max_iters`` steps); see
  :func:`solve_dual`.

  **Decisions.** ``g_0`` is the *mean* gradient and the result is not
  rescaled, as in the paper's Algorithm 1: on ``J = [[-4, 1, 1], [6, 1, 1]]``
  with ``c = 0.5`` this gives ``d = [0.1835, 1.2041, 1.2041]`` and weights
  ``[0.7041, 0.5]``. The authors' code can also divide ``d`` by ``1 + c²``
  or ``1 + c`` (``rescale='one_plus_c_squared'`` / ``'one_plus_c'``). When
  ``g_w* = 0`` (a zero-norm task, or a Pareto-stationary point with ``c``
  large), the direction of the correction is undefined and ``d = g_0``.
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
    rescale = RESCALES[rescale]  # LibMTL's rescale codes 0, 1, 2.
  base.check_choice('rescale', rescale, RESCALES)
  base.check_positive_int('max_iters', max_iters)
  base.check_range('tol', tol, 0.0, low_open=True)

  def weigh(stats, state):
    gram = stats.gram  # The weights ignore the scale: both terms are ∝ ‖g‖².
    dual = solve_dual(gram, c, max_iters=max_iters, tol=tol)
    mean_norm = numerics.safe_sqrt(jnp.mean(gram))  # ‖g_0‖.
    combined_norm = numerics.safe_sqrt(dual @ gram @ dual)  # ‖g_w*‖.
    step = numerics.safe_div(c * mean_norm, combined_norm)  # √φ / ‖g_w*‖.
    weights = 1.0 / stats.num_tasks + step * dual  # d = g_0 + (√φ/‖g_w‖) g_w.
    if rescale == 'one_plus_c_squared':
      weights = weights / (1.0 + c ** 2)
    elif rescale == 'one_plus_c':
      weights = weights / (1.0 + c)
    return weights, state

  return base.Weighting(weigh=weigh, name='cagrad')
