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
"""

import os

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


def run(quick: bool = False) -> list[dict]:
  torch, aggregation = _torch()
  columns = ['method (TorchJD / ours)']
  shape_list = shapes(quick)
  columns += [f'T={t} P={p:.3g}' for t, p in shape_list]
  title = ('Our jitted update / TorchJD aggregator on the same Jacobian '
           '(time ratio, < 1: ours faster)')
  if torch is None:
    return [{'title': title, 'columns': columns, 'rows': [],
             'notes': 'Skipped: torch or torchjd is not installed (install the '
                      "optional extra: pip install -e '.[bench]')."}]
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
  return [{'title': title, 'columns': columns, 'rows': rows, 'notes': notes}]
