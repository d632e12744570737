"""RLW: random loss weighting, a fresh softmax of Gaussian draws every step."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src import numerics


class RLWState(NamedTuple):
  weights: jax.Array  # shape=[T], dtype=float32
  key: jax.Array  # shape=[2], dtype=uint32; a raw PRNG key, split every step


def rlw(
    num_tasks: int,
    *,
    key: Any = 0,
    task_specific: base.TaskSpecific = None,
) -> base.LossBalancer:
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
    num_tasks: T.
    key: a PRNG key (raw ``uint32[2]`` or typed) or an int seed.
    task_specific: leaves that belong to one task (see :func:`balancer`).

  Returns:
    A :class:`LossBalancer` with state :class:`RLWState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.rlw(3, key=0)
    >>> grads = jnp.ones([3, 2])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> round(float(jnp.sum(state.weights)), 6)  # on the simplex
    1.0
  """
  base.check_num_tasks(num_tasks)

  def init_state(params):
    del params
    return RLWState(weights=jnp.zeros([num_tasks], jnp.float32),
                    key=numerics.as_raw_key(key))

  def weigh(stats, state):
    del stats
    next_key, draw_key = jax.random.split(state.key)
    logits = jax.random.normal(draw_key, [num_tasks], jnp.float32)
    return jax.nn.softmax(logits), state._replace(key=next_key)

  return base.balancer(num_tasks, weigh, name='rlw', init_state=init_state,
                       uses_gram=False, task_specific=task_specific)
