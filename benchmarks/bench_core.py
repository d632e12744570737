"""The core's two passes over the stacked gradients, and per-task gradients.

Table 1 times the two operations every Gramian method performs on the
stacked task gradients ``J`` (``[T, P]`` float32): the Gramian ``J Jᵀ`` and
the weighted sum ``wᵀ J``. "XLA J Jᵀ" is the one ``dot_general`` a plain
implementation writes; "blocked J Jᵀ" is the library's kernel: the native
kernel on every core where it was built (mtl_optax/_src/native.py), else
column blocks accumulated in an XLA loop, chosen at trace time for large
unsharded leaves on CPU. The floor of a Gramian method is the faster of the two plus ``wᵀ J``;
``bench_balancers.py`` divides every method's update by it. ``gramian()``
adds the float32 over/underflow check to the kernel, ``weighted_sum()`` is the
library's ``wᵀ J``.

Table 2 times ``value_and_task_grads`` (one forward, T backward passes) on an
MLP against ``jax.grad`` of the summed loss. Counting a forward pass as 1 and
a backward pass as 2 units, T gradients sharing one forward cost at least
``(1 + 2T) / 3`` summed-loss gradients: that is the FLOP bound.
"""

import jax
import jax.numpy as jnp
from jax import lax

import common
import mtl_optax as mtl
from mtl_optax._src import gramian as gramian_lib

# The machine is shared: ratios use the fastest of interleaved repeats
# (common.interleaved_ms explains why), and every note says so.
STATISTIC = 'min'
GIB = 2.0**30
MAX_BYTES = 4 * GIB  # Larger stacked gradients are skipped.


def _xla_gram(task_grads):
  return lax.dot_general(
      task_grads, task_grads, (((1,), (1,)), ((), ())),
      precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


def _library_gram(task_grads):
  return gramian_lib._raw_gramian(task_grads)  # pylint: disable=protected-access


def _xla_blocked_gram(task_grads):
  """The library's Gramian without its native kernel: XLA alone."""
  return gramian_lib._leaf_gramian(task_grads)  # pylint: disable=protected-access


def _matvec(weights, task_grads):
  return weights @ task_grads


KERNELS = {
    'xla_gram': jax.jit(_xla_gram),
    'blocked_gram': jax.jit(_library_gram),
    'xla_blocked_gram': jax.jit(_xla_blocked_gram),
    'gramian': jax.jit(mtl.gramian),
    'matvec': jax.jit(_matvec),
    'weighted_sum': jax.jit(mtl.weighted_sum),
}


def shapes(quick: bool) -> list[tuple[int, int]]:
  if quick:
    return [(8, 10**5)]
  return [(t, p) for t in (2, 8, 32, 128) for p in (10**5, 10**6, 10**7)]


def too_large(num_tasks: int, size: int) -> bool:
  return num_tasks * size * 4 > MAX_BYTES


def stacked_gradients(num_tasks: int, size: int) -> jax.Array:
  return jax.random.normal(jax.random.key(0), (num_tasks, size), jnp.float32)


def repeats_for(num_tasks: int, size: int, quick: bool) -> int:
  if quick:
    return 3
  return 7 if num_tasks * size <= 10**8 else 3


def kernel_times(task_grads: jax.Array, repeats: int) -> dict[str, float]:
  """Milliseconds of each kernel on ``task_grads``, timed interleaved."""
  weights = jnp.linspace(0.5, 1.5, task_grads.shape[0], dtype=jnp.float32)
  calls = {
      'xla_gram': lambda: KERNELS['xla_gram'](task_grads),
      'blocked_gram': lambda: KERNELS['blocked_gram'](task_grads),
      'gramian': lambda: KERNELS['gramian'](task_grads),
      'matvec': lambda: KERNELS['matvec'](weights, task_grads),
      'weighted_sum': lambda: KERNELS['weighted_sum'](weights, task_grads),
  }
  times = common.interleaved_ms(calls, repeats, STATISTIC)
  times['floor'] = (min(times['xla_gram'], times['blocked_gram'])
                    + min(times['matvec'], times['weighted_sum']))
  return times


def kernels_table(quick: bool) -> dict:
  rows, skipped = [], []
  for num_tasks, size in shapes(quick):
    if too_large(num_tasks, size):
      skipped.append(f'T={num_tasks}, P={size:.0e}')
      continue
    task_grads = stacked_gradients(num_tasks, size)
    times = kernel_times(task_grads, repeats_for(num_tasks, size, quick))
    del task_grads
    best_gram = min(times['xla_gram'], times['blocked_gram'])
    best_matvec = min(times['matvec'], times['weighted_sum'])
    rows.append([
        num_tasks, f'{size:.0e}', times['xla_gram'], times['blocked_gram'],
        times['xla_gram'] / times['blocked_gram'], times['gramian'],
        times['gramian'] / best_gram, times['matvec'], times['weighted_sum'],
        times['weighted_sum'] / best_matvec, times['floor']])
  notes = ('Milliseconds (fastest of the repeats, the five kernels timed '
           'interleaved). '
           'floor = min(XLA, blocked) J Jᵀ + min(w@J, weighted_sum). '
           '"XLA / blocked" > 1 is what the blocked kernel gains over the one '
           '`dot_general`; "gramian() / best" is the cost of the '
           'over/underflow check (a `lax.cond`, whose rescue branch does not '
           'run on finite in-range gradients).')
  if skipped:
    notes += (f' Skipped (stacked gradients over {MAX_BYTES / GIB:.0f} GiB): '
              + ', '.join(skipped) + '.')
  return {
      'title': 'Gramian J Jᵀ and weighted sum wᵀ J on stacked gradients [T, P] '
               'float32 (ms)',
      'columns': ['T', 'P', 'XLA J Jᵀ', 'blocked J Jᵀ', 'XLA / blocked',
                  'gramian()', 'gramian() / best J Jᵀ', 'w @ J',
                  'weighted_sum()', 'weighted_sum() / best wᵀJ', 'floor'],
      'rows': rows,
      'notes': notes,
  }


# ---------------------------------------------------------------------------
# value_and_task_grads on an MLP.


def mlp_problem(num_tasks: int, width: int, depth: int, batch: int):
  """A shared MLP trunk with one linear regression head per task."""
  keys = jax.random.split(jax.random.key(1), depth + 3)
  trunk = [{'kernel': jax.random.normal(keys[i], (width, width)) / width**0.5,
            'bias': jnp.zeros(width)} for i in range(depth)]
  heads = jax.random.normal(keys[depth], (width, num_tasks)) / width**0.5
  inputs = jax.random.normal(keys[depth + 1], (batch, width))
  targets = jax.random.normal(keys[depth + 2], (batch, num_tasks))
  return {'trunk': trunk, 'heads': heads}, inputs, targets


def task_losses(params, inputs, targets):
  hidden = inputs
  for layer in params['trunk']:
    hidden = jnp.tanh(hidden @ layer['kernel'] + layer['bias'])
  return jnp.mean((hidden @ params['heads'] - targets) ** 2, axis=0)


def summed_loss_grad(params, inputs, targets):
  return jax.value_and_grad(lambda p: jnp.sum(task_losses(p, inputs,
                                                          targets)))(params)


def task_grads_table(quick: bool) -> dict:
  width, depth, batch = (128, 2, 64) if quick else (512, 4, 256)
  task_counts = (2, 8) if quick else (2, 8, 32)
  repeats = 3 if quick else 7
  rows = []
  for num_tasks in task_counts:
    chunk = max(1, num_tasks // 4)
    params, inputs, targets = mlp_problem(num_tasks, width, depth, batch)
    summed = jax.jit(summed_loss_grad)
    unrolled = jax.jit(mtl.value_and_task_grads(task_losses))
    chunked = jax.jit(mtl.value_and_task_grads(task_losses, chunk_size=chunk))
    times = common.interleaved_ms({
        'summed': lambda: summed(params, inputs, targets),
        'unrolled': lambda: unrolled(params, inputs, targets),
        'chunked': lambda: chunked(params, inputs, targets),
    }, repeats, STATISTIC)
    bound = (1 + 2 * num_tasks) / 3
    ratio = times['unrolled'] / times['summed']
    chunk_ratio = times['chunked'] / times['summed']
    rows.append([num_tasks, times['summed'], times['unrolled'], ratio, bound,
                 ratio / bound, chunk, times['chunked'], chunk_ratio,
                 chunk_ratio / bound])
  size = sum(x.size for x in jax.tree.leaves(params['trunk']))
  return {
      'title': 'value_and_task_grads over the summed-loss gradient (MLP)',
      'columns': ['T', 'summed-loss grad (ms)', 'task grads (ms)',
                  'ratio', '(1 + 2T) / 3', 'ratio / bound', 'chunk_size',
                  'chunked (ms)', 'chunked ratio', 'chunked ratio / bound'],
      'rows': rows,
      'notes': (f'MLP trunk {depth} x tanh Dense({width}) ({size} shared '
                f'parameters), batch {batch}, one linear head per task, MSE. '
                'Fastest of interleaved repeats. '
                '"ratio / bound" <= 1.3 at T = 8 is the target; below 1 means '
                'the T backward passes run faster per FLOP than the one '
                'backward of the summed loss.'),
  }


def run(quick: bool = False) -> list[dict]:
  return [kernels_table(quick), task_grads_table(quick)]
