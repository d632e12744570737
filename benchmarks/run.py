"""Runs every benchmark section and writes its tables.

Every ``benchmarks/bench_<topic>.py`` exposes ``run(quick: bool = False) ->
list[dict]``; each dict is a table ``{"title", "columns", "rows", "notes"}``.
This script imports them all, prints the tables as markdown and writes
``<out>/<topic>.md`` and ``<out>/<topic>.json``, each table naming the machine
and the package versions it was measured with.

Usage::

  python benchmarks/run.py                 # everything (about 15 minutes)
  python benchmarks/run.py --quick         # small sizes, a smoke test
  python benchmarks/run.py --only core,torchjd --out /tmp/results
  python benchmarks/run.py --only device  # on a GPU or TPU: bandwidth, solvers
"""

import argparse
import importlib.util
import json
import math
import pathlib
import sys
import time
import traceback
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # For `import common` inside the sections.
  sys.path.insert(0, str(HERE))

import common  # pylint: disable=g-import-not-at-top


def discover() -> dict[str, pathlib.Path]:
  """``{topic: path}`` of every ``bench_<topic>.py`` beside this script."""
  return {path.stem[len('bench_'):]: path
          for path in sorted(HERE.glob('bench_*.py'))}


def load(topic: str, path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(f'bench_{topic}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def format_cell(value: Any) -> str:
  if value is None:
    return '—'
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    if math.isnan(value):
      return 'nan'
    if value == 0 or 1e-3 <= abs(value) < 1e5:
      return f'{value:.3g}' if abs(value) < 100 else f'{value:.0f}'
    return f'{value:.2e}'
  return str(value).replace('|', '\\|')


def table_markdown(table: dict[str, Any], machine_line: str) -> str:
  lines = [f"### {table['title']}", '']
  lines.append('| ' + ' | '.join(table['columns']) + ' |')
  lines.append('|' + '|'.join('---' for _ in table['columns']) + '|')
  for row in table['rows']:
    lines.append('| ' + ' | '.join(format_cell(cell) for cell in row) + ' |')
  lines.append('')
  if table.get('notes'):
    lines += [table['notes'], '']
  lines += [machine_line, '']
  return '\n'.join(lines)


def _jsonable(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None if math.isnan(value) else str(value)
  if isinstance(value, (list, tuple)):
    return [_jsonable(item) for item in value]
  if isinstance(value, dict):
    return {key: _jsonable(item) for key, item in value.items()}
  if hasattr(value, 'item'):  # NumPy and JAX scalars.
    return _jsonable(value.item())
  return value


# Environment variables that change the timings, named in each Command line
# when set. Peer processes inherit them.
TIMING_VARIABLES = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_',
                    'MALLOC_TOP_PAD_', 'XLA_FLAGS', 'OMP_NUM_THREADS')


def timing_environment() -> list[str]:
  """``NAME=value`` of each timing variable set in this process."""
  return common.environment(TIMING_VARIABLES)


def write_topic(out: pathlib.Path, topic: str, tables: list[dict],
                header: dict[str, Any], seconds: float) -> str:
  line = common.machine_line(header['machine'], header['versions'])
  command = header['command']
  markdown = [f'## Benchmark: {topic}', '',
              f'Command: `{command}` ({seconds:.0f} s).', '']
  markdown += [table_markdown(table, line) for table in tables]
  text = '\n'.join(markdown)
  out.mkdir(parents=True, exist_ok=True)
  (out / f'{topic}.md').write_text(text)
  record = dict(header, topic=topic, seconds=round(seconds, 1),
                tables=[dict(table, machine=line) for table in tables])
  (out / f'{topic}.json').write_text(
      json.dumps(_jsonable(record), indent=1) + '\n')
  return text


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='small sizes and few repeats (a smoke test)')
  parser.add_argument('--only', default='',
                      help='comma-separated topics (bench_<topic>.py) to run')
  parser.add_argument('--out', default=str(HERE / 'results'),
                      help='directory for <topic>.md and <topic>.json')
  args = parser.parse_args(argv)

  topics = discover()
  wanted = [name.strip() for name in args.only.split(',') if name.strip()]
  unknown = [name for name in wanted if name not in topics]
  if unknown:
    parser.error(f'unknown topics {unknown}; known: {sorted(topics)}')
  selected = {name: path for name, path in topics.items()
              if not wanted or name in wanted}

  command = 'python benchmarks/run.py' + ' '.join(
      [''] + (['--quick'] if args.quick else [])
      + ([f'--only {args.only}'] if args.only else []))
  command = ' '.join(timing_environment() + [command])
  failures = []
  for topic, path in selected.items():
    header = {'machine': common.machine(), 'versions': common.versions(),
              'quick': args.quick, 'command': command}
    start = time.perf_counter()
    try:
      tables = load(topic, path).run(quick=args.quick)
    except Exception:  # pylint: disable=broad-except
      # One broken section must not lose the others' results.
      failures.append(topic)
      traceback.print_exc()
      continue
    text = write_topic(pathlib.Path(args.out), topic, tables, header,
                       time.perf_counter() - start)
    print(text, flush=True)
  if failures:
    print(f'Failed sections: {failures}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
