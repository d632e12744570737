"""FAMO: weights softmax(ξ − log L), logits learned from the loss decrease."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_optax as mtl
from one_backward import assert_both_paths_agree

_LOSSES = [[1.0, 2.0, 0.5], [0.6, 1.9, 0.45], [0.3, 1.7, 0.44],
           [0.25, 1.2, 0.4]]


def _run(tx, num_tasks, loss_sequence):
  eye = jnp.eye(num_tasks)
  step = jax.jit(lambda state, losses: tx.update(eye, state,
                                                 task_losses=losses))
  state, weights, states = tx.init(None), [], []
  for losses in loss_sequence:
    updates, state = step(state, jnp.asarray(losses, jnp.float32))
    weights.append(np.asarray(updates))  # Identity gradients: the weights.
    states.append(state)
  return weights, states


def _reference(loss_sequence, learning_rate=0.025, weight_decay=1e-3):
  """Float64 NumPy FAMO with the authors' Adam (coupled weight decay).

  Returns the weights and the logits after every update.
  """
  b1, b2, eps = 0.9, 0.999, 1e-8  # optax.adam / torch.optim.Adam defaults.
  num_tasks = len(loss_sequence[0])
  logits = np.zeros(num_tasks)
  m, v, adam_steps = np.zeros(num_tasks), np.zeros(num_tasks), 0
  previous, weights, logit_history = None, [], []
  for losses in loss_sequence:
    losses = np.asarray(losses, np.float64)
    if previous is not None:
      decrease = np.log(previous) - np.log(losses)  # δ
      z = np.exp(logits) / np.exp(logits).sum()
      jacobian = np.diag(z) - np.outer(z, z)  # ∂ softmax(ξ) / ∂ξ
      grad = jacobian.T @ decrease + weight_decay * logits
      adam_steps += 1
      m = b1 * m + (1 - b1) * grad
      v = b2 * v + (1 - b2) * grad ** 2
      m_hat, v_hat = m / (1 - b1 ** adam_steps), v / (1 - b2 ** adam_steps)
      logits = logits - learning_rate * m_hat / (np.sqrt(v_hat) + eps)
    z = np.exp(logits) / np.exp(logits).sum()
    weights.append((z / losses) / (z / losses).sum())
    logit_history.append(logits)
    previous = losses
  return weights, logit_history


def test_matches_a_float64_reference_over_four_updates():
  weights, states = _run(mtl.famo(3), 3, _LOSSES)
  expected_weights, expected_logits = _reference(_LOSSES)
  for k in range(4):
    np.testing.assert_allclose(weights[k], expected_weights[k], rtol=1e-5)
    np.testing.assert_allclose(states[k].weighting_state.logits,
                               expected_logits[k], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(states[k].weighting_state.previous_losses,
                               _LOSSES[k])
    assert int(states[k].weighting_state.count) == k + 1
  # After two updates: one Adam step, ±β per logit at most; the task whose
  # loss fell most (task 0, by log 1/0.6) loses logit.
  logits = states[1].weighting_state.logits
  assert logits[0] < 0 < logits[1]
  assert np.all(np.abs(logits) <= 0.025 + 1e-7)


def test_plain_gradient_step_by_hand():
  # Algorithm 1's step without Adam or decay. L(0) = [1, 1], L(1) = [0.5, 1]:
  # δ = [log 2, 0], z = [½, ½], (∂z/∂ξ)ᵀδ = z ⊙ (δ − zᵀδ) = [¼ log 2, −¼ log 2],
  # ξ = −β · that.
  beta = 0.5
  tx = mtl.famo(2, optimizer=optax.sgd(beta))
  weights, states = _run(tx, 2, [[1.0, 1.0], [0.5, 1.0]])
  np.testing.assert_allclose(weights[0], [0.5, 0.5])  # ξ = 0, equal losses.
  logit = beta * math.log(2) / 4
  np.testing.assert_allclose(states[1].weighting_state.logits, [-logit, logit],
                             rtol=1e-6)
  # w ∝ z / L = [e^{−ℓ} / 0.5, e^{ℓ} / 1].
  raw = [math.exp(-logit) / 0.5, math.exp(logit)]
  np.testing.assert_allclose(weights[1], [r / sum(raw) for r in raw],
                             rtol=1e-6)


def test_weights_sum_to_one_and_favour_small_losses_at_first():
  weights, states = _run(mtl.famo(3), 3, [[1.0, 2.0, 4.0]])
  # ξ = 0: w ∝ 1 / L = [4, 2, 1] / 7.
  np.testing.assert_allclose(weights[0], [4 / 7, 2 / 7, 1 / 7], rtol=1e-6)
  np.testing.assert_array_equal(states[0].weighting_state.logits,
                                [0.0, 0.0, 0.0])


def test_zero_and_negative_losses_are_floored():
  # [0, -1] count as [1e-8, 1e-8], then [1, 1e-8]: δ = [log 1e-8, 0].
  weights, states = _run(mtl.famo(2, optimizer=optax.sgd(1.0)), 2,
                         [[0.0, -1.0], [1.0, 0.0]])
  np.testing.assert_allclose(weights[0], [0.5, 0.5])
  logit = math.log(1e-8) / 4  # As in the hand-derived step above, β = 1.
  np.testing.assert_allclose(states[1].weighting_state.logits, [-logit, logit],
                             rtol=1e-5)
  assert np.all(np.isfinite(weights[1]))
  np.testing.assert_allclose(weights[1].sum(), 1.0, rtol=1e-6)


def test_non_finite_loss_leaves_logits_and_history_untouched():
  tx = mtl.famo(3)
  _, states = _run(tx, 3, _LOSSES[:2])
  step = jax.jit(lambda state, losses: tx.update(jnp.eye(3), state,
                                                 task_losses=losses))
  updates, bad = step(states[1], jnp.array([jnp.inf, 1.0, 1.0]))
  assert np.all(np.isnan(updates))
  jax.tree.map(np.testing.assert_array_equal, bad, states[1])
  updates, _ = step(bad, jnp.asarray(_LOSSES[2]))
  np.testing.assert_allclose(updates, _reference(_LOSSES[:3])[0][2],
                             rtol=1e-5)


def test_one_backward_path_gives_the_same_update():
  state = assert_both_paths_agree(mtl.famo(3), 3, num_steps=5)
  assert np.any(state.weighting_state.logits != 0.0)  # The logits did move.


def test_bad_arguments_are_rejected():
  with pytest.raises(ValueError, match='learning_rate'):
    mtl.famo(2, learning_rate=0.0)
  with pytest.raises(ValueError, match='weight_decay'):
    mtl.famo(2, weight_decay=-1.0)
