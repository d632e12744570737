"""Three CPU measurements behind choices in the library, each A against B.

1. GradDrop's per-coordinate draw: ``jax.random.uniform`` (its former draw)
   against ``graddrop.uniform_draws`` (XLA's threefry generator), alone and
   inside a whole GradDrop update.
2. Convolution gradients inside a loop: XLA's CPU backend does not bring a
   convolution inside a while loop to the layout its fast kernels take, so
   the 4 weight gradients of a 3 x 3 convolution, and the conv net's task
   gradients with ``chunk_size`` (a ``lax.map``), are timed against the
   same work written out.
3. The dual-cone solver's chunks (UPGrad with many tasks): lower bounds
   solved side by side with up to 2^20, 2^21 or 2^22 floats of inverses.

Every row is timed interleaved (fastest of the repeats), in one process.
"""

import jax
import jax.numpy as jnp
import numpy as np

import bench_end_to_end
import common
import mtl_optax as mtl
from mtl_optax._src.methods import graddrop as graddrop_lib
from mtl_optax._src.solvers import dual_cone


def _former_draws(key, shapes):
  """GradDrop's draw before: ``jax.random.uniform``, same key splits."""
  next_key, draw_key = jax.random.split(key)
  leaf_keys = jax.random.split(draw_key, len(shapes))
  return [jax.random.uniform(leaf_key, shape, jnp.float32)
          for shape, leaf_key in zip(shapes, leaf_keys)], next_key


def _compiled(fn, *args):
  compiled = jax.jit(fn).lower(*args).compile()
  return lambda: compiled(*args)


def _graddrop_update(num_tasks, size, draws):
  """A compiled GradDrop update whose draw is ``draws``."""
  saved = graddrop_lib.uniform_draws
  graddrop_lib.uniform_draws = draws  # Read when the update is traced.
  try:
    tx = mtl.graddrop(num_tasks)
    grads = jax.random.normal(jax.random.key(0), (num_tasks, size))
    state = tx.init(jnp.zeros(size))
    return _compiled(lambda g, s: tx.update(g, s, None), grads, state)
  finally:
    graddrop_lib.uniform_draws = saved


def draw_table(quick: bool) -> dict:
  sizes = [10**5] if quick else [10**6, 10**7]
  key = jax.random.key_data(jax.random.key(0))
  rows = []
  for size in sizes:
    calls = {
        'former draw': _compiled(lambda k: _former_draws(k, [(size,)])[0],
                                 key),
        'draw': _compiled(
            lambda k: graddrop_lib.uniform_draws(k, [(size,)])[0], key)}
    for num_tasks in (2, 8):
      calls[f'former T={num_tasks}'] = _graddrop_update(num_tasks, size,
                                                        _former_draws)
      calls[f'T={num_tasks}'] = _graddrop_update(
          num_tasks, size, graddrop_lib.uniform_draws)
    times = common.interleaved_ms(calls, 3 if quick else 10, 'min')
    rows.append([size, times['former draw'], times['draw'],
                 times['draw'] / times['former draw']]
                + [cell for num_tasks in (2, 8) for cell in (
                    times[f'former T={num_tasks}'], times[f'T={num_tasks}'],
                    times[f'T={num_tasks}'] / times[f'former T={num_tasks}'])])
  return {
      'title': "GradDrop's uniform draw: jax.random.uniform (former) "
               'against uniform_draws (XLA threefry)',
      'columns': ['P', 'former draw ms', 'draw ms', 'draw / former',
                  'update T=2 former ms', 'update T=2 ms', 'T=2 / former',
                  'update T=8 former ms', 'update T=8 ms', 'T=8 / former'],
      'rows': rows,
      'notes': 'One float32 draw per coordinate of a [P] leaf; a GradDrop '
               'update of stacked N(0, 1) gradients [T, P] with each draw. '
               'Milliseconds, fastest of the interleaved repeats.'}


def _conv(inputs, kernel):
  return jax.lax.conv_general_dilated(
      inputs, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO',
                                                         'NHWC'))


def conv_table(quick: bool) -> dict:
  keys = jax.random.split(jax.random.key(1), 3)
  batch = 32 if quick else 128
  inputs = jax.random.normal(keys[0], (batch, 14, 14, 16))
  kernel = jax.random.normal(keys[1], (3, 3, 16, 32))
  cotangents = jax.random.normal(keys[2], (4, batch, 14, 14, 32))

  def weight_grad(cotangent):
    return jax.vjp(lambda k: _conv(inputs, k), kernel)[1](cotangent)[0]

  calls = {
      'weights unrolled': _compiled(
          lambda c: jnp.stack([weight_grad(c[t]) for t in range(4)]),
          cotangents),
      'weights lax.map': _compiled(lambda c: jax.lax.map(weight_grad, c),
                                   cotangents)}
  model = [m for m in bench_end_to_end.models(False) if m.kind == 'conv'][0]
  params, x, y = bench_end_to_end.init(model)
  losses = bench_end_to_end.loss_fn(model)
  for chunk_size in (None, 1, 2):
    calls[f'task grads {chunk_size}'] = _compiled(
        mtl.value_and_task_grads(losses, chunk_size=chunk_size), params, x, y)
  times = common.interleaved_ms(calls, 2 if quick else 5, 'min')
  rows = [
      [f'4 weight gradients, 3x3 16→32 conv, {batch}x14x14',
       times['weights unrolled'], times['weights lax.map'],
       times['weights lax.map'] / times['weights unrolled']]]
  for chunk_size in (1, 2):
    rows.append([f'{model.name}: task gradients, chunk_size={chunk_size}',
                 times['task grads None'], times[f'task grads {chunk_size}'],
                 times[f'task grads {chunk_size}'] / times['task grads None']])
  return {
      'title': 'Convolution gradients inside a loop (lax.map) against the '
               'same work written out',
      'columns': ['work', 'written out ms', 'in a lax.map ms',
                  'loop / written out'],
      'rows': rows,
      'notes': 'Written out: one call per cotangent (value_and_task_grads '
               'with chunk_size=None). In a lax.map: the same calls as the '
               'body of a loop (chunk_size=k: chunks of k, vectorised). '
               'Milliseconds, fastest of the interleaved repeats.'}


def _upgrad_update(num_tasks, batch_floats):
  saved = dual_cone._MAX_BATCH_FLOATS  # pylint: disable=protected-access
  dual_cone._MAX_BATCH_FLOATS = batch_floats  # Read when traced.
  try:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(num_tasks, 8))
    matrix[0] = -0.8 * matrix[1:].sum(axis=0) + 0.3 * matrix[0]
    grads = jnp.asarray(matrix, jnp.float32)
    tx = mtl.upgrad(num_tasks)
    state = tx.init(jnp.zeros(8))
    return _compiled(lambda g, s: tx.update(g, s, None), grads, state)
  finally:
    dual_cone._MAX_BATCH_FLOATS = saved  # pylint: disable=protected-access


def dual_cone_table(quick: bool) -> dict:
  task_counts = [64] if quick else [256, 512]
  exponents = (20, 21, 22)
  rows = []
  for num_tasks in task_counts:
    calls = {exponent: _upgrad_update(num_tasks, 2**exponent)
             for exponent in exponents}
    times = common.interleaved_ms(calls, 2, 'min',
                                  budget_s=None)
    rows.append([num_tasks] + [times[e] for e in exponents]
                + [times[21] / times[22]])
  return {
      'title': "UPGrad's dual-cone solves by chunk size (floats of inverses "
               'in flight)',
      'columns': ['T', '2^20 ms', '2^21 ms (the default)', '2^22 ms',
                  '2^21 / 2^22'],
      'rows': rows,
      'notes': 'One UPGrad update of a [T, 8] float32 Jacobian (rank 8, one '
               'task against the others, as the property suite\'s), its T '
               'lower bounds solved in chunks of at most that many floats of '
               '[T, T] inverses. Milliseconds, fastest of the interleaved '
               'repeats. T <= 128 fits one chunk at any of these sizes.'}


def run(quick: bool = False) -> list[dict]:
  return [draw_table(quick), conv_table(quick), dual_cone_table(quick)]
