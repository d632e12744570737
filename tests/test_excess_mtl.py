"""ExcessMTL: excess-risk weights from the AdaGrad diagonal accumulator."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl

J2 = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


def _run(tx, grads_sequence):
  params = jnp.zeros(np.shape(grads_sequence[0])[1:])
  step = jax.jit(tx.update)
  state, outputs = tx.init(params), []
  for grads in grads_sequence:
    updates, state = step(jnp.asarray(grads, jnp.float32), state)
    outputs.append(np.asarray(updates))
  return outputs, state


def test_first_step_matches_torchjd():
  # TorchJD 0.18, ExcessMTL() (robust_step_size=1, n_warmup_steps=0) on J2:
  # the first step uses the raw excess risks E = Σ_p g²/|g| = [6, 8], so
  # w = softmax([6, 8]) and the update is w · J2.
  tx = mtl.excess_mtl(2, learning_rate=1.0, warmup_steps=0)
  (update,), state = _run(tx, [J2])
  np.testing.assert_allclose(update, [4.808, 1.0, 1.0], atol=1e-4)
  np.testing.assert_allclose(state.weights,
                             [1 / (1 + math.e ** 2), 1 / (1 + math.e ** -2)],
                             rtol=1e-6)
  np.testing.assert_allclose(state.baseline, [6.0, 8.0])


def _softmax(logits):
  exps = [math.exp(x - max(logits)) for x in logits]
  return [e / sum(exps) for e in exps]


def test_three_steps_by_hand_with_warmup():
  # η = 0.5, warmup_steps = 1.
  # Step 1, G1 = [[3, 4], [1, 0]]: uniform weights (warm-up), update
  #   0.5 (g1 + g2) = [2, 2]; E = Σ g²/sqrt(g²) = Σ|g| = [7, 1] is the
  #   baseline.
  # Step 2, G2 = [[0, 4], [2, 0]]: sqrt(S) = [[3, 4√2], [√5, 0]];
  #   E = [16/(4√2), 4/√5] = [2√2, 4/√5] (0/0 counts 0); r = E / [7, 1];
  #   w = softmax(log 0.5 + η r).
  # Step 3, G2 again: sqrt(S) = [[3, 4√3], [3, 0]]; E = [4/√3, 4/3];
  #   r = E / [7, 1]; w ∝ w₂ exp(η r).
  eta = 0.5
  g1 = [[3.0, 4.0], [1.0, 0.0]]
  g2 = [[0.0, 4.0], [2.0, 0.0]]
  tx = mtl.excess_mtl(2, learning_rate=eta, warmup_steps=1)
  updates, state = _run(tx, [g1, g2, g2])
  np.testing.assert_allclose(updates[0], [2.0, 2.0], rtol=1e-6)
  ratio2 = [2 * math.sqrt(2) / 7, 4 / math.sqrt(5)]
  w2 = _softmax([eta * r for r in ratio2])
  np.testing.assert_allclose(updates[1], [2 * w2[1], 4 * w2[0]], rtol=1e-5)
  ratio3 = [4 / math.sqrt(3) / 7, 4 / 3]
  w3 = _softmax([math.log(w) + eta * r for w, r in zip(w2, ratio3)])
  np.testing.assert_allclose(updates[2], [2 * w3[1], 4 * w3[0]], rtol=1e-5)
  np.testing.assert_allclose(state.weights, w3, rtol=1e-5)
  np.testing.assert_allclose(state.baseline, [7.0, 1.0])
  assert int(state.count) == 3


def test_baseline_is_the_warmup_mean():
  # warmup_steps = 2 on G1 twice: E₁ = Σ|g| = [7, 1], E₂ = Σ|g|/√2; the
  # weights stay uniform for two steps, then the baseline is their mean.
  g1 = [[3.0, 4.0], [1.0, 0.0]]
  tx = mtl.excess_mtl(2, learning_rate=1.0, warmup_steps=2)
  updates, state = _run(tx, [g1, g1, g1])
  np.testing.assert_allclose(updates[0], [2.0, 2.0], rtol=1e-6)
  np.testing.assert_allclose(updates[1], [2.0, 2.0], rtol=1e-6)
  mean = (1 + 1 / math.sqrt(2)) / 2
  np.testing.assert_allclose(state.baseline, [7 * mean, mean], rtol=1e-6)
  # Step 3: E = Σ|g|/√3 for both tasks, so the ratios are equal and the
  # weights stay uniform.
  np.testing.assert_allclose(state.weights, [0.5, 0.5], rtol=1e-6)


def test_a_task_with_zero_baseline_takes_its_next_excess_as_baseline():
  # Task 2's gradient is 0 during warm-up: its baseline is 0, so at step 2
  # it takes no step (ratio 0) and its excess 4²/4 = 4 becomes its baseline.
  g1 = [[3.0, 4.0], [0.0, 0.0]]
  g2 = [[3.0, 4.0], [0.0, 4.0]]
  tx = mtl.excess_mtl(2, learning_rate=1.0, warmup_steps=1)
  _, state = _run(tx, [g1, g2])
  np.testing.assert_allclose(state.baseline, [7.0, 4.0])
  # Step 2: r₁ = (Σ g²/ (√2|g|)) / 7 = 1/√2, r₂ = 0.
  np.testing.assert_allclose(state.weights, _softmax([1 / math.sqrt(2), 0.0]),
                             rtol=1e-6)
  assert np.all(np.isfinite(np.asarray(state.weights)))


@pytest.mark.parametrize('factor', [1e-20, 1e-3, 7.0, 1e20])
def test_weights_are_invariant_to_the_gradient_scale(factor):
  rng = np.random.default_rng(0)
  grads = [rng.normal(size=(3, 5)).astype(np.float32) for _ in range(3)]
  tx = mtl.excess_mtl(3, learning_rate=0.5, warmup_steps=1)
  reference, state = _run(tx, grads)
  scaled, scaled_state = _run(tx, [g * factor for g in grads])
  np.testing.assert_allclose(scaled_state.weights, state.weights, rtol=1e-5)
  np.testing.assert_allclose(scaled[-1], factor * reference[-1], rtol=1e-4)


def test_state_is_task_by_parameter_and_task_specific_leaves_pass():
  params = {'trunk': jnp.zeros((4, 3)), 'head': jnp.zeros(2)}
  tx = mtl.excess_mtl(2, task_specific={'trunk': False, 'head': True})
  state = tx.init(params)
  assert [leaf.shape for leaf in state.root_sum_squares] == [(2, 4, 3)]
  grads = {'trunk': jnp.ones((2, 4, 3)), 'head': jnp.array([[1.0, 2.0],
                                                            [3.0, 4.0]])}
  updates, _ = tx.update(grads, state)
  np.testing.assert_allclose(updates['head'], [4.0, 6.0])
  np.testing.assert_allclose(updates['trunk'], np.ones((4, 3)))


@pytest.mark.parametrize('kwargs, match', [
    ({'learning_rate': 0.0}, 'learning_rate'),
    ({'learning_rate': -1.0}, 'learning_rate'),
    ({'warmup_steps': -1}, 'warmup_steps'),
    ({'warmup_steps': 1.5}, 'warmup_steps'),
    ({'warmup_steps': True}, 'warmup_steps'),
])
def test_bad_hyperparameters_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mtl.excess_mtl(2, **kwargs)
