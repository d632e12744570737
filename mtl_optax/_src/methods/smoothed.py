"""Smoothed weights: an exponential moving average of any weighting's weights."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base


class SmoothedState(NamedTuple):
  previous_weights: jax.Array  # shape=[T], dtype=float32; w_{k−1}
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; steps taken (saturating)
  inner_state: Any  # the wrapped weighting's own state


def smoothed(
    weighting: base.Weighting,
    alpha: float = 0.9,
) -> base.Weighting:
  r"""Averages a weighting's weights over steps (CR-MOGM).

  Zhou et al., "On the Convergence of Stochastic Multi-Objective Gradient
  Manipulation and Beyond" (NeurIPS 2022): the correlation-reduced framework
  (CR-MOGM) replaces the weights ``ŵ_k`` that a method computes from the
  current stochastic gradients by

  ``w_k = α w_{k−1} + (1 − α) ŵ_k``,  with ``w_1 = ŵ_1``,

  which reduces the correlation between the weights and the current
  mini-batch's gradients, the source of the bias that keeps stochastic
  gradient-manipulation methods (MGDA, PCGrad, CAGrad, …) from converging.
  The update is ``Σ_t w_k[t] g_t`` with the current gradients.

  A combinator: ``weighting`` is any :class:`Weighting` (of the Gramian or of
  the losses), and the result reads what it reads, so a loss-level
  weighting stays loss-level (one backward pass). The inner weighting runs
  every step on the current statistics and keeps its own state, nested in
  :class:`SmoothedState` with ``w_{k−1}`` and a step counter. A non-finite
  step leaves all of it unchanged (as every state under :func:`balancer`).

  Properties: a permutation of the tasks permutes the smoothed weights when
  it permutes the inner ones, and the smoothing is linear in the weights, so
  permutation invariance and linearity under scaling carry over from the
  inner weighting. A guarantee that depends on the current gradients
  (``g_t · d >= 0``, the min-norm point) holds only at the first step.

  Args:
    weighting: the :class:`Weighting` whose weights are averaged, e.g.
      ``mtl.weightings.mgda()``.
    alpha: ``α ∈ [0, 1]``, the weight of the past: 0 gives the inner
      weighting itself, 1 keeps the first step's weights. A float; it may be
      traced (``optax.inject_hyperparams``).

  Returns:
    A :class:`Weighting` with state :class:`SmoothedState`; it reads the
    Gramian and the losses when ``weighting`` does.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.balancer(2, mtl.weightings.smoothed(mtl.weightings.mgda(),
    ...                                              alpha=0.5))
    >>> state = tx.init(jnp.zeros(2))
    >>> _, state = tx.update(jnp.array([[1.0, 0.0], [0.0, 2.0]]), state)
    >>> state.weights  # MGDA's own: norms² 1 and 4 give [4, 1] / 5.
    Array([0.8, 0.2], dtype=float32)
    >>> _, state = tx.update(jnp.array([[3.0, 0.0], [0.0, 1.0]]), state)
    >>> state.weights.round(6)  # ½ [0.8, 0.2] + ½ [0.1, 0.9].
    Array([0.45, 0.55], dtype=float32)
  """
  if not isinstance(weighting, base.Weighting):
    raise ValueError(
        f'smoothed: weighting must be a mtl.Weighting (e.g. '
        f'mtl.weightings.mgda()), got {weighting!r}.')
  base.check_range('alpha', alpha, 0.0, 1.0)

  def init(num_tasks):
    return SmoothedState(previous_weights=jnp.zeros([num_tasks], jnp.float32),
                         count=jnp.zeros([], jnp.int32),
                         inner_state=weighting.init(num_tasks))

  def weigh(stats, state):
    current, inner_state = weighting.weigh(stats, state.inner_state)
    average = alpha * state.previous_weights + (1.0 - alpha) * current
    weights = jnp.where(state.count == 0, current, average)
    return weights, SmoothedState(previous_weights=weights,
                                  count=optax.safe_increment(state.count),
                                  inner_state=inner_state)

  return base.Weighting(weigh=weigh, init=init,
                        name=f'smoothed({weighting.name})',
                        reads_gram=weighting.reads_gram,
                        reads_losses=weighting.reads_losses)
