"""The MultiDigits example: the data builder, Δp, the methods table, the trainer."""

import json
import math
import os
import sys

import numpy as np
import pytest
from sklearn import datasets

import mtl_optax as mtl

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'examples')
sys.path.insert(0, EXAMPLES)
import methods  # pylint: disable=g-import-not-at-top,wrong-import-position
import multidigits  # pylint: disable=g-import-not-at-top,wrong-import-position
import report  # pylint: disable=g-import-not-at-top,wrong-import-position
import train  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='module')
def small_data():
  return multidigits.load(num_train=64, num_test=32)


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


def test_train_and_test_use_disjoint_source_digits(small_data):
  train_sources = set(small_data.train.top_left_source) | set(
      small_data.train.bottom_right_source)
  test_sources = set(small_data.test.top_left_source) | set(
      small_data.test.bottom_right_source)
  assert not train_sources & test_sources


def test_delta_p_matches_a_hand_computation():
  # Eq. 4 with one metric per task: accuracy 0.9 vs 1.0 is −10 %; an error of
  # 2.0 vs 1.0 (lower is better) is −100 %; eq. 3 averages them: −55 %.
  assert report.delta_p([0.9, 2.0], [1.0, 1.0], [True, False]) == (
      pytest.approx(-55.0))
  assert report.delta_p([1.1, 0.5], [1.0, 1.0], [True, False]) == (
      pytest.approx(30.0))


def test_every_public_method_is_in_the_methods_table():
  helpers = {'balancer', 'gramian', 'weighted_sum', 'value_and_task_grads',
             'representation_balanced_grads', 'min_norm_weights',
             'fixed_weighting'}  # fixed_weighting trains the STL baselines.
  public = {name for name in dir(mtl) if name[0].islower()
            and not name.startswith('_') and callable(getattr(mtl, name))}
  listed = set(methods.BALANCERS) | set(methods.PRE_TRANSFORMS)
  assert public - helpers - listed == set()


def test_method_names_compose_and_reject_unknown_pieces():
  chained = methods.make('log_scaling+equal_weighting', 2)
  updates, _ = chained.update(np.array([[2.0, 0.0], [0.0, 8.0]], np.float32),
                              chained.init(np.zeros(2, np.float32)),
                              task_losses=np.array([2.0, 4.0], np.float32))
  # g_t / L_t summed: [1, 0] + [0, 2].
  np.testing.assert_allclose(updates, [1.0, 2.0], rtol=1e-6)
  with pytest.raises(ValueError, match='unknown balancer'):
    methods.check('log_scaling+nope')
  with pytest.raises(ValueError, match='unknown pre-transforms'):
    methods.check('nope+mgda')


@pytest.mark.slow
def test_trainer_writes_table_json_and_plots(tmp_path):
  result = train.main(['--compare', 'equal_weighting', 'db_mtl',
                       '--steps', '40', '--batch-size', '64',
                       '--out', str(tmp_path), '--no-progress'])
  for name in ('results.md', 'results.json', 'losses.png', 'weights.png',
               'single_task_cache.json'):
    assert (tmp_path / name).stat().st_size > 0
  with open(tmp_path / 'results.json') as file:
    summary = json.load(file)
  assert set(summary['methods']) == {'equal_weighting', 'db_mtl'}
  for row in summary['methods'].values():
    assert all(math.isfinite(value) for value in row['metrics_mean'])
    assert math.isfinite(row['delta_p_mean'])
  table = (tmp_path / 'results.md').read_text()
  assert '| db_mtl |' in table and 'single-task (STL)' in table
  for losses, weights in result['curves'].values():
    assert losses.shape == (40, 3) and np.all(np.isfinite(weights))
    # Cross-entropy and the summed loss went down over 40 Adam steps.
    assert losses[-5:, 0].mean() < losses[:5, 0].mean()
    assert losses[-5:].sum(axis=1).mean() < losses[:5].sum(axis=1).mean()
  # Equal weighting's least-squares weights are its own: all ones.
  np.testing.assert_allclose(result['curves']['equal_weighting'][1], 1.0,
                             rtol=1e-3)
