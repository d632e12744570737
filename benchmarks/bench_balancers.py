"""Every balancer's update time over the floor, and its peak memory.

The methods are those of ``tests/registry.py`` (imported by path), so a new
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

import importlib.util
import pathlib

import jax
import jax.numpy as jnp

import bench_core
import common
import mtl_optax as mtl

REGISTRY = pathlib.Path(__file__).resolve().parents[1] / 'tests' / 'registry.py'
MEMORY_SHAPE = (8, 10**6)


def methods():
  spec = importlib.util.spec_from_file_location('mtl_registry', REGISTRY)
  registry = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(registry)
  return registry.METHODS


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


def floor_kind(tx, stacked_state: bool) -> str:
  if isinstance(tx, mtl.LossBalancer):
    return 'wᵀJ'
  return 'JJᵀ + wᵀJ + state' if stacked_state else 'JJᵀ + wᵀJ'


def measure_shape(num_tasks, size, quick):
  """``{method: (ms, floor_ms, floor_kind, peak_bytes)}`` at one shape."""
  repeats = bench_core.repeats_for(num_tasks, size, quick)
  task_grads = bench_core.stacked_gradients(num_tasks, size)
  params = jnp.zeros((size,), jnp.float32)
  task_losses = jnp.linspace(0.5, 2.0, num_tasks, dtype=jnp.float32)
  before = bench_core.kernel_times(task_grads, repeats)
  state_ms = common.median_ms(lambda: _state_pass(task_grads, task_grads),
                              repeats)
  results = {}
  for method in methods():
    try:
      compiled, args, tx, state = compiled_update(
          method, num_tasks, task_grads, params, task_losses)
      milliseconds = common.median_ms(lambda: compiled(*args), repeats)
    except Exception as error:  # pylint: disable=broad-except
      results[method.name] = (f'error: {type(error).__name__}', None, None,
                              None)
      continue
    stacked = has_stacked_state(state, num_tasks, size)
    results[method.name] = (milliseconds, stacked, tx, peak_bytes(compiled))
    del compiled, args, state
  # The floor, timed again after the methods: the smaller of the two medians
  # (a floor is a lower bound; a busier machine only raises it).
  after = bench_core.kernel_times(task_grads, repeats)
  floors = {key: min(before[key], after[key]) for key in before}
  best_gram = min(floors['xla_gram'], floors['blocked_gram'])
  best_matvec = min(floors['matvec'], floors['weighted_sum'])
  rows = {}
  for name, (milliseconds, stacked, tx, peak) in results.items():
    if isinstance(milliseconds, str):
      rows[name] = (milliseconds, None, None, None)
      continue
    kind = floor_kind(tx, stacked)
    floor = {'wᵀJ': best_matvec, 'JJᵀ + wᵀJ': best_gram + best_matvec,
             'JJᵀ + wᵀJ + state': best_gram + best_matvec + state_ms}[kind]
    rows[name] = (milliseconds, floor, kind, peak)
  return rows, best_gram + best_matvec


def run(quick: bool = False) -> list[dict]:
  shape_list = bench_core.shapes(quick)
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
                'timed in the same run before and after the methods (smaller '
                'median kept); "+ state" adds one jitted β s + (1-β) J pass '
                'for methods with a T x P state; loss-level methods need only '
                'wᵀ J. Target: <= 1.25 for Gramian methods at T >= 8. Inputs '
                'are N(0, 1) gradients and losses in [0.5, 2].' + skip_note),
  }
  time_table = {
      'title': 'Balancer update time (ms) and the floor J Jᵀ + wᵀ J (ms)',
      'columns': ['method'] + columns,
      'rows': ([['floor J Jᵀ + wᵀ J'] + floor_row]
               + [[name] + times[name] for name in names]),
      'notes': 'Median wall time of one jitted update.' + skip_note,
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
