"""Krum: the task gradient(s) closest to their neighbours (Byzantine-robust)."""

import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import numerics


def krum(
    *,
    num_byzantine: int,
    num_selected: int = 1,
) -> base.Weighting:
  r"""Krum and Multi-Krum: average the gradients most surrounded by others.

  Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with
  Adversaries: Byzantine Tolerant Gradient Descent" (NeurIPS 2017), Krum
  and Multi-Krum; TorchJD's ``Krum(n_byzantine, n_selected)``.
  With ``f`` rows that may be adversarial, each gradient is scored by its
  distances to its ``T − f − 2`` nearest other gradients,

  ``score(t) = Σ_{s ∈ N_t} ‖g_t − g_s‖``,

  where the pairwise distances come from the Gramian,
  ``‖g_t − g_s‖² = G_tt + G_ss − 2 G_ts``. The ``m`` gradients with the
  lowest scores get weight ``1/m`` each (``m = 1``: Krum, the single most
  central gradient; ``m > 1``: Multi-Krum, their mean); the rest get 0. As
  in TorchJD, the score sums distances (the paper sums their squares).

  **Decision:** ties (equal scores) go to the task with the lower index, so
  the weights are permutation-equivariant only when the scores differ.
  Krum needs ``T >= f + 3`` and ``T >= m``, checked when the balancer is
  built. The weights only depend on the ranks of distances, so the update is
  linear under scaling.

  Args:
    num_byzantine: ``f``, Python int >= 0.
    num_selected: ``m``, Python int >= 1.

  Returns:
    A stateless :class:`Weighting` of the Gramian.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.krum(5, num_byzantine=1)
    >>> grads = jnp.array([[-4.0, 1, 1, 0], [6, 1, 1, 2], [1, -2, 0, 1],
    ...                    [0.5, 0.5, 3, -1], [2, 2, 2, 2]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(4)))
    >>> updates  # TorchJD 0.18 gives the same.
    Array([2., 2., 2., 2.], dtype=float32)
  """
  if (isinstance(num_byzantine, bool) or not isinstance(num_byzantine, int)
      or num_byzantine < 0):
    raise ValueError('num_byzantine must be a Python int >= 0, got '
                     f'{num_byzantine!r}.')
  base.check_positive_int('num_selected', num_selected)

  def init(num_tasks):
    if num_tasks < num_byzantine + 3:
      raise ValueError(f'krum needs num_tasks >= num_byzantine + 3 = '
                       f'{num_byzantine + 3}, got num_tasks={num_tasks}.')
    if num_tasks < num_selected:
      raise ValueError(f'krum needs num_tasks >= num_selected = '
                       f'{num_selected}, got num_tasks={num_tasks}.')
    return optax.EmptyState()

  def weigh(stats, state):
    num_tasks = stats.num_tasks
    gram = stats.gram.astype(jnp.float32)
    squared = jnp.diagonal(gram)
    distances = numerics.safe_sqrt(
        squared[:, None] + squared[None, :] - 2.0 * gram)
    # Each row's own distance is 0 in exact arithmetic; set it so, so that
    # rounding cannot make it anything but the first after sorting.
    distances = jnp.where(jnp.eye(num_tasks, dtype=bool), 0.0, distances)
    neighbours = num_tasks - num_byzantine - 2
    nearest = jnp.sort(distances, axis=1)[:, 1:neighbours + 1]
    scores = jnp.sum(nearest, axis=1)
    # A stable sort: equal scores keep the order of the tasks.
    selected = jnp.argsort(scores, stable=True)[:num_selected]
    weights = jnp.zeros([num_tasks], jnp.float32).at[selected].set(
        1.0 / num_selected)
    return weights, state

  return base.Weighting(weigh=weigh, init=init, name='krum')
