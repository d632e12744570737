"""examples/instance_wise.py: runs at tiny settings, writes its table, and
rejects bad options with one line and exit status 2 (without importing jax
for ``--help`` or a bad option)."""

import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'examples' / 'instance_wise.py'

# The repository root is on the path (pyproject.toml: pythonpath).
from examples import instance_wise  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_tiny_run_writes_a_table_with_both_methods(tmp_path):
  out = tmp_path / 'instance_wise.md'
  results = instance_wise.main([
      '--steps', '3', '--batch-size', '6', '--chunk-size', '4',
      '--hidden', '8', '--seeds', '1', '--label-noise', '0.25',
      '--out', str(out)])
  text = out.read_text()
  assert '| 0.25 | mean loss |' in text
  assert '| 0.25 | mean loss, 4x steps |' in text
  assert '| 0.25 | UPGrad (engine) |' in text
  for runs in results[0.25].values():
    (run,) = runs
    assert set(run) == set(instance_wise.METRICS)
    assert all(math.isfinite(value) for value in run.values())
    assert 0.0 <= run['test accuracy'] <= 1.0
    # The worst class and the worst example bound the means from above.
    assert run['worst-class test loss'] >= run['test loss']
    assert run['worst clean train loss'] >= run['clean train loss']


def test_flipped_labels_move_to_another_class():
  (_, noisy, flipped), _ = instance_wise.load_digits(0.3, seed=0)
  (_, clean, none_flipped), _ = instance_wise.load_digits(0.0, seed=0)
  assert not none_flipped.any()
  assert 0.2 < flipped.mean() < 0.4
  assert (noisy[flipped] != clean[flipped]).all()
  assert (noisy[~flipped] == clean[~flipped]).all()


def _run_script(*argv):
  return subprocess.run([sys.executable, str(SCRIPT), *argv],
                        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('argv, fragment', [
    (['--steps', '0'], '--steps must be >= 1'),
    (['--batch-size', '1'], '--batch-size must be in [2, 512]'),
    (['--chunk-size', '65'], '--chunk-size must be in [1, --batch-size]'),
    (['--lr', 'nan'], '--lr must be a positive number'),
    (['--label-noise', '0.1', '0.95'], '--label-noise must be in [0, 0.9)'),
    (['--out', 'table.txt'], '--out must name a .md file'),
    (['--seeds', 'two'], "invalid int value: 'two'"),
])
def test_bad_options_exit_2_with_one_line(argv, fragment):
  result = _run_script(*argv)
  assert result.returncode == 2
  assert result.stdout == ''
  assert result.stderr.count('\n') == 1, result.stderr
  assert fragment in result.stderr


def test_help_does_not_import_jax():
  probe = ('import sys; sys.path.insert(0, sys.argv[1]); '
           'import instance_wise\n'
           'try:\n  instance_wise.parse_args(["--help"])\n'
           'except SystemExit as exit:\n  assert exit.code == 0\n'
           'print("jax imported:", "jax" in sys.modules)')
  result = subprocess.run(
      [sys.executable, '-c', probe, str(SCRIPT.parent)],
      capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert 'instance-wise' in result.stdout.lower()
  assert result.stdout.strip().endswith('jax imported: False')
