"""IGB (IGBv1): T · softmax(L / B) on the log losses, B the base losses.

Expected values are worked by hand from the official code's formula
(``YanqiDai/IGB4MTL``, ``ImprovableGapBalancing_v1``): before the base
losses exist the weights are 1, then ``v = T · softmax(L / B)``; the
objective is ``Σ_t v_t log L_t``, whose gradient weights are ``v_t / L_t``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from one_backward import assert_both_paths_agree


def _weights(tx, loss_sequence):
  eye = jnp.eye(len(loss_sequence[0]))
  step = jax.jit(lambda state, losses: tx.update(eye, state,
                                                 task_losses=losses))
  state, weights = tx.init(None), []
  for losses in loss_sequence:
    updates, state = step(state, jnp.asarray(losses, jnp.float32))
    weights.append(np.asarray(updates))  # Identity gradients: the weights.
  return weights, state


def test_base_window_then_softmax_of_the_gaps():
  tx = mtl.igb(2, base_steps=2, skip_steps=1)
  losses = [[4.0, 1.0], [2.0, 1.0], [4.0, 3.0], [3.0, 1.0]]
  weights, state = _weights(tx, losses)
  # Steps 0-2: no base yet, v = 1, w = 1/L. Step 0 is skipped; steps 1 and
  # 2 are the base: B = mean([2, 1], [4, 3]) = [3, 2].
  np.testing.assert_allclose(weights[0], [0.25, 1.0], rtol=1e-6)
  np.testing.assert_allclose(weights[1], [0.5, 1.0], rtol=1e-6)
  np.testing.assert_allclose(weights[2], [0.25, 1 / 3], rtol=1e-6)
  np.testing.assert_allclose(state.weighting_state.base_losses, [3.0, 2.0],
                             rtol=1e-6)
  # Step 3: gaps L/B = [1, 0.5]; v = 2 softmax = 2 [e, e^0.5] / (e + e^0.5)
  # = [1.2449187, 0.7550813]; w = v / L = [0.4149729, 0.7550813].
  v = 2 * np.array([math.e, math.exp(0.5)]) / (math.e + math.exp(0.5))
  np.testing.assert_allclose(v, [1.2449187, 0.7550813], rtol=1e-6)
  np.testing.assert_allclose(weights[3], v / np.array([3.0, 1.0]),
                             rtol=1e-6)
  # The base stays fixed after its window.
  np.testing.assert_allclose(state.weighting_state.base_losses, [3.0, 2.0],
                             rtol=1e-6)


def test_equal_gaps_give_the_scale_invariant_log_losses():
  # L = B: every gap is 1, v = 1, w = 1/L (Σ log L_t).
  weights, _ = _weights(mtl.igb(3), [[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
  np.testing.assert_allclose(weights[1], [1.0, 0.5, 0.25], rtol=1e-6)


def test_one_backward_path_agrees():
  assert_both_paths_agree(mtl.igb(3, base_steps=1), 3)


def test_invalid_arguments_raise():
  with pytest.raises(ValueError, match='base_steps'):
    mtl.igb(2, base_steps=0)
  with pytest.raises(ValueError, match='skip_steps'):
    mtl.igb(2, skip_steps=-1)
  with pytest.raises(ValueError, match='loss_floor'):
    mtl.igb(2, loss_floor=0.0)
  tx = mtl.igb(2)
  with pytest.raises(ValueError, match='task_losses'):
    tx.update(jnp.eye(2), tx.init(None))
