"""Every balancer's update time over the floor, and its peak memory.

The methods are those of ``mtl_optax/catalog.py``, so a new
method appears here as soon as it joins the property suite. Each update runs
on the same stacked gradients ``J`` (one ``[T, P]`` float32 leaf) as the
floor of ``bench_core.py``: the faster ``J Jᵀ`` plus the faster ``wᵀ J``, the
two passes over ``J`` no Gramian method can avoid. Loss-level methods need no
Gramian: their floor is ``wᵀ J`` alone. A method whose state holds a ``T x P``
array (an EMA of the gradients) must also read and write it once: its floor
adds one jitted ``β s + (1 - β) J``.

Peak memory comes from the compiled update's ``memory_analysis()``:
arguments + outputs + temporaries - aliased bytes.
"""

import functools
import sys

import jax
import jax.numpy as jnp

import bench_core
import common
import mtl_optax as mtl

MEMORY_SHAPE = (8, 10**6)
SLOW_MS = 2000.0  # Slower updates are timed once, not interleaved.


def shapes(quick: bool) -> list[tuple[int, int]]:
  """A cross through bench_core's grid: P at T = 8, T at P = 1e6.

  Each (method, shape) pair costs a compilation, so the full T x P grid of
  the kernel table would take most of an hour on the 2-core machine.
  """
  if quick:
    return bench_core.shapes(quick)
  return [(8, 10**5), (8, 10**6), (8, 10**7), (2, 10**6), (32, 10**6),
          (128, 10**6)]


@functools.cache
def methods():
  """The registry's methods, loaded once per run."""
  from mtl_optax import catalog as registry  # pylint: disable=g-import-not-at-top
  return tuple(registry.METHODS)


@jax.jit
def _state_pass(state, task_grads):
  return 0.9 * state + 0.1 * task_grads


def has_stacked_state(state, num_tasks: int, size: int) -> bool:
  return any(leaf.size >= num_tasks * size for leaf in jax.tree.leaves(state))


def compiled_update(method, num_tasks, task_grads, params, task_losses):
  """The method's jitted update, compiled for these arguments."""
  tx = method.make(num_tasks)
  state = jax.jit(tx.init)(params)

  def update(task_grads, state, params, task_losses):
    losses = task_losses if method.needs_losses else None
    return tx.update(task_grads, state, params, task_losses=losses)

  args = (task_grads, state, params, task_losses)
  compiled = jax.jit(update).lower(*args).compile()
  return compiled, args, tx, state


def peak_bytes(compiled) -> float | None:
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
          + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


FLOOR_PARTS = {'wᵀJ': ('matvec',), 'JJᵀ + wᵀJ': ('gram', 'matvec'),
               'JJᵀ + wᵀJ + state': ('gram', 'matvec', 'state')}


def floor_kind(tx, stacked_state: bool) -> str:
  if isinstance(tx, mtl.LossBalancer):
    return 'wᵀJ'
  return 'JJᵀ + wᵀJ + state' if stacked_state else 'JJᵀ + wᵀJ'


def floor_calls(task_grads, kernels):
  """The faster J Jᵀ, the faster wᵀ J and the state pass, as calls."""
  weights = jnp.linspace(0.5, 1.5, task_grads.shape[0], dtype=jnp.float32)
  gram = ('xla_gram' if kernels['xla_gram'] < kernels['blocked_gram']
          else 'blocked_gram')
  matvec = ('matvec' if kernels['matvec'] < kernels['weighted_sum']
            else 'weighted_sum')
  return {
      'gram': lambda: bench_core.KERNELS[gram](task_grads),
      'matvec': lambda: bench_core.KERNELS[matvec](weights, task_grads),
      'state': lambda: _state_pass(task_grads, task_grads),
  }


def measure_shape(num_tasks, size, quick):
  """``({method: (ms, floor_ms, floor_kind, peak_bytes)}, floor_ms)``.

  Each method is timed interleaved with the parts of its own floor, so the
  ratio of a row is measured under one load.
  """
  repeats = bench_core.repeats_for(num_tasks, size, quick)
  task_grads = bench_core.stacked_gradients(num_tasks, size)
  params = jnp.zeros((size,), jnp.float32)
  task_losses = jnp.linspace(0.5, 2.0, num_tasks, dtype=jnp.float32)
  kernels = bench_core.kernel_times(task_grads, repeats)
  floor = floor_calls(task_grads, kernels)
  floor_times = {'gram': min(kernels['xla_gram'], kernels['blocked_gram']),
                 'matvec': min(kernels['matvec'], kernels['weighted_sum'])}
  rows = {}
  for method in methods():
    try:
      compiled, args, tx, state = compiled_update(
          method, num_tasks, task_grads, params, task_losses)
      kind = floor_kind(tx, has_stacked_state(state, num_tasks, size))
      calls = {part: floor[part] for part in FLOOR_PARTS[kind]}
      calls['update'] = lambda: compiled(*args)
      jax.block_until_ready(calls['update']())
      once = common.median_ms(calls['update'], 1)
      if once > SLOW_MS:  # One timed call; the floor from the kernel table.
        times = dict(floor_times, update=once)
        times['state'] = common.median_ms(floor['state'], 1)
      else:
        times = common.interleaved_ms(calls, repeats, bench_core.STATISTIC)
    except Exception as error:  # pylint: disable=broad-except
      rows[method.name] = (f'error: {type(error).__name__}', None, None, None)
      continue
    method_floor = sum(times[part] for part in FLOOR_PARTS[kind])
    print(f'  T={num_tasks} P={size:.0e} {method.name}: '
          f"{times['update']:.3g} ms / floor {method_floor:.3g} ms",
          file=sys.stderr, flush=True)
    rows[method.name] = (times['update'], method_floor, kind,
                         peak_bytes(compiled))
    del compiled, args, state, calls
  return rows, kernels['floor']


def run(quick: bool = False) -> list[dict]:
  shape_list = shapes(quick)
  names = [method.name for method in methods()]
  ratios = {name: [] for name in names}
  times = {name: [] for name in names}
  kinds, floor_row, columns, skipped = {}, [], [], []
  peaks, memory_shape = {}, None
  for num_tasks, size in shape_list:
    if bench_core.too_large(num_tasks, size):
      skipped.append(f'T={num_tasks}, P={size:.0e}')
      continue
    columns.append(f'T={num_tasks} P={size:.0e}')
    rows, floor = measure_shape(num_tasks, size, quick)
    floor_row.append(floor)
    for name in names:
      milliseconds, method_floor, kind, peak = rows.get(
          name, ('missing', None, None, None))
      times[name].append(milliseconds)
      ratios[name].append(milliseconds / method_floor
                          if method_floor else milliseconds)
      if kind:
        kinds[name] = kind
    if (num_tasks, size) == MEMORY_SHAPE or quick:
      memory_shape = (num_tasks, size)
      peaks = {name: rows[name][3] for name in names if name in rows}
  skip_note = (f' Skipped (stacked gradients over '
               f'{bench_core.MAX_BYTES / bench_core.GIB:.0f} GiB): '
               + ', '.join(skipped) + '.') if skipped else ''
  ratio_table = {
      'title': 'Balancer update time / floor (one jitted update on stacked '
               'gradients [T, P] float32)',
      'columns': ['method', 'floor'] + columns,
      'rows': [[name, kinds.get(name)] + ratios[name] for name in names],
      'notes': ('Floor: the faster J Jᵀ (XLA or blocked) + the faster wᵀ J, '
                'each method timed interleaved with its own floor (fastest of the '
                'repeats, as the machine is shared); '
                '"+ state" adds one jitted β s + (1-β) J pass '
                'for methods with a T x P state; loss-level methods need only '
                'wᵀ J. Target: <= 1.25 for Gramian methods at T >= 8. Inputs '
                'are N(0, 1) gradients and losses in [0.5, 2]. An update slower than '
                f'{SLOW_MS / 1e3:g} s is timed once, against the floor of the '
                'kernel table. Shapes: a cross through the kernel table\'s '
                'grid (P at T = 8, T at P = 1e6), to bound the run time.'
                + skip_note),
  }
  time_table = {
      'title': 'Balancer update time (ms) and the floor J Jᵀ + wᵀ J (ms)',
      'columns': ['method'] + columns,
      'rows': ([['floor J Jᵀ + wᵀ J'] + floor_row]
               + [[name] + times[name] for name in names]),
      'notes': ('Wall time of one jitted update, fastest of the repeats '
                'interleaved with its floor; floor row from the kernel '
                'table.' + skip_note),
  }
  tasks, size = memory_shape
  stacked_bytes = tasks * size * 4
  memory_table = {
      'title': f'Peak memory of one update at T={tasks}, P={size:.0e} '
               '(compiled memory analysis)',
      'columns': ['method', 'peak (MiB)', 'peak / T x P x 4 bytes'],
      'rows': [[name, peaks[name] / common.MB if peaks.get(name) else None,
                peaks[name] / stacked_bytes if peaks.get(name) else None]
               for name in names],
      'notes': ('Arguments (the stacked gradients, state, params, losses) + '
                'outputs (update, new state) + temporaries - aliased. The '
                'stacked gradients alone are 1.0 x; the update and params add '
                f'2/T = {2 / tasks:.2f} x; a T x P state adds 2 x (in and out).'),
  }
  return [ratio_table, time_table, memory_table]
