"""Leaf plumbing: task-specific masks, the shared/specific split, T x P states.

A transformation over stacked per-task gradients works on two lists of
leaves: the *shared* ones (they enter the Gramian and the weighted sum) and
the *task-specific* ones (each belongs to one task and gets its own task's
gradient). These helpers split a tree into the two lists and merge it back.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from mtl_optax._src import gramian as gramian_lib

TaskSpecific = Any  # None, a boolean pytree like params (or a prefix of
# it), or a callable params -> such a pytree.


def task_specific_flags(task_specific: TaskSpecific, tree: Any) -> list[bool]:
  """One bool per leaf of ``tree``: True where the leaf is task-specific.

  The mask may be a prefix of ``tree``: a boolean at a subtree covers every
  leaf below it, e.g. ``{'trunk': False, 'heads': True}``. A dict mask also
  fits any mapping node of ``tree`` by its keys (a Flax ``nnx.State`` or
  ``FrozenDict``), where the pytree types differ.
  """
  num_leaves = len(jax.tree.leaves(tree))
  if task_specific is None:
    return [False] * num_leaves
  mask = task_specific(tree) if callable(task_specific) else task_specific
  try:
    mask = jax.tree.map(
        lambda flag, subtree: jax.tree.map(lambda _: bool(flag), subtree),
        mask, tree)
  except ValueError as error:
    if not isinstance(mask, Mapping):
      raise ValueError(
          'task_specific must be a boolean pytree matching params (or a '
          f'prefix of it), or a callable returning one: {error}') from error
    # Same pytree shape, other node types (a dict against an nnx.State):
    # look each leaf's key path up in the mask instead.
    mask = _flags_by_key_path(mask, tree)
  flags = jax.tree.leaves(mask)
  if len(flags) != num_leaves:
    raise ValueError(
        f'task_specific must give one boolean per parameter leaf '
        f'({num_leaves}), got {len(flags)}.')
  return flags


def _flags_by_key_path(mask: Mapping, tree: Any) -> Any:
  """``tree``'s structure with each leaf's flag, found by walking ``mask``
  along the leaf's key path until a boolean (a prefix of the path) is met."""
  fix = ('the callable form fits any params tree: task_specific=lambda '
         'params: jax.tree_util.tree_map_with_path(lambda path, _: "heads" '
         'in jax.tree_util.keystr(path), params)')
  used = set()

  def flag_of(path, _):
    node = mask
    for depth, entry in enumerate(path):
      if isinstance(node, Mapping) and isinstance(entry,
                                                  jax.tree_util.DictKey):
        if entry.key not in node:
          raise ValueError(
              f'task_specific has no entry {entry.key!r} for the params '
              f'leaf at {jax.tree_util.keystr(path)}; {fix}.')
        node = node[entry.key]
      elif (isinstance(node, (list, tuple))
            and isinstance(entry, jax.tree_util.SequenceKey)):
        node = node[entry.idx]
      elif isinstance(node, (Mapping, list, tuple)):
        raise ValueError(
            f'task_specific does not match the params leaf at '
            f'{jax.tree_util.keystr(path)}; {fix}.')
      else:
        used.add(path[:depth])
        return bool(node)
    if isinstance(node, (Mapping, list, tuple)):
      raise ValueError(
          f'task_specific goes deeper than the params leaf at '
          f'{jax.tree_util.keystr(path)}; {fix}.')
    used.add(tuple(path))
    return bool(node)

  flags = jax.tree_util.tree_map_with_path(flag_of, tree)
  unused = [jax.tree_util.keystr(path) for path, _ in
            jax.tree_util.tree_flatten_with_path(mask)[0]
            if tuple(path) not in used]
  if unused:
    raise ValueError(
        f'task_specific has entries {unused} that match no params leaf; '
        f'{fix}.')
  return flags


def split_leaves(flags: list[bool], tree: Any) -> tuple[list, list]:
  """``(shared_leaves, specific_leaves)`` of ``tree`` according to ``flags``."""
  leaves = jax.tree.leaves(tree)
  shared = [leaf for leaf, flag in zip(leaves, flags) if not flag]
  specific = [leaf for leaf, flag in zip(leaves, flags) if flag]
  return shared, specific


def merge_leaves(flags: list[bool], treedef, shared: list, specific: list):
  shared_leaves, specific_leaves = iter(shared), iter(specific)
  leaves = [next(specific_leaves) if flag else next(shared_leaves)
            for flag in flags]
  return jax.tree.unflatten(treedef, leaves)



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


def poison(finite: jax.Array, leaves: list) -> list:
  return [jnp.where(finite, leaf, jnp.nan).astype(leaf.dtype)
          for leaf in leaves]

