"""MetaBalance: auxiliary gradients pulled toward the target task's norm."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_optax._src import base
from mtl_optax._src import numerics

STRATEGIES = ('both', 'enlarge', 'reduce')
_FLOAT32_MAX = float(jnp.finfo(jnp.float32).max)


class MetaBalanceState(NamedTuple):
  norm_ema: jax.Array  # shape=[T], dtype=float32; m_t, the moving average
  # of ‖g_t‖ (0 at first)


def _check_target_task(target_task: Any) -> int:
  if (isinstance(target_task, bool) or not isinstance(target_task, int)
      or target_task < 0):
    raise ValueError(
        f'target_task must be a Python int >= 0, got {target_task!r}.')
  return target_task


def metabalance(
    *,
    target_task: int = 0,
    relax_factor: float = 0.7,
    beta: float = 0.9,
    strategy: str = 'both',
) -> base.Weighting:
  r"""MetaBalance: scales auxiliary gradients toward the target task's norm.

  He, Feng, Cheng, Ji, Guo and Caverlee, "MetaBalance: Improving Multi-Task
  Recommendations via Adapting Gradient Magnitudes of Auxiliary Tasks" (WWW
  2022); official code ``facebookresearch/MetaBalance`` (``metabalance.py``,
  ``balance_GradMagnitudes``), whose update this follows. One
  task (``target_task``) is the one that matters; the others are auxiliary
  and must neither drown it nor be too weak to help it. Each task's gradient
  norm is smoothed by a moving average (0 at first, no bias correction, as
  in the code),

  ``m_t ← β m_t + (1 − β) ‖g_t‖``,

  and each auxiliary gradient is moved toward the target's magnitude by the
  relax factor ``r``:

  ``w_t = r · m_tar / m_t + (1 − r)``,  ``w_tar = 1``,

  so ``d = Σ_t w_t g_t``: ``r = 1`` gives every auxiliary gradient the
  target's (smoothed) norm, ``r = 0`` is the plain sum. ``strategy``
  selects the paper's three strategies: ``'both'`` rescales every
  auxiliary gradient (the official code), ``'enlarge'`` only those smaller
  than the target's (``m_tar / m_t`` floored at 1), ``'reduce'`` only
  those larger (capped at 1).

  **Departure from the official code.** The code balances each parameter
  tensor separately (one moving average per task and tensor). Here the
  norms are those of the whole shared gradient, read from the Gramian's
  diagonal, so one weight per task scales all its shared leaves: the method
  is then a weighting of the Gramian like every balancer, runs in the
  Gramian engine and costs one T x T Gramian instead of T norms per leaf.
  The two agree when there is one shared tensor, or when the norm ratios
  are the same in every tensor.

  A task whose moving average is 0 (its gradient has always been zero)
  gets ``w_t = 1``; a ratio above the largest float32 counts as that.

  Args:
    target_task: Python int, the index of the target task (0 in the code);
      checked against T when the balancer is built.
    relax_factor: ``r`` in [0, 1] (0.7 in the code).
    beta: ``β`` in [0, 1), the moving average's decay (0.9 in the code).
    strategy: ``'both'``, ``'enlarge'`` or ``'reduce'``.

  Returns:
    A :class:`Weighting` of the Gramian with state
    :class:`MetaBalanceState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.metabalance(2, relax_factor=0.5)
    >>> grads = jnp.array([[3.0, 4.0], [0.0, 10.0]])  # norms 5 and 10
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> state.weights  # w_2 = 0.5 · 5/10 + 0.5
    Array([1.  , 0.75], dtype=float32)
  """
  _check_target_task(target_task)
  base.check_range('relax_factor', relax_factor, 0.0, 1.0)
  base.check_range('beta', beta, 0.0, 1.0, high_open=True)
  base.check_choice('strategy', strategy, STRATEGIES)

  def init(num_tasks):
    if target_task >= num_tasks:
      raise ValueError(f'metabalance: target_task={target_task}, but there '
                       f'are {num_tasks} tasks (indices 0 to '
                       f'{num_tasks - 1}).')
    return MetaBalanceState(norm_ema=jnp.zeros([num_tasks], jnp.float32))

  def weigh(stats, state):
    norms = jnp.minimum(stats.norms.astype(jnp.float32), _FLOAT32_MAX)
    norm_ema = beta * state.norm_ema + (1.0 - beta) * norms  # The code's
    # p.norms, one per task.
    ratios = numerics.safe_div(norm_ema[target_task], norm_ema, 1.0)
    ratios = jnp.minimum(ratios, _FLOAT32_MAX)
    if strategy == 'enlarge':
      ratios = jnp.maximum(ratios, 1.0)
    elif strategy == 'reduce':
      ratios = jnp.minimum(ratios, 1.0)
    # The code's p.grad = (m_tar g / m_t) r + g (1 − r).
    weights = relax_factor * ratios + (1.0 - relax_factor)
    is_target = jnp.arange(stats.num_tasks) == target_task
    weights = jnp.where(is_target, 1.0, weights)
    return weights, MetaBalanceState(norm_ema=norm_ema)

  return base.Weighting(weigh=weigh, init=init, name='metabalance')
