"""UPGrad: the average of every task gradient projected onto the dual cone."""

from typing import Any

import jax
import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src.solvers import dual_cone


def upgrad_weights(gram: jax.Array, reg_eps, max_iters: int,
                   preference: jax.Array | None = None) -> jax.Array:
  """``Σ_i v_i`` with ``v_i = argmin_{v >= p_i e_i} vᵀ A v`` (one per task)."""
  num_tasks = gram.shape[0]
  matrix = dual_cone.normalised_gram(gram, reg_eps)
  if preference is None:
    preference = jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32)
  lowers = jnp.diag(preference.astype(jnp.float32))
  solutions = dual_cone.project_each(matrix, lowers, max_iters)
  return jnp.sum(solutions.weights, axis=0)


def upgrad(
    *,
    reg_eps: float = 1e-4,
    max_iters: int | None = None,
    preference: Any = None,
) -> base.Weighting:
  r"""Unconflicting Projection of Gradients: mean of the projected gradients.

  Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization" (2024).
  Each task gradient, weighted by ``1/T``, is projected onto the dual cone
  ``{x : g_t·x >= 0 ∀t}`` of the task gradients, and the projections are
  summed:

    ``d = Σ_i π(g_i / T)``,  ``π(Jᵀu) = Jᵀ argmin_{v >= u} vᵀ G v``,

  the Gramian form of the projection given in the paper. So the weights are
  ``w = Σ_i v_i`` with ``v_i = argmin_{v >= e_i/T} vᵀ G v``, T problems of
  size T solved together by the jit-compiled active-set solver of
  :mod:`dual_cone` (vmapped over ``i``).

  Conventions (TorchJD's defaults, which the reference values follow): the
  starting weights are the mean ``1/T`` (the paper's UPGrad with uniform
  preference; a sum would double every weight for T = 2), and the problem is
  solved on ``G / tr(G) + reg_eps · I``. The regulariser slightly relaxes the
  guarantee: ``g_t·d >= −reg_eps · tr(G) · w_t`` rather than ``>= 0``; set
  ``reg_eps=0`` for the exact projection (a floor of 1e-7 remains, see
  :mod:`dual_cone`). All-zero gradients give ``w = 1/T`` (a zero update).

  ``preference`` (TorchJD's ``pref_vector``) replaces the ``1/T`` weighting
  of the projected gradients by ``p``: ``d = Σ_i π(p_i g_i)``, i.e.
  ``v_i = argmin_{v >= p_i e_i} vᵀ G v``. Any sign is allowed; every
  projection lies in the dual cone, so ``d`` stays non-conflicting.

  Properties: non-conflicting (up to the regulariser above), permutation
  invariant (with the default preference), linear under scaling; every
  ``w_t >= p_t`` (``1/T`` by default).

  Args:
    reg_eps: >= 0, ridge added to the trace-normalised Gramian.
    max_iters: Python int >= 1, the solver's iteration cap; default
      ``4 T + 10`` (it needs about T/2 + 2 on random problems).
    preference: ``[T]`` weights ``p`` of the projected gradients (default
      ``1/T`` each, TorchJD's default ``pref_vector``).

  Returns:
    A stateless :class:`Weighting` of the Gramian.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.upgrad(2, reg_eps=0.0)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 1.0]])  # no conflict: the mean
    >>> tx.update(grads, tx.init(jnp.zeros(2)))[0]
    Array([0.5, 0.5], dtype=float32)
  """
  base.check_range('reg_eps', reg_eps, 0.0)
  if max_iters is not None:
    base.check_positive_int('max_iters', max_iters)

  def weights_of(gram, preference):
    iterations = max_iters or dual_cone.default_max_iters(gram.shape[0])
    return upgrad_weights(gram, reg_eps, iterations, preference)

  return base.preference_weighting('upgrad', preference, weights_of)
