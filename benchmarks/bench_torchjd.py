"""The same aggregations through TorchJD, on the same Jacobians.

TorchJD (SimplexLab/TorchJD) aggregates a Jacobian matrix ``J`` ``[T, P]``
into one update vector; for its Gramian-based aggregators it computes
``J Jᵀ`` with torch's CPU matmul, solves for the weights in Python, and
combines. Each of its aggregators that has a counterpart here (found by name
among the methods of ``mtl_optax/catalog.py``) is timed on the same float32
matrix as our jitted update; the ratio is ours / theirs (< 1: we are faster).

Needs the optional ``bench`` extra (``pip install -e '.[bench]'``: CPU torch
and torchjd with its quadprog projector, for UPGrad and DualProj). Without it
the table says so and holds no rows. TorchJD's CAGrad and Nash-MTL need
cvxpy (``torchjd[cagrad]``, ``torchjd[nash_mtl]``), which the extra leaves
out; their cells say so.

Table 2 measures our public ``mtl.gramian`` against the machine's
best BLAS on the same ``[T, P] × [P, T]`` product (numpy's and torch's
``J @ J.T``, and torch's on one thread: the rate per core) and against a
streaming read of ``J``: the first bounds a compute-bound Gramian (T = 32,
128), the second a bandwidth-bound one (T = 8). It needs neither torch nor
torchjd; without torch its torch cells say so.

The peer side (TorchJD, torch, numpy) runs in a process of its own,
``torchjd_worker.py``, on a saved copy of the same ``J``, alternated with
ours: that module's docstring says why.
"""

import json
import os
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import bench_balancers
import bench_core
import common
import torchjd_worker
from mtl_optax._src import native

# TorchJD aggregator -> (candidate method names in mtl_optax/catalog.py,
# keyword arguments matching our registry's hyper-parameters).
COUNTERPARTS = {
    'Mean': (('equal_weighting',), {}),
    'Sum': ((), {}),
    'MGDA': (('mgda',), {}),
    'UPGrad': (('upgrad',), {}),
    'DualProj': (('dualproj', 'dual_proj'), {}),
    'PCGrad': (('pcgrad',), {}),
    'IMTLG': (('imtl_g', 'imtlg', 'imtl'), {}),
    'AlignedMTL': (('aligned_mtl',), {}),
    'CAGrad': (('cagrad',), {'c': 'c'}),
    'ConFIG': (('config',), {}),
    'NashMTL': (('nash_mtl',), {}),
    'FairGrad': (('fairgrad',), {'alpha': 'alpha'}),
    'GradDrop': (('graddrop',), {}),
    'GradVac': (('gradvac',), {'beta': 'beta'}),
    'Random': (('rlw',), {}),
}
DEFAULTS = {'CAGrad': {'c': 0.5}, 'FairGrad': {'alpha': 1.0},
            'NashMTL': {}}


WORKER = pathlib.Path(__file__).with_name('torchjd_worker.py')
WORKER_TIMEOUT_S = 1200
ROUNDS = 2  # Of (ours, then the peer's process) per shape, fastest of all.
TORCH_THREADS = os.cpu_count()


def _find(methods, candidates):
  by_name = {method.name: method for method in methods}
  for candidate in candidates:
    if candidate in by_name:
      return by_name[candidate]
    for method in methods:
      if method.name.split('.')[0] == candidate:
        return method
  return None


def _torchjd_kwargs(name, method, num_tasks) -> dict:
  """TorchJD's keyword arguments for ``name``, our method's hyper-parameters."""
  kwargs = dict(DEFAULTS.get(name, {}))
  for theirs, ours in COUNTERPARTS[name][1].items():
    if method is not None and ours in method.kwargs:
      kwargs[theirs] = float(method.kwargs[ours])
  if name == 'NashMTL':
    kwargs['n_tasks'] = num_tasks
  return kwargs


def _peer(path: str, aggregators: dict, blas: list[str],
          repeats: int) -> dict:
  """The worker's answer (torchjd_worker.measure) on the ``J`` saved at path."""
  request = {'path': path, 'aggregators': aggregators, 'blas': blas,
             'known': list(COUNTERPARTS), 'use_torch': common.installed('torch'),
             'threads': TORCH_THREADS, 'repeats': repeats}
  try:
    return common.json_from_process([str(WORKER), json.dumps(request)],
                                    WORKER_TIMEOUT_S)
  except RuntimeError as error:
    raise RuntimeError(f'torchjd_worker.py failed: {error}') from error


def _alternated(task_grads: jax.Array, ours: dict, aggregators: dict,
                blas: list[str], repeats: int) -> tuple[dict, dict]:
  """``(ours ms, peer answer)``: the fastest over ``ROUNDS`` alternations.

  Each round times our calls in this process, then the peer's in a process
  of its own on a saved copy of the same ``J``; a change of the shared
  machine's load then reaches both sides.
  """
  best_ours, peer = {}, None
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, 'jacobian.npy')
    np.save(path, np.asarray(task_grads))
    for _ in range(ROUNDS):
      best_ours = common.fastest(
          best_ours, common.interleaved_ms(ours, repeats, 'min'))
      answer = _peer(path, aggregators, blas, repeats)
      if peer is not None:
        answer['ms'] = common.fastest(peer['ms'], answer['ms'])
      peer = answer
  return best_ours, peer


def shapes(quick: bool) -> list[tuple[int, int]]:
  if quick:
    return [(8, 10**5)]
  return [(t, p) for t in (8, 32) for p in (10**6, 2**20, 4 * 10**6, 2**22)]


def _compiled_updates(pairs, num_tasks, task_grads):
  """``(calls, failures)``: our jitted update per TorchJD name."""
  size = task_grads.shape[1]
  params = jnp.zeros((size,), jnp.float32)
  task_losses = jnp.linspace(0.5, 2.0, num_tasks, dtype=jnp.float32)
  calls, failures = {}, {}
  for name, method in pairs:
    try:
      compiled, args, _, _ = bench_balancers.compiled_update(
          method, num_tasks, task_grads, params, task_losses)
      jax.block_until_ready(compiled(*args))
    except Exception as error:  # pylint: disable=broad-except
      failures[name] = f'ours failed: {type(error).__name__}'
      continue
    calls[name] = (lambda c, a: lambda: c(*a))(compiled, args)
  return calls, failures


def aggregator_table(quick: bool) -> dict:
  """Table 1: our jitted updates against TorchJD's aggregators."""
  columns = ['method (TorchJD / ours)']
  shape_list = shapes(quick)
  columns += [f'T={t} P={p:.3g}' for t, p in shape_list]
  title = ('Our jitted update / TorchJD aggregator on the same Jacobian '
           '(time ratio, < 1: ours faster)')
  if not common.installed('torch', 'torchjd'):
    return {'title': title, 'columns': columns, 'rows': [],
            'notes': 'Skipped: torch or torchjd is not installed (install the '
                     "optional extra: pip install -e '.[bench]')."}
  methods = bench_balancers.methods()
  pairs = [(name, _find(methods, candidates))
           for name, (candidates, _) in COUNTERPARTS.items()]
  pairs = [(name, method) for name, method in pairs if method is not None]
  repeats = 3 if quick else 5
  cells = {name: [] for name, _ in pairs}
  detail = {name: [] for name, _ in pairs}
  kernel_row = ['J Jᵀ kernel: ours / torch matmul']
  xla_row = ['J Jᵀ kernel: ours without the native kernel / torch matmul']
  available = set()
  for num_tasks, size in shape_list:
    task_grads = bench_core.stacked_gradients(num_tasks, size)
    calls, failures = _compiled_updates(pairs, num_tasks, task_grads)
    calls['J Jᵀ'] = lambda: bench_core.KERNELS['blocked_gram'](task_grads)
    calls['J Jᵀ XLA'] = (
        lambda: bench_core.KERNELS['xla_blocked_gram'](task_grads))
    aggregators = {name: _torchjd_kwargs(name, method, num_tasks)
                   for name, method in pairs if name in calls}
    ours, peer = _alternated(task_grads, calls, aggregators,
                             ['torch J @ J.T'], repeats)
    available.update(peer['available'])
    kernel_row.append(ours['J Jᵀ'] / peer['ms']['torch J @ J.T'])
    xla_row.append(ours['J Jᵀ XLA'] / peer['ms']['torch J @ J.T'])
    for name, _ in pairs:
      if name in failures or name in peer['cells']:
        cells[name].append(failures.get(name) or peer['cells'][name])
        continue
      theirs = peer['ms'][name]
      cells[name].append(ours[name] / theirs)
      detail[name].append((num_tasks, size, ours[name], theirs))
    del task_grads, calls
  rows = [kernel_row, xla_row] + [[f'{name} / {method.name}'] + cells[name]
                         for name, method in pairs
                         if name in available or not available]
  missing = sorted(available - {name for name, _ in pairs})
  times = '; '.join(
      f'{name}: ' + ', '.join(f'T={t} P={p:.3g} {ours:.1f}/{theirs:.1f} ms'
                              for t, p, ours, theirs in entries)
      for name, entries in detail.items() if entries)
  notes = (f'Fastest of {ROUNDS} rounds of {repeats} calls each. In a round '
           'ours are timed in this process (one jitted update: Gramian, '
           'weighting, weighted sum, state; every method interleaved), then '
           "TorchJD's in a process of its own (benchmarks/torchjd_worker.py: "
           'no JAX threads beside torch\'s) on a saved copy of the same '
           f'float32 J, torch threads = {TORCH_THREADS}, under no_grad. '
           f'Milliseconds (ours/theirs): {times}.')
  if missing:
    notes += (' TorchJD aggregators without a counterpart here yet: '
              + ', '.join(missing) + '.')
  return {'title': title, 'columns': columns, 'rows': rows, 'notes': notes}


# Table 2: the Gramian against the machine's best BLAS.
GEMM_TARGET = 0.7  # Of the best BLAS rate (T >= 32), of a streaming read (T=8).
BYTES_PER_ENTRY = 4  # float32.
NOT_INSTALLED = 'not installed'


def gemm_shapes(quick: bool) -> list[tuple[int, int]]:
  if quick:
    return [(8, 2**16)]
  return [(t, p) for t in (8, 32, 128) for p in (2**18, 2**20, 4 * 10**6)]


def gemm_rates(num_tasks: int, size: int, ours_ms: float, blas_ms: float,
               read_ms: float) -> dict[str, float]:
  """One row's rates and fractions from its three times in milliseconds.

  The FLOP count is a full GEMM's, ``2 T² P`` (a multiply and an add per
  entry of ``[T, P] × [P, T]``), for every side alike, although a symmetric
  kernel needs only half of it; the bytes are one read of ``J``, ``4 T P``.
  GFLOP/s and GB/s are decimal (1e9). The fractions are ours / theirs as
  rates, i.e. their time over ours (1: as fast, < 1: slower).
  """
  flops = 2.0 * num_tasks**2 * size
  nbytes = float(BYTES_PER_ENTRY * num_tasks * size)
  per_ms_to_giga = 1e-6  # x / ms = 1e3 x / s = 1e-6 Gx / s.
  return {
      'ours_gflops': flops / ours_ms * per_ms_to_giga,
      'blas_gflops': flops / blas_ms * per_ms_to_giga,
      'of_blas': blas_ms / ours_ms,
      'read_gbs': nbytes / read_ms * per_ms_to_giga,
      'ours_gbs': nbytes / ours_ms * per_ms_to_giga,
      'of_read': read_ms / ours_ms,
  }


def _blas_threads() -> str:
  named = common.environment(
      ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'))
  return ', '.join(named) if named else 'no thread variable set (all cores)'


PEER_MATMULS = ['numpy J @ J.T', 'torch J @ J.T']
PEER_READS = ['numpy J.sum()', 'numpy 1 @ J', 'torch J.sum()']


def _gemm_row(num_tasks: int, size: int, repeats: int) -> tuple[dict, dict]:
  """``(times in ms by name, the peer's answer)`` of one shape."""
  task_grads = bench_core.stacked_gradients(num_tasks, size)
  jax_sum = jax.jit(jnp.sum)
  ours = {'ours': lambda: bench_core.KERNELS['gramian'](task_grads),
          'ours XLA': lambda: bench_core.KERNELS['xla_blocked_gram'](task_grads),
          'jax jnp.sum(J)': lambda: jax_sum(task_grads)}
  times, peer = _alternated(
      task_grads, ours, {},
      PEER_MATMULS + PEER_READS + [torchjd_worker.ONE_THREAD], repeats)
  times.update(peer['ms'])
  return times, peer


def gemm_table(quick: bool) -> dict:
  """Table 2: ``mtl.gramian`` against the best BLAS and a streaming read."""
  repeats = 3 if quick else 5
  rows, skipped, fastest_reads = [], [], []
  blas_names = {}
  for num_tasks, size in gemm_shapes(quick):
    # J in JAX, its saved copy and the worker's (torch shares the worker's).
    need = 2 * BYTES_PER_ENTRY * num_tasks * size
    if need > bench_core.MAX_BYTES:
      skipped.append(f'T={num_tasks} P={size:.3g} ({need / bench_core.GIB:.1f} '
                     'GiB)')
      continue
    times, peer = _gemm_row(num_tasks, size, repeats)
    blas_names = peer['blas']
    blas_ms = min(times[name] for name in PEER_MATMULS if name in times)
    reads = [name for name in PEER_READS + ['jax jnp.sum(J)'] if name in times]
    read = min(reads, key=times.get)
    fastest_reads.append(f'T={num_tasks} P={size:.3g}: {read}')
    rate = gemm_rates(num_tasks, size, times['ours'], blas_ms, times[read])
    one_thread = times.get(torchjd_worker.ONE_THREAD)
    rows.append([
        num_tasks, size, times['ours'],
        times.get('torch J @ J.T', NOT_INSTALLED), times['numpy J @ J.T'],
        rate['ours_gflops'], rate['blas_gflops'], rate['of_blas'],
        NOT_INSTALLED if one_thread is None else one_thread / times['ours'],
        rate['read_gbs'], rate['ours_gbs'], rate['of_read'],
        times['ours XLA'], blas_ms / times['ours XLA']])
  columns = ['T', 'P', 'ours mtl.gramian ms', 'torch J @ J.T ms',
             'numpy J @ J.T ms', 'ours GFLOP/s', 'best BLAS GFLOP/s',
             'ours / best BLAS rate', 'ours / torch 1-thread rate',
             'streaming read GB/s', 'ours effective GB/s',
             'ours / streaming read', 'ours without native kernel ms',
             'without native / best BLAS rate']
  torch_blas = (f"torch {blas_names['torch']} with {TORCH_THREADS} threads"
                if blas_names.get('torch') else 'torch is not installed, its '
                "cells say so: pip install -e '.[bench]'")
  notes = (
      f'Milliseconds are the fastest of {ROUNDS} rounds of {repeats} calls, '
      'on copies of the same float32 `J` [T, P]. In a round ours are timed in '
      'this process, then numpy\'s and torch\'s in a process of its own '
      '(benchmarks/torchjd_worker.py, without JAX): ours = the jitted public '
      '`mtl.gramian(J)` (the native kernel where it was built, on '
      f'{native.threads()} threads, plus the over/underflow check; '
      f'native kernel built: {native.available()}); ours without native '
      'kernel = the XLA path the library takes where it is absent (column '
      'blocks in a loop, no check); '
      f"numpy `J @ J.T` (numpy BLAS: {blas_names.get('numpy', 'unknown')}, "
      f'{_blas_threads()}; numpy calls BLAS syrk for a matrix times its own '
      'transpose); torch `J @ J.T` under no_grad '
      f'({torch_blas}), and again on 1 thread. Best BLAS = the faster of '
      'numpy and torch. GFLOP/s count a full GEMM, 2·T²·P FLOPs, for '
      'every side (a symmetric kernel such as syrk needs half of them), in '
      '1e9 per second; ours / best BLAS rate = best BLAS ms / ours ms; ours '
      '/ torch 1-thread rate = torch\'s 1-thread ms / ours ms (the rate per '
      'core, ours on all cores). The '
      'streaming read is the fastest of numpy `J.sum()` (one thread), numpy '
      '`ones[T] @ J` (BLAS gemv, threaded, also writes P floats), jax '
      '`jnp.sum(J)` jitted and, with torch, torch `J.sum()` (threaded): '
      'each reads J once and does '
      'at most two FLOPs per entry, so its rate is the memory bandwidth; '
      'its GB/s and ours effective GB/s count 4·T·P bytes (one read of J) in '
      '1e9 per second; ours / streaming read = read ms / ours ms. Targets '
      f'(the project\'s): ours / best BLAS rate ≥ {GEMM_TARGET} at T = 32 and '
      f'128 (compute-bound), ours / streaming read ≥ {GEMM_TARGET} at T = 8 '
      '(bandwidth-bound). Fastest read per row: '
      + '; '.join(fastest_reads) + '.')
  if quick:
    notes += (' Quick mode: one tiny shape that fits in the caches, a '
              'smoke test, not a measurement of the targets.')
  if skipped:
    notes += (' Skipped, more than '
              f'{bench_core.MAX_BYTES / bench_core.GIB:.0f} GiB for J and its '
              'copy: ' + ', '.join(skipped) + '.')
  return {'title': "The Gramian J Jᵀ against the machine's best BLAS",
          'columns': columns, 'rows': rows, 'notes': notes}


def run(quick: bool = False) -> list[dict]:
  return [aggregator_table(quick), gemm_table(quick)]
