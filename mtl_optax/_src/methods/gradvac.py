"""GradVac: pull each pair of task gradients towards an EMA of its cosine."""

from typing import Any, Callable, Hashable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import optax

from mtl_optax._src import base
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics

GROUPS = ('whole', 'leaf', 'layer')


class GradVacState(NamedTuple):
  targets: jax.Array  # shape=[T, T], dtype=float32; φ̂_ij, diagonal unused
  key: jax.Array  # shape=[2], dtype=uint32; a raw PRNG key, split every step


def _vaccinate_one_task(task, order, gram, targets, beta):
  """Modifies ``g_task`` against every other task in ``order``.

  The modified gradient is tracked as coefficients ``a`` over the raw
  gradients (``g' = Σ_k a_k g_k``) together with ``h = G a`` (its inner
  product with every raw gradient), so each pair costs O(T).

  Returns:
    ``(a, targets)``: the coefficients of ``g'_task`` and the task's updated
    row of ``φ̂``.
  """
  num_tasks = gram.shape[0]
  squared_norms = jnp.diagonal(gram)

  def visit(position, carry):
    coefficients, inner, targets = carry
    other = order[position]
    own_norm = numerics.safe_sqrt(coefficients @ inner)  # ‖g'_i‖
    other_norm = numerics.safe_sqrt(squared_norms[other])  # ‖g_j‖
    valid = (other != task) & (own_norm > 0) & (other_norm > 0)
    cosine = jnp.clip(
        numerics.safe_div(inner[other], own_norm * other_norm), -1.0, 1.0)
    target = targets[other]
    target_sine = numerics.safe_sqrt(1.0 - target ** 2)
    sine = numerics.safe_sqrt(1.0 - cosine ** 2)
    # The multiple of g_j that sets cos(g'_i, g_j) to φ̂_ij (Algorithm 1).
    # φ̂_ij = 1 exactly cannot be reached by a finite step: no change.
    amount = numerics.safe_div(
        own_norm * (target * sine - cosine * target_sine),
        other_norm * target_sine)
    amount = jnp.where(valid & (cosine < target), amount, 0.0)
    coefficients = coefficients.at[other].add(amount)
    inner = inner + amount * gram[other]
    # φ̂_ij ← (1 − β) φ̂_ij + β φ_ij, with φ_ij measured before the change.
    targets = targets.at[other].set(
        jnp.where(valid, (1.0 - beta) * target + beta * cosine, target))
    return coefficients, inner, targets

  coefficients = jax.nn.one_hot(task, num_tasks, dtype=gram.dtype)
  coefficients, _, targets = lax.fori_loop(
      0, num_tasks, visit, (coefficients, gram[task], targets))
  return coefficients, targets


def _task_orders(key: jax.Array, num_tasks: int):
  """``(next_key, orders)``: for every task, a random order of all tasks."""
  next_key, order_key = jax.random.split(key)
  orders = jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(
      jax.random.split(order_key, num_tasks))
  return next_key, orders


def vaccinate(gram: jax.Array, targets: jax.Array, orders: jax.Array,
              beta) -> tuple[jax.Array, jax.Array]:
  """``(weights, targets)`` of one GradVac step on one Gramian.

  ``orders[i]`` is the order in which task ``i`` visits the others; the
  weights are ``w_k = Σ_i a_ik`` (``d = Σ_i g'_i = Σ_k w_k g_k``).
  """
  num_tasks = gram.shape[0]
  coefficients, targets = jax.vmap(
      _vaccinate_one_task, in_axes=(0, 0, None, 0, None))(
          jnp.arange(num_tasks), orders, gram, targets, beta)
  return jnp.sum(coefficients, axis=0), targets


def gradvac(
    *,
    target_rate: float = 0.01,
    key: Any = 0,
    beta: float | None = None,
) -> base.Weighting:
  r"""Raises each pair's gradient cosine to an EMA target (Gradient Vaccine).

  Wang, Tsvetkov, Firat and Cao, "Gradient Vaccine: Investigating and
  Improving Multi-task Optimization in Massively Multilingual Models" (ICLR
  2021), §3 and Algorithm 1. For every task ``i``, visit the other tasks
  ``j`` in a random order; with ``g'_i`` the gradient modified so far,
  ``φ_ij = cos(g'_i, g_j)`` and ``φ̂_ij`` the target:

  * if ``φ_ij < φ̂_ij``, ``g'_i ← g'_i + ‖g'_i‖ (φ̂_ij √(1−φ_ij²) −
    φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) · g_j``, which makes the
    cosine exactly ``φ̂_ij``;
  * ``φ̂_ij ← (1 − β) φ̂_ij + β φ_ij`` (an EMA of the observed cosines).

  The update is ``d = Σ_i g'_i``. With ``φ̂ = 0`` (the start) the step is
  PCGrad's projection; positive targets pull related tasks closer.

  Every ``g'_i`` is a combination of the raw gradients, so the whole
  procedure runs on ``G`` (T×T) and the T×P gradients are combined once:
  the weights are ``w_k = Σ_i a_ik`` for the coefficients ``a_i`` of
  ``g'_i``. No modified copy of the gradients is ever formed.

  **Decisions.** The paper applies the procedure per layer (one target per
  layer and pair); this weighting acts on the whole shared parameter vector
  (one target per pair, LibMTL's ``whole_model`` granularity), since it sees
  one Gramian. The factory ``mtl.gradvac(T, ..., group='leaf')`` keeps one
  target per parameter leaf and pair (LibMTL's ``all_matrix``),
  ``group='layer'`` one per layer and pair (``all_layer``), see
  :func:`gradvac_balancer`. ``φ̂`` starts at 0
  and the EMA is updated for every visited pair, whether or not the
  gradient was modified, with the cosine measured before the modification.
  A pair involving a zero-norm gradient is skipped and its target kept. The
  task order comes from ``key``, stored in the state and split at every
  update; a non-finite update keeps the old state, key included. ``β``
  defaults to the paper's 1e-2 (LibMTL's default is 0.5).

  Args:
    target_rate: ``β``, the weight of the new cosine in the targets' moving
      average, in [0, 1] (the paper's β; ``beta`` elsewhere in this library
      weighs the old value).
    key: a PRNG key (raw ``uint32[2]`` or typed) or an int seed.
    beta: deprecated name of ``target_rate``, removed in 0.3.

  Returns:
    A :class:`Weighting` of the Gramian with state :class:`GradVacState`
    (the targets ``φ̂`` and the key of the next step).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.gradvac(2)
    >>> grads = jnp.array([[1.0, 0.0], [-1.0, 1.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> updates  # φ̂ = 0 at the start: PCGrad's projections, summed.
    Array([0.5, 1.5], dtype=float32)
    >>> targets = state.weighting_state.targets
    >>> round(float(targets[0, 1]), 4)  # EMA of cos = -0.7071, β = 0.01.
    -0.0071
  """
  beta = base.renamed('gradvac', 'beta', beta, 'target_rate', target_rate)
  base.check_range('target_rate', beta, 0.0, 1.0)

  def init(num_tasks):
    return GradVacState(
        targets=jnp.zeros([num_tasks, num_tasks], jnp.float32),
        key=numerics.as_raw_key(key))

  def weigh(stats, state):
    # The cosines and ‖g'_i‖/‖g_j‖ do not depend on the scale.
    next_key, orders = _task_orders(state.key, stats.num_tasks)
    weights, targets = vaccinate(stats.gram, state.targets, orders, beta)
    return weights, state._replace(targets=targets, key=next_key)

  return base.Weighting(weigh=weigh, init=init, name='gradvac')


def _shared_groups(group: Any, task_specific: base.TaskSpecific,
                   tree: Any) -> tuple[list[int], int]:
  """``(group index of every shared leaf, number of groups)``.

  Groups are numbered in the order their first leaf appears in
  ``jax.tree.leaves`` order; task-specific leaves belong to none.
  """
  flags = base.task_specific_flags(task_specific, tree)
  paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(tree)]
  names: dict[Any, int] = {}
  indices = []
  for path, flag in zip(paths, flags):
    if flag:
      continue
    if group == 'leaf':
      name = jax.tree_util.keystr(path)
    elif group == 'layer':
      name = jax.tree_util.keystr(path[:-1])  # The enclosing module.
    else:
      name = group(path)
    try:
      indices.append(names.setdefault(name, len(names)))
    except TypeError as error:
      raise ValueError(
          f'gradvac: group(path) must return a hashable group name, got '
          f'{name!r} for {jax.tree_util.keystr(path)}.') from error
  return indices, len(names)


def gradvac_balancer(
    num_tasks: int,
    *,
    target_rate: float = 0.01,
    key: Any = 0,
    group: str | Callable[[Any], Hashable] = 'whole',
    task_specific: base.TaskSpecific = None,
    beta: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The GradVac balancer, with one target per pair, or per group and pair.

  ``group='whole'`` (default) is ``balancer(num_tasks,
  weightings.gradvac(target_rate=target_rate, key=key),
  task_specific=task_specific)``:
  the procedure of :func:`mtl_optax.weightings.gradvac` on the whole shared
  parameter vector.

  The other groupings run the same procedure on each group of shared
  parameter leaves separately, with its own targets ``φ̂^{(l)}_ij``, closer
  to the paper's per-layer targets (§3):

  * ``group='leaf'``: one group per parameter leaf (LibMTL's
    ``GradVac_group_type=2``, ``all_matrix``: one per parameter tensor);
  * ``group='layer'``: one group per layer, the leaves whose key paths
    agree up to their last key, e.g. ``params['dense']['kernel']`` and
    ``params['dense']['bias']`` form the group ``['dense']`` (LibMTL's
    ``GradVac_group_type=1``, ``all_layer``: one per leaf module with
    parameters). Leaves directly under the root form one group;
  * ``group=fn``: ``fn(path)`` names the group of the leaf at key path
    ``path`` (a tuple of JAX path keys, as
    ``jax.tree_util.tree_leaves_with_path`` gives); leaves with equal
    names form a group, e.g. ``lambda path: path[0].key`` groups by the
    top-level key.

  The groups are disjoint blocks of the parameter vector, so each group's
  modified gradients ``g'^{(l)}_i`` are combinations of that group's raw
  gradients, computed from the group's own T x T Gramian; the update of a
  leaf in group ``l`` is ``Σ_k w^{(l)}_k g^{(l)}_k``. Every group uses the
  same random task orders (as LibMTL, which loops over the groups inside
  each pair), so one group gives exactly ``'whole'``.

  **Decisions.** Per-group weights are not one weighting of one Gramian, so
  these groupings are their own transformation on the skeleton every
  balancer uses (:func:`task_transformation`), with state
  ``BalancerState(weights, GradVacState(targets [L, T, T], key))`` for L
  groups; ``init`` needs the params (to find the groups). ``weights`` is
  the mean of the groups' weights, a diagnostic: the update is not
  ``Σ_t w_t g_t``. A "layer" is read from the key path because a pytree of
  parameters has no module objects; in Flax (Linen and NNX) and Haiku
  trees a module's own parameters are the leaves of one dict
  (``{'Dense_0': {'kernel': …, 'bias': …}}``), so a layer is LibMTL's leaf
  module. Costs L Gramians of T x T (the same T x P work as one) and L runs
  of the O(T³) procedure.

  Args:
    num_tasks: T.
    target_rate: ``β``, the weight of the new cosine in the targets' moving
      average, in [0, 1].
    key: a PRNG key (raw ``uint32[2]`` or typed) or an int seed.
    group: ``'whole'``, ``'leaf'``, ``'layer'``, or a function from a
      leaf's key path to its group's name (any hashable value).
    task_specific: leaves that belong to one task (see :func:`balancer`);
      they get their own task's gradient and no targets.
    beta: deprecated name of ``target_rate``, removed in 0.3.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with a
    :class:`BalancerState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.gradvac(2, group='leaf')
    >>> grads = {'a': jnp.array([[1.0, 0.0], [-1.0, 1.0]]),
    ...          'b': jnp.array([[1.0], [2.0]])}
    >>> updates, state = tx.update(grads, tx.init({'a': jnp.zeros(2),
    ...                                            'b': jnp.zeros(1)}))
    >>> updates['a'], updates['b']  # PCGrad on 'a', no conflict on 'b'.
    (Array([0.5, 1.5], dtype=float32), Array([3.], dtype=float32))
    >>> layers = mtl.gradvac(2, group='layer')
    >>> params = {'dense': {'kernel': jnp.zeros(2), 'bias': jnp.zeros(1)}}
    >>> layers.init(params).weighting_state.targets.shape  # One layer.
    (1, 2, 2)
  """
  if not callable(group):
    base.check_choice('group', group, GROUPS)
  beta = base.renamed('gradvac', 'beta', beta, 'target_rate', target_rate)
  base.check_range('target_rate', beta, 0.0, 1.0)
  if group == 'whole':
    return base.balancer(num_tasks, gradvac(target_rate=beta, key=key),
                         task_specific=task_specific)
  base.check_num_tasks(num_tasks)
  name = 'gradvac'

  def init_fn(params):
    _, num_groups = _shared_groups(group, task_specific, params)
    return base.BalancerState(
        weights=jnp.zeros([num_tasks], jnp.float32),
        weighting_state=GradVacState(
            targets=jnp.zeros([num_groups, num_tasks, num_tasks],
                              jnp.float32),
            key=numerics.as_raw_key(key)))

  def grouped_step(group_of_leaf, num_groups):
    def step(shared, specific, losses, state, inputs_finite):
      del losses  # Not used, but a non-finite one marks a bad step.
      base.check_shared(name, shared)
      targets = state.weighting_state.targets
      if targets.shape[0] != num_groups:
        raise ValueError(
            f'{name}: the state holds targets for {targets.shape[0]} '
            f'groups, but the gradients have {num_groups}; call init with '
            'the params.')
      # Per group: the cosines and norm ratios ignore each Gramian's scale.
      grams, scales = zip(*[
          gramian_lib.gramian([leaf for leaf, index in zip(
              shared, group_of_leaf) if index == member])
          for member in range(num_groups)])
      grams = jnp.stack(grams)
      finite = inputs_finite & numerics.all_finite(grams, jnp.stack(scales))
      next_key, orders = _task_orders(state.weighting_state.key, num_tasks)
      weights, targets = jax.vmap(vaccinate, in_axes=(0, 0, None, None))(
          grams, targets, orders, beta)
      weights = jnp.where(finite, weights, jnp.nan)
      shared_updates = [
          gramian_lib.weighted_sum(weights[index], [leaf])[0]
          for leaf, index in zip(shared, group_of_leaf)]
      specific_updates = base.own_task_updates(specific)
      return base.StepResult(
          shared_updates, specific_updates,
          base.BalancerState(jnp.mean(weights, axis=0),
                             GradVacState(targets=targets, key=next_key)),
          finite)

    return step

  def update_fn(task_grads, state, params=None, **extra_args):
    # The groups come from the gradients' key paths (those of the params).
    group_of_leaf, num_groups = _shared_groups(group, task_specific,
                                               task_grads)
    transformation = base.task_transformation(
        num_tasks, name, lambda shared: None,
        grouped_step(group_of_leaf, num_groups), task_specific=task_specific)
    return transformation.update(task_grads, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


gradvac_balancer.__name__ = gradvac_balancer.__qualname__ = 'gradvac'
