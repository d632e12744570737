"""DualProj: the mean gradient projected onto the dual cone of the task gradients."""

from typing import Any

import jax
import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src.solvers import dual_cone


def dualproj_weights(gram: jax.Array, reg_eps, max_iters: int,
                     preference: jax.Array | None = None) -> jax.Array:
  """``argmin_{v >= p} vᵀ A v``: the projected ``Jᵀp``, as weights."""
  num_tasks = gram.shape[0]
  matrix = dual_cone.normalised_gram(gram, reg_eps)
  if preference is None:
    preference = jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32)
  lower = preference.astype(jnp.float32)
  return dual_cone.project(matrix, lower, max_iters).weights


def dualproj(
    *,
    reg_eps: float = 1e-4,
    max_iters: int | None = None,
    preference: Any = None,
) -> base.Weighting:
  r"""Projects the mean task gradient onto the dual cone of the task gradients.

  The DualProj aggregator of Quinton and Rey, "Jacobian Descent for
  Multi-Objective Optimization" (2024), the projection step of A-GEM (Chaudhry
  et al. 2019) extended to T constraints:

    ``d = π(Jᵀ 1/T)``,  ``π(Jᵀu) = Jᵀ argmin_{v >= u} vᵀ G v``,

  so the weights are ``w = argmin_{v >= 1/T} vᵀ G v``, solved by the
  jit-compiled active-set solver of :mod:`dual_cone`.

  Conventions (TorchJD's defaults, which the reference values follow): the
  problem is solved on ``G / tr(G) + reg_eps · I``. The regulariser slightly
  relaxes the guarantee: ``g_t·d >= −reg_eps · tr(G) · w_t`` rather than
  ``>= 0``; set ``reg_eps=0`` for the exact projection (a floor of 1e-7
  remains, see :mod:`dual_cone`). All-zero gradients give ``w = 1/T``.

  ``preference`` (TorchJD's ``pref_vector``) replaces the mean by
  ``Jᵀp``: ``d = π(Jᵀp)``, ``w = argmin_{v >= p} vᵀ G v``.

  Properties: non-conflicting (up to the regulariser above), permutation
  invariant (with the default preference), linear under scaling; every
  ``w_t >= p_t`` (``1/T`` by default).

  Args:
    reg_eps: >= 0, ridge added to the trace-normalised Gramian.
    max_iters: Python int >= 1, the solver's iteration cap; default
      ``4 T + 10``.
    preference: ``[T]`` combination ``p`` of the gradients to project
      (default ``1/T`` each, the mean; TorchJD's default ``pref_vector``).

  Returns:
    A stateless :class:`Weighting` of the Gramian.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.dualproj(2, reg_eps=0.0)
    >>> grads = jnp.array([[1.0, 0.0], [-2.0, 1.0]])  # the mean conflicts
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> state.weights.round(4)  # (1/2, 1/2) lifted to (1, 1/2): d ⟂ g_1
    Array([1. , 0.5], dtype=float32)
  """
  base.check_range('reg_eps', reg_eps, 0.0)
  if max_iters is not None:
    base.check_positive_int('max_iters', max_iters)

  def weights_of(gram, preference):
    iterations = max_iters or dual_cone.default_max_iters(gram.shape[0])
    return dualproj_weights(gram, reg_eps, iterations, preference)

  return base.preference_weighting('dualproj', preference, weights_of)
