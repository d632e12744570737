"""Power-of-two widths: time per element of the two passes over ``J``.

In a row-major ``[T, 2^20]`` float32 array the T rows are exactly 4 MiB
apart, so the same column of every row maps to the same cache sets. A kernel
that reads the T rows side by side can then lose its cache to conflicts,
while at P = 1e6 (rows 4 000 000 bytes apart) it does not. This section times,
per element and interleaved, at P = 1e6, 2^20, 4e6 and 2^22:

* the library's blocked ``J Jᵀ`` (column blocks copied out row by row, then
  one small matmul each) with a power-of-two block width and with the
  library's width (one 64-byte cache line more);
* XLA's one ``dot_general`` for ``J Jᵀ`` and for ``wᵀ J``;
* torch's ``J @ J.T`` and ``w @ J`` on the same data, if torch is installed
  (TorchJD computes its Gramian with the former).

A ratio ``2^20 / 1e6`` (or ``2^22 / 4e6``) well above 1 is a power-of-two
slowdown of that kernel.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import common
from mtl_optax._src import column_blocks
from mtl_optax._src import gramian as gramian_lib

_PRECISION = lax.Precision.HIGHEST


def _dot_rows(block):
  return lax.dot_general(block, block, (((1,), (1,)), ((), ())),
                         precision=_PRECISION,
                         preferred_element_type=jnp.float32)


blocked = jax.jit(  # The library's loop, at any width.
    lambda task_grads, width: gramian_lib._blocked_leaf_gramian(  # pylint: disable=protected-access
        task_grads, width, None), static_argnums=1)
xla_gram = jax.jit(_dot_rows)
matvec = jax.jit(lambda weights, task_grads: weights @ task_grads)


def sizes(quick: bool) -> list[int]:
  return [10**5, 2**17] if quick else [10**6, 2**20, 4 * 10**6, 2**22]


def run(quick: bool = False) -> list[dict]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(os.cpu_count())
  except ImportError:
    torch = None
  task_counts = (8,) if quick else (8, 32)
  size_list = sizes(quick)
  rows = []
  for num_tasks in task_counts:
    library_width = None
    calls = {}
    for size in size_list:
      task_grads = common_grads(num_tasks, size)
      weights = jnp.linspace(0.5, 1.5, num_tasks, dtype=jnp.float32)
      library_width = column_blocks.width(task_grads)
      power_width = 1 << (library_width.bit_length() - 1)
      calls['blocked J Jᵀ, power-of-two width', size] = (
          lambda x=task_grads, w=power_width: blocked(x, w))
      calls['blocked J Jᵀ, library width', size] = (
          lambda x=task_grads, w=library_width: blocked(x, w))
      calls['XLA J Jᵀ (one dot)', size] = lambda x=task_grads: xla_gram(x)
      calls['XLA wᵀJ (one dot)', size] = (
          lambda x=task_grads, w=weights: matvec(w, x))
      if torch is not None:
        matrix = torch.from_numpy(np.array(task_grads))
        torch_weights = torch.linspace(0.5, 1.5, num_tasks)
        calls['torch J @ J.T', size] = lambda m=matrix: m @ m.T
        calls['torch w @ J', size] = (
            lambda m=matrix, w=torch_weights: w @ m)
    times = common.interleaved_ms(
        {f'{name}|{size}': fn for (name, size), fn in calls.items()},
        3 if quick else 9, 'min')
    for name in dict.fromkeys(name for name, _ in calls):
      per_element = [times[f'{name}|{size}'] * 1e6 / (num_tasks * size)
                     for size in size_list]
      ratios = [per_element[i + 1] / per_element[i]
                for i in range(0, len(size_list), 2)]
      rows.append([num_tasks, name] + per_element + ratios)
  columns = (['T', 'kernel'] + [f'P={size:.3g} (ns/elem)'
                                for size in size_list]
             + [f'{size_list[i + 1]:.3g} / {size_list[i]:.3g}'
                for i in range(0, len(size_list), 2)])
  return [{
      'title': 'Time per element of J Jᵀ and wᵀJ at power-of-two and '
               'round widths (ns per float32 of J)',
      'columns': columns,
      'rows': rows,
      'notes': ('Fastest of interleaved repeats; every kernel and width of a '
                'T timed in the same rounds. The library\'s block width is '
                'the power of two plus 16 float32 columns (64 bytes). torch '
                'rows need the bench extra.'),
  }]


def common_grads(num_tasks: int, size: int) -> jax.Array:
  return jax.random.normal(jax.random.key(0), (num_tasks, size), jnp.float32)
