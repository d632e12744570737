"""Aligned-MTL: align the task gradients into an orthogonal, equal-norm system."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics
from mtl_optax._src import spectral


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


def aligned_mtl_weights(gram: jax.Array, preference: jax.Array,
                        scale_mode: str = 'min') -> jax.Array:
  """``σ · G^{-1/2} · preference`` on the numerical range of ``G``."""
  eigenvalues, eigenvectors, kept = spectral.eigh_with_rank(gram)
  scale = balance_scale(eigenvalues, kept, scale_mode)
  safe_eigenvalues = jnp.where(kept, eigenvalues, 1.0)
  # Alg. 1: B = σ V Λ^{-1/2} Vᵀ, restricted to the kept eigenvalues.
  ratios = jnp.where(kept, jnp.sqrt(scale / safe_eigenvalues), 0.0)
  balance = (eigenvectors * ratios) @ eigenvectors.T
  return balance @ preference


def aligned_mtl(
    *,
    preference: Any = None,
    scale_mode: str = 'min',
) -> base.Weighting:
  r"""Aligned-MTL: make the task gradients orthonormal-like, then combine them.

  Senushkin et al., "Independent Component Alignment for Multi-Task Learning"
  (CVPR 2023), Algorithm 1. The system of task gradients ``J`` (rows
  ``g_t``) is replaced by ``Ĵ = B J``, the closest (Procrustes) system whose
  rows are orthogonal with equal norms ``σ_min``:
  with ``G = V Λ Vᵀ``,

    ``B = σ_min V Λ^{-1/2} Vᵀ``,  ``σ_min = sqrt(λ_min)``,

  and the update is ``d = Ĵᵀ w = Jᵀ (B w)`` for task preferences ``w``: the
  weights on the raw gradients are ``B w``. Everything is one ``eigh`` of the
  T x T Gramian. Scaling by the smallest singular value ``σ_min`` keeps the
  update no longer than the least-stretched direction of ``J``.

  Rank threshold: eigenvalues at most ``1e-5 × λ_max``
  (:data:`spectral.RANK_RTOL`) count as zero, so ``λ_min`` is the smallest
  eigenvalue above that and ``Λ^{-1/2}`` is taken on the kept ones only
  (a pseudo-inverse square root). The authors' code uses
  ``λ_max × T × eps``; in float32 the noise on a zero eigenvalue reaches that
  level, hence the wider margin (see :mod:`spectral`). All-zero gradients
  give zero weights.

  Convention (TorchJD's, which the reference values follow): ``w = 1/T``
  unless ``preference`` is given (the authors' code sums, ``w = 1``, which
  multiplies the update by T).

  ``scale_mode`` chooses ``σ²`` in ``B = σ V Λ^{-1/2} Vᵀ`` (TorchJD's option
  of the same name): ``'min'`` the smallest kept eigenvalue (Algorithm 1,
  default), ``'median'`` their lower median, ``'rmse'`` their mean (the
  authors' code: ``σ`` is the root mean square of the singular values). It
  sets the update's length only, never its direction; ``'min' <= 'median' <=
  'rmse'``.

  Properties: permutation invariant and linear under scaling (``B`` depends
  on ratios of eigenvalues only). Not non-conflicting:
  ``g_t·d = σ_min (G^{1/2} w)_t`` can be negative.

  Args:
    preference: ``[T]`` task preferences ``w`` (default ``1/T`` each); a
      scalar or any shape that broadcasts to ``[T]``.
    scale_mode: ``'min'``, ``'median'`` or ``'rmse'``: which statistic of the
      kept eigenvalues of ``G`` gives ``σ²``.

  Returns:
    A stateless :class:`Weighting` of the Gramian.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.aligned_mtl(2)
    >>> grads = jnp.array([[2.0, 0.0], [0.0, 1.0]])  # σ = 2, 1: σ_min = 1
    >>> tx.update(grads, tx.init(jnp.zeros(2)))[0]  # (1/2·1/2·2, 1/2·1·1)
    Array([0.5, 0.5], dtype=float32)
  """
  base.check_choice('scale_mode', scale_mode, SCALE_MODES)
  if preference is not None:
    preference = jnp.asarray(preference, jnp.float32)

  def preference_for(num_tasks):
    if preference is None:
      return jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32)
    try:
      return jnp.broadcast_to(preference, (num_tasks,))
    except ValueError:
      raise ValueError(
          f'aligned_mtl: preference has shape {preference.shape}, which does '
          f'not broadcast to ({num_tasks},).') from None

  def init(num_tasks):
    preference_for(num_tasks)  # Checks the shape when the balancer is built.
    return optax.EmptyState()

  def weigh(stats, state):
    return aligned_mtl_weights(stats.gram, preference_for(stats.num_tasks),
                               scale_mode), state

  return base.Weighting(weigh=weigh, init=init, name='aligned_mtl')
