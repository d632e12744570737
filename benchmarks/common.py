"""Timing and machine description shared by the ``bench_*.py`` modules.

Timings follow the benchmarks convention: a warm-up call (which compiles),
then the median of several repeats, each ended by ``jax.block_until_ready``.
Functions compared in one table are timed *interleaved* (one call of each per
round) so that a change in the load of a shared machine hits every column of a
ratio alike.
"""

import importlib.util
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from typing import Any, Callable

import jax

# The repository root, for mtl_bench (the machine's name, the QM9 encoder)
# also without the compat editable install.
ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from mtl_bench.machine import cpu_model  # noqa: E402  pylint: disable=g-import-not-at-top

MB = 2.0**20
SECONDS_PER_MEASUREMENT = 6.0  # Bounds the rounds of interleaved_ms.


def _seconds(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def median_ms(fn: Callable[[], Any], repeats: int = 5) -> float:
  """Median wall time of ``fn()`` in milliseconds, after one warm-up call."""
  jax.block_until_ready(fn())
  return 1e3 * statistics.median(_seconds(fn) for _ in range(repeats))


def interleaved_ms(fns: dict[str, Callable[[], Any]], repeats: int = 5,
                   statistic: str = 'median', *,
                   budget_s: float | None = SECONDS_PER_MEASUREMENT
                   ) -> dict[str, float]:
  """Milliseconds of each of ``fns``, timed one call each per round.

  ``statistic`` is ``'median'`` (the convention) or ``'min'``: on a shared
  machine the fastest of the interleaved repeats is the one least disturbed
  by other processes, so ratios of minima vary less from run to run.
  ``budget_s`` bounds the rounds: where one round takes longer than
  ``budget_s / repeats``, fewer rounds run (at least two); None runs all
  ``repeats``. The calls may return anything: jax arrays are waited for, other
  values (numpy arrays, torch tensors) are ready when returned.
  """
  reduce = {'median': statistics.median, 'min': min}[statistic]
  for fn in fns.values():
    jax.block_until_ready(fn())  # Compiles, or initialises lazily.
  if budget_s is not None:
    warm = sum(_seconds(fn) for fn in fns.values())
    # Slow cases (seconds per round) get fewer rounds, at least two.
    repeats = max(2, min(repeats, int(budget_s / warm)))
  samples = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      samples[name].append(_seconds(fn))
  return {name: 1e3 * reduce(times) for name, times in samples.items()}


def fastest(*timings: dict[str, float]) -> dict[str, float]:
  """The smallest time of each name over several ``{name: ms}`` timings."""
  names = dict.fromkeys(name for timing in timings for name in timing)
  return {name: min(timing[name] for timing in timings if name in timing)
          for name in names}


def environment(names: tuple[str, ...]) -> list[str]:
  """``NAME=value`` of each of ``names`` set in this process's environment."""
  return [f'{name}={os.environ[name]}' for name in names
          if name in os.environ]


def installed(*names: str) -> bool:
  """Whether every one of the named packages can be imported."""
  return all(importlib.util.find_spec(name) is not None for name in names)


def json_from_process(argv: list[str], timeout_s: float) -> dict:
  """The JSON object a child process prints on its last line of output.

  Peers (torch, TorchJD) are timed in processes of their own, so that their
  threads and JAX's do not take each other's cores. Raises RuntimeError with
  the child's last error line if it fails or prints nothing, and
  subprocess.TimeoutExpired if it runs past ``timeout_s``.
  """
  done = subprocess.run([sys.executable, *argv], capture_output=True,
                        text=True, timeout=timeout_s, check=False)
  lines = done.stdout.strip().splitlines()
  if done.returncode or not lines:
    last = (done.stderr.strip().splitlines() or ['no output'])[-1]
    raise RuntimeError(last[:200])
  return json.loads(lines[-1])


def request_from_argument(text: str, script: str, keys: tuple[str, ...]
                          ) -> dict:
  """The JSON request a worker script got as its argument.

  Workers are run by a benchmark, not by hand: a malformed request ends the
  process with a one-line error naming the command to run instead.
  """
  try:
    request = json.loads(text)
  except json.JSONDecodeError:
    request = None
  if not isinstance(request, dict) or any(key not in request for key in keys):
    sys.exit(f'{script}: not a request from its benchmark (a JSON object '
             f'with {", ".join(keys)}); run `python benchmarks/run.py` '
             'instead.')
  return request


def _version(package: str) -> str | None:
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def versions() -> dict[str, str]:
  """Versions of the packages a result depends on (installed ones only)."""
  found = {'python': platform.python_version()}
  for package in ('jax', 'jaxlib', 'optax', 'numpy', 'flax', 'torch',
                  'torchjd', 'mtl_optax'):
    version = _version(package)
    if version is not None:
      found[package] = version
  return found


def machine() -> dict[str, Any]:
  devices = jax.devices()
  return {
      'cpu': cpu_model(),
      'cores': os.cpu_count(),
      'backend': jax.default_backend(),
      'devices': f'{len(devices)} x {devices[0].device_kind}',
      'load_average': [round(x, 2) for x in os.getloadavg()],
  }


def machine_line(info: dict[str, Any] | None = None,
                 package_versions: dict[str, str] | None = None) -> str:
  """One line naming the machine and the versions, for under every table."""
  info = info or machine()
  package_versions = package_versions or versions()
  packages = ', '.join(f'{name} {version}'
                       for name, version in package_versions.items())
  load = ' / '.join(f'{x:g}' for x in info['load_average'])
  return (f"Machine: {info['cpu']}, {info['cores']} cores, backend "
          f"{info['backend']} ({info['devices']}), load average {load} at "
          f"start. Versions: {packages}.")
