"""Smoke test of the benchmark script: one small section, quick sizes.

Timings are not asserted (they belong to benchmarks/, not to tests); the test
checks that ``benchmarks/run.py`` runs a section and writes its markdown and
JSON with the machine and versions named under every table.
"""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT / 'benchmarks') not in sys.path:  # The sections import `common`.
  sys.path.insert(0, str(ROOT / 'benchmarks'))

import bench_torchjd  # noqa: E402  pylint: disable=g-import-not-at-top
from mtl_optax._src import native  # noqa: E402  pylint: disable=g-import-not-at-top


@pytest.mark.slow
def test_quick_core_benchmark_writes_tables(tmp_path):
  subprocess.run(
      [sys.executable, str(ROOT / 'benchmarks' / 'run.py'), '--quick',
       '--only', 'core', '--out', str(tmp_path)],
      check=True, capture_output=True, text=True, timeout=120)
  record = json.loads((tmp_path / 'core.json').read_text())
  markdown = (tmp_path / 'core.md').read_text()

  assert record['topic'] == 'core' and record['quick'] is True
  assert {'jax', 'jaxlib', 'optax', 'numpy'} <= set(record['versions'])
  titles = [table['title'] for table in record['tables']]
  assert len(titles) == 2, titles
  for table in record['tables']:
    assert table['rows'], table['title']
    assert all(len(row) == len(table['columns']) for row in table['rows'])
    assert table['machine'].startswith('Machine: ')
    assert table['title'] in markdown
  # The quick kernel table has one shape, T=8, P=1e5; its floor is a time.
  kernels = record['tables'][0]
  assert [row[:2] for row in kernels['rows']] == [[8, '1e+05']]
  assert kernels['rows'][0][-1] > 0
  assert markdown.count('Machine: ') == 2
  assert 'jax ' + record['versions']['jax'] in markdown


def test_torchjd_gemm_rates_arithmetic():
  # T=8, P=1e6: a full GEMM counts 2·8²·1e6 = 1.28e8 FLOPs and one read of J
  # 4·8·1e6 = 3.2e7 bytes. 1.28e8 / 2 ms = 6.4e10 /s, / 1.6 ms = 8e10 /s;
  # 3.2e7 / 1 ms = 3.2e10 B/s, / 2 ms = 1.6e10 B/s.
  rates = bench_torchjd.gemm_rates(8, 10**6, ours_ms=2.0, blas_ms=1.6,
                                   read_ms=1.0)
  assert rates == pytest.approx({
      'ours_gflops': 64.0, 'blas_gflops': 80.0, 'of_blas': 0.8,
      'read_gbs': 32.0, 'ours_gbs': 16.0, 'of_read': 0.5})


def test_quick_torchjd_tables_without_torch(monkeypatch):
  # As without the bench extra, whatever this environment has installed.
  monkeypatch.setattr(bench_torchjd.common, 'installed', lambda *names: False)
  aggregators, gemm = bench_torchjd.run(quick=True)

  assert aggregators['rows'] == []
  assert 'torch or torchjd is not installed' in aggregators['notes']
  assert gemm['columns'] == [
      'T', 'P', 'ours mtl.gramian ms', 'torch J @ J.T ms', 'numpy J @ J.T ms',
      'ours GFLOP/s', 'best BLAS GFLOP/s', 'ours / best BLAS rate',
      'ours / torch 1-thread rate', 'streaming read GB/s',
      'ours effective GB/s', 'ours / streaming read',
      'ours without native kernel ms', 'without native / best BLAS rate']
  [row] = gemm['rows']
  assert row[:2] == [8, 2**16]
  assert row[3] == row[8] == 'not installed'
  ours_ms, numpy_ms = row[2], row[4]
  # Without torch the best BLAS is numpy's (timed in the worker process): its
  # rate over ours is their time ratio, and the columns agree with the
  # helper's arithmetic.
  assert row[7] == pytest.approx(numpy_ms / ours_ms)
  assert row[5] == pytest.approx(2 * 8**2 * 2**16 / ours_ms * 1e-6)
  assert row[10] == pytest.approx(4 * 8 * 2**16 / ours_ms * 1e-6)
  assert row[13] == pytest.approx(numpy_ms / row[12])
  assert min(row[2:3] + row[4:8] + row[9:]) > 0
  assert 'torchjd_worker.py' in gemm['notes']
  assert f'native kernel built: {native.available()}' in gemm['notes']
  assert 'Quick mode' in gemm['notes'] and '≥ 0.7' in gemm['notes']


def test_command_line_names_the_timing_environment(monkeypatch):
  import run  # pylint: disable=g-import-not-at-top
  for name in run.TIMING_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  assert run.timing_environment() == []
  monkeypatch.setenv('MALLOC_TOP_PAD_', '536870912')
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_enable_fast_math=false')
  monkeypatch.setenv('HOME', '/elsewhere')  # Not a timing variable.
  assert run.timing_environment() == [
      'MALLOC_TOP_PAD_=536870912',
      'XLA_FLAGS=--xla_cpu_enable_fast_math=false']


@pytest.mark.parametrize('text', ['{bad', '[1, 2]', '{"kind": "x"}'])
def test_worker_request_errors_in_one_line(text):
  done = subprocess.run(
      [sys.executable, str(ROOT / 'benchmarks' / 'torchjd_worker.py'), text],
      capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 1
  [line] = done.stderr.strip().splitlines()
  assert line.startswith('torchjd_worker.py: not a request from its benchmark')


def test_worker_request_is_read_as_given():
  import common  # pylint: disable=g-import-not-at-top
  request = common.request_from_argument('{"kind": "libmtl", "x": [1]}',
                                         'worker.py', ('kind',))
  assert request == {'kind': 'libmtl', 'x': [1]}
