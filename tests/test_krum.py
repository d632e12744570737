"""Krum / Multi-Krum: TorchJD 0.18 values on J5 (issue 12) and hand-derived
distances."""

import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl

J5 = jnp.array([[-4.0, 1, 1, 0], [6, 1, 1, 2], [1, -2, 0, 1],
                [0.5, 0.5, 3, -1], [2, 2, 2, 2]])


@pytest.mark.parametrize('num_selected, expected', [
    (1, [2.0, 2.0, 2.0, 2.0]),  # TorchJD 0.18 Krum(1, 1) on J5.
    (2, [1.25, 1.25, 2.5, 0.5]),  # TorchJD 0.18 Krum(1, 2) on J5.
])
def test_torchjd_values(num_selected, expected):
  tx = mtl.krum(5, num_byzantine=1, num_selected=num_selected)
  updates, _ = tx.update(J5, tx.init(None))
  np.testing.assert_allclose(updates, expected, atol=1e-4)


def test_hand_derived_scores_and_ties():
  # Points [1,1], [2,1], [1,2], [11,11]; f = 0, T = 4: 2 nearest neighbours.
  # Distances: d01 = d02 = 1, d12 = √2, d03 = √200 = 14.14, d13 = d23 = √181
  # = 13.45. Scores: 0: 1 + 1 = 2; 1 and 2: 1 + √2 = 2.414; 3: 2 · 13.45.
  grads = jnp.array([[1.0, 1.0], [2.0, 1.0], [1.0, 2.0], [11.0, 11.0]])
  tx = mtl.krum(4, num_byzantine=0)
  updates, state = tx.update(grads, tx.init(None))
  np.testing.assert_array_equal(state.weights, [1.0, 0.0, 0.0, 0.0])
  np.testing.assert_array_equal(updates, [1.0, 1.0])
  # Multi-Krum picks task 0 and one of the tied tasks 1, 2: the lower index.
  tx = mtl.krum(4, num_byzantine=0, num_selected=2)
  updates, state = tx.update(grads, tx.init(None))
  np.testing.assert_array_equal(state.weights, [0.5, 0.5, 0.0, 0.0])
  np.testing.assert_array_equal(updates, [1.5, 1.0])


def test_weighting_reads_only_the_gramian():
  # Same scores from the Gramian alone, through the weighting value.
  weighting = mtl.weightings.krum(num_byzantine=1, num_selected=2)
  gram, scale = mtl.gramian(J5)
  weights, _ = weighting.weigh(mtl.TaskStats(gram, scale, None, 5),
                               weighting.init(5))
  np.testing.assert_allclose(weights @ J5, [1.25, 1.25, 2.5, 0.5], atol=1e-4)


@pytest.mark.parametrize('kwargs, match', [
    ({'num_byzantine': -1}, 'num_byzantine'),
    ({'num_byzantine': True}, 'num_byzantine'),
    ({'num_byzantine': 1.0}, 'num_byzantine'),
    ({'num_byzantine': 0, 'num_selected': 0}, 'num_selected'),
    ({'num_byzantine': 3}, 'num_tasks >= num_byzantine \\+ 3 = 6'),
    ({'num_byzantine': 0, 'num_selected': 6}, 'num_selected = 6'),
])
def test_invalid_arguments_are_rejected_at_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mtl.krum(5, **kwargs)
