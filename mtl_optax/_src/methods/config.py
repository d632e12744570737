"""ConFIG: the conflict-free direction with equal cosines to every gradient."""

from typing import Any

import jax
import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src import numerics
from mtl_optax._src.solvers import scaling
from mtl_optax._src.solvers import spectral


# g_u = U⁺ p is taken as 0 when p's squared projection onto the range of the
# cosine matrix is below this fraction of ‖p‖² (the rank rule's RANK_RTOL):
# there the projection is rounding of the eigenvectors, and so would be the
# direction of g_u (issue 24: T = 2 opposite gradients).
RANGE_RTOL = spectral.RANK_RTOL


def config_weights(gram: jax.Array,
                   preference: jax.Array | None = None) -> jax.Array:
  """Weights of ``(Σ_t g_t·ĝ_u) ĝ_u`` with ``g_u = U⁺ p``, from the Gramian.

  ``p = 1`` by default. ``g_u = U⁺ p = Uᵀ Ĝ⁺ p``, so ``c = D⁻¹ Ĝ⁺ p`` on the
  raw gradients (``Ĝ`` the cosines, ``D = diag‖g_t‖``); ``c = 0`` when ``p``
  has no resolved part in the range of ``Ĝ`` (``RANGE_RTOL``).
  """
  cosines, norms = scaling.cosine_gram(gram)
  target = (jnp.ones_like(norms) if preference is None
            else preference.astype(cosines.dtype))
  eigenvalues, eigenvectors, kept = spectral.eigh_with_rank(cosines)
  projections = eigenvectors.T @ target
  inverse = jnp.where(kept, 1.0 / jnp.where(kept, eigenvalues, 1.0), 0.0)
  in_range = jnp.sum(jnp.where(kept, projections ** 2, 0.0))  # ‖P p‖².
  resolved = in_range > RANGE_RTOL * jnp.sum(target ** 2)
  coefficients = jnp.where(resolved, numerics.safe_div(
      eigenvectors @ (inverse * projections), norms), 0.0)
  gram_coefficients = gram @ coefficients
  # ‖g_u‖² = cᵀGc and Σ_t g_t·g_u = Σ_t (Gc)_t; the update is
  # (Σ_t g_t·g_u / ‖g_u‖²) g_u, its length the sum of the projections.
  squared_norm = coefficients @ gram_coefficients
  length = numerics.safe_div(jnp.sum(gram_coefficients), squared_norm)
  return coefficients * length


def config(*, preference: Any = None) -> base.Weighting:
  r"""ConFIG: a direction with the same cosine to every task gradient.

  Liu et al., "ConFIG: Towards Conflict-free Training of Physics Informed
  Neural Networks" (2024). With unit gradients ``u_t = g_t/‖g_t‖``
  stacked as ``U``:

    ``g_u = U⁺ 1``  (the least-norm vector with ``u_t·g_u = 1`` for all t),
    ``d = (Σ_t g_t·ĝ_u) ĝ_u``,  ``ĝ_u = g_u / ‖g_u‖``,

  so ``d`` has equal positive cosines with all the gradients and the length of
  the sum of their projections. From the Gramian: ``g_u = Jᵀ c`` with
  ``c = D⁻¹ Ĝ⁺ 1`` (``Ĝ`` the cosines, ``D = diag‖g_t‖``), so
  ``d = Jᵀ w`` with ``w = c · 1ᵀGc / cᵀGc``: the weights of the raw
  gradients. The paper's pseudo-inverse becomes the one of ``Ĝ``, with the
  rank threshold of :mod:`spectral` (eigenvalues at most ``1e-5 λ_max`` of
  ``Ĝ`` count as zero).

  ``preference`` (TorchJD's ``pref_vector``) sets the projections the
  direction aims for: ``g_u = U⁺ p``, so ``u_t·g_u ∝ p_t`` (for independent
  gradients); the length stays the unweighted sum of the projections.

  Decisions: equal task weights ``p = 1`` by default (the paper's default;
  its momentum variant M-ConFIG is not included). A zero gradient gets ``w_t = 0``; all-zero
  gradients give zero weights. When ``p`` is orthogonal to the gradients'
  span (``U⁺ p = 0``: e.g. T = 2 exactly opposite gradients with ``p = 1``)
  ``ĝ_u`` is undefined and ``d = 0``; the test is that ``p``'s squared
  projection onto the kept eigenvectors of ``Ĝ`` is at most ``1e-5 ‖p‖²``
  (``RANGE_RTOL``), since below it the projection is rounding of the
  eigenvectors. Before, that rounding set the direction: ``g_2 = −3 g_1``
  gave ``d = −2 g_1`` while ``g_2 = −0.5 g_1`` gave 0. TorchJD differs on
  such rows by its rank rule, not its formula: ``torch.linalg.pinv`` keeps
  singular values above ``max(T, P) · eps`` of the largest, so on rows that
  are dependent up to rounding (a singular value of ~1e-16 relative in
  float64, ~1e-8 in float32) it keeps the rounding direction and returns a
  direction set by it (issue 24 measured a factor 5.5e3); in exact arithmetic
  both give ``d = 0`` for opposite rows and the same ``d`` for parallel ones.

  Properties: permutation invariant, linear under scaling. Non-conflicting
  when the non-zero gradients are linearly independent (then
  ``g_t·d = ‖g_t‖ · Σ_s ‖g_s‖ / ‖g_u‖² > 0``); with dependent gradients
  ``U⁺ 1`` only fits ``1`` in the least-squares sense and a task can be in
  conflict (e.g. three collinear gradients, one reversed).

  Args:
    preference: ``[T]`` target projections ``p`` (default ``1`` each).

  Returns:
    A stateless :class:`Weighting` of the Gramian.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.config(2)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 3.0]])  # g_u = (1, 1)
    >>> tx.update(grads, tx.init(jnp.zeros(2)))[0]  # length (1 + 3)/√2
    Array([2., 2.], dtype=float32)
  """
  return base.preference_weighting('config', preference, config_weights)
