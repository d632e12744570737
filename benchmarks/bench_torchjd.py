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
``J @ J.T``) and against a streaming read of ``J``: the first bounds a
compute-bound Gramian (T = 32, 128), the second a bandwidth-bound one (T = 8).
It needs neither torch nor torchjd; without torch its torch cells say so.
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

import bench_balancers
import bench_core
import common

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


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torchjd.aggregation  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, None
  return torch, torchjd.aggregation


def _find(methods, candidates):
  by_name = {method.name: method for method in methods}
  for candidate in candidates:
    if candidate in by_name:
      return by_name[candidate]
    for method in methods:
      if method.name.split('.')[0] == candidate:
        return method
  return None


def _torch_aggregator(aggregation, name, method, num_tasks):
  """TorchJD's aggregator ``name`` with our method's hyper-parameters."""
  cls = getattr(aggregation, name)
  kwargs = dict(DEFAULTS.get(name, {}))
  for theirs, ours in COUNTERPARTS[name][1].items():
    if method is not None and ours in method.kwargs:
      kwargs[theirs] = float(method.kwargs[ours])
  if name == 'NashMTL':
    kwargs['n_tasks'] = num_tasks
  return cls(**kwargs)


def _paired_ms(torch, ours, theirs, repeats):
  """``(ours_ms, theirs_ms)``: fastest of repeats timed in alternation.

  Timing the two sides in the same rounds puts them under the same load of
  the shared machine; timed one after the other, a change of load between
  them shows up as a ratio.
  """
  with torch.no_grad():
    times = common.interleaved_ms({'ours': ours, 'theirs': theirs}, repeats,
                                  'min')
  return times['ours'], times['theirs']


def shapes(quick: bool) -> list[tuple[int, int]]:
  if quick:
    return [(8, 10**5)]
  return [(t, p) for t in (8, 32) for p in (10**6, 2**20, 4 * 10**6, 2**22)]


def aggregator_table(quick: bool) -> dict:
  """Table 1: our jitted updates against TorchJD's aggregators."""
  torch, aggregation = _torch()
  columns = ['method (TorchJD / ours)']
  shape_list = shapes(quick)
  columns += [f'T={t} P={p:.3g}' for t, p in shape_list]
  title = ('Our jitted update / TorchJD aggregator on the same Jacobian '
           '(time ratio, < 1: ours faster)')
  if torch is None:
    return {'title': title, 'columns': columns, 'rows': [],
            'notes': 'Skipped: torch or torchjd is not installed (install the '
                     "optional extra: pip install -e '.[bench]')."}
  torch.set_num_threads(os.cpu_count())
  methods = bench_balancers.methods()
  pairs = [(name, _find(methods, candidates))
           for name, (candidates, _) in COUNTERPARTS.items()
           if hasattr(aggregation, name)]
  pairs = [(name, method) for name, method in pairs if method is not None]
  repeats = 3 if quick else 5
  ratios = {name: [] for name, _ in pairs}
  detail = {name: [] for name, _ in pairs}
  kernel_row = ['J Jᵀ kernel: ours blocked / torch matmul']
  for num_tasks, size in shape_list:
    task_grads = bench_core.stacked_gradients(num_tasks, size)
    matrix = torch.from_numpy(np.array(task_grads))  # A writable copy.
    params = jnp.zeros((size,), jnp.float32)
    task_losses = jnp.linspace(0.5, 2.0, num_tasks, dtype=jnp.float32)
    ours_gram, theirs_gram = _paired_ms(
        torch, lambda: bench_core.KERNELS['blocked_gram'](task_grads),
        lambda: matrix @ matrix.T, repeats)
    kernel_row.append(ours_gram / theirs_gram)
    for name, method in pairs:
      try:
        compiled, args, _, _ = bench_balancers.compiled_update(
            method, num_tasks, task_grads, params, task_losses)
        jax.block_until_ready(compiled(*args))
      except Exception as error:  # pylint: disable=broad-except
        ratios[name].append(f'ours failed: {type(error).__name__}')
        continue
      try:
        aggregator = _torch_aggregator(aggregation, name, method, num_tasks)
        ours, theirs = _paired_ms(torch, lambda: compiled(*args),
                                  lambda: aggregator(matrix), repeats)
      except ImportError:
        ratios[name].append('TorchJD lacks an optional dependency')
        continue
      except Exception as error:  # pylint: disable=broad-except
        ratios[name].append(f'TorchJD failed: {type(error).__name__}')
        continue
      ratios[name].append(ours / theirs)
      detail[name].append((num_tasks, size, ours, theirs))
    del task_grads, matrix
  rows = [kernel_row] + [[f'{name} / {method.name}'] + ratios[name]
                         for name, method in pairs]
  missing = sorted(name for name in COUNTERPARTS
                   if hasattr(aggregation, name)
                   and name not in dict(pairs))
  times = '; '.join(
      f'{name}: ' + ', '.join(f'T={t} P={p:.3g} {ours:.1f}/{theirs:.1f} ms'
                              for t, p, ours, theirs in entries)
      for name, entries in detail.items() if entries)
  notes = ('Fastest of repeats with ours and theirs timed in alternation '
           '(the machine is shared), ours = one jitted update (Gramian, weighting, '
           'weighted sum, state), theirs = one call of the aggregator on a '
           f'torch tensor sharing the data, torch threads = {os.cpu_count()}. '
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


def _torch_alone():
  """torch without torchjd: table 2 needs only its matmul and sum."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return torch


def _numpy_blas() -> str:
  try:
    blas = np.show_config(mode='dicts')['Build Dependencies']['blas']
  except Exception:  # pylint: disable=broad-except
    return 'unknown'
  return f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip()


def _torch_blas(torch) -> str:
  try:
    match = re.search(r'BLAS_INFO=([\w-]+)', torch.__config__.show())
    mkl = torch.backends.mkl.is_available()
  except Exception:  # pylint: disable=broad-except
    return 'unknown'
  name = match.group(1) if match else 'unknown'
  return f"BLAS_INFO={name}, MKL {'available' if mkl else 'not available'}"


def _blas_threads() -> str:
  named = [f'{name}={os.environ[name]}'
           for name in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS',
                        'MKL_NUM_THREADS') if name in os.environ]
  return ', '.join(named) if named else 'no thread variable set (all cores)'


def _gemm_row(torch, num_tasks: int, size: int, repeats: int):
  """``(times in ms by name, matmul names, read names)`` of one shape."""
  task_grads = bench_core.stacked_gradients(num_tasks, size)
  matrix = np.array(task_grads)  # A writable copy torch shares.
  ones = np.ones((num_tasks,), np.float32)
  jax_sum = jax.jit(jnp.sum)
  calls = {'ours': lambda: bench_core.KERNELS['gramian'](task_grads),
           'numpy J @ J.T': lambda: matrix @ matrix.T,
           'numpy J.sum()': matrix.sum,
           'numpy 1 @ J': lambda: ones @ matrix,
           'jax jnp.sum(J)': lambda: jax_sum(task_grads)}
  if torch is not None:
    tensor = torch.from_numpy(matrix)
    calls['torch J @ J.T'] = lambda: tensor @ tensor.T
    calls['torch J.sum()'] = tensor.sum
  matmuls = [name for name in calls if name.endswith('@ J.T')]
  reads = [name for name in calls if name not in matmuls and name != 'ours']
  if torch is None:
    times = common.interleaved_ms(calls, repeats, 'min')
  else:
    with torch.no_grad():
      times = common.interleaved_ms(calls, repeats, 'min')
  return times, matmuls, reads


def gemm_table(quick: bool) -> dict:
  """Table 2: ``mtl.gramian`` against the best BLAS and a streaming read."""
  torch = _torch_alone()
  if torch is not None:
    torch.set_num_threads(os.cpu_count())
  repeats = 3 if quick else 5
  rows, skipped, fastest_reads = [], [], []
  for num_tasks, size in gemm_shapes(quick):
    # J in JAX plus the numpy copy (torch shares the copy).
    need = 2 * BYTES_PER_ENTRY * num_tasks * size
    if need > bench_core.MAX_BYTES:
      skipped.append(f'T={num_tasks} P={size:.3g} ({need / bench_core.GIB:.1f} '
                     'GiB)')
      continue
    times, matmuls, reads = _gemm_row(torch, num_tasks, size, repeats)
    blas_ms = min(times[name] for name in matmuls)
    read = min(reads, key=times.get)
    fastest_reads.append(f'T={num_tasks} P={size:.3g}: {read}')
    rate = gemm_rates(num_tasks, size, times['ours'], blas_ms, times[read])
    rows.append([
        num_tasks, size, times['ours'],
        times.get('torch J @ J.T', NOT_INSTALLED), times['numpy J @ J.T'],
        rate['ours_gflops'], rate['blas_gflops'], rate['of_blas'],
        rate['read_gbs'], rate['ours_gbs'], rate['of_read']])
  columns = ['T', 'P', 'ours mtl.gramian ms', 'torch J @ J.T ms',
             'numpy J @ J.T ms', 'ours GFLOP/s', 'best BLAS GFLOP/s',
             'ours / best BLAS rate', 'streaming read GB/s',
             'ours effective GB/s', 'ours / streaming read']
  torch_blas = (f'torch {_torch_blas(torch)} with {os.cpu_count()} threads'
                if torch is not None else 'torch is not installed, its cells '
                "say so: pip install -e '.[bench]'")
  notes = (
      'Milliseconds are the fastest of repeats, every call of a row timed in '
      'alternation (the machine is shared), on copies of the same float32 '
      '`J` [T, P]: ours = the jitted public `mtl.gramian(J)` (the blocked '
      'kernel plus its over/underflow check); numpy `J @ J.T` on a writable '
      f'copy (numpy BLAS: {_numpy_blas()}, {_blas_threads()}; numpy calls '
      'BLAS syrk for a matrix times its own transpose); torch `J @ J.T` on '
      f'the same copy under no_grad ({torch_blas}). Best BLAS = the faster '
      'of numpy and torch. GFLOP/s count a full GEMM, 2·T²·P FLOPs, for '
      'every side (a symmetric kernel such as syrk needs half of them), in '
      '1e9 per second; ours / best BLAS rate = best BLAS ms / ours ms. The '
      'streaming read is the fastest of numpy `J.sum()` (one thread), numpy '
      '`ones[T] @ J` (BLAS gemv, threaded, also writes P floats), jax '
      '`jnp.sum(J)` jitted and, with torch, torch `J.sum()` (threaded): '
      'each reads J once and does '
      'at most two FLOPs per entry, so its rate is the memory bandwidth; '
      'its GB/s and ours effective GB/s count 4·T·P bytes (one read of J) in '
      '1e9 per second; ours / streaming read = read ms / ours ms. Targets '
      f'(the project\'s): ours / best BLAS rate ≥ {GEMM_TARGET} at T = 32 and 128 '
      f'(compute-bound), ours / streaming read ≥ {GEMM_TARGET} at T = 8 '
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
