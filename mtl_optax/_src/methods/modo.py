"""MoDo: MGDA weights by one projected step, from two independent batches."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src.solvers import simplex

# A weight step beyond this is as good as infinite (the projection then puts
# all weight on one task); clipping keeps it finite when J₂ J₃ᵀ overflows.
_LARGEST_STEP = 1e30


class MoDoState(NamedTuple):
  task_weights: jax.Array  # shape=[T], dtype=float32; λ on the simplex


def modo(
    *,
    learning_rate: float = 1e-3,
    rho: float = 0.1,
    gamma: float | None = None,
) -> base.Weighting:
  r"""MoDo: multi-objective gradient with double sampling.

  Chen, Fernando, Ying and Chen, "Three-Way Trade-Off in Multi-Objective
  Learning: Optimization, Generalization and Conflict-Avoidance" (JMLR 2024;
  NeurIPS 2023), Algorithm 1 (MoDo). The weights ``λ`` track the MGDA
  weights, ``argmin_{λ ∈ Δ_T} ½ ‖Jᵀλ‖²``, by one projected stochastic
  gradient step per update, whose gradient ``J Jᵀ λ`` is estimated without
  bias from two independent batches (double sampling):

  ``λ_{k+1} = Π_Δ(λ_k − γ (J₂ J₃ᵀ λ_k + ρ λ_k))``,
  ``d_k = J₁ᵀ λ_{k+1}``,

  with ``J₂``, ``J₃`` and ``J₁`` the task gradients of three independent
  batches, ``λ_0 = 1/T`` and ``Π_Δ`` the Euclidean projection onto the
  simplex. ``ρ λ`` is the ℓ₂ regulariser of the authors' implementation
  (in their LibMTL code; ``ρ = 0`` is the paper's Algorithm 1); the defaults
  ``γ = 1e-3`` and ``ρ = 0.1`` are theirs too. ``J₂ J₃ᵀ`` is used at its
  true scale (``scale**2 * cross_gram``), so ``γ`` is an absolute step:
  unlike most weightings, MoDo's weights depend on the gradients' size.
  Steps larger than ``1e30`` are clipped (the projection then puts all the
  weight on one task either way), so the weights stay finite.

  Feeding batches: :func:`mtl_optax.modo` takes ``task_grads_2`` and
  ``task_grads_3`` (the paper's z₁ and z₂) as update arguments next to
  ``task_grads`` (z₃). Without them, and in :func:`mtl_optax.balancer` or
  the Gramian engine, ``J₂ J₃ᵀ`` is the one-batch Gramian ``J₁ J₁ᵀ``.

  Args:
    learning_rate: ``γ`` > 0, the step size of the weights.
    rho: ``ρ`` >= 0, the ℓ₂ regularisation of the weights.
    gamma: deprecated name of ``learning_rate``, removed in 0.3.

  Returns:
    A :class:`Weighting` of ``stats.cross_gram`` (``stats.gram`` without it)
    with state :class:`MoDoState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.modo(2, learning_rate=0.1, rho=0.0)
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> state.weights  # Π_Δ([0.5, 0.5] − 0.1 [0.5, 2]) = [0.575, 0.425]
    Array([0.575, 0.425], dtype=float32)
  """
  learning_rate = base.renamed('modo', 'gamma', gamma, 'learning_rate',
                               learning_rate)
  base.check_range('learning_rate', learning_rate, 0.0, low_open=True)
  base.check_range('rho', rho, 0.0)

  def init(num_tasks):
    return MoDoState(
        task_weights=jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32))

  def weigh(stats, state):
    cross = stats.gram if stats.cross_gram is None else stats.cross_gram
    weights = state.task_weights
    # (J₂ J₃ᵀ) λ at its true scale; the scale multiplies last, so only the
    # step itself can overflow, and it is clipped.
    product = (cross.astype(jnp.float32) @ weights) * (
        stats.scale.astype(jnp.float32) ** 2)
    step = learning_rate * (product + rho * weights)
    step = jnp.clip(step, -_LARGEST_STEP, _LARGEST_STEP)
    new_weights = simplex.project_to_simplex(weights - step)
    return new_weights, MoDoState(task_weights=new_weights)

  return base.Weighting(weigh=weigh, init=init, name='modo')
