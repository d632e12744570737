"""MGDA-UB versus MGDA over the parameters: time per training-gradient step.

MGDA over the parameters needs one forward pass and T backward passes through
the whole network (``mtl.value_and_task_grads``), then the min-norm weights of
the T x P Gramian. MGDA-UB (Sener and Koltun 2018, section 3.3) needs one
forward pass, T backward passes through the heads only, the min-norm weights
of the Gramian of ``∇_z L_t``, and one backward pass through the encoder
(``mtl.representation_balanced_grads``). On a model whose encoder dominates
the cost the ratio should be at least about ``(1 + 2T) / 3`` (forward = 1 unit,
backward = 2 units): the encoder is traversed 1 + T times by MGDA and twice
by MGDA-UB, which then costs about one ordinary gradient. Both steps return
gradients ready for an optimizer; the plain gradient of the summed loss is
the floor.
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import mtl_optax as mtl


def _init_mlp(key, widths):
  params = []
  for fan_in, fan_out in zip(widths[:-1], widths[1:]):
    key, sub = jax.random.split(key)
    params.append({
        'kernel': jax.random.normal(sub, (fan_in, fan_out)) / np.sqrt(fan_in),
        'bias': jnp.zeros(fan_out)})
  return params


def _encoder(params, inputs):
  z = inputs
  for layer in params:
    z = jax.nn.relu(z @ layer['kernel'] + layer['bias'])
  return z


def _heads_losses(head_params, z, targets):
  """T scalar regression heads on z: per-task MSE, shape [T]."""
  predictions = z @ head_params['kernel'] + head_params['bias']  # [B, T]
  return jnp.mean((predictions - targets) ** 2, axis=0)


def _problem(num_tasks, width, depth, batch):
  key = jax.random.key(0)
  encoder_key, head_key, input_key, target_key = jax.random.split(key, 4)
  encoder_params = _init_mlp(encoder_key, [width] * (depth + 1))
  head_params = {
      'kernel': jax.random.normal(head_key, (width, num_tasks)) / np.sqrt(
          width),
      'bias': jnp.zeros(num_tasks)}
  inputs = jax.random.normal(input_key, (batch, width))
  targets = jax.random.normal(target_key, (batch, num_tasks))
  return encoder_params, head_params, inputs, targets


def _steps(num_tasks):
  """``(mgda_step, mgda_ub_step, summed_step)``, each jitted."""
  def head_mask(tree):
    return {'encoder': jax.tree.map(lambda _: False, tree['encoder']),
            'heads': jax.tree.map(lambda _: True, tree['heads'])}

  def losses_fn(params, inputs, targets):
    z = _encoder(params['encoder'], inputs)
    return _heads_losses(params['heads'], z, targets)

  # Heads are task-specific: they stay out of MGDA's Gramian either way.
  mgda = mtl.mgda(num_tasks, task_specific=head_mask)
  per_task = mtl.value_and_task_grads(losses_fn)

  @jax.jit
  def mgda_step(encoder_params, head_params, state, inputs, targets):
    params = {'encoder': encoder_params, 'heads': head_params}
    losses, task_grads = per_task(params, inputs, targets)
    grads, state = mgda.update(task_grads, state, task_losses=losses)
    return losses, grads, state

  ub_balancer = mtl.mgda(num_tasks)
  balanced = mtl.representation_balanced_grads(
      ub_balancer, _encoder, _heads_losses)
  mgda_ub_step = jax.jit(balanced)

  @jax.jit
  def summed_step(encoder_params, head_params, inputs, targets):
    def total(encoder_params, head_params):
      z = _encoder(encoder_params, inputs)
      return jnp.sum(_heads_losses(head_params, z, targets))
    return jax.grad(total, argnums=(0, 1))(encoder_params, head_params)

  return (mgda, mgda_step), (ub_balancer, mgda_ub_step), summed_step


def _median_seconds(fns, repeats):
  """Median wall time of each function; the calls are interleaved, so a
  change in machine load during the run hits every function alike."""
  for fn in fns:
    jax.block_until_ready(fn())  # Warm-up: compiles.
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, fn_times in zip(fns, times):
      start = time.perf_counter()
      jax.block_until_ready(fn())
      fn_times.append(time.perf_counter() - start)
  return [statistics.median(fn_times) for fn_times in times]


def run(quick: bool = False) -> list[dict]:
  width, depth, batch = (128, 4, 64) if quick else (256, 8, 128)
  task_counts = (2, 8) if quick else (2, 8, 16)
  repeats = 3 if quick else 15
  rows = []
  for num_tasks in task_counts:
    encoder_params, head_params, inputs, targets = _problem(
        num_tasks, width, depth, batch)
    (mgda, mgda_step), (ub_balancer, mgda_ub_step), summed_step = _steps(
        num_tasks)
    mgda_state = mgda.init({'encoder': encoder_params, 'heads': head_params})
    ub_state = ub_balancer.init(None)
    summed_time, mgda_time, ub_time = _median_seconds([
        lambda: summed_step(encoder_params, head_params, inputs, targets),
        lambda: mgda_step(encoder_params, head_params, mgda_state, inputs,
                          targets),
        lambda: mgda_ub_step(encoder_params, head_params, ub_state, inputs,
                             targets),
    ], repeats)
    rows.append([num_tasks, f'{1e3 * summed_time:.2f}',
                 f'{1e3 * mgda_time:.2f}', f'{1e3 * ub_time:.2f}',
                 f'{mgda_time / ub_time:.2f}', f'{ub_time / summed_time:.2f}',
                 f'{(1 + 2 * num_tasks) / 3:.2f}'])
  num_params = depth * (width * width + width)
  return [{
      'title': 'MGDA-UB vs MGDA over the parameters (time per step)',
      'columns': ['T', 'summed-loss grad (ms)', 'MGDA (ms)', 'MGDA-UB (ms)',
                  'MGDA / MGDA-UB', 'MGDA-UB / summed',
                  'encoder passes (1+2T)/3'],
      'rows': rows,
      'notes': (
          f'Encoder: {depth}-layer ReLU MLP of width {width} '
          f'({num_params:,} parameters), batch {batch}; T linear scalar '
          'heads with MSE losses. Each step returns optimizer-ready '
          'gradients (MGDA: value_and_task_grads + mgda with the heads '
          'task-specific; MGDA-UB: representation_balanced_grads(mgda)). '
          f'Median of {repeats} interleaved jitted calls after a warm-up. "encoder '
          'passes" is the ratio of encoder work (forward 1 unit, backward 2): '
          '1 + 2T units for MGDA against 3 for MGDA-UB; MGDA also writes and '
          'reads the T x P parameter gradients (Gramian, weighted sum), so '
          'its measured ratio can exceed it. "MGDA-UB / summed" near 1 means '
          'MGDA-UB costs about one ordinary gradient.'),
  }]


if __name__ == '__main__':
  for table in run(quick=False):
    print(table['title'])
    print(' | '.join(table['columns']))
    for row in table['rows']:
      print(' | '.join(str(cell) for cell in row))
    print(table['notes'])
