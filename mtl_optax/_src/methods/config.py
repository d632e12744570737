"""ConFIG: the conflict-free direction with equal cosines to every gradient."""

from typing import Any

import jax
import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src import numerics
from mtl_optax._src.solvers import scaling
from mtl_optax._src.solvers import spectral


def config_weights(gram: jax.Array,
                   preference: jax.Array | None = None) -> jax.Array:
  """Weights of ``(Σ_t g_t·ĝ_u) ĝ_u`` with ``g_u = U⁺ p``, from the Gramian."""
  if preference is None:
    # g_u = Σ_t c_t g_t, the least-norm vector with u_t·g_u = 1 for every t.
    coefficients = spectral.equal_projection_coefficients(gram)
  else:
    # g_u = U⁺ p = Uᵀ Ĝ⁺ p, so c = D⁻¹ Ĝ⁺ p on the raw gradients.
    cosines, norms = scaling.cosine_gram(gram)
    coefficients = numerics.safe_div(
        spectral.pinv_matvec(cosines, preference.astype(cosines.dtype)),
        norms)
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
  gradients give zero weights.

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
