"""GO4Align: tasks grouped by risk-guided indicators, one weight per group."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src import numerics

_FLOAT32_MAX = float(jnp.finfo(jnp.float32).max)


class GO4AlignState(NamedTuple):
  logits: jax.Array  # shape=[T], dtype=float32; log p up to a constant,
  # p = softmax(logits) the risk-guided probabilities (uniform at first)


def group_means(values: jax.Array, num_groups: int,
                num_iters: int) -> jax.Array:
  """Each value replaced by the mean of its k-means group (1-D, compiled).

  Lloyd's iterations, ``num_iters`` of them in one ``lax.fori_loop``, from a
  deterministic start: the centres are the order statistics of ``values``
  at ranks ``⌊(k + ½) T / K⌋``, ``k = 0 … K − 1`` (spread over the sorted
  values, the same for any order of the tasks). A value goes to the nearest
  centre (the lower one on a tie); an empty group keeps its centre. The
  result is the mean of each value's group, after the last assignment.

  Args:
    values: ``[T]`` float32 values to cluster.
    num_groups: Python int K, 1 <= K <= T.
    num_iters: Python int >= 1, Lloyd's iterations.

  Returns:
    ``[T]``: the mean of the group of each value.
  """
  num_values = values.shape[0]
  ranks = [int((k + 0.5) * num_values / num_groups) for k in range(num_groups)]
  centres = jnp.sort(values)[jnp.asarray(ranks)]

  def assign(centres):
    distances = jnp.abs(values[:, None] - centres[None, :])
    return jax.nn.one_hot(jnp.argmin(distances, axis=1), num_groups,
                          dtype=values.dtype)  # [T, K]

  def lloyd(_, centres):
    members = assign(centres)
    sizes = jnp.sum(members, axis=0)
    sums = values @ members
    return jnp.where(sizes > 0, numerics.safe_div(sums, sizes), centres)

  members = assign(jax.lax.fori_loop(0, num_iters - 1, lloyd, centres))
  sizes = jnp.sum(members, axis=0)
  means = numerics.safe_div(values @ members, sizes)
  return members @ means


def go4align(
    *,
    num_groups: int = 2,
    learning_rate: float = 1e-4,
    kmeans_iters: int = 10,
    loss_floor: float = 1e-8,
) -> base.Weighting:
  r"""GO4Align: k-means groups of risk-guided indicators weigh the losses.

  Shen, Wang, Xiao, Van Noord and Worring, "GO4Align: Group Optimization
  for Multi-Task Alignment" (NeurIPS 2024), adaptive group risk
  minimisation; official code ``autumn9999/GO4Align``
  (``methods/cluster_methods.py``, ``GO4ALIGN``), which this follows. Each
  update, with the task losses ``L``:

  ``p ← p ⊙ exp(−η L) / Σ_s p_s exp(−η L_s)``  (risk information from the
  previous iterations, ``p = 1/T`` at first; ``η = learning_rate``),

  ``γ_t = (Σ_s L_s / L_t) · p_t``  (risk-guided group indicators: a scale
  balance times the running risk term),

  then the tasks are clustered by ``γ`` into ``K = num_groups`` groups
  (dynamical group assignment) and each task gets its group's mean
  indicator: ``w_t = mean{γ_s : s in the group of t}``. The objective is
  ``Σ_t w_t L_t``, so the weights apply to the gradients as they are. The
  weights depend on the losses only, so the method runs on one backward
  pass (:func:`mtl_optax.weigh_losses`).

  **Decisions.** The code clusters with ``kmeans_pytorch`` (random initial
  centres, iterations until the centres move less than 1e-4); here k-means
  is a fixed number of Lloyd's iterations from a deterministic start
  (:func:`group_means`), compiled, so equal inputs give equal weights. The
  probabilities are kept as logits (``p = softmax(logits)``, re-centred each
  update) so that they never underflow. ``K`` larger than T counts as T
  (each task alone: ``w = γ``); ``K = 1`` gives every task ``mean(γ)``. The
  code's trainer defaults to ``K = 1``; the default here is 2, the smallest
  number of groups that groups anything. Losses below ``loss_floor`` count
  as ``loss_floor``.

  Args:
    num_groups: Python int K >= 1, the number of groups.
    learning_rate: ``η >= 0`` (1e-4 in the code).
    kmeans_iters: Python int >= 1, Lloyd's iterations.
    loss_floor: smallest loss used, > 0.

  Returns:
    A loss-level :class:`Weighting` with state :class:`GO4AlignState`; it
    needs the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> weighting = mtl.weightings.go4align(learning_rate=0.0)
    >>> losses = jnp.array([1.0, 1.0, 4.0])  # γ = [2, 2, 0.5]
    >>> weights, _ = mtl.weigh_losses(weighting, losses, weighting.init(3))
    >>> weights
    Array([2. , 2. , 0.5], dtype=float32)
  """
  base.check_positive_int('num_groups', num_groups)
  base.check_positive_int('kmeans_iters', kmeans_iters)
  base.check_range('learning_rate', learning_rate, 0.0)
  base.check_range('loss_floor', loss_floor, 0.0, low_open=True)

  def init(num_tasks):
    return GO4AlignState(logits=jnp.zeros([num_tasks], jnp.float32))

  def weigh(stats, state):
    losses = numerics.floor_losses(stats.losses, loss_floor)
    # The code's adv_probs ← adv_probs · exp(−η L), normalised.
    logits = state.logits - learning_rate * losses
    logits = logits - jnp.max(logits)
    probs = jax.nn.softmax(logits)
    scales = jnp.minimum(jnp.sum(losses) / losses, _FLOAT32_MAX)
    indicators = scales * probs  # γ: the code's scale · adv_probs.
    weights = group_means(indicators, min(num_groups, stats.num_tasks),
                          kmeans_iters)
    return weights, GO4AlignState(logits=logits)

  return base.Weighting(weigh=weigh, init=init, name='go4align',
                        reads_gram=False, reads_losses=True)
