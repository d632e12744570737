"""The MultiDigits example: data, Δp, statistics, method specs, regimes.

The command line and the trainer's outputs are tested in test_trainer_cli.py.
"""

import ast
import math
import pathlib
import subprocess
import sys

import numpy as np
import optax
import pytest
from sklearn import datasets

import mtl_optax as mtl
from mtl_bench import methods
from mtl_bench import multidigits
from mtl_bench import report
from mtl_bench import stats
from mtl_optax import catalog


@pytest.fixture(scope='module')
def small_data():
  return multidigits.load(num_train=64, num_val=16, num_test=32)


def test_compose_places_digits_and_takes_max_on_overlap():
  # Hand-built: top-left all 1, bottom-right all 2 on a 12×12 canvas with the
  # second digit at (4, 4): rows/cols 4..7 overlap and hold max(1, 2) = 2.
  top_left = np.ones((1, 8, 8), np.float32)
  bottom_right = np.full((1, 8, 8), 2.0, np.float32)
  canvas = multidigits.compose(top_left, bottom_right)[0]
  assert canvas.shape == (12, 12)
  np.testing.assert_array_equal(canvas[:4, :8], 1.0)
  np.testing.assert_array_equal(canvas[:8, :4], 1.0)
  np.testing.assert_array_equal(canvas[4:8, 4:8], 2.0)
  np.testing.assert_array_equal(canvas[8:, 4:], 2.0)
  np.testing.assert_array_equal(canvas[8:, :4], 0.0)
  np.testing.assert_array_equal(canvas[:4, 8:], 0.0)


def test_labels_and_pixels_come_from_the_source_digits(small_data):
  digits = datasets.load_digits()
  for split in small_data:
    first, second = split.top_left_source, split.bottom_right_source
    np.testing.assert_array_equal(split.top_left_label, digits.target[first])
    np.testing.assert_array_equal(
        split.digit_sum, digits.target[first] + digits.target[second])
    np.testing.assert_array_equal(
        split.bottom_right_pixels, digits.images[second].reshape(-1, 64))
    # Outside the overlap the canvas is each source digit over 16.
    np.testing.assert_allclose(split.images[:, :4, :8],
                               digits.images[first][:, :4, :] / 16.0)
    np.testing.assert_allclose(split.images[:, 8:, 4:],
                               digits.images[second][:, 4:, :] / 16.0)
  assert small_data.train.images.shape == (64, 12, 12)
  assert small_data.test.bottom_right_pixels.shape == (32, 64)
  assert small_data.train.images.dtype == np.float32


def test_train_validation_and_test_use_disjoint_source_digits(small_data):
  sources = [set(split.top_left_source) | set(split.bottom_right_source)
             for split in small_data]
  assert not sources[0] & sources[1]
  assert not sources[0] & sources[2]
  assert not sources[1] & sources[2]


def test_delta_p_matches_a_hand_computation():
  # Eq. 4 with one metric per task: accuracy 0.9 vs 1.0 is −10 %; an error of
  # 2.0 vs 1.0 (lower is better) is −100 %; eq. 3 averages them: −55 %.
  assert report.delta_p([0.9, 2.0], [1.0, 1.0], [True, False]) == (
      pytest.approx(-55.0))
  assert report.delta_p([1.1, 0.5], [1.0, 1.0], [True, False]) == (
      pytest.approx(30.0))
  # Leading axes are seeds: one Δp per row.
  np.testing.assert_allclose(
      report.delta_p([[0.9, 2.0], [1.1, 0.5]], [1.0, 1.0], [True, False]),
      [-55.0, 30.0])


def test_t_quantiles_match_closed_forms():
  # df = 2: F(t) = 1/2 + t / (2 √(2 + t²)); F = 0.975 gives t² = 1.805 /
  # 0.0975, t = 4.302652729911275 (also the printed t-tables' value).
  assert stats.t_quantile(0.975, 2) == pytest.approx(4.302652729911275,
                                                     rel=1e-8)
  # df = 1 is Cauchy: F(t) = 1/2 + atan(t)/π, so F(1) = 3/4.
  assert stats.t_cdf(1.0, 1) == pytest.approx(0.75, rel=1e-12)
  assert stats.t_cdf(-1.0, 1) == pytest.approx(0.25, rel=1e-12)
  # Large df tends to the normal: t_{0.975} → 1.959964.
  assert stats.t_quantile(0.975, 1e7) == pytest.approx(1.959964, rel=1e-5)


def test_mean_interval_by_hand():
  # [1, 2, 3]: mean 2, s = 1, half-width t_{0.975, 2} · 1/√3.
  interval = stats.mean_interval([1.0, 2.0, 3.0])
  assert interval.mean == pytest.approx(2.0)
  assert interval.half_width == pytest.approx(4.302652729911275 / math.sqrt(3),
                                              rel=1e-8)
  assert math.isnan(stats.mean_interval([5.0]).half_width)


def test_welch_by_hand():
  # a = [0, 2], b = [3, 5]: s² = 2 each, v = s²/n = 1 each, t = −3/√2,
  # df = (1 + 1)² / (1/1 + 1/1) = 2, and with F for df = 2 (above) the
  # two-sided p = 1 − |t|/√(2 + t²) = 1 − (3/√2)/√6.5.
  test = stats.welch([0.0, 2.0], [3.0, 5.0])
  assert test.t == pytest.approx(-3 / math.sqrt(2))
  assert test.df == pytest.approx(2.0)
  assert test.p == pytest.approx(1 - (3 / math.sqrt(2)) / math.sqrt(6.5),
                                 rel=1e-9)
  # Unequal sizes and spreads: a = [1, 2, 3] (v = 1/3), b = [0, 4] (v = 4):
  # df = (13/3)² / ((1/3)²/2 + 4²/1) = (169/9) / (1/18 + 16) = 338/289.
  assert stats.welch([1.0, 2.0, 3.0], [0.0, 4.0]).df == pytest.approx(
      338 / 289)
  assert math.isnan(stats.welch([1.0], [2.0, 3.0]).p)


def test_every_public_method_is_in_the_methods_table():
  helpers = {'balancer', 'gramian', 'weighted_sum', 'value_and_task_grads',
             'representation_balanced_grads', 'min_norm_weights',
             'balancer_factory', 'last_weights', 'weigh_losses',
             'value_and_gramian', 'value_and_balanced_grad', 'cross_gramian',
             'cross_balancer', 'cross_balancer_factory', 'stch_value',
             'cosmos_value', 'pbi_value',
             # A combinator: its argument is a weighting, not a literal.
             'smoothed'}
  public = {name for name in dir(mtl) if name[0].islower()
            and not name.startswith('_') and callable(getattr(mtl, name))}
  listed = set(methods.balancers()) | set(methods.PRE_TRANSFORMS)
  assert public - helpers - listed == set()
  assert listed <= public


def test_every_spec_of_compare_all_builds():
  for spec in methods.compare_all(3):
    assert methods.canonical(spec) == spec
    methods.check(spec, 3)


def test_catalog_options_map_to_their_keywords():
  offered = methods.available(3)
  # An option is its factory with the keywords that set it apart from the
  # plain entry (mgda's entry has normalization='none', the default).
  assert offered['mgda'] == 'mgda'
  assert offered['mgda.l2'] == "mgda(normalization='l2')"
  assert offered['task_tensioner.mgda'] == "task_tensioner(base='mgda')"
  # Test-tuned values of a plain entry stay out: upgrad's reg_eps=0.
  assert offered['upgrad'] == 'upgrad'
  assert methods.canonical('mgda.l2') == "mgda(normalization='l2')"
  # Test-only variants are not offered; the baselines are not compared.
  assert 'stch.small_mu' not in offered
  compared = methods.compare_all(3)
  assert 'equal_weighting' not in compared
  assert 'log_scaling+equal_weighting' in compared


def _toy_factory(num_tasks, *, scale=2.0, learning_rate=None,
                 task_specific=None):
  """Equal weights times ``scale``; with a learning rate, also an SGD step."""
  weighting = mtl.weightings.fixed_weighting([scale] * num_tasks)
  balancer = mtl.balancer(num_tasks, weighting, task_specific=task_specific)
  if learning_rate is None:
    return balancer
  return optax.chain(balancer, optax.sgd(learning_rate))


def test_a_new_catalog_entry_is_a_trainer_method(monkeypatch):
  """One registration: the trainer offers, compares and builds the method."""
  monkeypatch.setattr(catalog, 'METHODS', catalog.METHODS + [
      catalog.Method('toy_weighting', _toy_factory, {'scale': 2.0}, False,
                     frozenset()),
      catalog.Method('toy_optimizer', _toy_factory, {'scale': 1.0}, False,
                     frozenset(), replaces_optimizer=True)])
  assert methods.available()['toy_weighting'] == 'toy_weighting'
  assert 'toy_weighting' in methods.compare_all(3)
  assert not methods.replaces_optimizer('toy_weighting')
  grads = np.array([[1.0, 0.0], [0.0, 3.0]], np.float32)
  params = np.zeros(2, np.float32)
  toy = methods.make('toy_weighting', 2)
  np.testing.assert_allclose(toy.update(grads, toy.init(params))[0],
                             [2.0, 6.0])  # 2 · (g_1 + g_2)
  # A method that is the whole optimizer gets the trainer's learning rate.
  assert methods.replaces_optimizer('toy_optimizer')
  whole = methods.make('toy_optimizer', 2, learning_rate=0.5)
  np.testing.assert_allclose(whole.update(grads, whole.init(params))[0],
                             [-0.5, -1.5])  # −0.5 · (g_1 + g_2)


def test_method_specs_parse_compose_and_reject_unknown_pieces():
  assert methods.canonical('log_scaling + cagrad( c = 0.4 )') == (
      'log_scaling+cagrad(c=0.4)')
  assert methods.parse("mgda(normalization='loss+')")[0].kwargs == (
      ('normalization', 'loss+'),)
  chained = methods.make('log_scaling+equal_weighting', 2)
  updates, _ = chained.update(np.array([[2.0, 0.0], [0.0, 8.0]], np.float32),
                              chained.init(np.zeros(2, np.float32)),
                              task_losses=np.array([2.0, 4.0], np.float32))
  # g_t / L_t summed: [1, 0] + [0, 2].
  np.testing.assert_allclose(updates, [1.0, 2.0], rtol=1e-6)
  fixed = methods.make('fixed_weighting(weights=[0.25, 2.0])', 2)
  updates, _ = fixed.update(np.array([[4.0, 0.0], [0.0, 1.0]], np.float32),
                            fixed.init(np.zeros(2, np.float32)))
  np.testing.assert_allclose(updates, [1.0, 2.0])  # 0.25·4, 2·1
  with pytest.raises(ValueError, match='unknown balancer'):
    methods.parse('log_scaling+nope')
  with pytest.raises(ValueError, match='unknown pre-transform'):
    methods.parse('nope+mgda')
  with pytest.raises(ValueError, match="no hyper-parameter 'cc'"):
    methods.check('cagrad(cc=1.0)', 3)
  with pytest.raises(ValueError, match='needs weights'):
    methods.check('fixed_weighting', 3)
  methods.check('fixed_weighting', 3, weights_given=True)


def test_regimes_scale_losses_and_mask_the_trunk(small_data):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from mtl_bench import model  # pylint: disable=g-import-not-at-top
  from mtl_bench import vmapped as engine  # pylint: disable=g-import-not-at-top
  base = multidigits.REGIMES['multidigits']
  scaled = multidigits.REGIMES['loss_scales']
  plain = engine.initial_losses(small_data, base, 16)
  np.testing.assert_allclose(engine.initial_losses(small_data, scaled, 16),
                             plain * np.asarray(scaled.loss_scales), rtol=1e-5)
  # At initialisation the cross-entropy of 10 classes is near log 10.
  assert abs(plain[0] - math.log(10)) < 0.5
  # A trunk mask of zeros leaves the heads only their biases.
  network = model.MultiDigitsNet(hidden=16, rngs=nnx.Rngs(0))
  outputs = network(small_data.train.images[:4], trunk_mask=np.zeros(16))
  np.testing.assert_allclose(outputs[0], np.broadcast_to(
      network.heads[0].bias[...], (4, 10)))
  arrays = engine.regime_arrays(multidigits.REGIMES['bottleneck'], 16)
  np.testing.assert_array_equal(arrays['trunk_mask'],
                                [1.0] * 6 + [0.0] * 10)


def test_fixed_weight_grid_by_hand():
  from mtl_bench import train  # pylint: disable=g-import-not-at-top
  # L₀ = (1, 4, 16): 1/L₀ ∝ (16, 4, 1)/16 and 1/√L₀ ∝ (4, 2, 1)/4, each
  # rescaled to sum to T = 3.
  equal, inverse, root = train.weightings([1.0, 4.0, 16.0])
  np.testing.assert_allclose(equal, [1.0, 1.0, 1.0])
  np.testing.assert_allclose(inverse, np.array([16.0, 4.0, 1.0]) * 3 / 21)
  np.testing.assert_allclose(root, np.array([4.0, 2.0, 1.0]) * 3 / 7)


def test_selection_uses_validation_not_test():
  # Two learning rates × two seeds of one task-agnostic group: lr 0.1 wins
  # on validation (Δp 0 vs −50 %) but loses on test; selection must pick it.
  single_task = {'val_reference': np.array([1.0, 1.0, 1.0]),
                 'test_reference': np.array([1.0, 1.0, 1.0])}
  good_val = np.ones((1, 3))
  bad_val = np.array([[0.5, 1.5, 1.5]])
  group = {'config': [(0.1, None), (0.1, None), (0.2, None), (0.2, None)],
           'val': np.stack([good_val, good_val, bad_val, bad_val]),
           'test': np.stack([bad_val, bad_val, good_val, good_val])}
  row = report.select(group, [(0.1, None), (0.2, None)], single_task)
  assert row['config'] == (0.1, None)
  assert row['val_delta_p'] == pytest.approx(0.0)
  np.testing.assert_allclose(row['delta_p_per_seed'], [-50.0, -50.0])


EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / 'examples'
# What an example may import: the library, its JAX stack, NumPy, the
# standard library and scikit-learn's bundled digits.
ALLOWED_IMPORTS = {'mtl_optax', 'jax', 'optax', 'flax', 'numpy', 'sklearn',
                   *sys.stdlib_module_names}
# The thin wrapper over the benchmark package imports it, by design.
BENCHMARK_WRAPPERS = {'train.py'}


@pytest.mark.parametrize('path', sorted(EXAMPLES.glob('*.py')),
                         ids=lambda path: path.name)
def test_examples_are_standalone_scripts(path):
  """No sys.path hacks; imports only the library, JAX, NumPy, stdlib."""
  source = path.read_text(encoding='utf-8')
  assert 'sys.path' not in source
  roots = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      roots |= {alias.name.split('.')[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      roots.add(node.module.split('.')[0])
  allowed = ALLOWED_IMPORTS | (
      {'mtl_bench'} if path.name in BENCHMARK_WRAPPERS else set())
  assert roots <= allowed, roots - allowed


@pytest.mark.slow
@pytest.mark.parametrize('name', ['flax_nnx.py', 'flax_linen.py'])
def test_flax_examples_train_with_task_specific_heads(name):
  result = subprocess.run([sys.executable, str(EXAMPLES / name)],
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr
  lines = [line.split() for line in result.stdout.splitlines()
           if line.startswith('step')]
  assert [int(line[1]) for line in lines] == [0, 100, 200, 300]
  first, last = ([float(v) for v in line[3:6]] for line in (lines[0],
                                                             lines[-1]))
  assert sum(last) < 0.5 * sum(first)  # every run learns
  weights = [float(v) for v in lines[-1][7:10]]
  assert min(weights) >= 0 and abs(sum(weights) - 1) < 1e-3  # MGDA: simplex
