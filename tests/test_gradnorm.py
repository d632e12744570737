"""GradNorm: learned weights pulled towards Ḡ · r_t^α, read from the Gramian."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_optax as mtl

# Three tasks with gradient norms 3, 1 and 2.5 (orthogonal rows), and losses
# that fall at different rates. No weighted norm sits on its target, where
# sign() would flip with round-off.
_GRADS = jnp.array([[3.0, 0.0, 0.0, 0.0],
                    [0.0, 1.0, 0.0, 0.0],
                    [0.0, 0.0, 1.5, 2.0]])
_LOSSES = [[1.0, 2.0, 4.0], [0.8, 1.9, 2.0], [0.5, 1.8, 1.5], [0.4, 1.0, 1.4],
           [0.3, 0.9, 1.3]]


@functools.lru_cache(maxsize=None)
def _stepper(tx):
  return jax.jit(lambda state, grads, losses: tx.update(
      grads, state, task_losses=losses))


def _run(tx, grads_sequence, loss_sequence):
  step = _stepper(tx)
  state, states, updates = tx.init(None), [], []
  for grads, losses in zip(grads_sequence, loss_sequence):
    update, state = step(state, grads, jnp.asarray(losses, jnp.float32))
    updates.append(jax.tree.map(np.asarray, update))
    states.append(state)
  return updates, states


def _reference(norms_sequence, loss_sequence, alpha=1.5, learning_rate=0.025):
  """Float64 NumPy GradNorm (paper Algorithm 1) with an Adam inner step.

  Returns the weights each update uses and the learned weights after it.
  """
  b1, b2, eps = 0.9, 0.999, 1e-8
  num_tasks = len(loss_sequence[0])
  w = np.ones(num_tasks)
  m, v = np.zeros(num_tasks), np.zeros(num_tasks)
  initial_losses, used, learned = None, [], []
  for k, (norms, losses) in enumerate(zip(norms_sequence, loss_sequence)):
    norms, losses = np.asarray(norms, np.float64), np.asarray(losses, np.float64)
    if initial_losses is None:
      initial_losses = losses
    used.append(w.copy())
    weighted_norms = w * norms  # G_W^(i)(t)
    inverse_rates = losses / initial_losses  # L̃_i(t)
    relative = inverse_rates / inverse_rates.mean()  # r_i(t)
    targets = weighted_norms.mean() * relative ** alpha  # Eq. 1.
    grad = np.sign(weighted_norms - targets) * norms  # ∂ eq. 2 / ∂w_i.
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad ** 2
    m_hat, v_hat = m / (1 - b1 ** (k + 1)), v / (1 - b2 ** (k + 1))
    w = w - learning_rate * m_hat / (np.sqrt(v_hat) + eps)
    w = np.maximum(w, 0.0)
    w = num_tasks * w / w.sum()
    learned.append(w.copy())
  return used, learned


def test_matches_a_float64_reference_over_five_updates():
  # The gradients grow a little every step, so the norms change too.
  grads = [_GRADS * (1.0 + 0.1 * k) for k in range(5)]
  norms = [np.linalg.norm(np.asarray(g, np.float64), axis=1) for g in grads]
  updates, states = _run(mtl.gradnorm(3), grads, _LOSSES)
  used, learned = _reference(norms, _LOSSES)
  for k in range(5):
    np.testing.assert_allclose(updates[k], used[k] @ np.asarray(grads[k]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(states[k].weights, used[k], rtol=1e-5)
    np.testing.assert_allclose(states[k].weighting_state.loss_weights,
                               learned[k], rtol=1e-5)
    np.testing.assert_allclose(states[k].weighting_state.initial_losses,
                               _LOSSES[0])
    np.testing.assert_allclose(states[k].weighting_state.loss_weights.sum(),
                               3.0, rtol=1e-6)
    assert int(states[k].weighting_state.count) == k + 1


def test_two_steps_by_hand_with_sgd():
  # Norms [3, 1], L(0) = [1, 1], SGD with lr 0.1.
  # Step 1: w = [1, 1], G = [3, 1], Ḡ = 2, r = [1, 1], targets [2, 2];
  # ∂/∂w = sign([1, −1]) · [3, 1] = [3, −1]; w = [0.7, 1.1] → ×2/1.8.
  tx = mtl.gradnorm(2, optimizer=optax.sgd(0.1))
  grads = jnp.array([[3.0, 0.0], [0.0, 1.0]])
  updates, states = _run(tx, [grads, grads], [[1.0, 1.0], [0.5, 1.0]])
  np.testing.assert_allclose(updates[0], [3.0, 1.0])
  w1 = np.array([0.7, 1.1]) * 2 / 1.8
  np.testing.assert_allclose(states[0].weighting_state.loss_weights, w1,
                             rtol=1e-6)
  # Step 2: L̃ = [0.5, 1], r = [2/3, 4/3]; G = w1 · [3, 1] = [2.333, 1.222],
  # Ḡ = 1.778, targets = Ḡ r^1.5 = [0.968, 2.737]: still [+, −], so again
  # ∂/∂w = [3, −1]; w = w1 + [−0.3, 0.1] → ×2/1.8.
  np.testing.assert_allclose(updates[1], w1 * np.array([3.0, 1.0]),
                             rtol=1e-6)
  w2 = (w1 + np.array([-0.3, 0.1])) * 2 / 1.8
  np.testing.assert_allclose(states[1].weighting_state.loss_weights, w2,
                             rtol=1e-6)


def test_negative_weights_are_clipped_before_renormalising():
  # SGD lr 1: w = [1 − 3, 1 + 1] = [−2, 2] → [0, 2]. Next: G = [0, 2], Ḡ = 1,
  # targets [1, 1], ∂/∂w = [−3, 1]: w = [3, 1] → [1.5, 0.5].
  tx = mtl.gradnorm(2, optimizer=optax.sgd(1.0))
  grads = jnp.array([[3.0, 0.0], [0.0, 1.0]])
  _, states = _run(tx, [grads, grads], [[1.0, 1.0], [1.0, 1.0]])
  np.testing.assert_allclose(states[0].weighting_state.loss_weights, [0.0, 2.0])
  np.testing.assert_allclose(states[1].weighting_state.loss_weights, [1.5, 0.5])


def test_alpha_zero_asks_for_equal_weighted_norms():
  # α = 0: the targets are Ḡ whatever the losses; after many steps the
  # weighted norms w_t ‖g_t‖ meet, so w ∝ 1 / ‖g_t‖ = [1/3, 1, 2/5], times
  # 3 / (1/3 + 1 + 2/5) for Σ w = 3.
  tx = mtl.gradnorm(3, alpha=0.0, learning_rate=0.01)

  def run(state):
    step = lambda s, _: (tx.update(_GRADS, s, task_losses=jnp.ones(3))[1],
                         None)
    return jax.lax.scan(step, state, None, length=600)[0]

  state = jax.jit(run)(tx.init(None))
  expected = np.array([1 / 3, 1.0, 2 / 5]) * 3 / (1 / 3 + 1 + 2 / 5)
  np.testing.assert_allclose(state.weighting_state.loss_weights, expected,
                             atol=0.03)


def test_weight_trajectory_does_not_depend_on_the_gradient_scale():
  # Adam's step is invariant to the scale of ∂L_grad/∂w while the norms are
  # well above its ε = 1e-8, and where float32 squares would overflow
  # (1e25) the Gramian is rescaled by a power of two.
  tx = mtl.gradnorm(3)
  grads = [_GRADS] * 3
  _, reference = _run(tx, grads, _LOSSES[:3])
  for factor in (1e-2, 1e6, 1e25):
    _, states = _run(tx, [factor * g for g in grads], _LOSSES[:3])
    np.testing.assert_allclose(states[-1].weighting_state.loss_weights,
                               reference[-1].weighting_state.loss_weights,
                               rtol=1e-5)


def test_zero_gradients_and_one_task_keep_weights_at_one():
  _, states = _run(mtl.gradnorm(2), [jnp.zeros((2, 3))] * 2,
                   [[1.0, 2.0], [0.5, 2.0]])
  np.testing.assert_array_equal(states[-1].weighting_state.loss_weights,
                                [1.0, 1.0])
  _, states = _run(mtl.gradnorm(1), [jnp.ones((1, 3))] * 2, [[1.0], [0.5]])
  np.testing.assert_array_equal(states[-1].weighting_state.loss_weights, [1.0])


def test_task_specific_leaves_are_left_out_of_the_norms():
  # With the heads marked task-specific, the weights evolve exactly as they
  # do on the trunk alone; the heads get their own gradients, unweighted.
  heads = jnp.array([[100.0, 0.0], [0.0, -100.0], [50.0, 50.0]])
  tx = mtl.gradnorm(3, task_specific={'trunk': False, 'heads': True})
  tree = {'trunk': _GRADS, 'heads': heads}
  updates, states = _run(tx, [tree] * 3, _LOSSES[:3])
  _, trunk_only = _run(mtl.gradnorm(3), [_GRADS] * 3, _LOSSES[:3])
  np.testing.assert_allclose(states[-1].weighting_state.loss_weights,
                             trunk_only[-1].weighting_state.loss_weights,
                             rtol=1e-6)
  np.testing.assert_allclose(updates[-1]['heads'], heads.sum(axis=0))


def test_initial_losses_wait_for_a_finite_update():
  tx = mtl.gradnorm(2)
  step = jax.jit(lambda state, losses: tx.update(
      jnp.eye(2), state, task_losses=losses))
  updates, state = step(tx.init(None), jnp.array([jnp.nan, 1.0]))
  assert np.all(np.isnan(updates)) and int(state.weighting_state.count) == 0
  _, state = step(state, jnp.array([2.0, 3.0]))
  np.testing.assert_array_equal(state.weighting_state.initial_losses,
                                [2.0, 3.0])


def test_bad_arguments_are_rejected():
  with pytest.raises(ValueError, match='alpha'):
    mtl.gradnorm(2, alpha=-1.0)
  with pytest.raises(ValueError, match='learning_rate'):
    mtl.gradnorm(2, learning_rate=0.0)
  with pytest.raises(ValueError, match='task_losses'):
    mtl.gradnorm(2).update(jnp.eye(2), mtl.gradnorm(2).init(None))
