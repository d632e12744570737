"""SDMGrad and the cross-batch machinery (cross_gramian, cross_balancer).

Expected values are hand-derived from the update rules of Xiao et al.
(NeurIPS 2023), Algorithm 1, as the docstring states them; each derivation
is in the comments.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl

# Two batches whose product is not symmetric, and the update batch.
BATCH_2 = jnp.array([[3.0, 0.0], [1.0, 1.0]])
BATCH_3 = jnp.array([[3.0, 0.0], [-1.0, 1.0]])
UPDATE_BATCH = jnp.array([[1.0, 2.0], [0.0, -1.0]])


def test_cross_gramian_values_and_leaves():
  # cross[s, t] = g_s(batch 2) · g_t(batch 3):
  # [3,0]·[3,0] = 9, [3,0]·[-1,1] = -3, [1,1]·[3,0] = 3, [1,1]·[-1,1] = 0.
  cross, scale = mtl.cross_gramian(BATCH_2, BATCH_3)
  np.testing.assert_array_equal(cross, [[9.0, -3.0], [3.0, 0.0]])
  assert float(scale) == 1.0
  # Split into two leaves, the products add up leaf by leaf.
  tree_2 = {'a': BATCH_2[:, :1], 'b': BATCH_2[:, 1]}
  tree_3 = {'a': BATCH_3[:, :1], 'b': BATCH_3[:, 1]}
  np.testing.assert_array_equal(mtl.cross_gramian(tree_2, tree_3)[0],
                                [[9.0, -3.0], [3.0, 0.0]])


@pytest.mark.parametrize('exponent', [70, -70])
def test_cross_gramian_rescues_float32_over_and_underflow(exponent):
  # Entries of 2^±70: products of 2^±140 leave float32; the true product is
  # scale² · cross with cross in range, so scale² · cross / 2^±140 is the
  # product of the unscaled batches.
  factor = 2.0 ** exponent
  cross, scale = mtl.cross_gramian(BATCH_2 * factor, BATCH_3 * factor)
  assert np.all(np.isfinite(cross)) and np.abs(cross).max() > 1e-3
  true = np.asarray(cross, np.float64) * float(scale) ** 2 / factor ** 2
  np.testing.assert_allclose(true, [[9.0, -3.0], [3.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize('factor', [1.0, 2.0 ** 70])
def test_large_leaf_cross_gramian_through_column_blocks(factor):
  # [4, 600000] float32 is 9.6 MB: on CPU it goes through column blocks of
  # 16400 (36 blocks and a tail; column_blocks.width). The reference is a
  # float64 NumPy product, scaled back as above.
  rng = np.random.default_rng(0)
  batch_2, batch_3 = rng.normal(size=(2, 4, 600000))
  cross, scale = jax.jit(mtl.cross_gramian)(
      jnp.asarray(batch_2 * factor, jnp.float32),
      jnp.asarray(batch_3 * factor, jnp.float32))
  batch_2 = np.asarray(jnp.asarray(batch_2, jnp.float32), np.float64)
  batch_3 = np.asarray(jnp.asarray(batch_3, jnp.float32), np.float64)
  true = np.asarray(cross, np.float64) * float(scale) ** 2 / factor ** 2
  expected = batch_2 @ batch_3.T
  np.testing.assert_allclose(true, expected, rtol=1e-4,
                             atol=1e-5 * np.abs(expected).max())


def test_cross_gramian_rejects_mismatched_batches():
  with pytest.raises(ValueError, match='shapes'):
    mtl.cross_gramian(BATCH_2, jnp.ones((2, 3)))
  with pytest.raises(ValueError, match='structure'):
    mtl.cross_gramian({'a': BATCH_2}, BATCH_3)


def _sdmgrad():
  return mtl.sdmgrad(2, lambda_=0.5, learning_rate=0.1, momentum=0.5,
                     num_steps=2)


def test_two_steps_from_independent_batches():
  # A = J₂ J₃ᵀ = [[9, -3], [3, 0]]; mean_t √max(A_tt, 0) = (3 + 0)/2 = 1.5,
  # so Â = A / 2.25 = [[4, -4/3], [4/3, 0]]. λ = 0.5, β = 0.1, μ = 0.5,
  # S = 2, w̃ = [.5, .5], w₀ = [.5, .5].
  # Update 1, inner step 1: w + λw̃ = [.75, .75], Â(·) = [3 − 1, 1] = [2, 1],
  #   v = [2, 1], w − βv = [.3, .4], projection (θ = (.7 − 1)/2 = −.15):
  #   w = [.45, .55].
  # Inner step 2: w + λw̃ = [.7, .8], Â(·) = [2.8 − 1.0667, .9333],
  #   v = .5 [2, 1] + [1.7333, .9333] = [2.7333, 1.4333],
  #   w − βv = [.17667, .40667], θ = (.58333 − 1)/2 = −.20833: w = [.385, .615].
  # Weights (w + λw̃)/(1 + λ) = [.635, .865]/1.5 = [.42333, .57667];
  # update = .42333 [1, 2] + .57667 [0, −1] = [.42333, .27].
  tx = _sdmgrad()
  step = jax.jit(lambda g, s: tx.update(g, s, task_grads_2=BATCH_2,
                                        task_grads_3=BATCH_3))
  updates, state = step(UPDATE_BATCH, tx.init(None))
  np.testing.assert_allclose(state.weighting_state.simplex_weights,
                             [0.385, 0.615], rtol=1e-5)
  np.testing.assert_allclose(state.weights, [0.423333, 0.576667], rtol=1e-5)
  np.testing.assert_allclose(updates, [0.423333, 0.27], rtol=1e-5)
  # Update 2 starts from w = [.385, .615], v = 0 again.
  # Inner step 1: w + λw̃ = [.635, .865], Â(·) = [2.54 − 1.15333, .84667],
  #   v = [1.38667, .84667], w − βv = [.24633, .53033], θ = −.11167:
  #   w = [.358, .642].
  # Inner step 2: w + λw̃ = [.608, .892], Â(·) = [2.432 − 1.18933, .81067],
  #   v = .5 [1.38667, .84667] + [1.24267, .81067] = [1.936, 1.234],
  #   w − βv = [.1644, .5186], θ = (.683 − 1)/2 = −.1585: w = [.3229, .6771].
  # Weights [.5729, .9271]/1.5 = [.38193, .61807].
  updates, state = step(UPDATE_BATCH, state)
  np.testing.assert_allclose(state.weighting_state.simplex_weights,
                             [0.3229, 0.6771], rtol=1e-5)
  np.testing.assert_allclose(state.weights, [0.381933, 0.618067], rtol=1e-5)
  np.testing.assert_allclose(
      updates, [0.381933, 2 * 0.381933 - 0.618067], rtol=1e-5)


def test_missing_batches_default_to_the_update_batch():
  tx = _sdmgrad()
  state = tx.init(None)
  alone, _ = tx.update(UPDATE_BATCH, state)
  explicit, _ = tx.update(UPDATE_BATCH, state, task_grads_2=UPDATE_BATCH,
                          task_grads_3=UPDATE_BATCH)
  np.testing.assert_array_equal(alone, explicit)
  # One extra batch: J₂ J₁ᵀ.
  one_extra, _ = tx.update(UPDATE_BATCH, state, task_grads_2=BATCH_2)
  both, _ = tx.update(UPDATE_BATCH, state, task_grads_2=BATCH_2,
                      task_grads_3=UPDATE_BATCH)
  np.testing.assert_array_equal(one_extra, both)
  # The one-batch weights are those of the plain balancer and of the engine.
  plain = mtl.balancer(2, mtl.weightings.sdmgrad(
      lambda_=0.5, learning_rate=0.1, momentum=0.5, num_steps=2))
  np.testing.assert_allclose(plain.update(UPDATE_BATCH, plain.init(None))[0],
                             alone, rtol=1e-6)


def test_zero_cross_product_keeps_the_weights():
  # A = 0 has no scale; w stays where it was: [.5, .5], weights [.5, .5].
  tx = _sdmgrad()
  updates, state = tx.update(UPDATE_BATCH, tx.init(None),
                             task_grads_2=jnp.zeros((2, 2)),
                             task_grads_3=BATCH_3)
  np.testing.assert_allclose(state.weights, [0.5, 0.5])
  np.testing.assert_allclose(updates, [0.5, 0.5])


def test_non_finite_extra_batch_skips_the_step():
  tx = _sdmgrad()
  state = tx.init(None)
  bad = BATCH_2.at[0, 0].set(jnp.nan)
  updates, new_state = tx.update(UPDATE_BATCH, state, task_grads_2=bad,
                                 task_grads_3=BATCH_3)
  assert not np.all(np.isfinite(updates))
  jax.tree.map(np.testing.assert_array_equal, new_state, state)
  # And a non-finite update batch when both extra batches are finite.
  updates, new_state = tx.update(UPDATE_BATCH.at[1, 1].set(jnp.inf), state,
                                 task_grads_2=BATCH_2, task_grads_3=BATCH_3)
  assert not np.all(np.isfinite(updates))
  jax.tree.map(np.testing.assert_array_equal, new_state, state)


def test_extra_batches_must_match_the_update_batch():
  tx = _sdmgrad()
  with pytest.raises(ValueError, match='task_grads_2'):
    tx.update(UPDATE_BATCH, tx.init(None), task_grads_2=jnp.ones((2, 3)))
  with pytest.raises(ValueError, match='num_tasks=2'):
    tx.update(UPDATE_BATCH, tx.init(None), task_grads_3=jnp.ones((3, 2)))
  with pytest.raises(ValueError, match='int32'):
    tx.update(UPDATE_BATCH, tx.init(None),
              task_grads_2=jnp.ones((2, 2), jnp.int32))


@pytest.mark.parametrize('kwargs, name', [
    ({'lambda_': -0.1}, 'lambda_'),
    ({'learning_rate': 0.0}, 'learning_rate'),
    ({'momentum': 1.0}, 'momentum'),
    ({'num_steps': 0}, 'num_steps'),
    ({'num_steps': 2.0}, 'num_steps'),
])
def test_invalid_hyperparameters_are_rejected(kwargs, name):
  with pytest.raises(ValueError, match=name):
    mtl.sdmgrad(2, **kwargs)
