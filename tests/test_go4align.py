"""GO4Align: k-means groups of the risk-guided indicators weigh the losses.

Expected values are worked by hand from the official code's formula
(``autumn9999/GO4Align``, ``GO4ALIGN.get_weighted_loss``):
``p ← p exp(−η L) / Σ``, ``γ_t = (Σ_s L_s / L_t) p_t``, then each task gets
the mean ``γ`` of its k-means group.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from mtl_optax._src.methods.go4align import group_means
from one_backward import assert_both_paths_agree


def _weights(tx, loss_sequence):
  eye = jnp.eye(len(loss_sequence[0]))
  step = jax.jit(lambda state, losses: tx.update(eye, state,
                                                 task_losses=losses))
  state, weights = tx.init(None), []
  for losses in loss_sequence:
    updates, state = step(state, jnp.asarray(losses, jnp.float32))
    weights.append(np.asarray(updates))
  return weights, state


def test_two_steps_match_the_hand_worked_formula():
  tx = mtl.go4align(4, num_groups=2, learning_rate=0.5)
  weights, _ = _weights(tx, [[1.0, 2.0, 4.0, 8.0], [2.0, 2.0, 2.0, 2.0]])
  # Step 1: p ∝ exp(−0.5 [1, 2, 4, 8]) = [0.5376754, 0.3261166, 0.1199716,
  # 0.0162364]; Σ L / L = [15, 7.5, 3.75, 1.875];
  # γ = [8.0651310, 2.4458746, 0.4498935, 0.0304432]. Start centres: the
  # sorted γ at ranks 1 and 3, [0.4498935, 8.0651310]; 2.4458805 is nearer
  # the first, so the groups are {8.07} and {2.45, 0.45, 0.03}, whose mean
  # is 0.9754038; they do not change at the next iteration.
  p1 = np.exp(-0.5 * np.array([1.0, 2.0, 4.0, 8.0]))
  p1 /= p1.sum()
  gamma1 = 15.0 / np.array([1.0, 2.0, 4.0, 8.0]) * p1
  np.testing.assert_allclose(gamma1, [8.0651310, 2.4458746, 0.4498935,
                                      0.0304432], rtol=2e-6)
  low1 = gamma1[1:].mean()
  np.testing.assert_allclose(low1, 0.9754038, rtol=1e-6)
  np.testing.assert_allclose(weights[0], [gamma1[0], low1, low1, low1],
                             rtol=1e-5)
  # Step 2: equal losses shift every logit alike, so p stays; Σ L / L = 4,
  # γ = 4 p1 = [2.1507016, 1.3044665, 0.4798864, 0.0649456]. Start centres
  # [0.4798864, 2.1507016]: 1.3044665 is nearer the first (0.82 < 0.85),
  # giving {2.15} and the mean 0.6164328 of the rest, which keeps 1.30
  # (0.69 < 0.85) at the next iteration.
  gamma2 = 4 * p1
  low2 = gamma2[1:].mean()
  np.testing.assert_allclose(low2, 0.6164328, rtol=1e-6)
  np.testing.assert_allclose(weights[1], [gamma2[0], low2, low2, low2],
                             rtol=1e-5)


def test_one_group_or_one_group_per_task():
  losses = [[1.0, 1.0, 4.0]]  # η = 0: p = 1/3, γ = (6 / L) / 3 = [2, 2, 0.5].
  weights, _ = _weights(mtl.go4align(3, num_groups=1, learning_rate=0.0),
                        losses)
  np.testing.assert_allclose(weights[0], [1.5, 1.5, 1.5], rtol=1e-6)
  # K > T counts as T: every task alone, w = γ.
  weights, _ = _weights(mtl.go4align(3, num_groups=5, learning_rate=0.0),
                        losses)
  np.testing.assert_allclose(weights[0], [2.0, 2.0, 0.5], rtol=1e-6)


def test_group_means_is_lloyd_from_the_order_statistics():
  # Start centres: sorted [0, 1, 9, 10, 11] at ranks 0 and 3 (⌊0.5·5/2⌋,
  # ⌊1.5·5/2⌋) = [0, 10]; groups {0, 1} and {9, 10, 11}: means 0.5 and 10.
  values = jnp.array([10.0, 0.0, 11.0, 1.0, 9.0])
  np.testing.assert_allclose(group_means(values, 2, 5),
                             [10.0, 0.5, 10.0, 0.5, 10.0])


def test_one_backward_path_agrees():
  assert_both_paths_agree(mtl.go4align(3, learning_rate=0.1), 3)


def test_invalid_arguments_raise():
  with pytest.raises(ValueError, match='num_groups'):
    mtl.go4align(2, num_groups=0)
  with pytest.raises(ValueError, match='kmeans_iters'):
    mtl.go4align(2, kmeans_iters=0)
  with pytest.raises(ValueError, match='learning_rate'):
    mtl.go4align(2, learning_rate=-1.0)
