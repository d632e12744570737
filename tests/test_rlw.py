"""RLW: softmax of fresh standard-normal draws, the key in the state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from one_backward import assert_both_paths_agree

_EYE = jnp.eye(3)


def _stepper(tx):
  return jax.jit(lambda state, grads: tx.update(grads, state))


def test_weights_follow_the_documented_key_schedule():
  # The state's key is split into (next key, draw key) at every update and
  # the weights are softmax(normal(draw key)). Rebuilt here from PRNGKey(7).
  tx = mtl.rlw(3, key=7)
  step = _stepper(tx)
  state = tx.init(None)
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(state.weighting_state.key, key)
  for _ in range(3):
    updates, state = step(state, _EYE)
    key, draw = jax.random.split(key)
    logits = np.asarray(jax.random.normal(draw, [3]), np.float64)
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(updates, expected, rtol=1e-6)
    np.testing.assert_array_equal(state.weighting_state.key, key)


def test_weights_are_on_the_simplex_and_change_every_step():
  tx = mtl.rlw(3)
  step = _stepper(tx)
  state, previous = tx.init(None), None
  for _ in range(4):
    updates, state = step(state, _EYE)
    assert np.all(updates > 0)
    np.testing.assert_allclose(updates.sum(), 1.0, rtol=1e-6)
    if previous is not None:
      assert not np.allclose(updates, previous)
    previous = updates


def test_int_seed_raw_key_and_typed_key_give_the_same_state():
  # Same initial key, same sequence of weights.
  expected = jax.random.PRNGKey(5)
  for key in (5, jax.random.PRNGKey(5), jax.random.key(5)):
    state = mtl.rlw(3, key=key).init(None)
    assert state.weighting_state.key.dtype == jnp.uint32
    np.testing.assert_array_equal(state.weighting_state.key, expected)


def test_draws_are_standard_normal():
  # log w_i − log w_j = λ_i − λ_j ~ N(0, 2) when λ ~ N(0, I): over 4000
  # draws the sample variance is 2 ± 0.045 (one standard error) and the mean
  # 0 ± 0.022.
  tx = mtl.rlw(3, key=0)

  def draw(state, _):
    updates, state = tx.update(_EYE, state)
    return state, jnp.log(updates[0]) - jnp.log(updates[1])

  _, differences = jax.jit(lambda s: jax.lax.scan(draw, s, None, length=4000))(
      tx.init(None))
  differences = np.asarray(differences, np.float64)
  assert abs(differences.var() - 2.0) < 0.2
  assert abs(differences.mean()) < 0.1


def test_non_finite_gradient_does_not_advance_the_key():
  tx = mtl.rlw(3)
  step = _stepper(tx)
  state = tx.init(None)
  expected, _ = step(state, _EYE)
  updates, state_after_bad = step(state, _EYE.at[0, 0].set(jnp.inf))
  assert not np.all(np.isfinite(updates))
  np.testing.assert_array_equal(state_after_bad.weighting_state.key,
                                state.weighting_state.key)
  np.testing.assert_array_equal(step(state_after_bad, _EYE)[0], expected)


def test_one_backward_path_gives_the_same_update():
  assert_both_paths_agree(mtl.rlw(3, key=1), 3)


def test_needs_no_losses_but_accepts_them():
  tx = mtl.rlw(2)
  plain, with_losses = jax.jit(lambda s: (
      tx.update(jnp.eye(2), s)[0],
      tx.update(jnp.eye(2), s, task_losses=jnp.array([1.0, 9.0]))[0]))(
          tx.init(None))
  np.testing.assert_array_equal(plain, with_losses)
  with pytest.raises(ValueError, match='num_tasks'):
    mtl.rlw(0)
