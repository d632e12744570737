"""One registry: the catalog drives the suite, the trainer and the tables.

The last test follows docs/contributing.md's "Adding a method" with a toy
weighting: its code, one ``Method(...)`` registration and its page put it in
the property suite, the benchmark trainer and the README's method table.
"""

import pathlib
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import mtl_optax as mtl
from mtl_optax import catalog

# The repository root is on the path (pyproject.toml: pythonpath).
from tools import generate_method_table

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _bases():
  return sorted({generate_method_table.base_name(m) for m in catalog.METHODS})


def test_the_readme_method_table_is_current():
  result = subprocess.run(
      [sys.executable, str(ROOT / 'tools' / 'generate_method_table.py'),
       '--check'], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


def test_every_catalog_method_has_a_page_and_a_row_in_the_docs_table():
  table = (ROOT / 'docs' / 'methods.md').read_text(encoding='utf-8')
  for name in _bases():
    assert (ROOT / 'docs' / 'methods' / f'{name}.md').exists(), name
    assert f'(methods/{name}.md)' in table, name


def test_every_docs_table_row_is_a_catalog_method_or_a_helper():
  """No row outlives its method (MGDA-UB is a function, not an entry)."""
  table = (ROOT / 'docs' / 'methods.md').read_text(encoding='utf-8')
  linked = set(re.findall(r'\(methods/([a-z0-9_]+)\.md\)', table))
  helpers = {'representation_balanced_grads', 'log_scaling', 'gradient_ema'}
  assert linked - set(_bases()) <= helpers


def _toy(*, temperature: float = 1.0) -> mtl.Weighting:
  """Softmax of minus the squared norms: small gradients weigh more.

  A toy for the registry test, not a published method.
  """

  def weigh(stats, state):
    norms = jnp.diagonal(stats.gram) * stats.scale ** 2
    shifted = norms - jnp.min(norms)  # The softmax is shift-invariant.
    return jax.nn.softmax(-shifted / temperature), state

  return mtl.Weighting(weigh=weigh, name='toy')


def test_adding_a_method_reaches_the_suite_the_trainer_and_the_table(
    monkeypatch, tmp_path):
  import mtl_bench.methods  # pylint: disable=g-import-not-at-top
  import test_properties  # pylint: disable=g-import-not-at-top

  # Step 1 and 2 of "Adding a method": the weighting, and one registration.
  toy = catalog.Method('toy', mtl.balancer_factory(_toy), {'temperature': 1.0},
                       False, frozenset({catalog.PERMUTATION_INVARIANT}),
                       make_weighting=_toy)
  monkeypatch.setattr(catalog, 'METHODS', catalog.METHODS + [toy])

  # The trainer offers it and builds it.
  assert 'toy' in mtl_bench.methods.available(num_tasks=3)
  tx = mtl_bench.methods.make('toy', 3)
  grads = jnp.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
  updates, _ = tx.update(grads, tx.init(jnp.zeros(2)))
  # Norms² 1, 4, 0 -> softmax(-(1, 4, 0)) = e^(-1, -4, 0) / (e^-1 + e^-4 + 1).
  weights = np.exp([-1.0, -4.0, 0.0]) / np.exp([-1.0, -4.0, 0.0]).sum()
  np.testing.assert_allclose(updates, [weights[0], 2 * weights[1]],
                             rtol=1e-6)

  # The shared property suite runs on it as on every catalog entry (it
  # collects the catalog when pytest starts; here it is told of the toy).
  monkeypatch.setitem(test_properties._BY_NAME, 'toy', toy)  # pylint: disable=protected-access
  test_properties.test_no_retrace_and_state_is_stable(toy)
  test_properties.test_structure_shape_and_dtype_in_three_precisions(toy)
  test_properties.test_non_finite_input_skips_and_leaves_state_untouched(toy)
  test_properties.test_permutation_invariant(toy)

  # Step 3, its page, puts it in the README's generated table.
  pages = tmp_path / 'methods'
  shutil.copytree(ROOT / 'docs' / 'methods', pages)
  (pages / 'toy.md').write_text(
      '# Toy weighting\n\nA test.\n\n## Reference\n\nNobody, 2026.\n',
      encoding='utf-8')
  monkeypatch.setattr(generate_method_table, 'PAGES', pages)
  rows = generate_method_table.rows(catalog.METHODS)
  assert ('| [Toy weighting](docs/methods/toy.md) | `mtl.toy` | Nobody, 2026 '
          '| no | – | yes | – |') in rows
