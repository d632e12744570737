"""Peak memory as the number of tasks grows, from XLA's memory analysis.

Nothing is run: each function is compiled for abstract inputs and its
``memory_analysis()`` read, so the numbers are exact for this backend and do
not depend on the load of the machine. Peak = arguments + outputs +
temporaries - aliased bytes, as in ``bench_balancers.py``.

The model has a shared trunk of ``P`` float32 parameters (two dense layers)
and one linear head per task. Its stacked task gradients hold ``T x P``
floats whatever the method: that is the floor every row is compared with.

* ``value_and_task_grads``: unchunked (one backward pass per task, unrolled)
  against ``chunk_size=8`` (``lax.map`` over chunks of 8 vectorised pulls).
  Its output is the ``T x P`` stack; the temporaries are what chunking bounds.
* ``gramian`` and ``weighted_sum`` read the stack once (an argument) and
  should need ``O(T²)`` temporaries, not a second copy.
* DB-MTL keeps a ``T x P`` EMA of the log-scaled gradients in its state, so
  its update reads one stack of state and writes one.
"""

import jax
import jax.numpy as jnp

import mtl_optax as mtl

MB = 2.0**20
BATCH, IN, HIDDEN = 64, 128, 256
CHUNK_SIZE = 8
TASK_COUNTS = (8, 32, 128, 512)
QUICK_TASK_COUNTS = (8, 32)


def _shape(shape, dtype=jnp.float32):
  return jax.ShapeDtypeStruct(shape, dtype)


def trunk_params():
  return {'w1': _shape((IN, HIDDEN)), 'w2': _shape((HIDDEN, HIDDEN))}


def shared_size() -> int:
  return IN * HIDDEN + HIDDEN * HIDDEN


def task_losses_fn(params, x, y):
  hidden = jnp.tanh(x @ params['w1'])
  hidden = jnp.tanh(hidden @ params['w2'])
  return jnp.mean((hidden @ params['heads'] - y) ** 2, axis=0)


def task_grads_inputs(num_tasks: int):
  params = {**trunk_params(), 'heads': _shape((HIDDEN, num_tasks))}
  return params, _shape((BATCH, IN)), _shape((BATCH, num_tasks))


def stacked(num_tasks: int, dtype=jnp.float32):
  """Abstract stacked task gradients of the trunk: ``T x P``."""
  return {name: _shape((num_tasks,) + leaf.shape, dtype)
          for name, leaf in trunk_params().items()}


def memory(compiled) -> dict[str, float]:
  """Argument, output, temporary and peak MiB of a compiled function."""
  analysis = compiled.memory_analysis()
  sizes = {'argument': analysis.argument_size_in_bytes,
           'output': analysis.output_size_in_bytes,
           'temp': analysis.temp_size_in_bytes}
  sizes['peak'] = sum(sizes.values()) - analysis.alias_size_in_bytes
  return {name: size / MB for name, size in sizes.items()}


def task_grads_memory(num_tasks: int, chunk_size: int | None):
  fn = mtl.value_and_task_grads(task_losses_fn, chunk_size=chunk_size)
  return memory(jax.jit(fn).lower(*task_grads_inputs(num_tasks)).compile())


def gramian_memory(num_tasks: int):
  compiled = jax.jit(mtl.gramian).lower(stacked(num_tasks)).compile()
  return memory(compiled)


def weighted_sum_memory(num_tasks: int):
  compiled = jax.jit(mtl.weighted_sum).lower(
      _shape((num_tasks,)), stacked(num_tasks)).compile()
  return memory(compiled)


def db_mtl_memory(num_tasks: int, donate: bool):
  tx = mtl.db_mtl(num_tasks)
  state = jax.eval_shape(tx.init, trunk_params())

  def update(task_grads, state, task_losses):
    return tx.update(task_grads, state, task_losses=task_losses)

  donate_argnums = (1,) if donate else ()
  compiled = jax.jit(update, donate_argnums=donate_argnums).lower(
      stacked(num_tasks), state, _shape((num_tasks,))).compile()
  state_mb = sum(leaf.size * leaf.dtype.itemsize
                 for leaf in jax.tree.leaves(state)) / MB
  return memory(compiled), state_mb


def _task_grads_table(task_counts):
  rows = []
  for num_tasks in task_counts:
    # Every task's gradient covers all parameters, heads [HIDDEN, T] included.
    stack_mb = 4 * num_tasks * (shared_size() + HIDDEN * num_tasks) / MB
    plain = task_grads_memory(num_tasks, None)
    chunked = task_grads_memory(num_tasks, CHUNK_SIZE)
    rows.append([num_tasks, stack_mb, plain['temp'], plain['peak'],
                 chunked['temp'], chunked['peak'],
                 plain['peak'] / chunked['peak']])
  return {
      'title': 'value_and_task_grads: peak memory (MiB) vs number of tasks',
      'columns': ['T', 'T×P stack', 'unchunked temp', 'unchunked peak',
                  f'chunk_size={CHUNK_SIZE} temp',
                  f'chunk_size={CHUNK_SIZE} peak', 'peak ratio'],
      'rows': rows,
      'notes': (
          f'Trunk P = {shared_size()} float32 parameters ({IN}→{HIDDEN}→'
          f'{HIDDEN}, tanh) plus a [{HIDDEN}, T] head leaf, batch '
          f'{BATCH}. "T×P stack" is the output every variant must hold '
          '(P counts the heads too, so it grows with T). '
          'Unchunked, each backward pass writes its own gradient before '
          'they are stacked, so the temporaries grow like another T×P; with '
          'chunk_size they hold one chunk of gradients and activations and '
          'stay flat in T. Compiled memory analysis, not a measurement.'),
  }


def _gramian_table(task_counts):
  rows = []
  for num_tasks in task_counts:
    stack_mb = 4 * num_tasks * shared_size() / MB
    gram = gramian_memory(num_tasks)
    combine = weighted_sum_memory(num_tasks)
    ema, state_mb = db_mtl_memory(num_tasks, donate=False)
    donated, _ = db_mtl_memory(num_tasks, donate=True)
    rows.append([num_tasks, stack_mb, gram['temp'], gram['peak'],
                 combine['temp'], combine['peak'], state_mb, ema['temp'],
                 ema['peak'], donated['peak']])
  return {
      'title': 'Gramian, weighted sum and DB-MTL: peak memory (MiB) vs T',
      'columns': ['T', 'T×P stack', 'gramian temp', 'gramian peak',
                  'weighted_sum temp', 'weighted_sum peak',
                  'db_mtl state', 'db_mtl update temp', 'db_mtl update peak',
                  'db_mtl peak, state donated'],
      'rows': rows,
      'notes': (
          f'Stacked gradients of the trunk alone (P = {shared_size()}), '
          'float32, given as the argument. The Gramian and the weighted sum '
          'should need temporaries far below T×P (peak ≈ the stack). On CPU '
          'a leaf too small for the blocked Gramian is contracted in one dot '
          'that XLA feeds a transposed copy of the leaf: the T = 8 row. '
          'DB-MTL holds a T×P EMA of the log-scaled gradients in its state '
          '("db_mtl state"): its update reads the gradients and the EMA and '
          'writes the new EMA; donating the state to jit (donate_argnums) '
          'lets the new EMA reuse the old one\'s buffer (last column).'),
  }


def run(quick: bool = False) -> list[dict]:
  task_counts = QUICK_TASK_COUNTS if quick else TASK_COUNTS
  return [_task_grads_table(task_counts), _gramian_table(task_counts)]


if __name__ == '__main__':
  for table in run(quick=True):
    print(table['title'])
    print(table['columns'])
    for row in table['rows']:
      print(['%.3g' % v if isinstance(v, float) else v for v in row])
