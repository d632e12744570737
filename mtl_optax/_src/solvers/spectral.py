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

Aligned-MTL needs the eigenvalues of the raw Gramian itself, whose diagonal
spans the squared norms (1e-6 … 1e6 for norms over 1e-3 … 1e3). ``eigh``
(tridiagonal QR) resolves eigenvalues only to about ``eps × λ_max``, so the
small ones are lost; :func:`graded_eigh`, Jacobi's method with a scale-free
rotation rule, gets every eigenvalue to about ``eps × cond(C)`` relative
(``C`` the cosine matrix), whatever the norms.
"""

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax

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


MAX_SWEEPS = 30
# Aligned-MTL uses eigh when its kept eigenvalues are within this ratio of
# the largest (eigh's relative error on them is then below ~1e-5).
SPREAD_FOR_JACOBI = 1e-2
STABLE_SWEEPS = 2


def _round_robin(size: int) -> np.ndarray:
  """``[size − 1, size / 2, 2]`` index pairs: each round pairs every index once.

  The circle method of a round-robin tournament (Brent and Luk's parallel
  ordering for Jacobi's method): index 0 stays, the others rotate, so every
  pair meets exactly once per sweep.
  """
  players = list(range(size))
  rounds = []
  for _ in range(size - 1):
    rounds.append([sorted((players[i], players[size - 1 - i]))
                   for i in range(size // 2)])
    players = [players[0], players[-1]] + players[1:-1]
  return np.array(rounds, np.int32)


def graded_eigh(matrix: jax.Array,
                rank: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``(eigenvalues, eigenvectors)`` of a symmetric PSD matrix, ascending.

  Two-sided cyclic Jacobi (Demmel and Veselić, "Jacobi's method is more
  accurate than QR", SIAM J. Matrix Anal. Appl. 13(4), 1992): a rotation of
  the pair ``(p, q)`` zeroes ``H_pq`` whenever ``|H_pq| > eps √(H_pp H_qq)``,
  a test relative to the two diagonal entries, so for ``H = D C D`` (``D``
  any positive diagonal) every eigenvalue comes out with a relative error of
  about ``eps × cond(C)``: the scale of each task's gradient does not matter.
  The pairs of one round are disjoint and rotated together (round-robin
  ordering); sweeps repeat until a whole sweep rotates nothing (13 sweeps
  at T = 32 on gradients with norms over 1e-3 … 1e3), or until the ``rank``
  largest eigenvalues (all by default) have not moved by more than 2 eps for
  ``STABLE_SWEEPS`` sweeps (the rotations then only stir the rounding noise
  of a rank-deficient matrix's null space), or after ``MAX_SWEEPS``. A
  non-finite matrix stops after one sweep.
  """
  num_tasks = matrix.shape[0]
  size = num_tasks + num_tasks % 2  # A decoupled zero row makes it even.
  dtype = matrix.dtype
  eps = jnp.finfo(dtype).eps
  identity = jnp.eye(size, dtype=dtype)
  schedule = jnp.asarray(_round_robin(size))
  start = jnp.zeros((size, size), dtype).at[:num_tasks, :num_tasks].set(
      matrix)

  def rotate(round_index, carry):
    h, vectors, rotated = carry
    p, q = schedule[round_index, :, 0], schedule[round_index, :, 1]
    h_pp, h_qq, h_pq = h[p, p], h[q, q], h[p, q]
    active = jnp.abs(h_pq) > eps * jnp.sqrt(jnp.abs(h_pp * h_qq))
    # tan θ of the rotation that zeroes h_pq, the smaller root.
    zeta = (h_qq - h_pp) / (2.0 * jnp.where(active, h_pq, 1.0))
    tangent = jnp.where(
        zeta == 0, 1.0,
        jnp.sign(zeta) / (jnp.abs(zeta) + jnp.sqrt(1.0 + zeta * zeta)))
    tangent = jnp.where(active, tangent, 0.0)
    cosine = lax.rsqrt(1.0 + tangent * tangent)[:, None]
    sine = tangent[:, None] * cosine

    def rotate_rows(x):  # Jᵀx: rows p, q of x mixed by each pair's rotation.
      x_p, x_q = x[p], x[q]
      return x.at[p].set(cosine * x_p - sine * x_q).at[q].set(
          sine * x_p + cosine * x_q)

    # Every index is in one pair of the round, so the pairs' rotations
    # commute: Jᵀ H J is the rows' rotation then the columns'.
    h = rotate_rows(rotate_rows(h).T).T
    # The rotated diagonal and the zeroed pair, from their exact formulas.
    h = (h.at[p, p].set(h_pp - tangent * h_pq)
         .at[q, q].set(h_qq + tangent * h_pq)
         .at[p, q].set(jnp.where(active, 0.0, h_pq))
         .at[q, p].set(jnp.where(active, 0.0, h_pq)))
    vectors = rotate_rows(vectors.T).T
    return h, vectors, rotated | jnp.any(active)

  count = size if rank is None else rank
  leading = jnp.arange(size) < count

  def top_values(h):  # The `count` largest diagonal entries, descending.
    return jnp.where(leading, -jnp.sort(-jnp.diagonal(h)), 0.0)

  def running(carry):
    _, _, rotated, sweeps, _, stable = carry
    return rotated & (stable < STABLE_SWEEPS) & (sweeps < MAX_SWEEPS)

  def sweep(carry):
    h, vectors, _, sweeps, previous, stable = carry
    h, vectors, rotated = lax.fori_loop(
        0, size - 1, rotate, (h, vectors, jnp.zeros([], bool)))
    # The wanted eigenvalues no longer move (to 2 eps) for STABLE_SWEEPS
    # sweeps: converged, even if rotations still stir the rounding noise of
    # a rank-deficient matrix's null space.
    top = top_values(h)
    steady = jnp.all(jnp.abs(top - previous) <= 2 * eps * jnp.abs(top))
    return (h, vectors, rotated, sweeps + 1, top,
            jnp.where(steady, stable + 1, 0))

  h, vectors, *_ = lax.while_loop(
      running, sweep,
      (start, identity, jnp.ones([], bool), jnp.zeros([], jnp.int32),
       top_values(start), jnp.zeros([], jnp.int32)))
  eigenvalues = jnp.diagonal(h)[:num_tasks]
  order = jnp.argsort(eigenvalues)
  return eigenvalues[order], vectors[:num_tasks, :num_tasks][:, order]


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
  are kept and ``σ_min² = λ_r``, the smallest kept one. ``G``'s own
  eigen-decomposition is ``eigh`` when the kept eigenvalues are within
  ``SPREAD_FOR_JACOBI`` of the largest, and otherwise :func:`graded_eigh`,
  accurate relative to each eigenvalue whatever the gradients' norms.

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
  positions = jnp.arange(gram.shape[0])
  top = positions >= gram.shape[0] - rank
  eigenvalues, eigenvectors = jnp.linalg.eigh(gram)  # Ascending.
  # eigh's eigenvalues are accurate to about eps·λ_max: enough when the kept
  # ones span less than SPREAD_FOR_JACOBI; otherwise Jacobi's method.
  spread = jnp.min(jnp.where(top, eigenvalues, jnp.inf)) / eigenvalues[-1]
  eigenvalues, eigenvectors = lax.cond(
      spread >= SPREAD_FOR_JACOBI, lambda: (eigenvalues, eigenvectors),
      lambda: graded_eigh(gram, rank))
  kept = top & (eigenvalues > 0)
  scale = balance_scale(eigenvalues, kept, scale_mode)
  safe_eigenvalues = jnp.where(kept, eigenvalues, 1.0)
  # Alg. 1: B = σ V Λ^{-1/2} Vᵀ, restricted to the kept eigenvalues.
  ratios = jnp.where(kept, jnp.sqrt(scale / safe_eigenvalues), 0.0)
  balance = (eigenvectors * ratios) @ eigenvectors.T
  return balance @ preference.astype(balance.dtype)
