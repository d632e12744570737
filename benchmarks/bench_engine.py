"""The Gramian engine against the stacked path: peak memory, time and FLOPs.

Two ways to one balanced update of an MLP with a shared trunk and one linear
head per task (the heads are task-specific):

* stacked: ``mtl.value_and_task_grads`` (one forward, T backward passes,
  unrolled: its fastest setting on CPU) gives the ``T x P`` gradients, then
  ``mtl.upgrad(T)`` (or ``mtl.mgda(T)``) forms their Gramian and ``wᵀ J``.
* engine: ``mtl.value_and_balanced_grad(fn, mtl.weightings.upgrad(),
  chunk_size=c)`` builds the Gramian column by column (``G e_t = J Jᵀ e_t``,
  ``c`` columns at a time) and makes one more reverse pass for ``Jᵀ w``.

Peak memory is read from each compiled function's memory analysis:
arguments + outputs + temporaries - aliased bytes (nothing is run for it, so
it is exact for this backend and independent of the machine's load). Times
are the fastest of interleaved repeats (``common.interleaved_ms`` with
``'min'``: the machine is shared). FLOPs are XLA's ``cost_analysis()`` count
of the compiled function; a ``lax.map`` (the chunked engine) is a while loop
whose body XLA counts once, so chunked rows carry the count of the unrolled
engine, which performs the same passes (no padding: c divides T here).
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import common
import mtl_optax as mtl

MB = 2.0**20
GIB = 2.0**30
BATCH = 32
# name -> width W of the two W x W trunk layers: P = 2 W² shared parameters.
MODELS = (('1M', 708), ('10M', 2236))
TASK_COUNTS = (2, 8, 32, 128)
CHUNK_SIZES = (1, 4)  # And c = T (unrolled).
QUICK_MODELS = (('33k', 128),)
QUICK_TASK_COUNTS = (2, 8)
MAX_RUN_BYTES = 4 * GIB  # Larger compiled peaks are analysed, not run.
SLOW_GROUP_S = 8.0  # A cell whose variants take longer is timed once.


def _params(width: int, num_tasks: int):
  keys = jax.random.split(jax.random.key(0), 3)
  scale = 1.0 / np.sqrt(width)
  return {'trunk': {'w1': scale * jax.random.normal(keys[0], (width, width)),
                    'w2': scale * jax.random.normal(keys[1], (width, width))},
          'heads': scale * jax.random.normal(keys[2], (width, num_tasks))}


def _data(width: int, num_tasks: int):
  keys = jax.random.split(jax.random.key(1), 2)
  return (jax.random.normal(keys[0], (BATCH, width)),
          jax.random.normal(keys[1], (BATCH, num_tasks)))


def task_losses(params, x, y):
  """``[T]`` mean squared errors of the T heads on a shared tanh trunk."""
  hidden = jnp.tanh(x @ params['trunk']['w1'])
  hidden = jnp.tanh(hidden @ params['trunk']['w2'])
  return jnp.mean((hidden @ params['heads'] - y) ** 2, axis=0)


TASK_SPECIFIC = {'trunk': False, 'heads': True}


def _stacked(num_tasks: int, method: str):
  tx = getattr(mtl, method)(num_tasks, task_specific=TASK_SPECIFIC)

  def update(params, state, x, y):
    losses, task_grads = mtl.value_and_task_grads(task_losses)(params, x, y)
    return tx.update(task_grads, state, params, task_losses=losses)[0]

  return update, tx.init


def _engine(num_tasks: int, method: str, chunk_size: int):
  weighting = getattr(mtl.weightings, method)()
  step = mtl.value_and_balanced_grad(task_losses, weighting,
                                     chunk_size=chunk_size,
                                     task_specific=TASK_SPECIFIC)

  def update(params, state, x, y):
    return step(params, state, x, y)[1]

  return update, lambda params: weighting.init(num_tasks)


def variants(num_tasks: int):
  """``[(label, path, method, chunk_size, (update, init))]`` for one T."""
  found = []
  for method in ('upgrad', 'mgda'):
    found.append((f'stacked {method}', 'stacked', method, None,
                  _stacked(num_tasks, method)))
    chunks = [c for c in CHUNK_SIZES if c < num_tasks] + [num_tasks]
    if method == 'mgda':  # The weighting changes nothing in the passes.
      chunks = chunks[:1]
    for chunk in chunks:
      found.append((f'engine {method} c={chunk}', 'engine', method, chunk,
                    _engine(num_tasks, method, chunk)))
  return found


def _memory(compiled) -> dict[str, float]:
  analysis = compiled.memory_analysis()
  sizes = {'argument': analysis.argument_size_in_bytes,
           'output': analysis.output_size_in_bytes,
           'temp': analysis.temp_size_in_bytes}
  sizes['peak'] = sum(sizes.values()) - analysis.alias_size_in_bytes
  return sizes


def _flops(compiled) -> float | None:
  """XLA's FLOP count of a compiled (or lowered) function, if it gives one."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older jaxlibs: one per program.
    analysis = analysis[0] if analysis else None
  if not analysis or 'flops' not in analysis:
    return None
  return float(analysis['flops'])


def _max_relative_difference(grads, reference) -> float:
  worst = 0.0
  for leaf, expected in zip(jax.tree.leaves(grads),
                            jax.tree.leaves(reference)):
    leaf, expected = np.asarray(leaf), np.asarray(expected)
    worst = max(worst, float(np.max(np.abs(leaf - expected))
                             / max(np.max(np.abs(expected)), 1e-30)))
  return worst


def measure_cell(width: int, num_tasks: int, quick: bool) -> list[dict]:
  """Memory, FLOPs, time and agreement of every variant at one (model, T)."""
  params = _params(width, num_tasks)
  x, y = _data(width, num_tasks)
  found = []
  for label, path, method, chunk, (update, init) in variants(num_tasks):
    if label == 'stacked mgda' and not found[0]['run']:
      # Not run either: its memory is stacked UPGrad's (same T x P stack).
      found.append(dict(found[0], label=label, method=method,
                        flops=None, analysed='as stacked upgrad'))
      continue
    state = init(params)
    compiled = jax.jit(update).lower(params, state, x, y).compile()
    sizes = _memory(compiled)
    found.append({'label': label, 'path': path, 'method': method,
                  'chunk': chunk, 'call': compiled,
                  'args': (params, state, x, y), 'flops': _flops(compiled),
                  'peak': sizes['peak'], 'temp': sizes['temp'],
                  'run': sizes['peak'] <= MAX_RUN_BYTES})
  for cell in found:
    if cell['path'] == 'engine' and cell['chunk'] != num_tasks:
      # The unrolled engine's count, from its lowered (not compiled) HLO,
      # which for unrolled functions agrees with the compiled count to ~1%.
      update, init = _engine(num_tasks, cell['method'], num_tasks)
      cell['flops'] = _flops(jax.jit(update).lower(
          params, init(params), x, y))

  runnable = [cell for cell in found if cell['run']]
  outputs, first = {}, {}
  for cell in runnable:  # Warm-up, timed: one interleaved round.
    start = time.perf_counter()
    outputs[cell['label']] = jax.block_until_ready(
        cell['call'](*cell['args']))
    first[cell['label']] = 1e3 * (time.perf_counter() - start)
  for cell in runnable:
    stacked = f"stacked {cell['method']}"
    reference = outputs.get(stacked)
    stacked = next(c for c in found if c['label'] == stacked)
    cell['difference'] = (None if reference is None or cell is stacked else
                          _max_relative_difference(outputs[cell['label']],
                                                   reference))
  del outputs
  fns = {cell['label']: (lambda cell=cell: cell['call'](*cell['args']))
         for cell in runnable}
  if sum(first.values()) > 1e3 * SLOW_GROUP_S:
    times, cell_note = first, 'once'
  else:
    times = common.interleaved_ms(fns, 3 if quick else 5, 'min')
    cell_note = 'min'
  for cell in found:
    cell['ms'] = times.get(cell['label'])
    cell['timing'] = cell_note if cell['run'] else 'not run'
    del cell['call'], cell['args']
    print(f"  W={width} T={num_tasks} {cell['label']}: peak "
          f"{cell['peak'] / MB:.1f} MiB, {cell['ms']} ms", file=sys.stderr,
          flush=True)
  return found


def _ratio(value, reference):
  if value is None or reference is None or not reference:
    return None
  return value / reference


def _crossover(cells_by_t, label):
  """Words for the T at which ``label`` is faster than ``stacked upgrad``."""
  faster, slower = [], []
  for num_tasks, cells in cells_by_t.items():
    by_label = {cell['label']: cell for cell in cells}
    engine = by_label.get(label.replace('c=T', f'c={num_tasks}'))
    stacked = by_label['stacked upgrad']
    if engine and engine['ms'] is not None and stacked['ms'] is not None:
      (faster if engine['ms'] < stacked['ms'] else slower).append(num_tasks)
  if not faster and not slower:
    return 'not measured'
  listed = lambda ts: 'T=' + ', '.join(map(str, ts))
  if not slower:
    return f'faster at every measured T ({listed(faster)})'
  if not faster:
    return f'slower at every measured T ({listed(slower)})'
  if min(faster) > max(slower):
    return f'faster from T={min(faster)} (slower at T={max(slower)})'
  return (f'no single crossover: faster at {listed(faster)}; slower at '
          f'{listed(slower)}')


def run(quick: bool = False) -> list[dict]:
  models = QUICK_MODELS if quick else MODELS
  task_counts = QUICK_TASK_COUNTS if quick else TASK_COUNTS
  rows, summary, not_run = [], [], []
  target_t = 32 if 32 in task_counts else max(task_counts)
  for name, width in models:
    cells_by_t = {}
    for num_tasks in task_counts:
      cells = measure_cell(width, num_tasks, quick)
      cells_by_t[num_tasks] = cells
      by_method = {cell['method']: cell for cell in cells
                   if cell['path'] == 'stacked'}
      for cell in cells:
        stacked = by_method[cell['method']]
        rows.append([
            name, num_tasks, cell['label'], cell['peak'] / MB,
            cell['temp'] / MB, _ratio(cell['peak'], stacked['peak']),
            cell['ms'], _ratio(cell['ms'], stacked['ms']),
            None if cell['flops'] is None else cell['flops'] / 1e9,
            _ratio(cell['flops'], stacked['flops']),
            cell.get('difference'), cell['timing']])
        if not cell['run']:
          not_run.append(f"{name} T={num_tasks} {cell['label']} "
                         f"({cell['peak'] / GIB:.1f} GiB"
                         + (', not compiled: the stack is stacked upgrad\'s'
                            if cell.get('analysed') else '') + ')')
    at_target = {cell['label']: cell for cell in cells_by_t[target_t]}
    stacked = at_target['stacked upgrad']
    for chunk in [c for c in CHUNK_SIZES if c < target_t] + ['T']:
      label = f'engine upgrad c={chunk}'
      key = label.replace('c=T', f'c={target_t}')
      engine = at_target[key]
      peak_ratio = _ratio(engine['peak'], stacked['peak'])
      time_ratio = _ratio(engine['ms'], stacked['ms'])
      summary.append([
          name, target_t, label, peak_ratio,
          None if peak_ratio is None else peak_ratio <= 1 / 8,
          time_ratio, None if time_ratio is None else time_ratio <= 1.5,
          _crossover(cells_by_t, label)])
  skipped = (' Analysed but not run (compiled peak over '
             f'{MAX_RUN_BYTES / GIB:g} GiB on this shared 23 GiB machine): '
             + '; '.join(not_run) + '.') if not_run else ''
  widths = ', '.join(f'{name}: W = {width}, P = {2 * width * width}'
                     for name, width in models)
  table = {
      'title': 'Stacked path vs Gramian engine: peak memory, time, FLOPs',
      'columns': ['model', 'T', 'path', 'peak MiB', 'temp MiB',
                  'peak / stacked', 'ms', 'time / stacked', 'GFLOP',
                  'FLOPs / stacked', 'max rel. diff', 'timing'],
      'rows': rows,
      'notes': (
          f'MLP: x [{BATCH}, W] -> tanh(W x W) -> tanh(W x W) -> [W, T] heads '
          f'(task-specific), one MSE loss per head ({widths} shared '
          'parameters). "stacked": value_and_task_grads (unrolled) + '
          'mtl.upgrad(T) / mtl.mgda(T); "engine": value_and_balanced_grad '
          'with that weighting and chunk_size c (c = T unrolls one column per '
          'task). Peak = argument + output + temp - alias bytes from the '
          'compiled memory analysis; ratios are against the stacked path of '
          'the same method. Time: one update, fastest of interleaved repeats '
          f'("min"); where a cell\'s variants take over {SLOW_GROUP_S:g} s '
          'together, the one timed round that follows compilation ("once"). '
          'GFLOP: XLA cost_analysis of '
          'the compiled update; chunked engine rows carry the count of the '
          'unrolled engine (c = T) of the same weighting, read from its '
          'lowered HLO, as XLA counts a while loop\'s body once (the '
          'weightings\' solver loops are counted once on both paths; they '
          'work on T x T matrices). max rel. '
          'diff: largest |engine - stacked| / max |stacked| over the '
          'update\'s leaves.' + skipped),
  }
  summary_table = {
      'title': f'Targets at T = {target_t} '
               '(engine UPGrad vs stacked UPGrad) and the crossover in T',
      'columns': ['model', 'T', 'engine', 'peak / stacked', 'peak <= 1/8',
                  'time / stacked', 'time <= 1.5x', 'time crossover'],
      'rows': summary,
      'notes': ('Targets of the engine: peak memory <= 1/8 of the stacked '
                'path\'s and time <= 1.5x at T = 32. "time crossover": the '
                'smallest measured T from which that engine variant is '
                'faster than the stacked path.'),
  }
  return [table, summary_table]


if __name__ == '__main__':
  for result in run(quick=True):
    print(result['title'])
    print(result['columns'])
    for result_row in result['rows']:
      print(['%.3g' % v if isinstance(v, float) else v for v in result_row])
