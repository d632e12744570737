"""Task weights that every method can be compared by, for the plots.

Methods keep different things in their state's ``weights`` (DB-MTL: the
weights of its log-scaled averaged gradients; log scaling + equal weighting:
ones). What they all produce is a shared update ``d``; its least-squares
coefficients on the *raw* task gradients, ``w = argmin ‖Σ_t w_t g_t − d‖``,
are the same kind of number for every method. They are exact for a method
whose update is a combination of the current gradients (all but the
averaging ones, whose ``d`` also holds past gradients).
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

import mtl_optax as mtl
from mtl_optax._src import leaves


class EffectiveWeightsState(NamedTuple):
  weights: jax.Array  # shape=[T], dtype=float32; least-squares weights of d
  inner: Any  # the wrapped balancer's state


def _shared_leaves(task_specific: Callable[[Any], Any], tree) -> list:
  """The leaves of ``tree`` that are not task-specific, as the library splits."""
  flags = leaves.task_specific_flags(task_specific, tree)
  return leaves.split_leaves(flags, tree)[0]


def least_squares_weights(shared_task_grads: list, shared_update: list):
  """``w`` solving ``G w = J d`` (minimum norm when ``G`` is singular)."""
  gram, scale = mtl.gramian(shared_task_grads)
  projections = sum(  # J d, one dot per leaf, on the Gramian's scale.
      jnp.tensordot(grads, update, axes=update.ndim,
                    precision=jax.lax.Precision.HIGHEST)
      for grads, update in zip(shared_task_grads, shared_update)) / scale**2
  return (jnp.linalg.pinv(gram, hermitian=True) @ projections).astype(
      jnp.float32)


def with_effective_weights(
    balancer: optax.GradientTransformation,
    num_tasks: int,
    task_specific: Callable[[Any], Any],
) -> optax.GradientTransformationExtraArgs:
  """Wraps ``balancer``; its state's ``weights`` become the effective weights."""
  balancer = optax.with_extra_args_support(balancer)

  def init_fn(params):
    return EffectiveWeightsState(jnp.zeros([num_tasks], jnp.float32),
                                 balancer.init(params))

  def update_fn(task_grads, state, params=None, **extra_args):
    updates, inner = balancer.update(task_grads, state.inner, params,
                                     **extra_args)
    weights = least_squares_weights(_shared_leaves(task_specific, task_grads),
                                    _shared_leaves(task_specific, updates))
    return updates, EffectiveWeightsState(weights, inner)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
