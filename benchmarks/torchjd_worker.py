"""Times the peer side of ``bench_torchjd.py`` in a process without JAX running.

Run by ``bench_torchjd.py`` as ``python torchjd_worker.py '<json request>'``;
prints one JSON line. The request names a saved float32 ``J`` (``.npy``), the
TorchJD aggregators to time on it (with their keyword arguments), the BLAS
products and reads of ``J`` to time (``blas``, names as in ``_blas_calls``
and ``ONE_THREAD``), whether to use torch at all (``use_torch``), the torch
thread count and the number of timed calls.

Why a process of its own: torch's OpenMP threads (and OpenBLAS's, behind
numpy) keep spinning for a while after a call returns. Timed in JAX's
process, they took cores from the XLA call that came next, and JAX's thread
pool did the same to them: the same product at T = 32 measured 1.4-1.7×
torch's time in one table and 0.7-0.9× in another, minutes apart. For the
same reason torch's calls are timed before numpy's here, never interleaved
with them: interleaved, torch's ``J @ J.T`` at T = 32, P = 2^20 took 39.7 ms
instead of 20 ms. Each library has the machine's cores to itself while it is
timed.

Only numpy is needed; torch and torchjd are used when installed and the
request asks for them. JAX is imported (``common``'s timing loop) but never
started, so none of its threads run here.
"""

import json
import re
import sys
from typing import Any, Callable

import numpy as np

# common imports JAX for its timing loop, which never starts a JAX backend
# here: no XLA thread pool exists in this process.
import common

LACKS_DEPENDENCY = 'TorchJD lacks an optional dependency'


def _aggregators(aggregation, requested: dict, matrix) -> tuple[dict, dict]:
  """``(calls, cells)``: callables to time, and the cells that say why not."""
  calls, cells = {}, {}
  for name, kwargs in requested.items():
    cls = getattr(aggregation, name, None)
    if cls is None:
      cells[name] = 'not in this TorchJD'
      continue
    try:
      aggregator = cls(**kwargs)
      aggregator(matrix)  # Fails here if an optional solver is missing.
    except ImportError:
      cells[name] = LACKS_DEPENDENCY
      continue
    except Exception as error:  # pylint: disable=broad-except
      cells[name] = f'TorchJD failed: {type(error).__name__}'
      continue
    calls[name] = (lambda a: lambda: a(matrix))(aggregator)
  return calls, cells


ONE_THREAD = 'torch J @ J.T, 1 thread'


def _blas_calls(matrix: np.ndarray, tensor,
                names: list[str]) -> dict[str, Callable[[], Any]]:
  """The requested products and reads of ``J`` (torch's only with torch)."""
  ones = np.ones((matrix.shape[0],), np.float32)
  calls = {'numpy J @ J.T': lambda: matrix @ matrix.T,
           'numpy J.sum()': matrix.sum,
           'numpy 1 @ J': lambda: ones @ matrix}
  if tensor is not None:
    calls['torch J @ J.T'] = lambda: tensor @ tensor.T
    calls['torch J.sum()'] = tensor.sum
  return {name: call for name, call in calls.items() if name in names}


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


def measure(request: dict) -> dict:
  """The fastest times and what could not be timed, as a JSON-able dict.

  ``{'ms': {name: ms}, 'cells': {aggregator: why not}, 'available': the
  requested ``known`` names TorchJD has, 'blas': {'numpy': .., 'torch': ..
  or None}}``.
  """
  matrix = np.load(request['path'])
  torch = None
  if request['use_torch']:
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      pass
  result = {'ms': {}, 'cells': {}, 'available': [],
            'blas': {'numpy': _numpy_blas(),
                     'torch': torch and _torch_blas(torch)}}
  if torch is None:
    tensor = None
    if request['aggregators']:
      result['cells'] = {name: 'torch is not installed'
                         for name in request['aggregators']}
  else:
    torch.set_num_threads(request['threads'])
    tensor = torch.from_numpy(matrix)
  calls = {}
  if tensor is not None and request['aggregators']:
    try:
      import torchjd.aggregation as aggregation  # pylint: disable=g-import-not-at-top
    except ImportError:
      result['cells'] = {name: 'torchjd is not installed'
                         for name in request['aggregators']}
    else:
      result['available'] = [name for name in request['known']
                             if hasattr(aggregation, name)]
      with torch.no_grad():
        calls, cells = _aggregators(aggregation, request['aggregators'],
                                    tensor)
      result['cells'].update(cells)
  def fastest_ms(to_time):  # All the requested repeats, however slow.
    return common.interleaved_ms(to_time, request['repeats'], 'min',
                                 budget_s=None)

  blas = _blas_calls(matrix, tensor, request['blas'])
  calls.update({name: call for name, call in blas.items()
                if name.startswith('torch')})
  if torch is not None:
    with torch.no_grad():
      result['ms'] = fastest_ms(calls)
      if ONE_THREAD in request['blas']:
        # The product on one core: the per-core rate of torch's BLAS.
        torch.set_num_threads(1)
        result['ms'].update(fastest_ms({ONE_THREAD: lambda: tensor @ tensor.T}))
  # numpy's calls last: OpenBLAS's threads, like torch's, spin after a call
  # and slowed torch's product 2x when the two were interleaved.
  result['ms'].update(fastest_ms(
      {name: call for name, call in blas.items() if name.startswith('numpy')}))
  return result


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit('torchjd_worker.py: run by bench_torchjd.py with one JSON '
             'request; run `python benchmarks/run.py --only torchjd` instead.')
  print(json.dumps(measure(common.request_from_argument(
      sys.argv[1], 'torchjd_worker.py',
      ('path', 'aggregators', 'blas', 'known', 'use_torch', 'threads',
       'repeats')))))
