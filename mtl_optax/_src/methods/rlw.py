"""RLW: random loss weighting, a fresh softmax of Gaussian draws every step."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src import numerics


class RLWState(NamedTuple):
  key: jax.Array  # shape=[2], dtype=uint32; a raw PRNG key, split every step


def rlw(*, key: Any = 0) -> base.Weighting:
  r"""Weights tasks by ``w = softmax(λ)`` with ``λ ~ N(0, I)`` drawn every step.

  Lin, Ye, Zhang and Tsang, "Reasonable Effectiveness of Random Weighting: A
  Litmus Test for Multi-Task Learning" (TMLR 2022): random loss weighting
  with the standard normal distribution and the softmax normalisation, the
  variant the paper and its benchmarks use. Every update draws ``λ`` afresh,
  so the weights are positive and sum to 1. The paper offers it as the
  baseline that a balancing method must beat.

  The key lives in the state and is split at every update; the same ``key``
  gives the same sequence of weights. An update whose inputs are not finite
  keeps the old state (see :func:`balancer`), so the next update draws the
  same ``λ`` again. Needs no losses and no Gramian.

  Args:
    key: a PRNG key (raw ``uint32[2]`` or typed) or an int seed.

  Returns:
    A loss-level :class:`Weighting` with state :class:`RLWState`; it reads
    neither the Gramian nor the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.rlw(3, key=0)
    >>> grads = jnp.ones([3, 2])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> round(float(jnp.sum(state.weights)), 6)  # on the simplex
    1.0
  """
  def init(num_tasks):
    del num_tasks
    return RLWState(key=numerics.as_raw_key(key))

  def weigh(stats, state):
    next_key, draw_key = jax.random.split(state.key)
    logits = jax.random.normal(draw_key, [stats.num_tasks], jnp.float32)
    return jax.nn.softmax(logits), state._replace(key=next_key)

  return base.Weighting(weigh=weigh, init=init, name='rlw', reads_gram=False)
