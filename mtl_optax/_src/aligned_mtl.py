"""Aligned-MTL: align the task gradients into an orthogonal, equal-norm system."""

from typing import Any

import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src.solvers import spectral


def aligned_mtl(
    num_tasks: int,
    *,
    preference: Any = None,
    task_specific: base.TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
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

  Rank decision, scale-free: the rank ``r`` is that of the cosine matrix
  ``G[i, j] / (‖g_i‖ ‖g_j‖)``, whose eigenvalues at most ``1e-5 × λ_max``
  (:data:`spectral.RANK_RTOL`) count as zero; ``λ_min`` is then the
  ``r``-th largest eigenvalue of ``G`` and ``Λ^{-1/2}`` is taken on the top
  ``r`` only (a pseudo-inverse square root). So an independent gradient is
  never dropped for being small (``J = [[100, 0], [0, 0.1]]`` gives
  ``d = [0.05, 0.05]``), while truly dependent gradients still give a
  rank-deficient ``B``. The authors' code thresholds ``G``'s own eigenvalues
  at ``λ_max × T × eps``, which drops a task whose norm is about ``1/√(T·eps)``
  times smaller than the largest. All-zero gradients give zero weights.

  Convention (TorchJD's, which the reference values follow): ``w = 1/T``
  unless ``preference`` is given (the authors' code sums, ``w = 1``, which
  multiplies the update by T).

  Properties: permutation invariant and linear under scaling (``B`` depends
  on ratios of eigenvalues only). Not non-conflicting:
  ``g_t·d = σ_min (G^{1/2} w)_t`` can be negative.

  Args:
    num_tasks: T.
    preference: ``[T]`` task preferences ``w`` (default ``1/T`` each).
    task_specific: leaves that belong to one task (see :func:`balancer`).

  Returns:
    A stateless ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.aligned_mtl(2)
    >>> grads = jnp.array([[2.0, 0.0], [0.0, 1.0]])  # σ = 2, 1: σ_min = 1
    >>> tx.update(grads, tx.init(jnp.zeros(2)))[0]  # (1/2·1/2·2, 1/2·1·1)
    Array([0.5, 0.5], dtype=float32)
  """
  base.check_num_tasks(num_tasks)
  if preference is None:
    preference = jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32)
  preference = jnp.broadcast_to(jnp.asarray(preference, jnp.float32),
                                (num_tasks,))

  def weigh(stats, state):
    return spectral.aligned_weights(stats.gram, preference), state

  return base.balancer(num_tasks, weigh, name='aligned_mtl',
                       task_specific=task_specific)
