"""The example scripts' command lines: bad input, --help, outputs, no overwrite.

Bad options run the script in a subprocess, as a user would: exit status 2,
exactly one line on stderr, no traceback, and no output folder created.
``--help`` must not import JAX (checked in ``sys.modules``, not by timing).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mtl_bench import cli
from mtl_bench import methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, 'examples', 'train.py')
# How each command is started: a path (`python path`) or a module
# (`python -m module`).
SCRIPTS = {
    'train.py': ('path', TRAIN),
    'mtl_bench': ('module', 'mtl_bench'),
    'mgda_ub.py': ('path', os.path.join(ROOT, 'examples', 'mgda_ub.py')),
    'xor_and.py': ('module', 'mtl_bench.reproduce.xor_and'),
    'logse_synthetic.py': ('module', 'mtl_bench.reproduce.logse_synthetic'),
    'db_mtl_ablation.py': ('module', 'mtl_bench.reproduce.db_mtl_ablation'),
    'report.py': ('module', 'mtl_bench.report'),
}


def _env():
  env = dict(os.environ)
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  return env


def _command(script: str) -> list[str]:
  kind, target = SCRIPTS[script]
  return [sys.executable] + (['-m', target] if kind == 'module' else [target])


def _run(script: str, args, cwd) -> subprocess.CompletedProcess:
  return subprocess.run([*_command(script), *args], cwd=cwd,
                        env=_env(), capture_output=True, text=True,
                        timeout=300, check=False)


def _assert_one_line_error(result, *fragments):
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr
  assert len(lines) == 1, result.stderr
  assert 'Traceback' not in result.stderr
  assert 'error:' in lines[0]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


# Options argparse and the spec parser reject before JAX is imported.
CHEAP_BAD = [
    (['--steps', '0'], 'must be ≥ 1'),
    (['--steps', '-5'], 'must be ≥ 1'),
    (['--steps', 'ten'], 'not an integer'),
    (['--batch-size', '0'], '--batch-size'),
    (['--seeds', '0'], '--seeds'),
    (['--seed', '-1'], 'must be ≥ 0'),
    (['--hidden', '0'], '--hidden'),
    (['--eval-every', '0'], '--eval-every'),
    (['--lr', '0'], 'must be finite and > 0'),
    (['--lr', '-1'], 'must be finite and > 0'),
    (['--lr', 'nan'], 'must be finite and > 0'),
    (['--lr', 'inf'], 'must be finite and > 0'),
    (['--lr', '1e-3', '0'], 'must be finite and > 0'),
    (['--method', 'nope'], "unknown balancer 'nope'"),
    (['--method', 'nope+mgda'], "unknown pre-transform 'nope'"),
    (['--method', 'cagrad(0.4)'], 'by keyword'),
    (['--method', 'cagrad(c='], 'not a method spec'),
    (['--method', 'cagrad(c=os.getcwd())'], 'must be a literal'),
    (['--method', '__import__("os").getcwd()'], 'is not a method'),
    (['--method', 'mgda.loss_plus'], 'is not a method'),
    (['--compare', 'all', 'mgda'], "'all' cannot be mixed"),
    (['--regime', 'nope'], "unknown regime 'nope'"),
    (['--no-such-option'], 'unrecognized arguments'),
]


# Each case starts a Python process: a few of each kind in the everyday
# subset, all of them in the full suite.
EVERYDAY_BAD = {'--steps 0', '--lr nan', '--method nope', '--method cagrad(c=',
                '--method __import__("os").getcwd()', '--no-such-option'}


@pytest.mark.parametrize('args,fragment', [
    pytest.param(args, fragment, id=' '.join(args),
                 marks=() if ' '.join(args) in EVERYDAY_BAD
                 else pytest.mark.slow)
    for args, fragment in CHEAP_BAD])
def test_bad_option_is_one_line_and_exit_2(tmp_path, args, fragment):
  out = tmp_path / 'out'
  result = _run('train.py', args + ['--out', str(out), '--cache-dir',
                                    str(tmp_path / 'cache')], tmp_path)
  _assert_one_line_error(result, fragment)
  assert not out.exists() and not (tmp_path / 'cache').exists()
  assert not (tmp_path / 'runs').exists()


# Checked against the factories' signatures and values (imports JAX).
FACTORY_BAD = [
    (['--method', 'cagrad(cc=0.4)'], "no hyper-parameter 'cc'"),
    (['--method', 'mgda(task_specific=1)'], 'set by the trainer'),
    (['--method', 'fixed_weighting'], 'needs weights'),
    (['--method', 'fixed_weighting(weights=[1, 2])'], 'shape'),
    (['--compare', 'mgda', "cagrad(c=-1)"], 'cagrad'),
]


@pytest.mark.parametrize('args,fragment', FACTORY_BAD,
                         ids=[' '.join(a) for a, _ in FACTORY_BAD])
def test_bad_hyper_parameter_is_one_line_and_exit_2(tmp_path, args, fragment):
  result = _run('train.py', args + ['--out', str(tmp_path / 'out')], tmp_path)
  _assert_one_line_error(result, fragment)
  assert not (tmp_path / 'out').exists()


def test_unwritable_out_is_one_line_and_exit_2(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  result = _run('train.py', ['--out', str(blocker / 'runs')], tmp_path)
  _assert_one_line_error(result, '--out', 'is not a folder')
  result = _run('train.py', ['--out', str(tmp_path / 'ok'), '--cache-dir',
                             str(blocker)], tmp_path)
  _assert_one_line_error(result, '--cache-dir')
  assert not (tmp_path / 'ok').exists()
  if os.geteuid() != 0:  # root may write anywhere
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o500)
    result = _run('train.py', ['--out', str(locked / 'runs')], tmp_path)
    _assert_one_line_error(result, 'no permission')


def test_out_that_refuses_files_is_one_line_and_exit_2(tmp_path):
  # /proc refuses new files even to root, whom os.access lets through: the
  # check creates a file to find out.
  result = _run('train.py', ['--out', '/proc/mtl_bench_test/runs',
                             '--cache-dir', str(tmp_path / 'cache')],
                tmp_path)
  _assert_one_line_error(result, '--out', 'cannot write in')
  assert not (tmp_path / 'cache').exists()


def _interrupt(tmp_path, after: str) -> tuple:
  """Starts a long run, sends SIGINT once a line holding ``after`` appears.

  Returns ``(exit status, stdout, stderr, seconds from SIGINT to exit)``.
  """
  out = tmp_path / 'runs'
  process = subprocess.Popen(
      [*_command('train.py'), '--method', 'mgda', '--steps', '3000',
       '--eval-every', '30', '--seeds', '1', '--hidden', '8',
       '--batch-size', '8', '--out', str(out), '--cache-dir',
       str(tmp_path / 'cache')],
      cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  lines = []
  for line in process.stdout:
    lines.append(line)
    if after in line:
      break
  process.send_signal(signal.SIGINT)
  start = time.perf_counter()
  stdout, stderr = process.communicate(timeout=300)
  return (process.returncode, ''.join(lines) + stdout, stderr,
          time.perf_counter() - start)


@pytest.mark.slow
@pytest.mark.parametrize('after', ['Writing to', 'compiling', 'step '])
def test_ctrl_c_is_one_line_exit_130_and_no_empty_folder(tmp_path, after):
  """Ctrl-C before, during compilation and during training."""
  status, stdout, stderr, _ = _interrupt(tmp_path, after)
  assert after in stdout, stdout
  assert status == 130, (status, stderr)
  assert 'Traceback' not in stderr + stdout
  lines = stderr.strip().splitlines()
  assert len(lines) == 1, stderr
  assert 'interrupted; nothing was written' in lines[0]
  # The run folder and the folders made for it are gone.
  assert not (tmp_path / 'runs').exists(), list((tmp_path / 'runs').rglob('*'))


@pytest.mark.parametrize('script,bad', [
    ('mgda_ub.py', ['--steps', '0']),
    ('mgda_ub.py', ['--lr', '-1']),
    ('mgda_ub.py', ['--batch-size', '5000']),
    ('xor_and.py', ['--seeds', '0']),
    ('xor_and.py', ['--momentum', '1.5']),
    ('logse_synthetic.py', ['--points', '5']),
    ('logse_synthetic.py', ['--lr', 'inf']),
    ('db_mtl_ablation.py', ['--steps', '-1']),
    ('report.py', ['no_such_run_folder']),
])
def test_other_scripts_reject_bad_options_in_one_line(tmp_path, script, bad):
  _assert_one_line_error(_run(script, bad, tmp_path))


_HELP_PROBE = """
import runpy, sys
kind, target = {kind!r}, {target!r}
sys.argv = [target, '--help']
try:
  if kind == 'module':
    runpy.run_module(target, run_name='__main__', alter_sys=True)
  else:
    runpy.run_path(target, run_name='__main__')
except SystemExit as error:
  code = error.code
print('EXIT', code, 'JAX_IMPORTED', 'jax' in sys.modules, 'FLAX_IMPORTED',
      'flax' in sys.modules)
"""


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_help_never_imports_jax(tmp_path, script):
  kind, target = SCRIPTS[script]
  result = subprocess.run(
      [sys.executable, '-c', _HELP_PROBE.format(kind=kind, target=target)],
      cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
      check=False)
  assert 'usage:' in result.stdout
  assert result.stdout.strip().splitlines()[-1] == (
      'EXIT 0 JAX_IMPORTED False FLAX_IMPORTED False'), result.stdout
  assert not list(tmp_path.iterdir())  # --help wrote nothing


def test_train_help_lists_every_option_with_its_default(tmp_path):
  result = _run('train.py', ['--help'], tmp_path)
  text = ' '.join(result.stdout.split())
  for option in ('--method', '--compare', '--regime', '--seeds', '--seed',
                 '--steps', '--batch-size', '--hidden', '--lr',
                 '--eval-every', '--out', '--cache-dir', '--no-plots',
                 '--no-progress'):
    assert option in text
  for default in ('(default: db_mtl)', '(default: 600)', '(default: 64)',
                  '(default: 3)', '(default: runs)', '3e-4 1e-3 3e-3'.replace(
                      '3e-4', '0.0003').replace('1e-3', '0.001').replace(
                          '3e-3', '0.003')):
    assert default in text, default
  for name in methods.available():  # read from mtl_optax.catalog
    assert name in text
  for name in methods.PRE_TRANSFORMS:
    assert name in text
  # No argparse filler: unset options and flags show no default, a list
  # default shows its values.
  for glitch in ('(default: None)', '(default: False)', "['multidigits']",
                 'BATCH_SIZE', 'EVAL_EVERY', 'CACHE_DIR'):
    assert glitch not in text, glitch
  assert '(default: multidigits)' in text
  usage = _run('mtl_bench', ['--help'], tmp_path).stdout
  assert usage.startswith('usage: python -m mtl_bench')


def test_new_run_dir_never_reuses_a_folder(tmp_path):
  first = cli.new_run_dir(str(tmp_path / 'runs'))
  second = cli.new_run_dir(str(tmp_path / 'runs'))
  assert first != second
  assert os.path.isdir(first) and os.path.isdir(second)
  assert sorted(os.listdir(tmp_path / 'runs')) == sorted(
      [os.path.basename(first), os.path.basename(second)])


@pytest.mark.slow
def test_trainer_writes_outputs_caches_baselines_and_never_overwrites(
    tmp_path, capsys):
  from mtl_bench import train  # pylint: disable=g-import-not-at-top
  argv = ['--method', 'equal_weighting', '--steps', '6', '--eval-every', '3',
          '--seeds', '2', '--batch-size', '16', '--hidden', '16',
          '--out', str(tmp_path / 'runs'), '--cache-dir',
          str(tmp_path / 'cache')]
  first = train.main(argv)
  cache_files = sorted(os.listdir(tmp_path / 'cache'))
  assert len(cache_files) == 2  # the single-task and fixed-weight groups
  second = train.main(argv + ['--out', str(tmp_path / 'other')])
  output = capsys.readouterr().out
  assert output.count('cached (') == 2  # the second run trained no baseline
  assert sorted(os.listdir(tmp_path / 'cache')) == cache_files
  assert first['run_dir'] != second['run_dir']
  for result in (first, second):
    run_dir = result['run_dir']
    for name in ('results.md', 'results.json', 'metrics_multidigits.png',
                 'weights_multidigits.png', 'delta_p.png', 'tradeoff.png',
                 'plot_data.pkl'):
      assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
  third = train.main(argv + ['--no-plots'])
  assert len(os.listdir(tmp_path / 'runs' / 'multidigits')) == 2
  assert third['run_dir'] != first['run_dir']

  with open(os.path.join(first['run_dir'], 'results.json')) as file:
    summary = json.load(file)
  rows = summary['regimes'][0]['rows']
  assert set(rows) == {'equal weighting (tuned lr)',
                       'fixed weights (tuned lr, weights)', 'equal_weighting'}
  # equal_weighting at one lr is the grid's equal weights at that lr: the
  # same networks, batches and sums, so the same test metrics.
  np.testing.assert_allclose(rows['equal_weighting']['test_per_seed'],
                             rows['equal weighting (tuned lr)']
                             ['test_per_seed'], rtol=1e-4)
  state, effective = first['results'][0]['weight_curves']['equal_weighting']
  assert state.shape == (6, 3)
  np.testing.assert_allclose(state, 1.0)  # w_t = 1 (reduction='sum')
  np.testing.assert_allclose(effective, 1.0, rtol=1e-3)
  table = open(os.path.join(first['run_dir'], 'results.md')).read()
  assert 'single-task (STL)' in table and '| equal_weighting' in table
  assert summary['command'].startswith('python examples/train.py')
