"""Gramian -> weights -> one weighted sum: a weighting as a transformation.

:func:`weigh_and_guard` is the one weighting step of every path (the stacked
balancer, the cross-batch balancer, the Gramian engine and DB-MTL's fused
step): it asks the weighting for the weights of the shared leaves and the
factors of the task-specific ones, and poisons the weights when an input is
not finite. :func:`weighted_balancer` is the transformation around it, with
the source of the Gramian as a parameter; :func:`balancer` reads the Gramian
of the update's own gradients.
"""

import inspect
from typing import Any, Callable, NamedTuple
import warnings

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics
from mtl_optax._src import transformation
from mtl_optax._src import validation
from mtl_optax._src.contract import BalancerState
from mtl_optax._src.contract import TaskStats
from mtl_optax._src.contract import Weighting
from mtl_optax._src.contract import own_task_weights
from mtl_optax._src.leaves import TaskSpecific

REMOVAL_VERSION = validation.REMOVAL_VERSION


class Weighed(NamedTuple):
  """What :func:`weigh_and_guard` returns."""
  weights: jax.Array  # [T] weights of the shared leaves; NaN if not finite
  specific_weights: jax.Array  # [T] factors of the task-specific leaves
  state: Any  # the weighting's new state (not yet guarded)


def weigh_and_guard(weighting: Weighting, stats: TaskStats, state: Any,
                    finite: jax.Array) -> Weighed:
  """One weighting step, the same on every path.

  ``finite`` says whether the step's inputs are finite. Where they are not,
  the weights are NaN, so every output ``Σ_t w_t g_t`` is NaN at the cost of
  T entries (``optax.apply_if_finite`` then skips the step); the caller keeps
  the old state (:func:`transformation.keep_if_not_finite`).
  """
  weights, new_state = weighting.weigh(stats, state)
  specific_weights = own_task_weights(weighting, stats, state)
  weights = jnp.where(finite, weights, jnp.nan)
  return Weighed(weights, specific_weights, new_state)


# ``stats_of(shared, losses, **extras) -> (stats, finite)``: what a weighting
# reads, from the shared leaves of the update and its extra inputs (each a
# ``(shared, specific)`` pair of leaf lists, or None; see task_transformation).
StatsOf = Callable[..., tuple[TaskStats, jax.Array]]


def weighted_balancer(
    num_tasks: int,
    weighting: Weighting,
    stats_of: StatsOf,
    *,
    task_specific: TaskSpecific = None,
    extra_inputs: tuple[str, ...] = (),
) -> optax.GradientTransformationExtraArgs:
  """The balancer's transformation with the Gramian's source as a parameter.

  ``stats_of`` is called only when the weighting reads a Gramian; a
  loss-level weighting sees the losses alone. The update is
  ``Σ_t w_t g_t`` on the shared leaves and ``s_t g_t`` on task ``t``'s
  task-specific leaves (``s`` from ``Weighting.specific_weights``, 1 by
  default). The state is a :class:`BalancerState`.
  """
  validation.check_num_tasks(num_tasks)
  name = weighting.name
  jax.eval_shape(lambda: weighting.init(num_tasks))  # Checks T early.

  def init(shared_params):
    del shared_params
    return BalancerState(weights=jnp.zeros([num_tasks], jnp.float32),
                         weighting_state=weighting.init(num_tasks))

  def step(shared, specific, losses, state, inputs_finite, **extras):
    if weighting.reads_gram:
      validation.check_shared(name, shared)
      stats, shared_finite = stats_of(shared, losses, **extras)
      finite = inputs_finite & shared_finite
    else:
      stats = TaskStats(None, None, losses, num_tasks)
      finite = inputs_finite
    weighed = weigh_and_guard(weighting, stats, state.weighting_state, finite)
    shared_updates = gramian_lib.weighted_sum(weighed.weights, shared)
    specific_updates = gramian_lib.weighted_sum(weighed.specific_weights,
                                                specific)
    if not weighting.reads_gram:  # Leaves no Gramian has checked.
      finite = finite & numerics.all_finite(*shared_updates)
    return transformation.StepResult(
        shared_updates, specific_updates,
        BalancerState(weighed.weights, weighed.state), finite)

  update = transformation.task_transformation(
      num_tasks, name, init, step, needs_losses=weighting.reads_losses,
      task_specific=task_specific, extra_inputs=extra_inputs).update
  # The state does not depend on params, so init takes any (even None), as
  # in 0.1; the task_specific mask is checked against the gradients.
  init_fn = lambda params: init(None)
  if weighting.reads_gram:
    return optax.GradientTransformationExtraArgs(init_fn, update)
  return LossBalancer(
      init_fn, update,
      lambda task_losses, state: weigh_losses(weighting, task_losses, state))


class LossBalancer(optax.GradientTransformationExtraArgs):
  """A balancer whose weighting reads the losses only (0.1 interface).

  ``weigh_losses(task_losses, state)`` is :func:`weigh_losses` bound to the
  balancer's weighting; prefer the free function, which survives
  ``optax.chain`` and ``optax.inject_hyperparams``.
  """

  def __new__(cls, init, update, weigh_losses_fn):
    transformation_ = super().__new__(cls, init, update)
    transformation_.weigh_losses = weigh_losses_fn
    return transformation_


def _as_weighting(weigh, *, name='balancer', init_state=None,
                  needs_losses=False, uses_gram=True) -> Weighting:
  """A :class:`Weighting` from the 0.1 arguments of :func:`balancer`."""
  if init_state is not None:
    raise ValueError(
        'balancer: init_state is the 0.1 interface; pass a mtl.Weighting '
        'whose init(num_tasks) builds the state instead.')
  warnings.warn(
      'balancer(num_tasks, weigh_fn, name=..., needs_losses=..., '
      'uses_gram=...) is the 0.1 interface and will be removed in '
      f'{REMOVAL_VERSION}; pass mtl.Weighting(weigh=weigh_fn, name=..., '
      'reads_losses=..., reads_gram=...) instead.', DeprecationWarning,
      stacklevel=3)
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
      ``needs_losses`` and ``uses_gram`` is accepted too (the 0.1 form,
      deprecated); its state is ``optax.EmptyState()``.
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
  validation.check_num_tasks(num_tasks)
  if not isinstance(weighting, Weighting):
    weighting = _as_weighting(weighting, **legacy_options)
  elif legacy_options:
    raise ValueError(f'balancer: unexpected arguments {sorted(legacy_options)}'
                     ' with a mtl.Weighting.')

  def stats_of(shared, losses):
    gram, scale = gramian_lib.gramian(shared)
    # A Gramian is finite exactly when the gradients are.
    return (TaskStats(gram, scale, losses, num_tasks),
            numerics.all_finite(gram, scale))

  return weighted_balancer(num_tasks, weighting, stats_of,
                           task_specific=task_specific)


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
  losses = jax.lax.stop_gradient(validation.check_task_losses(
      weighting.name, num_tasks, task_losses, weighting.reads_losses))
  whole = isinstance(state, BalancerState)
  inner = state.weighting_state if whole else state
  weights, new_inner = weighting.weigh(
      TaskStats(None, None, losses, num_tasks), inner)
  weights = jax.lax.stop_gradient(weights.astype(jnp.float32))
  finite = numerics.all_finite(losses)
  new_inner = transformation.keep_if_not_finite(finite, new_inner, inner)
  if not whole:
    return weights, new_inner
  return weights, BalancerState(
      weights=jnp.where(finite, weights, state.weights),
      weighting_state=new_inner)


def balancer_factory(make_weighting: Callable[..., Weighting]):
  """``factory(num_tasks, *args, task_specific=None, **kwargs)`` for a weighting.

  The factory is exactly ``balancer(num_tasks, make_weighting(*args,
  **kwargs), task_specific=task_specific)``, with the weighting's
  hyper-parameters in its signature (so ``optax.inject_hyperparams``,
  ``inspect.signature`` and ``help`` see them; type checkers read the
  package's generated stub, ``mtl_optax/__init__.pyi``).
  """
  return factory_of(make_weighting, balancer, 'balancer')


def factory_of(make_weighting: Callable[..., Weighting],
             build: Callable[..., optax.GradientTransformationExtraArgs],
             build_name: str):
  """A factory ``build(num_tasks, make_weighting(...), task_specific=...)``
  with ``make_weighting``'s parameters and docstring."""
  name = make_weighting.__name__
  signature = inspect.signature(make_weighting)

  def factory(num_tasks, *args, task_specific=None, **kwargs):
    return build(num_tasks, make_weighting(*args, **kwargs),
                 task_specific=task_specific)

  parameters = [
      inspect.Parameter('num_tasks', inspect.Parameter.POSITIONAL_OR_KEYWORD,
                        annotation=int),
      *signature.parameters.values(),
      inspect.Parameter('task_specific', inspect.Parameter.KEYWORD_ONLY,
                        default=None, annotation=TaskSpecific),
  ]
  # help(), inspect.signature and optax.inject_hyperparams read these.
  setattr(factory, '__signature__', signature.replace(
      parameters=parameters,
      return_annotation=optax.GradientTransformationExtraArgs))
  setattr(factory, '__wrapped__', make_weighting)
  factory.__name__ = factory.__qualname__ = name
  factory.__module__ = 'mtl_optax'
  factory.__doc__ = (
      f'The {name} {build_name}: ``{build_name}(num_tasks, '
      f'weightings.{name}(...), task_specific=task_specific)``.\n\n'
      f'``num_tasks`` is T, the size of the leading task axis of every '
      f'gradient leaf;\n``task_specific`` marks the parameter leaves that '
      f'belong to one task (see\n:func:`mtl_optax.balancer`). The other '
      f'arguments are those of the weighting\n'
      f':func:`mtl_optax.weightings.{name}`, documented below.\n\n'
      f'{inspect.cleandoc(make_weighting.__doc__ or "")}\n')
  return factory


def last_weights(state: Any) -> jax.Array:
  """The ``[T]`` task weights of the last method found in an optax state.

  Works for every method: a balancer's :class:`BalancerState` (the update
  was ``Σ_t w_t g_t``) and the states of the transformations that report
  ``[T]`` weights through ``task_weights()`` (each state's docs say what
  they mean where the update is not ``Σ_t w_t g_t``, e.g. GradDrop's kept
  share). It looks through states that hold one: an ``optax.chain`` tuple,
  ``optax.inject_hyperparams``' inner state, or a Flax NNX optimizer's
  ``opt_state`` (its array wrappers are unwrapped).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import mtl_optax as mtl
    >>> tx = optax.chain(mtl.mgda(2), optax.sgd(0.1))
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> _, state = tx.update(grads, tx.init(jnp.zeros(2)))
    >>> mtl.last_weights(state)
    Array([0.5, 0.5], dtype=float32)
  """
  reports = lambda node: callable(getattr(node, 'task_weights', None))
  found = [node for node in jax.tree.leaves(state, is_leaf=reports)
           if reports(node)]
  if not found:
    raise ValueError('last_weights: the state holds no method state that '
                     'reports task weights.')
  weights = found[-1].task_weights()
  if hasattr(weights, 'get_value'):  # A Flax NNX Variable (OptArray).
    weights = weights.get_value()
  return jnp.asarray(weights)
