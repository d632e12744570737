"""The contract every method shares: what a weighting reads and returns.

A :class:`Weighting` is a value: ``init(num_tasks) -> state`` and
``weigh(stats, state) -> (weights, state)``, a pure function of the task
Gramian, the task losses (:class:`TaskStats`) and its own state. Engines and
combinators call it on Gramians they computed themselves; the balancer
(balancer.py) turns it into an optax transformation.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import numerics
from mtl_optax._src import validation


class TaskStats(NamedTuple):
  """What a weighting may read about the current step.

  Attributes:
    gram: ``[T, T]`` Gramian of the shared task gradients divided by
      ``scale**2`` (float32, float64 for float64 gradients), or None when the
      weighting does not read it.
    scale: ``()`` power of two; the true Gramian is ``scale**2 * gram``. It
      is 1 unless the gradients' squares leave the float32 range. A weighting
      that is invariant to a positive factor on the Gramian (most are) can
      ignore it.
    losses: ``[T]`` float32 task losses, or None when the user gave none.
    num_tasks: T, a Python int.
    cross_gram: ``[T, T]`` ``J₂ J₃ᵀ`` of the shared task gradients of two
      further, independent batches divided by ``scale**2`` (then ``gram``
      is None), given by :func:`mtl_optax.cross_balancer`; None otherwise.
      Weightings that read it (SDMGrad, MoDo) use ``gram`` when it is None.
  """
  gram: jax.Array | None
  scale: jax.Array | None
  losses: jax.Array | None
  num_tasks: int | None = None
  cross_gram: jax.Array | None = None

  @property
  def norms(self) -> jax.Array:
    """``[T]`` Euclidean norms of the shared task gradients (true scale)."""
    if self.gram is None or self.scale is None:
      raise ValueError('TaskStats.norms: this step has no Gramian (a '
                       'loss-level weighting reads no gradients).')
    return numerics.safe_sqrt(jnp.diagonal(self.gram)) * self.scale


def _no_state(num_tasks: int) -> optax.EmptyState:
  del num_tasks
  return optax.EmptyState()


class Weighting(NamedTuple):
  """A method's weighting, as a value any engine or combinator can call.

  Attributes:
    weigh: ``weigh(stats, state) -> (weights, new_state)``, with ``stats`` a
      :class:`TaskStats` and ``weights`` of shape ``[T]``: the update is
      ``Σ_t weights[t] g_t``. Pure and traceable: it runs under ``jax.jit``.
    init: ``init(num_tasks) -> state``, the weighting's own state (an
      ``optax.EmptyState()`` for stateless weightings).
    name: the method's public name, used in error messages.
    reads_gram: whether ``weigh`` reads ``stats.gram`` (False for loss-level
      weightings, which then also work from one backward pass).
    reads_losses: whether ``weigh`` needs ``stats.losses``.
    specific_weights: None (every task-specific leaf gets its own task's
      gradient as is), or ``specific_weights(stats, state) -> [T]``, called
      with what ``weigh`` gets: task ``t``'s task-specific leaves get
      ``specific_weights[t] · g_t`` (e.g. IMTL-L's loss scales ``e^{s_t}``).
  """
  weigh: Callable[[TaskStats, Any], tuple[jax.Array, Any]]
  init: Callable[[int], Any] = _no_state
  name: str = 'weighting'
  reads_gram: bool = True
  reads_losses: bool = False
  specific_weights: Callable[[TaskStats, Any], jax.Array] | None = None


def own_task_weights(weighting: Weighting, stats: TaskStats,
                     state: Any) -> jax.Array:
  """``[T]`` factors of each task's task-specific leaves (1 unless asked)."""
  if weighting.specific_weights is None:
    return jnp.ones([stats.num_tasks], jnp.float32)
  return weighting.specific_weights(stats, state)


class BalancerState(NamedTuple):
  """State of every :func:`balancer`: the last weights and the weighting's own.

  Attributes:
    weights: ``[T]`` float32 weights of the last finite update (zeros before
      the first one).
    weighting_state: the weighting's state, as ``Weighting.init`` made it.
  """
  weights: jax.Array  # shape=[T], dtype=float32
  weighting_state: Any

  def task_weights(self) -> jax.Array:
    """``[T]`` weights of the last finite update ``Σ_t w_t g_t``."""
    return self.weights


WeightsState = BalancerState  # The 0.1 name of a balancer's state.


def preference_weighting(
    name: str, preference: Any,
    weights_of: Callable[[jax.Array, jax.Array | None], jax.Array],
) -> Weighting:
  """A stateless Gramian weighting ``weights_of(gram, preference)``.

  ``preference`` (None for the method's default, else anything that
  broadcasts to ``[T]``) reaches ``weights_of`` as None or a ``[T]`` float32
  vector; its shape is checked when a balancer is built (``init``).
  """
  preference_for = validation.preference_vector(name, preference)

  def init(num_tasks):
    preference_for(num_tasks)
    return optax.EmptyState()

  def weigh(stats, state):
    return weights_of(stats.gram, preference_for(stats.num_tasks)), state

  return Weighting(weigh=weigh, init=init, name=name)
