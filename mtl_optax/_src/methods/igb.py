"""IGB: loss weights from the improvable gaps, on the log losses (IGBv1)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics

_FLOAT32_MAX = float(jnp.finfo(jnp.float32).max)


class IGBState(NamedTuple):
  base_losses: jax.Array  # shape=[T], dtype=float32; B_t, the mean of the
  # (floored) losses of the base steps seen so far (0 at first)
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; updates seen, saturating


def igb(
    *,
    base_steps: int = 1,
    skip_steps: int = 0,
    loss_floor: float = 1e-8,
) -> base.Weighting:
  r"""IGBv1: softmax weights of the improvable gaps, on the log losses.

  Dai, Fei and Lu, "Improvable Gap Balancing for Multi-Task Learning" (UAI
  2023), IGBv1; official code ``YanqiDai/IGB4MTL``
  (``ImprovableGapBalancing_v1``). A task's improvable gap is how far it
  still is from its final training progress; IGBv1 estimates it by the loss
  relative to a base loss ``B_t`` measured early in training (the desired
  final loss taken as 0) and gives more weight to larger gaps. Like the
  code, it weights the *log* losses (scale-invariant loss balancing):

  ``v = T · softmax(L / B)``,  the objective ``Σ_t v_t log L_t``,

  so the update is ``d = Σ_t (v_t / L_t) g_t``: ``w_t = v_t / L_t``. Until
  the base losses are known, ``v = 1`` (``Σ_t log L_t``).

  **Base losses.** The code averages the training losses over one epoch
  (the second: ``--base_epoch 1``) and uses them from the next epoch on. A
  transformation knows steps, not epochs: here ``B_t`` is the mean of the
  losses of the ``base_steps`` updates that follow the first ``skip_steps``
  (set both to the number of steps per epoch for the code's choice), and the
  softmax weights start at the next update. Losses below ``loss_floor``
  count as ``loss_floor`` (for the logarithm and the ratios); the code has
  no floor.

  **IGBv2 is not offered.** IGBv2 replaces the softmax by the action of a
  soft actor-critic agent (``SAC_Agent``: an actor and two critics of two
  hidden layers of 128 units, their target copies, Adam states and a replay
  buffer of up to 10 000 transitions), trained for tens of gradient steps
  every 50 updates on the reward ``min_t (L_t(k−1) − L_t(k)) / B_t``. Its
  shapes would fit a fixed-shape state, but not the rest of its contract:
  (1) the reward is multiplied by ``lr₀ / lr_k``, the model optimizer's
  current learning rate, which a transformation placed before the optimizer
  in an ``optax.chain`` never sees; (2) its schedule is in epochs (random
  weights for the first five epochs, training from the third), which needs
  the number of steps per epoch; (3) each training step samples
  ``int(256 · k / 2)`` transitions with ``k = 1 + size / 10 000``, a batch
  whose shape grows with the buffer's fill, which a compiled step cannot
  have; (4) its weights are draws of a stochastic
  policy trained by RL from random initial networks, so no value can be
  checked against the code on a small input, and none of the properties
  the suite checks (permutation invariance) holds.

  Args:
    base_steps: Python int >= 1, the number of updates whose losses are
      averaged into ``B``.
    skip_steps: Python int >= 0, the updates before those (the code skips
      one epoch).
    loss_floor: smallest loss used, > 0.

  Returns:
    A loss-level :class:`Weighting` with state :class:`IGBState`; it needs
    the losses.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> weighting = mtl.weightings.igb()
    >>> state = weighting.init(2)
    >>> losses = jnp.array([2.0, 4.0])
    >>> weights, state = mtl.weigh_losses(weighting, losses, state)
    >>> weights  # No base yet: the log losses, w = 1/L.
    Array([0.5 , 0.25], dtype=float32)
    >>> weights, state = mtl.weigh_losses(weighting, jnp.array([1.0, 4.0]),
    ...                                   state)
    >>> [round(float(w), 4) for w in weights]  # v = 2 softmax([0.5, 1])
    [0.7551, 0.3112]
  """
  base.check_positive_int('base_steps', base_steps)
  if (isinstance(skip_steps, bool) or not isinstance(skip_steps, int)
      or skip_steps < 0):
    raise ValueError(
        f'skip_steps must be a Python int >= 0, got {skip_steps!r}.')
  base.check_range('loss_floor', loss_floor, 0.0, low_open=True)
  ready_at = skip_steps + base_steps

  def init(num_tasks):
    return IGBState(base_losses=jnp.zeros([num_tasks], jnp.float32),
                    count=jnp.zeros([], jnp.int32))

  def weigh(stats, state):
    losses = numerics.floor_losses(stats.losses, loss_floor)
    # The base is complete before this update: the code sets it at the end
    # of the base epoch and uses it from the next one.
    ready = state.count >= ready_at
    gaps = jnp.minimum(
        numerics.safe_div(losses, state.base_losses), _FLOAT32_MAX)
    # The code's n_tasks · softmax(losses / base_losses).
    gap_weights = stats.num_tasks * jax.nn.softmax(gaps)
    factors = jnp.where(ready, gap_weights, 1.0)
    weights = factors / losses  # ∂/∂θ of v_t log L_t.

    # This update's losses join the running mean if it is a base step.
    position = state.count - skip_steps
    is_base_step = (position >= 0) & (position < base_steps)
    seen = jnp.maximum(position, 0).astype(jnp.float32) + 1.0
    base_losses = jnp.where(
        is_base_step,
        state.base_losses + (losses - state.base_losses) / seen,
        state.base_losses)
    return weights, IGBState(base_losses=base_losses,
                             count=optax.safe_increment(state.count))

  return base.Weighting(weigh=weigh, init=init, name='igb', reads_gram=False,
                        reads_losses=True)
