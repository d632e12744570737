"""The two operations every Gramian method performs on the stacked gradients.

``task_grads`` is a pytree whose leaves carry a leading task axis of size T.
The T x P Jacobian ``J`` is never concatenated: the Gramian ``G = J Jᵀ`` is a
sum of one small matmul per leaf (per column block of a large leaf on CPU),
and the update ``d = wᵀ J`` is one dot product per leaf. Everything between
the two is T x T arithmetic. On finite, in-range gradients each is one pass
over ``J``: the over/underflow rescue is a ``lax.cond`` branch that does not
run and allocates no copy.

On CPU, XLA runs a block's product with up to 32 task rows on one thread
(per core as fast as MKL's sgemm, which uses every core). So float32 leaves
go to the native kernel where it was built (native.py): one call for all of
them, every core, the upper triangle only. Other dtypes, sharded leaves,
other backends and the over/underflow rescue stay in XLA.
benchmarks/results/torchjd.md gives the rates and the levers measured.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src import column_blocks
from mtl_optax._src import native
from mtl_optax._src import numerics

_PRECISION = lax.Precision.HIGHEST
# With `preferred_element_type=float32` every dot here multiplies and sums in
# float32, whatever the leaves' dtype (a bfloat16 or float16 product is exact
# in float32). The order of the sum is XLA's and changes between releases (on
# CPU, jax 0.10.2 hands a small dot to YNNPACK, jax 0.12.1 emits its own
# sequential loop), so results differ by float32 rounding only.
# tests/test_foundation.py checks this on bfloat16 sums that are exact in
# float32 in any order.
# Squares of float32 entries overflow above ~1.8e19 and flush to zero below
# ~1e-19. A Gramian whose diagonal leaves this band is recomputed on gradients
# rescaled by a power of two, which is exact.
_SMALLEST_SAFE_DIAGONAL = 1e-30


# Leaves are contracted over their own parameter axes, never reshaped to
# T x P first: merging a sharded axis with a minor one is not a block
# sharding, so XLA all-gathers the whole T x P leaf to do it (seen in the
# compiled HLO of an FSDP step; tests/test_sharding.py guards it).


def _parameter_axes(leaf: jax.Array) -> tuple[int, ...]:
  return tuple(range(1, leaf.ndim))


def _replicated(array: jax.Array) -> jax.sharding.NamedSharding:
  """A replicated sharding on the mesh ``array`` lives on (if any).

  On a mesh with Explicit axes (``jax.make_mesh``'s default) a contraction
  over sharded axes must name its output's sharding: the T x T Gramian is
  replicated, i.e. an all-reduce of per-device partial sums. Without a mesh,
  or on Auto axes, this constrains nothing.
  """
  mesh = jax.typeof(array).sharding.mesh
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def _dot_rows(matrix: jax.Array) -> jax.Array:
  """``matrix @ matrixᵀ`` for a ``[T, n]`` block, accumulated in float32."""
  return lax.dot_general(
      matrix, matrix, (((1,), (1,)), ((), ())),
      precision=_PRECISION, preferred_element_type=jnp.float32)


def _blocked_leaf_gramian(leaf: jax.Array, columns: int,
                          inverse_scale: jax.Array | None) -> jax.Array:
  """``J Jᵀ`` of an unsharded leaf, summed over ``columns``-wide blocks.

  On CPU, much faster than one dot over the long contraction
  (column_blocks.py gives the measured reason).

  A rescaling multiplies one block at a time, so no scaled copy of the leaf
  is ever held in memory.
  """

  def block_gram(block):
    if inverse_scale is not None:
      block = block * inverse_scale.astype(block.dtype)
    return _dot_rows(block), None

  gram, _ = column_blocks.scan(
      block_gram, leaf.reshape(leaf.shape[0], -1), columns=columns)
  return gram


def _leaf_gramian(leaf: jax.Array,
                  inverse_scale: jax.Array | None = None) -> jax.Array:
  columns = column_blocks.width(leaf)
  if columns is not None:
    return _blocked_leaf_gramian(leaf, columns, inverse_scale)
  if inverse_scale is not None:
    leaf = leaf * inverse_scale.astype(leaf.dtype)
  axes = _parameter_axes(leaf)
  return lax.dot_general(
      leaf, leaf, ((axes, axes), ((), ())),
      precision=_PRECISION, preferred_element_type=jnp.float32,
      out_sharding=_replicated(leaf))


def _raw_gramian(task_grads: Any,
                 inverse_scale: jax.Array | None = None) -> jax.Array:
  """Sum over leaves of ``(s⁻¹ J_leaf)(s⁻¹ J_leaf)ᵀ``, accumulated in float32.

  ``inverse_scale`` None means ``s = 1`` and costs no multiplication. Then
  the leaves the native kernel accepts (native.py) go to it in one call.
  """
  leaves = jax.tree.leaves(task_grads)
  grams = []
  if inverse_scale is None and native.enabled():
    taken = [native.accepts(leaf) for leaf in leaves]
    if any(taken):
      grams.append(native.gramian(
          [leaf for leaf, take in zip(leaves, taken) if take]))
      leaves = [leaf for leaf, take in zip(leaves, taken) if not take]
  grams += [_leaf_gramian(leaf, inverse_scale) for leaf in leaves]
  return functools.reduce(jnp.add, grams)


def _max_abs(task_grads: Any) -> jax.Array:
  # max(max x, -min x), not max |x|: the two reductions read the leaf as it
  # is, where jax 0.10.0's XLA wrote |x| out in full first, a T x P
  # temporary (tests/test_gramian_blocked.py measures the memory).
  return jnp.max(jnp.stack([
      jnp.maximum(jnp.max(leaf), -jnp.min(leaf)).astype(jnp.float32)
      for leaf in jax.tree.leaves(task_grads)]))


def power_of_two_scale(task_grads: Any) -> jax.Array:
  """The power of two nearest to the largest entry (1 if all are 0), float32.

  Dividing by it is exact, and brings the entries' squares into range.
  """
  return numerics.power_of_two_near(_max_abs(task_grads))


def gramian(task_grads: Any) -> tuple[jax.Array, jax.Array]:
  """Gramian of the task gradients, safe against float32 over/underflow.

  Args:
    task_grads: pytree of arrays, each with a leading task axis of size T.

  Returns:
    ``(gram, scale)``: ``gram`` is ``[T, T]`` float32 and the true Gramian is
    ``scale**2 * gram``. ``scale`` is 1 unless the gradients are so large or so
    small that their squares leave the float32 range; then it is the power of
    two nearest to the largest entry. A non-finite gradient gives a non-finite
    ``scale``.
  """
  one = jnp.ones((), jnp.float32)
  gram = _raw_gramian(task_grads)
  largest = jnp.max(jnp.diagonal(gram))
  in_range = jnp.isfinite(largest) & (largest > _SMALLEST_SAFE_DIAGONAL)

  def rescaled(_):
    scale = power_of_two_scale(task_grads)
    return _raw_gramian(task_grads, 1.0 / scale), scale

  return lax.cond(in_range, lambda _: (gram, one), rescaled, None)


def replicated(array: jax.Array) -> jax.Array:
  """``array`` replicated over the mesh it lives on (as is without a mesh).

  A per-task vector computed from task-sharded gradients is itself sharded
  over the task axis; weights must be replicated before they contract with
  those gradients, or the output's sharding is ambiguous on Explicit axes.
  """
  mesh = jax.typeof(array).sharding.mesh
  if mesh.empty:
    return array
  return jax.sharding.reshard(array, _replicated(array))


def sharded_like(array: jax.Array, reference: jax.Array) -> jax.Array:
  """``array`` laid out as ``reference`` (as is without a mesh).

  On Explicit axes two arrays of different layouts cannot meet in a
  ``where``: e.g. a state replicated like the parameters and task gradients
  sharded over the task axis.
  """
  sharding = jax.typeof(reference).sharding
  if sharding.mesh.empty or jax.typeof(array).sharding == sharding:
    return array
  return jax.sharding.reshard(array, sharding)


def weighted_sum(weights: jax.Array, task_grads: Any) -> Any:
  """``Σ_t weights[t] · task_grads[t]`` for every leaf, as one dot product each.

  The result has the leaves' shapes without the task axis and their dtypes;
  products accumulate in float32.
  """
  weights = weights.astype(jnp.float32)

  def combine(leaf):
    total = lax.dot_general(
        weights, leaf, (((0,), (0,)), ((), ())),
        precision=_PRECISION, preferred_element_type=jnp.float32)
    return total.astype(leaf.dtype)

  return jax.tree.map(combine, task_grads)
