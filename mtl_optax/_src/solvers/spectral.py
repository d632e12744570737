"""Eigen-decompositions of small Gramians, with one documented rank threshold.

Rank decisions are made on the cosine matrix ``G[i, j] / (‖g_i‖ ‖g_j‖)``
(unit diagonal), never on the raw Gramian, so that a gradient which is
independent of the others but much smaller is not taken for noise.

IMTL-G, ConFIG and Aligned-MTL need a pseudo-inverse or an inverse square root
of a T x T positive semi-definite matrix. A float32 Gramian of exactly
dependent gradients does not come out exactly singular: its "zero"
eigenvalues come back as noise of about ``1e-7 × λ_max`` (measured up to
``4e-7 × λ_max`` for 2·10⁶ parameters). So an eigenvalue counts as zero when
it is at most ``RANK_RTOL × λ_max``, with ``RANK_RTOL = 1e-5``: directions in
which the gradients spread less than ``sqrt(1e-5) ≈ 0.3 %`` of their largest
singular value are treated as absent. (NumPy's ``matrix_rank`` and TorchJD use
``T × eps``, about ``2e-7`` for T = 2 in float32, which that noise can exceed.)
"""

import jax
import jax.numpy as jnp

from mtl_optax._src import numerics
from mtl_optax._src.solvers import scaling

RANK_RTOL = 1e-5


def eigh_with_rank(matrix: jax.Array):
  """``(eigenvalues, eigenvectors, kept)`` of a symmetric PSD matrix.

  ``kept`` marks the eigenvalues above ``RANK_RTOL × λ_max`` (none when the
  matrix is zero). Eigenvalues are ascending, as ``jnp.linalg.eigh`` returns
  them.
  """
  eigenvalues, eigenvectors = jnp.linalg.eigh(matrix)
  largest = eigenvalues[-1]
  kept = (eigenvalues > RANK_RTOL * largest) & (largest > 0)
  return eigenvalues, eigenvectors, kept


def pinv_matvec(matrix: jax.Array, vector: jax.Array) -> jax.Array:
  """``matrix⁺ @ vector`` for a symmetric PSD ``matrix``, rank by ``RANK_RTOL``."""
  eigenvalues, eigenvectors, kept = eigh_with_rank(matrix)
  inverse = jnp.where(kept, 1.0 / jnp.where(kept, eigenvalues, 1.0), 0.0)
  return eigenvectors @ (inverse * (eigenvectors.T @ vector))


def equal_projection_coefficients(gram: jax.Array) -> jax.Array:
  """Coefficients ``c`` of the least-norm ``g = Σ_t c_t g_t`` with ``u_t·g = 1``.

  ``u_t = g_t / ‖g_t‖``. With ``U`` the matrix of unit gradients, ``g = U⁺ 1``
  (the direction of IMTL-G and ConFIG) is ``Uᵀ Ĝ⁺ 1``, so on the raw gradients
  ``c = D⁻¹ Ĝ⁺ 1`` with ``D = diag(‖g_t‖)``. Working on the cosines keeps the
  system well scaled whatever the gradient norms. A zero gradient gets
  ``c_t = 0``. When ``Ĝ`` is singular, ``u_t·g`` is the projection of the
  all-ones vector onto the range of ``Ĝ`` instead of 1.
  """
  cosines, norms = scaling.cosine_gram(gram)
  unit_coefficients = pinv_matvec(cosines, jnp.ones_like(norms))
  return numerics.safe_div(unit_coefficients, norms)


SCALE_MODES = ('min', 'median', 'rmse')


def balance_scale(eigenvalues: jax.Array, kept: jax.Array,
                  scale_mode: str = 'min') -> jax.Array:
  """``σ²`` of ``B = σ V Λ^{-1/2} Vᵀ``: a statistic of the kept eigenvalues.

  ``'min'``: the smallest (Algorithm 1, ``σ_min²``); ``'median'``: the lower
  median (``torch.median``'s convention: the smaller middle value for an even
  count); ``'rmse'``: the mean, so that ``σ`` is the root mean square of the
  kept singular values (the authors' code). 0 when nothing is kept.
  """
  count = jnp.sum(kept)
  # Kept eigenvalues first, ascending; the others are pushed to the end.
  ascending = jnp.sort(jnp.where(kept, eigenvalues, jnp.inf))
  if scale_mode == 'min':
    scale = ascending[0]
  elif scale_mode == 'median':
    scale = ascending[jnp.maximum(count - 1, 0) // 2]
  else:  # 'rmse'
    total = jnp.sum(jnp.where(kept, eigenvalues, 0.0))
    scale = numerics.safe_div(total, count.astype(eigenvalues.dtype))
  return jnp.where(count > 0, scale, 0.0)


def aligned_weights(gram: jax.Array, preference: jax.Array,
                    scale_mode: str = 'min') -> jax.Array:
  """Aligned-MTL's ``B w = σ_min G^{-1/2} w`` on the numerical range of ``G``.

  Senushkin et al. (CVPR 2023), Algorithm 1, with ``G = V Λ Vᵀ``:
  ``B = σ_min V Λ^{-1/2} Vᵀ``. The rank ``r`` comes from the cosine matrix
  (scale-free, see the module docstring); the top ``r`` eigenvalues of ``G``
  are kept and ``σ_min² = λ_r``, the smallest kept one.

  Args:
    gram: ``[T, T]`` Gramian.
    preference: ``[T]`` task preferences ``w``.
    scale_mode: which statistic of the kept eigenvalues is ``σ²`` (see
      :func:`balance_scale`).

  Returns:
    ``[T]`` weights ``B w`` on the raw gradients (0 if ``G = 0``).
  """
  cosines, _ = scaling.cosine_gram(gram)
  _, _, kept_cosines = eigh_with_rank(cosines)
  rank = jnp.sum(kept_cosines)
  eigenvalues, eigenvectors = jnp.linalg.eigh(gram)  # Ascending.
  positions = jnp.arange(gram.shape[0])
  kept = (positions >= gram.shape[0] - rank) & (eigenvalues > 0)
  scale = balance_scale(eigenvalues, kept, scale_mode)
  safe_eigenvalues = jnp.where(kept, eigenvalues, 1.0)
  # Alg. 1: B = σ V Λ^{-1/2} Vᵀ, restricted to the kept eigenvalues.
  ratios = jnp.where(kept, jnp.sqrt(scale / safe_eigenvalues), 0.0)
  balance = (eigenvectors * ratios) @ eigenvectors.T
  return balance @ preference.astype(balance.dtype)
