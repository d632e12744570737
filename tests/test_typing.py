"""The public API is typed: a current stub, checked calls, help() that helps."""

import inspect
import pathlib
import subprocess
import sys
import textwrap

import pytest

import mtl_optax as mtl

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_stub_is_current():
  """tools/generate_stub.py --check: the stub matches the package."""
  result = subprocess.run(
      [sys.executable, str(ROOT / 'tools' / 'generate_stub.py'), '--check'],
      capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


def test_every_factory_documents_its_weightings_parameters():
  for name in mtl.__all__:
    factory = getattr(mtl, name)
    wrapped = getattr(factory, '__wrapped__', None)
    if getattr(factory, '__module__', None) != 'mtl_optax' or not wrapped:
      continue
    parameters = inspect.signature(factory).parameters
    assert list(parameters)[0] == 'num_tasks', name
    assert 'task_specific' in parameters, name
    for parameter in inspect.signature(wrapped).parameters:
      assert parameter in parameters, (name, parameter)
    # help(mtl.<name>) shows the weighting's own docstring (its Args).
    assert inspect.getdoc(wrapped) in factory.__doc__, name


@pytest.mark.slow
def test_mypy_flags_a_bad_keyword_and_accepts_good_calls(tmp_path):
  (tmp_path / 'bad.py').write_text(textwrap.dedent('''
      import mtl_optax as mtl
      tx = mtl.upgrad(4, bogus=1)
      '''))
  (tmp_path / 'good.py').write_text(textwrap.dedent('''
      import optax
      import mtl_optax as mtl
      tx = optax.chain(mtl.upgrad(4, reg_eps=1e-3), optax.adam(1e-3))
      tx2 = mtl.mgda(3, normalization='l2', task_specific={'heads': True})
      tx3 = mtl.balancer(4, mtl.weightings.upgrad(reg_eps=0.0))
      weights = mtl.last_weights(tx.init(None))
      '''))
  result = subprocess.run(
      [sys.executable, '-m', 'mypy', '--config-file',
       str(ROOT / 'pyproject.toml'), '--no-incremental', 'bad.py', 'good.py'],
      cwd=tmp_path, capture_output=True, text=True, check=False)
  lines = [line for line in result.stdout.splitlines() if ': error:' in line]
  assert len(lines) == 1, result.stdout
  assert lines[0].startswith('bad.py:3:'), result.stdout
  assert 'Unexpected keyword argument "bogus" for "upgrad"' in lines[0]
