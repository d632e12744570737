"""The core's passes and the solvers on the default device (GPU, TPU or CPU).

Table 1 asks how close the Gramian ``J Jᵀ`` and the weighted sum ``wᵀ J`` come
to the device's memory bandwidth: both read the ``[T, P]`` float32 stacked
gradients once, so ``T·P·4`` bytes over the time is their achieved bandwidth.
It is divided by two peaks: the nominal one (a table of known devices, or
``--peak-gbs``) and the practical one, the best of a plain copy
(``2·T·P·4`` bytes moved) and a sum (``T·P·4`` bytes read) on the same array.

Table 2 times what runs between the two passes: one update of each solver-
based method on a Jacobian so narrow (``P = 256``) that its two passes cost
nothing next to the weighting, at T = 8, 32 and 128, and
``mtl.min_norm_weights`` alone on the Gramian.

One command runs it (under 5 minutes on a GPU)::

  python benchmarks/run.py --only device
  python benchmarks/bench_device.py --peak-gbs 4800   # a device not in the table

(``MTL_PEAK_GBS=4800 python benchmarks/run.py --only device`` is the same.)
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp

import bench_balancers
import common
import mtl_optax as mtl

GB = 1e9
# Nominal memory bandwidth (GB/s) by the start of jax's device_kind. Sources:
# the vendors' data sheets (NVIDIA H200/H100/A100/L4/V100, Google Cloud TPU
# system architecture pages).
NOMINAL_GBS = {
    'NVIDIA H200': 4800.0,
    'NVIDIA H100 80GB HBM3': 3350.0,  # SXM.
    'NVIDIA H100 PCIe': 2000.0,
    'NVIDIA H100 NVL': 3900.0,
    'NVIDIA A100-SXM4-80GB': 2039.0,
    'NVIDIA A100 80GB PCIe': 1935.0,
    'NVIDIA A100-SXM4-40GB': 1555.0,
    'NVIDIA A100-PCIE-40GB': 1555.0,
    'NVIDIA L4': 300.0,
    'NVIDIA A10G': 600.0,
    'Tesla V100-SXM2-16GB': 900.0,
    'Tesla V100-SXM2-32GB': 900.0,
    'TPU v4': 1228.0,
    'TPU v5 lite': 819.0,
    'TPU v5p': 2765.0,
    'TPU v6 lite': 1640.0,
}
SOLVER_METHODS = ('mgda', 'upgrad', 'dualproj', 'cagrad', 'fairgrad',
                  'nash_mtl', 'aligned_mtl', 'imtl.gradient', 'config')
SOLVER_WIDTH = 256  # P of the solver table: the passes over J are negligible.


def nominal_gbs(device_kind: str) -> float | None:
  """``MTL_PEAK_GBS`` (set by ``--peak-gbs``), else the table, else None."""
  env = os.environ.get('MTL_PEAK_GBS')
  if env:
    return float(env)
  matches = [kind for kind in NOMINAL_GBS if device_kind.startswith(kind)]
  return NOMINAL_GBS[max(matches, key=len)] if matches else None


def shapes(quick: bool) -> list[tuple[int, int]]:
  if quick:
    return [(8, 2**18), (32, 2**16)]
  if jax.default_backend() == 'cpu':  # Stay within a small machine's memory.
    return [(8, 2**20), (8, 10**6), (32, 2**20), (32, 10**6), (128, 2**20)]
  return [(t, p) for t in (8, 32, 128)
          for p in (2**20, 10**6, 2**24, 16 * 10**6)]


def _copy(task_grads):
  return task_grads * 2.0  # Reads and writes every element once.


def _sum(task_grads):
  return jnp.sum(task_grads, axis=1)  # Reads every element once.


def _gram(task_grads):
  return mtl.gramian(task_grads)[0]


KERNELS = {
    'copy': jax.jit(_copy),
    'sum': jax.jit(_sum),
    'gramian': jax.jit(_gram),
    'weighted_sum': jax.jit(mtl.weighted_sum),
}


def bandwidth_table(quick: bool) -> dict:
  device = jax.devices()[0]
  nominal = nominal_gbs(device.device_kind)
  repeats = 3 if quick else 10
  rows = []
  for num_tasks, size in shapes(quick):
    task_grads = jax.random.normal(jax.random.key(0), (num_tasks, size),
                                   jnp.float32)
    weights = jnp.linspace(0.5, 1.5, num_tasks, dtype=jnp.float32)
    times = common.interleaved_ms({
        'copy': lambda: KERNELS['copy'](task_grads),
        'sum': lambda: KERNELS['sum'](task_grads),
        'gramian': lambda: KERNELS['gramian'](task_grads),
        'weighted_sum': lambda: KERNELS['weighted_sum'](weights, task_grads),
    }, repeats, 'min')
    del task_grads
    nbytes = num_tasks * size * 4
    practical = max(2 * nbytes / times['copy'], nbytes / times['sum']) * 1e3
    gram_gbs = nbytes / times['gramian'] * 1e3 / GB
    combine_gbs = nbytes / times['weighted_sum'] * 1e3 / GB
    rows.append([
        num_tasks, f'{size:.3g}', times['gramian'], gram_gbs,
        gram_gbs / (nominal or float('nan')), gram_gbs * GB / practical,
        times['weighted_sum'], combine_gbs,
        combine_gbs * GB / practical, practical / GB])
  nominal_note = (f'{nominal:g} GB/s' if nominal else
                  'unknown for this device (pass --peak-gbs or set '
                  'MTL_PEAK_GBS)')
  return {
      'title': f'Achieved bandwidth of J Jᵀ and wᵀ J on {device.device_kind} '
               f'({jax.default_backend()})',
      'columns': ['T', 'P', 'gramian() ms', 'J Jᵀ GB/s', 'J Jᵀ / nominal',
                  'J Jᵀ / practical', 'weighted_sum() ms', 'wᵀJ GB/s',
                  'wᵀJ / practical', 'practical GB/s'],
      'rows': rows,
      'notes': ('Both kernels read the stacked gradients once: T·P·4 bytes '
                'over the fastest of interleaved repeats. Nominal peak: '
                f'{nominal_note}. Practical peak: the best of a jitted '
                'copy (2·T·P·4 bytes) and a row sum (T·P·4 bytes) on the same '
                'array, timed with them. gramian() includes its float32 '
                'over/underflow check.'),
  }


def solver_table(quick: bool) -> dict:
  task_counts = (8, 32) if quick else (8, 32, 128)
  methods = [method for method in bench_balancers.methods()
             if method.name in SOLVER_METHODS]
  repeats = 3 if quick else 10
  columns = ['method'] + [f'T={t} (ms)' for t in task_counts]
  rows = {method.name: [method.name] for method in methods}
  rows['min_norm_weights'] = ['min_norm_weights (solver alone)']
  solve = jax.jit(lambda gram: mtl.min_norm_weights(gram)[0])
  for num_tasks in task_counts:
    task_grads = jax.random.normal(jax.random.key(1),
                                   (num_tasks, SOLVER_WIDTH), jnp.float32)
    # Shared component + noise: conflicting but correlated tasks.
    task_grads = task_grads + 0.5 * task_grads[:1]
    params = jnp.zeros((SOLVER_WIDTH,), jnp.float32)
    task_losses = jnp.linspace(0.5, 2.0, num_tasks, dtype=jnp.float32)
    calls = {}
    for method in methods:
      compiled, args, _, _ = bench_balancers.compiled_update(
          method, num_tasks, task_grads, params, task_losses)
      calls[method.name] = (lambda compiled=compiled, args=args:
                            compiled(*args))
    gram = _gram(task_grads)
    calls['min_norm_weights'] = lambda gram=gram: solve(gram)
    times = common.interleaved_ms(calls, repeats, 'min')
    for name, milliseconds in times.items():
      rows[name].append(milliseconds)
    print(f'  solvers at T={num_tasks} done', file=sys.stderr, flush=True)
  return {
      'title': 'Solver time per call: one jitted update at P = '
               f'{SOLVER_WIDTH} (ms)',
      'columns': columns,
      'rows': list(rows.values()),
      'notes': ('At this width the Gramian and the weighted sum are a few '
                'microseconds, so the time is the weighting (solver, '
                'checks, state) and the launch overhead of the device. '
                'Gradients: N(0, 1) plus half of the first task\'s, so tasks '
                'conflict and correlate. Fastest of interleaved repeats; '
                'hyper-parameters as in mtl_optax/catalog.py.'),
  }


def run(quick: bool = False) -> list[dict]:
  return [bandwidth_table(quick), solver_table(quick)]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--peak-gbs', type=float, default=None,
                      help='nominal memory bandwidth of the device (GB/s)')
  args = parser.parse_args(argv)
  if args.peak_gbs is not None and args.peak_gbs <= 0:
    parser.error('--peak-gbs must be positive')
  if args.peak_gbs is not None:
    os.environ['MTL_PEAK_GBS'] = str(args.peak_gbs)
  # The runner prints the tables and writes results/device.{md,json}.
  import run as runner  # pylint: disable=g-import-not-at-top
  out = ['--only', 'device'] + (['--quick'] if args.quick else [])
  return runner.main(out)


if __name__ == '__main__':
  sys.exit(main())
