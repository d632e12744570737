"""One pass over a large ``[T, P]`` leaf, a cache-sized column block at a time.

On CPU, XLA runs two kinds of pass over a long ``[T, P]`` array far below
memory bandwidth:

* one dot over the long contraction (measured on ``[8, 2^20]`` float32:
  17.6 ms, against 2.9 ms when the same product is accumulated over column
  blocks that stay in cache; 73 ms against 23 ms on ``[32, 2^20]``);
* a reduction over the task axis, ``jnp.sum(J, axis=0)`` (measured on
  ``[8, 10^6]``: 21-30 ms, against 0.4 ms for the same sum over column
  blocks), and a reduction of an elementwise expression, whose operand XLA
  writes out in full before reducing it.

So a large leaf is processed block by block in a loop: every intermediate
then lives in cache. Blocks are sliced out of the flattened leaf, which is
only free when the leaf is not sharded: on a mesh (or another backend) the
whole-leaf expression is kept, and XLA partitions it.

Block widths are a power of two plus one 64-byte cache line: the rows of a
block copied out of J then do not all start at the same offset modulo 4 KiB,
so they do not compete for the same cache sets. Measured on 2 pinned cores
of an otherwise idle Xeon, interleaved: 2-18 % faster at T = 8 and 1-3 % at
T = 32, at P = 1e6, 2^20, 4e6 and 2^22 alike
(benchmarks/results/widths.md, which also shows that the blocked kernel has
no power-of-two slowdown of its own).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

_BLOCK_BYTES = 2**21  # Fastest of 0.5, 1, 2 MiB at T = 32 and 128 (Zen 4).
_BLOCK_RANGE = (512, 16384)  # Columns per block, whatever T.
_MIN_BLOCKS = 4  # Fewer blocks than this: the whole-leaf expression is as fast.
# A smaller leaf stays in the last-level cache: one dot over it was faster
# (measured on 2 cores of an AMD EPYC: J Jᵀ of [8, 1e5], 3.1 MiB, 0.16 ms
# against 0.27 ms in blocks; [32, 5e4], 6.1 MiB, 0.59 against 0.77 ms; but
# [2, 1e6], 7.6 MiB, 0.74 against 0.54 ms; GradDrop alike).
_MIN_BYTES = 7 * 2**20
_LINE_BYTES = 64


def unsharded_on_cpu(leaf: jax.Array) -> bool:
  """Whether ``leaf`` is traced for a CPU backend, outside any mesh."""
  return (jax.default_backend() == 'cpu'
          and jax.typeof(leaf).sharding.mesh.empty)


def width(leaf: jax.Array) -> int | None:
  """Columns per block for a pass over ``leaf``, or None for no blocks."""
  if (not unsharded_on_cpu(leaf)
      or leaf.size * leaf.dtype.itemsize < _MIN_BYTES):
    return None
  num_tasks = leaf.shape[0]
  target = _BLOCK_BYTES // (num_tasks * leaf.dtype.itemsize)
  columns = 1 << max(target, 1).bit_length() - 1  # A power of two <= target.
  columns = min(max(columns, _BLOCK_RANGE[0]), _BLOCK_RANGE[1])
  columns += _LINE_BYTES // leaf.dtype.itemsize  # Off the 4 KiB grid.
  return columns if leaf[0].size >= _MIN_BLOCKS * columns else None


def scan(block_fn: Callable[..., tuple[Any, jax.Array | None]],
         *arrays: jax.Array, columns: int) -> tuple[Any, jax.Array | None]:
  """Runs ``block_fn`` on column blocks; sums its totals, joins its columns.

  Args:
    block_fn: ``block_fn(*blocks) -> (totals, out)``: ``totals`` a pytree of
      arrays summed over the blocks, ``out`` None or an array whose last
      axis has one entry per column of the block.
    *arrays: ``[..., n]`` arrays (a ``[T, n]`` matrix, a ``[n]`` vector),
      sliced together along their last axis.
    columns: the block width (from :func:`width`).

  Returns:
    ``(totals, out)``: the totals summed over all blocks, and the blocks'
    ``out`` side by side (``[..., n]``), or None.
  """
  size = arrays[0].shape[-1]
  num_blocks = size // columns

  def blocks_at(start, count):
    return tuple(lax.dynamic_slice_in_dim(array, start, count, axis=-1)
                 for array in arrays)

  def body(totals, block):
    block_totals, out = block_fn(*blocks_at(block * columns, columns))
    return jax.tree.map(jnp.add, totals, block_totals), out

  first_totals, _ = jax.eval_shape(block_fn, *blocks_at(0, columns))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first_totals)
  totals, outs = lax.scan(body, zeros, jnp.arange(num_blocks))
  tail_size = size - num_blocks * columns  # Fewer than `columns` columns.
  tail_totals, tail_out = (block_fn(*blocks_at(num_blocks * columns, tail_size))
                           if tail_size else (None, None))
  if tail_totals is not None:
    totals = jax.tree.map(jnp.add, totals, tail_totals)
  if outs is None:
    return totals, None
  outs = jnp.moveaxis(outs, 0, -2)  # [..., num_blocks, columns]
  outs = outs.reshape(outs.shape[:-2] + (num_blocks * columns,))
  if tail_out is not None:
    outs = jnp.concatenate([outs, tail_out], axis=-1)
  return totals, outs
