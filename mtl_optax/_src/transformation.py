"""The one skeleton of every transformation over stacked per-task gradients.

:func:`task_transformation` checks the inputs, splits the leaves into shared
and task-specific ones, runs a method's step, keeps the previous state
whenever an input is not finite (while making the output non-finite, so that
``optax.apply_if_finite`` skips the step) and merges the leaves back. The
balancers (balancer.py), the pre-transforms and the transformations that need
the per-coordinate gradients (GradDrop, MoCo, ...) all use it.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import leaves as leaves_lib
from mtl_optax._src import numerics
from mtl_optax._src import validation


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


def keep_if_not_finite(finite: jax.Array, new_state: Any, old_state: Any,
                       *, skip_larger_than: int | None = None) -> Any:
  """``new_state`` where ``finite``, else ``old_state``, in the old dtypes.

  Leaves with more than ``skip_larger_than`` entries are taken as they are:
  the step guarded them in the pass that wrote them.
  """
  def keep(new, old):
    if skip_larger_than is not None and jnp.size(old) > skip_larger_than:
      return new
    return jnp.where(finite, new, old)

  return jax.tree.map(keep, leaves_lib.cast_like(new_state, old_state),
                      old_state)


def _extra_leaves(name: str, flags: list[bool], task_grads: Any,
                  keyword: str, tree: Any) -> tuple[list, list] | None:
  """``(shared, specific)`` leaves of an extra input tree, split as the
  task gradients are (None when it is not given)."""
  if tree is None:
    return None
  structure = jax.tree.structure(tree)
  if structure != jax.tree.structure(task_grads):  # type: ignore[operator]
    raise ValueError(f'{name}: {keyword} must have the structure of '
                     f'task_grads, got {structure}.')
  return leaves_lib.split_leaves(flags, tree)


def task_transformation(
    num_tasks: int,
    name: str,
    init: Callable[[list], Any],
    step: Callable[..., StepResult],
    *,
    needs_losses: bool = False,
    task_specific: leaves_lib.TaskSpecific = None,
    extra_inputs: tuple[str, ...] = (),
) -> optax.GradientTransformationExtraArgs:
  """The skeleton of every transformation over stacked per-task gradients.

  Args:
    num_tasks: T, the size of the leading task axis of every gradient leaf.
    name: the public name, used in error messages.
    init: ``init(shared_params) -> state`` from the list of shared parameter
      leaves.
    step: ``step(shared, specific, losses, state, inputs_finite, **extras)
      -> StepResult``, with ``shared``/``specific`` the lists of
      task-gradient leaves and ``inputs_finite`` whether the losses and the
      task-specific leaves are finite. The step checks its shared inputs
      (cheaply: a Gramian is finite exactly when they are), reports it in
      ``StepResult.finite`` and makes its shared outputs non-finite when
      anything is not; the skeleton does the same for the task-specific
      outputs and keeps the old state.
    needs_losses: whether ``update`` requires ``task_losses``.
    task_specific: which parameter leaves belong to one task only (a boolean
      pytree like params or a prefix of it, or a callable returning one).
    extra_inputs: keyword arguments of ``update`` that the step reads: trees
      with the structure of ``task_grads`` (further batches, a validation
      gradient). The step gets each as ``(shared, specific)`` lists of its
      leaves, split as the task gradients are, or None when ``update`` was
      not given it.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  validation.check_num_tasks(num_tasks)

  def init_fn(params):
    flags = leaves_lib.task_specific_flags(task_specific, params)
    return init(leaves_lib.split_leaves(flags, params)[0])

  def update_fn(task_grads, state, params=None, *, task_losses=None,
                **extra_args):
    del params
    validation.check_task_grads(name, num_tasks, task_grads)
    losses = validation.check_task_losses(name, num_tasks, task_losses,
                                          needs_losses)
    flags = leaves_lib.task_specific_flags(task_specific, task_grads)
    shared, specific = leaves_lib.split_leaves(flags, task_grads)
    extras = {keyword: _extra_leaves(name, flags, task_grads, keyword,
                                     extra_args.get(keyword))
              for keyword in extra_inputs}
    inputs_finite = numerics.all_finite(losses, *specific)
    result = step(shared, specific, losses, state, inputs_finite, **extras)
    finite = inputs_finite & result.finite
    new_state = keep_if_not_finite(
        finite, result.state, state,
        skip_larger_than=num_tasks if result.state_guarded else None)
    treedef = jax.tree.structure(task_grads)
    updates = leaves_lib.merge_leaves(
        flags, treedef, result.shared,
        leaves_lib.poison(finite, result.specific))
    return updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
