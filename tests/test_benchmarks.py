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
