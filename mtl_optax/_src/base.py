"""The contract every method follows, written once.

Two layers:

* A :class:`Weighting` is a value: ``init(num_tasks) -> state`` and
  ``weigh(stats, state) -> (weights, state)``, a pure function of the task
  Gramian, the task losses (:class:`TaskStats`) and its own state. Every
  method's weighting is public in ``mtl_optax.weightings``; engines and
  combinators call it on Gramians they computed themselves.
* :func:`task_transformation` is the one skeleton that turns a step over the
  stacked per-task gradients into an optax transformation: it checks the
  inputs, splits the leaves into shared and task-specific ones, runs the step,
  keeps the previous state whenever an input is not finite (while making the
  output non-finite, so that ``optax.apply_if_finite`` skips the step) and
  merges the leaves back. :func:`balancer` is that skeleton around
  Gramian -> weights -> one weighted sum; the pre-transforms (log scaling, the
  gradient EMA) and GradDrop use the same skeleton.
"""

import inspect
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics

TaskSpecific = Any  # None, a boolean pytree like params (or a prefix of
# it), or a callable params -> such a pytree.


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


WeightsState = BalancerState  # The 0.1 name of a balancer's state.


class StepResult(NamedTuple):
  """What a :func:`task_transformation` step returns."""
  shared: list  # outputs for the shared leaves; non-finite if not `finite`
  specific: list  # outputs for the task-specific leaves
  state: Any  # the new state
  finite: jax.Array  # shape=(), dtype=bool; whether the step's inputs were
  # True when the step kept its large state leaves (more than T entries: a
  # T x P state) as they were wherever an input (losses and task-specific
  # leaves included) was not finite, in the pass that writes them; a second
  # `where` over T x P floats would read and write them all again. The
  # skeleton still guards the small leaves.
  state_guarded: bool = False


# --------------------------------------------------------------------------
# Validation, shared by every factory.


def check_num_tasks(num_tasks: Any) -> int:
  if isinstance(num_tasks, bool) or not isinstance(num_tasks, int):
    raise ValueError(
        f'num_tasks must be a Python int >= 1, got {num_tasks!r}.')
  if num_tasks < 1:
    raise ValueError(f'num_tasks must be >= 1, got {num_tasks}.')
  return num_tasks


def check_positive_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f'{name} must be a Python int >= 1, got {value!r}.')
  return value


def check_range(name: str, value: Any, low: float | None = None,
                high: float | None = None, *, low_open: bool = False,
                high_open: bool = False) -> Any:
  """Raises ``ValueError`` if a concrete ``value`` is outside the range.

  Traced values (under ``optax.inject_hyperparams``) are not checked.
  """
  if isinstance(value, jax.core.Tracer):
    return value
  try:
    number = float(value)
  except TypeError as error:
    raise ValueError(f'{name} must be a number, got {value!r}.') from error
  too_low = low is not None and (number <= low if low_open else number < low)
  too_high = high is not None and (
      number >= high if high_open else number > high)
  if not math.isfinite(number) or too_low or too_high:
    left = '(' if low_open else '['
    right = ')' if high_open else ']'
    low_text = '-inf' if low is None else f'{low:g}'
    high_text = 'inf' if high is None else f'{high:g}'
    raise ValueError(f'{name} must be in {left}{low_text}, {high_text}{right}, '
                     f'got {value!r}.')
  return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
  if value not in choices:
    raise ValueError(f'{name} must be one of {choices}, got {value!r}.')
  return value


def check_task_vector(name: str, value: Any, *,
                      nonnegative: bool = False) -> Any:
  """Checks a concrete per-task vector hyper-parameter (None passes).

  The vector must be 1-D and finite; with ``nonnegative`` its entries must be
  >= 0 with a positive sum (a preference). Its length is checked against T
  by :func:`task_vector`. Traced values are not checked.
  """
  if value is None or isinstance(value, jax.core.Tracer):
    return value
  try:
    concrete = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError) as error:
    raise ValueError(f'{name} must be a vector of numbers, got {value!r}.'
                     ) from error
  if concrete.ndim != 1 or not np.all(np.isfinite(concrete)):
    raise ValueError(f'{name} must be a finite 1-D vector, got {value!r}.')
  if nonnegative and (np.any(concrete < 0) or concrete.sum() <= 0):
    raise ValueError(f'{name} must be >= 0 with a positive sum, got '
                     f'{value!r}.')
  return value


def loss_vector(name: str, task_losses: Any) -> jax.Array:
  """``[T]`` losses for a scalarisation's value, at least float32."""
  losses = jnp.asarray(task_losses)
  if losses.ndim != 1:
    raise ValueError(f'{name}: task_losses must have shape [T], got '
                     f'{losses.shape}.')
  return losses.astype(jnp.promote_types(losses.dtype, jnp.float32))


def task_vector(method: str, name: str, value: Any, num_tasks: int,
                default: float) -> jax.Array:
  """``value`` as a ``[T]`` float32 vector (``default`` everywhere if None)."""
  if value is None:
    return jnp.full([num_tasks], default, jnp.float32)
  vector = jnp.asarray(value, jnp.float32)
  if vector.shape != (num_tasks,):
    raise ValueError(f'{method}: {name} has shape {vector.shape}, but there '
                     f'are {num_tasks} tasks; expected ({num_tasks},).')
  return vector


def preference_vector(name: str, preference: Any) -> Callable[[int], Any]:
  """``num_tasks -> [T] float32`` preference, None for the method's default.

  ``preference`` is None or anything that broadcasts to ``[T]``; the shape is
  checked when the returned function first sees T (a weighting's ``init``).
  """
  if preference is not None:
    preference = jnp.asarray(preference, jnp.float32)

  def preference_for(num_tasks: int):
    if preference is None:
      return None
    try:
      return jnp.broadcast_to(preference, (num_tasks,))
    except ValueError:
      raise ValueError(
          f'{name}: preference has shape {preference.shape}, which does not '
          f'broadcast to ({num_tasks},).') from None

  return preference_for



def preference_weighting(
    name: str, preference: Any,
    weights_of: Callable[[jax.Array, jax.Array | None], jax.Array],
) -> 'Weighting':
  """A stateless Gramian weighting ``weights_of(gram, preference)``.

  ``preference`` (None for the method's default, else anything that
  broadcasts to ``[T]``) reaches ``weights_of`` as None or a ``[T]`` float32
  vector; its shape is checked when a balancer is built (``init``).
  """
  preference_for = preference_vector(name, preference)

  def init(num_tasks):
    preference_for(num_tasks)
    return optax.EmptyState()

  def weigh(stats, state):
    return weights_of(stats.gram, preference_for(stats.num_tasks)), state

  return Weighting(weigh=weigh, init=init, name=name)

# --------------------------------------------------------------------------
# Inputs.


def check_task_axis(name: str, num_tasks: int, task_grads: Any) -> None:
  leaves = jax.tree.leaves(task_grads)
  if not leaves:
    raise ValueError(f'{name}: task_grads has no leaves.')
  for leaf in leaves:
    if jnp.ndim(leaf) == 0 or leaf.shape[0] != num_tasks:
      raise ValueError(
          f'{name} was built for num_tasks={num_tasks}, but a task_grads leaf '
          f'has shape {jnp.shape(leaf)}; every leaf needs a leading task axis '
          f'of size {num_tasks}.')


def check_task_losses(name: str, num_tasks: int, task_losses: Any,
                      required: bool) -> jax.Array | None:
  if task_losses is None:
    if required:
      raise ValueError(
          f'{name} needs the per-task losses: call '
          f'update(task_grads, state, params, task_losses=losses) with a '
          f'[{num_tasks}] array.')
    return None
  task_losses = jnp.asarray(task_losses)
  if task_losses.shape != (num_tasks,):
    raise ValueError(
        f'{name} was built for num_tasks={num_tasks}, but task_losses has '
        f'shape {task_losses.shape}; expected ({num_tasks},).')
  return task_losses.astype(jnp.float32)


def task_specific_flags(task_specific: TaskSpecific, tree: Any) -> list[bool]:
  """One bool per leaf of ``tree``: True where the leaf is task-specific."""
  num_leaves = len(jax.tree.leaves(tree))
  if task_specific is None:
    return [False] * num_leaves
  mask = task_specific(tree) if callable(task_specific) else task_specific
  try:
    # The mask may be a prefix of the tree: a boolean at a subtree covers
    # every leaf below it, e.g. {'trunk': False, 'heads': True}.
    mask = jax.tree.map(
        lambda flag, subtree: jax.tree.map(lambda _: bool(flag), subtree),
        mask, tree)
  except ValueError as error:
    raise ValueError(
        'task_specific must be a boolean pytree matching params (or a prefix '
        f'of it), or a callable returning one: {error}') from error
  flags = jax.tree.leaves(mask)
  if len(flags) != num_leaves:
    raise ValueError(
        f'task_specific must give one boolean per parameter leaf '
        f'({num_leaves}), got {len(flags)}.')
  return flags


def split_leaves(flags: list[bool], tree: Any) -> tuple[list, list]:
  """``(shared_leaves, specific_leaves)`` of ``tree`` according to ``flags``."""
  leaves = jax.tree.leaves(tree)
  shared = [leaf for leaf, flag in zip(leaves, flags) if not flag]
  specific = [leaf for leaf, flag in zip(leaves, flags) if flag]
  return shared, specific


def merge_leaves(flags: list[bool], treedef, shared: list, specific: list):
  shared, specific = iter(shared), iter(specific)
  leaves = [next(specific) if flag else next(shared) for flag in flags]
  return jax.tree.unflatten(treedef, leaves)


def check_shared(name: str, shared: list) -> None:
  """A balancer needs at least one shared leaf."""
  if not shared:
    raise ValueError(f'{name}: every leaf is task-specific; nothing to '
                     'balance.')


def check_task_grads(name: str, num_tasks: int, task_grads: Any) -> None:
  """Every leaf is a floating-point array with a leading task axis of size T."""
  check_task_axis(name, num_tasks, task_grads)
  for path, leaf in jax.tree_util.tree_leaves_with_path(task_grads):
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise ValueError(
          f'{name}: task_grads{jax.tree_util.keystr(path)} has dtype '
          f'{jnp.result_type(leaf)}; gradients must be floating point.')


def check_stacked_state(name: str, verb: str, stacked: tuple,
                        shared: list) -> None:
  """A T x P state holds one array per shared leaf of the task gradients."""
  if len(stacked) != len(shared):
    raise ValueError(
        f'{name}: the state {verb} {len(stacked)} shared leaves but '
        f'task_grads has {len(shared)}; init and update must see the same '
        'parameter tree and task_specific mask.')


def own_task_updates(specific: list) -> list:
  """Each task-specific leaf's own-task gradient, ``Σ_t g_t`` (the other
  tasks' rows are zero there), as one dot product per leaf."""
  if not specific:
    return []
  num_tasks = specific[0].shape[0]
  return gramian_lib.weighted_sum(jnp.ones([num_tasks], jnp.float32),
                                  specific)


def stacked_zeros(num_tasks: int, shared_params: list,
                  at_least=None) -> tuple:
  """Zeros ``[T, *leaf.shape]`` per leaf, laid out as the leaf (a T x P state).

  The dtype is the leaf's (promoted with ``at_least`` if given).
  ``zeros_like`` keeps a sharded parameter's sharding (on Explicit mesh axes
  it is part of the type) and the task axis is added unsharded, so the state
  is laid out as the task gradients that update it.
  """
  def zeros(leaf):
    leaf = jnp.asarray(leaf)
    dtype = leaf.dtype if at_least is None else jnp.promote_types(
        leaf.dtype, at_least)
    return jnp.broadcast_to(jnp.zeros_like(leaf, dtype),
                            (num_tasks,) + leaf.shape)

  return tuple(zeros(leaf) for leaf in shared_params)


def cast_like(new_tree, old_tree):
  """``new_tree`` with the dtypes of ``old_tree`` (a state keeps its dtypes)."""
  return jax.tree.map(lambda new, old: jnp.asarray(new).astype(old.dtype),
                      new_tree, old_tree)


def _poison(finite: jax.Array, leaves: list) -> list:
  return [jnp.where(finite, leaf, jnp.nan).astype(leaf.dtype)
          for leaf in leaves]


# --------------------------------------------------------------------------
# The one transformation skeleton.


def task_transformation(
    num_tasks: int,
    name: str,
    init: Callable[[list], Any],
    step: Callable[..., StepResult],
    *,
    needs_losses: bool = False,
    task_specific: TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  """The skeleton of every transformation over stacked per-task gradients.

  Args:
    num_tasks: T, the size of the leading task axis of every gradient leaf.
    name: the public name, used in error messages.
    init: ``init(shared_params) -> state`` from the list of shared parameter
      leaves.
    step: ``step(shared, specific, losses, state, inputs_finite) ->
      StepResult``, with ``shared``/``specific`` the lists of task-gradient
      leaves and ``inputs_finite`` whether the losses and the task-specific
      leaves are finite. The step checks its shared inputs (cheaply: a
      Gramian is finite exactly when they are), reports it in
      ``StepResult.finite`` and makes its shared outputs non-finite when
      anything is not; the skeleton does the same for the task-specific
      outputs and keeps the old state.
    needs_losses: whether ``update`` requires ``task_losses``.
    task_specific: which parameter leaves belong to one task only (a boolean
      pytree like params or a prefix of it, or a callable returning one).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  check_num_tasks(num_tasks)

  def init_fn(params):
    flags = task_specific_flags(task_specific, params)
    return init(split_leaves(flags, params)[0])

  def update_fn(task_grads, state, params=None, *, task_losses=None,
                **extra_args):
    del params, extra_args
    check_task_grads(name, num_tasks, task_grads)
    losses = check_task_losses(name, num_tasks, task_losses, needs_losses)
    flags = task_specific_flags(task_specific, task_grads)
    shared, specific = split_leaves(flags, task_grads)
    inputs_finite = numerics.all_finite(losses, *specific)
    result = step(shared, specific, losses, state, inputs_finite)
    finite = inputs_finite & result.finite
    def keep_if_not_finite(new, old):
      if result.state_guarded and jnp.size(old) > num_tasks:
        return new  # Guarded by the step, in the pass that wrote it.
      return jnp.where(finite, new, old)

    new_state = jax.tree.map(keep_if_not_finite,
                             cast_like(result.state, state), state)
    treedef = jax.tree.structure(task_grads)
    updates = merge_leaves(flags, treedef, result.shared,
                           _poison(finite, result.specific))
    return updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------
# Gramian -> weights -> one weighted sum.


class LossBalancer(optax.GradientTransformationExtraArgs):
  """A balancer whose weighting reads the losses only (0.1 interface).

  ``weigh_losses(task_losses, state)`` is :func:`weigh_losses` bound to the
  balancer's weighting; prefer the free function, which survives
  ``optax.chain`` and ``optax.inject_hyperparams``.
  """

  def __new__(cls, init, update, weigh_losses_fn):
    transformation = super().__new__(cls, init, update)
    transformation.weigh_losses = weigh_losses_fn
    return transformation


def _as_weighting(weigh, *, name='balancer', init_state=None,
                  needs_losses=False, uses_gram=True) -> Weighting:
  """A :class:`Weighting` from the 0.1 arguments of :func:`balancer`."""
  if init_state is not None:
    raise ValueError(
        'balancer: init_state is the 0.1 interface; pass a mtl.Weighting '
        'whose init(num_tasks) builds the state instead.')
  return Weighting(weigh=weigh, name=name, reads_gram=uses_gram,
                   reads_losses=needs_losses)


def balancer(
    num_tasks: int,
    weighting: Weighting | Callable[..., Any],
    *,
    task_specific: TaskSpecific = None,
    **legacy_options,
) -> optax.GradientTransformationExtraArgs:
  """Turns a weighting into a transformation: Gramian -> weights -> one sum.

  ``update(task_grads, state, params=None, *, task_losses=None)`` computes
  the Gramian of the shared leaves (never concatenating them; skipped when
  the weighting does not read it), asks the weighting for ``w`` and returns
  ``Σ_t w_t g_t`` on the shared leaves and each task-specific leaf's own-task
  gradient. The state is a :class:`BalancerState`.

  Args:
    num_tasks: T, the size of the leading task axis of every gradient leaf.
    weighting: a :class:`Weighting` (e.g. ``mtl.weightings.mgda()``). A plain
      ``weigh(stats, state)`` function with the keyword arguments ``name``,
      ``needs_losses`` and ``uses_gram`` is accepted too (the 0.1 form); its
      state is ``optax.EmptyState()``.
    task_specific: which parameter leaves belong to one task (a boolean
      pytree like params or a prefix of it, or a callable returning one).
      They stay out of the Gramian and get their own task's gradient.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (a :class:`LossBalancer`
    when the weighting reads the losses only).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.balancer(2, mtl.weightings.mgda())
    >>> grads = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(3)))
    >>> state.weights
    Array([0.6, 0.4], dtype=float32)
  """
  check_num_tasks(num_tasks)
  if not isinstance(weighting, Weighting):
    weighting = _as_weighting(weighting, **legacy_options)
  elif legacy_options:
    raise ValueError(f'balancer: unexpected arguments {sorted(legacy_options)}'
                     ' with a mtl.Weighting.')
  name = weighting.name
  jax.eval_shape(lambda: weighting.init(num_tasks))  # Checks T early.

  def init(shared_params):
    del shared_params
    return BalancerState(weights=jnp.zeros([num_tasks], jnp.float32),
                         weighting_state=weighting.init(num_tasks))

  def step(shared, specific, losses, state, inputs_finite):
    if weighting.reads_gram:
      check_shared(name, shared)
      gram, scale = gramian_lib.gramian(shared)
      shared_finite = numerics.all_finite(gram, scale)
    else:
      gram = scale = None
      shared_finite = None
    stats = TaskStats(gram, scale, losses, num_tasks)
    weights, weighting_state = weighting.weigh(stats, state.weighting_state)
    specific_weights = own_task_weights(weighting, stats,
                                        state.weighting_state)
    finite = inputs_finite if shared_finite is None else (
        inputs_finite & shared_finite)
    # Poisoning the T weights makes every output non-finite for free.
    weights = jnp.where(finite, weights, jnp.nan)
    shared_updates = gramian_lib.weighted_sum(weights, shared)
    specific_updates = gramian_lib.weighted_sum(specific_weights, specific)
    if shared_finite is None:  # Leaves the Gramian did not see.
      finite = finite & numerics.all_finite(*shared_updates)
    return StepResult(shared_updates, specific_updates,
                      BalancerState(weights, weighting_state), finite)

  transformation = task_transformation(
      num_tasks, name, init, step, needs_losses=weighting.reads_losses,
      task_specific=task_specific)
  # The state does not depend on params, so init takes any (even None), as
  # in 0.1; the task_specific mask is checked against the gradients.
  init_fn = lambda params: init(None)
  if weighting.reads_gram:
    return optax.GradientTransformationExtraArgs(init_fn, transformation.update)
  return LossBalancer(
      init_fn, transformation.update,
      lambda task_losses, state: weigh_losses(weighting, task_losses, state))


def weigh_losses(weighting: Weighting, task_losses: jax.Array,
                 state: Any) -> tuple[jax.Array, Any]:
  """The loss path: a loss-level weighting's weights, for one backward pass.

  Methods whose weights depend on the losses only need no per-task gradients:
  differentiating ``jnp.dot(weights, task_losses)`` once gives the same update
  as the per-task-gradient path. The weights are under ``stop_gradient``.

  Args:
    weighting: a :class:`Weighting` with ``reads_gram`` False (e.g.
      ``mtl.weightings.uncertainty_weighting()``).
    task_losses: ``[T]`` losses of the current step.
    state: the weighting's state (``weighting.init(T)``), or a
      :class:`BalancerState` of a balancer built on it.

  Returns:
    ``(weights, new_state)``, ``new_state`` of the same kind as ``state``.
    A non-finite loss leaves the state as it was.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> weighting = mtl.weightings.logse()
    >>> losses = jnp.array([0.5, 2.0])
    >>> weights, _ = mtl.weigh_losses(weighting, losses, weighting.init(2))
    >>> weights
    Array([1.  , 0.25], dtype=float32)
  """
  if weighting.reads_gram:
    raise ValueError(
        f'{weighting.name} reads the Gramian of the task gradients, so it has '
        'no one-backward path; use mtl.value_and_balanced_grad or '
        'mtl.value_and_task_grads with the balancer.')
  task_losses = jnp.asarray(task_losses)
  if task_losses.ndim != 1:
    raise ValueError(f'{weighting.name}: task_losses must have shape [T], got '
                     f'{task_losses.shape}.')
  num_tasks = task_losses.shape[0]
  losses = jax.lax.stop_gradient(check_task_losses(
      weighting.name, num_tasks, task_losses, weighting.reads_losses))
  whole = isinstance(state, BalancerState)
  inner = state.weighting_state if whole else state
  weights, new_inner = weighting.weigh(
      TaskStats(None, None, losses, num_tasks), inner)
  weights = jax.lax.stop_gradient(weights.astype(jnp.float32))
  finite = numerics.all_finite(losses)
  new_inner = numerics.where_finite(finite, cast_like(new_inner, inner),
                                    inner)
  if not whole:
    return weights, new_inner
  return weights, BalancerState(
      weights=jnp.where(finite, weights, state.weights),
      weighting_state=new_inner)


def balancer_factory(make_weighting: Callable[..., Weighting]):
  """``factory(num_tasks, *args, task_specific=None, **kwargs)`` for a weighting.

  The factory is exactly ``balancer(num_tasks, make_weighting(*args,
  **kwargs), task_specific=task_specific)``, with the weighting's
  hyper-parameters in its signature (so ``optax.inject_hyperparams`` and
  ``inspect.signature`` see them).
  """
  name = make_weighting.__name__
  signature = inspect.signature(make_weighting)

  def factory(num_tasks, *args, task_specific=None, **kwargs):
    return balancer(num_tasks, make_weighting(*args, **kwargs),
                    task_specific=task_specific)

  parameters = [
      inspect.Parameter('num_tasks', inspect.Parameter.POSITIONAL_OR_KEYWORD,
                        annotation=int),
      *signature.parameters.values(),
      inspect.Parameter('task_specific', inspect.Parameter.KEYWORD_ONLY,
                        default=None, annotation=TaskSpecific),
  ]
  factory.__signature__ = signature.replace(
      parameters=parameters,
      return_annotation=optax.GradientTransformationExtraArgs)
  factory.__name__ = factory.__qualname__ = name
  factory.__module__ = 'mtl_optax'
  factory.__doc__ = (
      f'The {name} balancer: ``balancer(num_tasks, '
      f'weightings.{name}(...), task_specific=task_specific)``.\n\n'
      f'``num_tasks`` is T; the other arguments are those of\n'
      f':func:`mtl_optax.weightings.{name}`, which states the method, its '
      f'equations\nand its reference; ``task_specific`` is that of '
      f':func:`mtl_optax.balancer`.\n')
  return factory


def last_weights(state: Any) -> jax.Array:
  """The ``weights`` of the last balancer found in an optax state.

  Works on a balancer's own state and on states that hold one: an
  ``optax.chain`` tuple, ``optax.inject_hyperparams``' inner state, or a
  Flax NNX optimizer's ``opt_state`` (its array wrappers are unwrapped).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import mtl_optax as mtl
    >>> tx = optax.chain(mtl.mgda(2), optax.sgd(0.1))
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> _, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> mtl.last_weights(state)
    Array([0.5, 0.5], dtype=float32)
  """
  found = [node for node in jax.tree.leaves(
      state, is_leaf=lambda node: isinstance(node, BalancerState))
           if isinstance(node, BalancerState)]
  if not found:
    raise ValueError('last_weights: the state holds no balancer state.')
  weights = found[-1].weights
  return jnp.asarray(getattr(weights, 'value', weights))
