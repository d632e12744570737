"""DB-MTL and its three pieces: log scaling, gradient EMA, max-norm weighting.

Expected values come from float64 NumPy references written out in this file
(Algorithm 1 of Lin et al., "Dual-Balancing for Multi-Task Learning") or are
derived by hand in the comment next to them.
"""

import functools
import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_optax as mtl

EPS = 1e-8


# --------------------------------------------------------------------------
# A small hard-parameter-sharing model, differentiated by hand in NumPy.
#   z = X Wᵀ (shared W: [2, 3]),  y_t = z ψ_t (head ψ_t: [2]),
#   L_t = c_t · mean((y_t − Y_t)²), with c_t setting very different scales.

X = np.array([[1.0, -0.5, 0.3], [0.2, 0.8, -1.0], [-0.7, 0.1, 0.4],
              [0.5, 0.5, 0.5]])
TARGETS = np.array([[1.0, 0.0, -1.0, 0.5], [-2.0, 1.0, 0.0, 3.0],
                    [0.3, -0.2, 0.1, 0.0]])  # [T, batch]
LOSS_SCALES = np.array([1.0, 100.0, 0.01])
NUM_TASKS = 3


def _initial_params():
  rng = np.random.default_rng(0)
  return {'shared': rng.normal(size=(2, 3)),
          'heads': rng.normal(size=(NUM_TASKS, 2))}


def _numpy_losses_and_grads(params):
  """Per-task losses, shared gradients [T, 2, 3], head gradients [T, 2]."""
  w, heads = params['shared'], params['heads']
  z = X @ w.T
  n = X.shape[0]
  losses, shared_grads, head_grads = [], [], []
  for t in range(NUM_TASKS):
    residual = z @ heads[t] - TARGETS[t]
    losses.append(LOSS_SCALES[t] * np.mean(residual ** 2))
    dz = LOSS_SCALES[t] * 2.0 / n * np.outer(residual, heads[t])
    shared_grads.append(dz.T @ X)
    head_grads.append(LOSS_SCALES[t] * 2.0 / n * z.T @ residual)
  return np.array(losses), np.array(shared_grads), np.array(head_grads)


def _algorithm_1(params, num_steps, beta, beta_sigma, learning_rate):
  """Algorithm 1, steps 3–14, in float64; returns every iterate."""
  params = {k: v.copy() for k, v in params.items()}
  ema = np.zeros((NUM_TASKS, 2, 3))  # Step 2: ĝ_{t,-1} = 0.
  history = []
  for k in range(1, num_steps + 1):
    losses, shared_grads, head_grads = _numpy_losses_and_grads(params)
    log_shared = shared_grads / (losses + EPS)[:, None, None]  # Step 6.
    beta_k = beta / k ** beta_sigma
    ema = beta_k * ema + (1 - beta_k) * log_shared  # Step 7.
    norms = np.sqrt(np.sum(ema ** 2, axis=(1, 2)))
    alpha = np.max(norms)
    direction = alpha * np.sum(ema / (norms + EPS)[:, None, None], axis=0)
    params['shared'] = params['shared'] - learning_rate * direction  # Step 10.
    params['heads'] = params['heads'] - learning_rate * (  # Step 12.
        head_grads / (losses + EPS)[:, None])
    history.append({'params': {k: v.copy() for k, v in params.items()},
                    'ema': ema.copy(), 'weights': alpha / (norms + EPS)})
  return history


def _jax_losses(params):
  z = jnp.asarray(X, jnp.float32) @ params['shared'].T
  predictions = z @ params['heads'].T  # [batch, T]
  residuals = predictions.T - jnp.asarray(TARGETS, jnp.float32)
  return jnp.asarray(LOSS_SCALES, jnp.float32) * jnp.mean(residuals ** 2, 1)


HEADS_ONLY = {'shared': False, 'heads': True}


def _train(tx, params, num_steps):
  """Runs ``tx`` + SGD under jit; returns every iterate and state."""
  value_and_grads = mtl.value_and_task_grads(_jax_losses)

  @jax.jit
  def step(params, state):
    losses, task_grads = value_and_grads(params)
    updates, state = tx.update(task_grads, state, params, task_losses=losses)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  history = []
  for _ in range(num_steps):
    params, state = step(params, state)
    history.append((params, state))
  return history


@pytest.mark.parametrize('beta, beta_sigma', [(0.9, 0.5), (0.5, 0.0)])
def test_db_mtl_follows_algorithm_1_step_by_step(beta, beta_sigma):
  learning_rate, num_steps = 0.05, 6
  params0 = _initial_params()
  expected = _algorithm_1(params0, num_steps, beta, beta_sigma, learning_rate)
  tx = optax.chain(
      mtl.db_mtl(NUM_TASKS, beta=beta, beta_sigma=beta_sigma,
                 task_specific=HEADS_ONLY),
      optax.sgd(learning_rate))
  params32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params0)
  actual = _train(tx, params32, num_steps)
  for step, (want, (params, state)) in enumerate(zip(expected, actual), 1):
    ema_state = state[0][1]  # db_mtl's chain: log scaling, EMA, balancer.
    assert int(ema_state.count) == step
    # The one shared leaf ('heads' is task-specific): its [T, 2, 3] average.
    np.testing.assert_allclose(ema_state.task_grads_ema[0], want['ema'],
                               rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(mtl.last_weights(state), want['weights'],
                               rtol=2e-4)
    for name in ('shared', 'heads'):
      np.testing.assert_allclose(params[name], want['params'][name],
                                 rtol=2e-4, atol=1e-6)


def test_db_mtl_is_the_chain_of_its_three_pieces():
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32),
                        _initial_params())
  whole = _train(mtl.db_mtl(NUM_TASKS, task_specific=HEADS_ONLY), params, 3)
  pieces = _train(optax.chain(
      mtl.log_scaling(NUM_TASKS, task_specific=HEADS_ONLY),
      mtl.gradient_ema(NUM_TASKS, task_specific=HEADS_ONLY),
      mtl.max_norm_weighting(NUM_TASKS, task_specific=HEADS_ONLY)), params, 3)
  for (params_a, state_a), (params_b, state_b) in zip(whole, pieces):
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
    jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
  # The heads have no average: the EMA holds the shared leaf only.
  assert len(whole[0][1][1].task_grads_ema) == 1
  # DBMTLState names the chain's state: one state per piece, in order.
  assert tuple(type(piece) for piece in whole[0][1]) == typing.get_args(
      mtl.DBMTLState)


def test_db_mtl_keeps_its_state_on_non_finite_input():
  tx = mtl.db_mtl(2)
  update = jax.jit(tx.update)
  grads = jnp.array([[1.0, 2.0], [3.0, -1.0]])
  losses = jnp.array([0.5, 2.0])
  _, state = update(grads, tx.init(jnp.zeros(2)), task_losses=losses)
  for bad_grads, bad_losses in [(grads.at[1, 0].set(jnp.nan), losses),
                                (grads, losses.at[0].set(jnp.inf))]:
    updates, bad_state = update(bad_grads, state, task_losses=bad_losses)
    assert not np.all(np.isfinite(updates))
    jax.tree.map(np.testing.assert_array_equal, bad_state, state)


# --------------------------------------------------------------------------
# log_scaling


@functools.cache
def _log_scaling_update(num_tasks):
  return jax.jit(mtl.log_scaling(num_tasks).update)


def test_log_scaling_divides_by_loss_plus_eps():
  grads = {'a': jnp.array([[1.0, 2.0], [4.0, 8.0]]),
           'head': jnp.array([[3.0], [6.0]])}
  losses = jnp.array([0.5, 4.0])
  # Task-specific leaves are scaled too (Algorithm 1, step 12).
  tx = mtl.log_scaling(2, task_specific={'a': False, 'head': True})
  params = {'a': jnp.zeros(2), 'head': jnp.zeros(1)}
  scaled, _ = jax.jit(tx.update)(grads, tx.init(params), task_losses=losses)
  np.testing.assert_allclose(scaled['a'], [[2.0, 4.0], [1.0, 2.0]], rtol=1e-6)
  np.testing.assert_allclose(scaled['head'], [[6.0], [1.5]], rtol=1e-6)


def test_log_scaling_floors_non_positive_losses_and_flags_non_finite():
  update = _log_scaling_update(3)
  grads = jnp.ones((3, 2))
  scaled, _ = update(grads, optax.EmptyState(),
                     task_losses=jnp.array([0.0, -5.0, 1e-12]))
  # A negative loss counts as 0: 1/ε; 1e-12 gives 1/(1e-12 + 1e-8).
  np.testing.assert_allclose(scaled[:, 0], [1e8, 1e8, 1 / (1e-12 + 1e-8)],
                             rtol=1e-6)
  for bad in (jnp.inf, jnp.nan):
    scaled, _ = update(grads, optax.EmptyState(),
                       task_losses=jnp.array([1.0, bad, 1.0]))
    assert np.all(np.isnan(scaled))


def test_log_scaling_keeps_dtype_and_requires_losses():
  tx = mtl.log_scaling(2)
  grads = jnp.ones((2, 3), jnp.bfloat16)
  scaled, _ = tx.update(grads, tx.init(None), task_losses=jnp.array([1., 3.]))
  assert scaled.dtype == jnp.bfloat16
  with pytest.raises(ValueError, match='log_scaling needs the per-task'):
    tx.update(grads, tx.init(None))
  with pytest.raises(ValueError, match='eps'):
    mtl.log_scaling(2, eps=0.0)


# --------------------------------------------------------------------------
# gradient_ema


def test_gradient_ema_decays_beta_and_passes_task_specific_leaves():
  tx = mtl.gradient_ema(2, beta=0.8, beta_sigma=1.0,
                        task_specific={'w': False, 'head': True})
  params = {'w': jnp.zeros(3), 'head': jnp.zeros(1)}
  state = tx.init(params)
  assert len(state.task_grads_ema) == 1  # The shared leaf 'w' only.
  assert state.task_grads_ema[0].shape == (2, 3)  # T x P.
  update = jax.jit(tx.update)
  g = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0]])
  ema = np.zeros_like(g)
  for k in range(1, 5):
    grads = {'w': jnp.asarray(g * k, jnp.float32),
             'head': jnp.array([[k * 1.0], [-k * 1.0]])}
    out, state = update(grads, state)
    beta_k = 0.8 / k  # β_k = beta / k^beta_sigma, k counting from 1.
    ema = beta_k * ema + (1 - beta_k) * g * k
    np.testing.assert_allclose(out['w'], ema, rtol=1e-6)
    np.testing.assert_allclose(state.task_grads_ema[0], ema, rtol=1e-6)
    np.testing.assert_array_equal(out['head'], grads['head'])
    assert int(state.count) == k


def test_gradient_ema_skips_non_finite_steps():
  tx = mtl.gradient_ema(2)
  update = jax.jit(tx.update)
  grads = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  _, state = update(grads, tx.init(jnp.zeros(2)))
  out, bad_state = update(grads.at[0, 1].set(jnp.inf), state)
  assert not np.all(np.isfinite(out))
  jax.tree.map(np.testing.assert_array_equal, bad_state, state)
  # A non-finite loss, when given, marks the step bad too (as in balancer).
  out, bad_state = update(grads, state, task_losses=jnp.array([1.0, jnp.nan]))
  assert np.all(np.isnan(out))
  jax.tree.map(np.testing.assert_array_equal, bad_state, state)
  # The next finite step is the second step, as if the bad one never came.
  out, _ = update(2 * grads, bad_state)
  beta_2 = 0.9 / np.sqrt(2.0)
  expected = beta_2 * 0.1 * np.asarray(grads) + (1 - beta_2) * 2 * np.asarray(
      grads)  # ĝ_1 = (1 − 0.9) g.
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_gradient_ema_rejects_bad_arguments():
  with pytest.raises(ValueError, match='beta must be in'):
    mtl.gradient_ema(2, beta=1.0)
  with pytest.raises(ValueError, match='beta_sigma'):
    mtl.gradient_ema(2, beta_sigma=-0.5)
  with pytest.raises(ValueError, match='num_tasks'):
    mtl.gradient_ema(0)


# --------------------------------------------------------------------------
# max_norm_weighting


@functools.cache
def _max_norm_update(num_tasks):
  tx = mtl.max_norm_weighting(num_tasks)
  return tx.init(jnp.zeros(1)), jax.jit(tx.update)


def _numpy_max_norm(task_grads):
  g = np.asarray(task_grads, np.float64)
  norms = np.linalg.norm(g, axis=1)
  weights = norms.max() / (norms + EPS)
  return weights, weights @ g


@pytest.mark.parametrize('scale', [1.0, 1e-20, 1e-9, 1e20])
def test_max_norm_weighting_matches_reference_at_every_scale(scale):
  # At 1e-20 the float32 Gramian underflows and is rescaled, yet ε stays on
  # the true scale: both weights are then ≈ max‖g‖/ε, far below 1.
  state, update = _max_norm_update(3)
  g = np.array([[3.0, 4.0, 0.0], [0.0, 1.0, 0.0], [-2.0, 0.0, 2.0]]) * scale
  updates, new_state = update(jnp.asarray(g, jnp.float32), state)
  weights, direction = _numpy_max_norm(g)
  np.testing.assert_allclose(new_state.weights, weights, rtol=1e-5)
  np.testing.assert_allclose(updates, direction, rtol=1e-5)


def test_max_norm_weighting_zero_gradients_stay_finite():
  state, update = _max_norm_update(2)
  updates, new_state = update(jnp.array([[0.0, 0.0], [3.0, 4.0]]), state)
  np.testing.assert_allclose(new_state.weights, [5.0 / EPS, 5.0 / 5.0],
                             rtol=1e-6)
  np.testing.assert_allclose(updates, [3.0, 4.0], rtol=1e-6)
  updates, new_state = update(jnp.zeros((2, 2)), state)
  np.testing.assert_array_equal(updates, [0.0, 0.0])
  np.testing.assert_array_equal(new_state.weights, [0.0, 0.0])


# --------------------------------------------------------------------------
# The pieces in other chains (the paper's Fig. 1 and Table 5).


def _numpy_min_norm_2(g):
  """Min-norm point of the segment [g_0, g_1] (closed form), as weights."""
  diff = g[0] - g[1]
  gamma = np.clip(np.dot(g[1] - g[0], g[1]) / np.dot(diff, diff), 0.0, 1.0)
  return np.array([gamma, 1.0 - gamma])


GRADS_A = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
GRADS_B = np.array([[1.0, 2.0, -1.0], [-3.0, 1.0, 0.0]])


def test_log_scaling_then_mgda_chain():
  tx = optax.chain(mtl.log_scaling(2), mtl.mgda(2), optax.sgd(1.0))
  losses = np.array([2.0, 0.5])
  updates, state = jax.jit(tx.update)(
      jnp.asarray(GRADS_A, jnp.float32), tx.init(jnp.zeros(3)),
      task_losses=jnp.asarray(losses, jnp.float32))
  log_grads = GRADS_A / (losses + EPS)[:, None]
  weights = _numpy_min_norm_2(log_grads)  # [2/3, 1/3] here.
  np.testing.assert_allclose(mtl.last_weights(state), weights, rtol=1e-5)
  np.testing.assert_allclose(updates, -(weights @ log_grads), rtol=1e-5,
                             atol=1e-6)


def test_gradient_ema_then_central_direction_chain():
  tx = optax.chain(mtl.gradient_ema(2, beta=0.5, beta_sigma=0.0),
                   mtl.central_direction(2), optax.sgd(1.0))
  update = jax.jit(tx.update)
  state = tx.init(jnp.zeros(3))
  ema = np.zeros((2, 3))
  for grads in (GRADS_A, GRADS_B):
    updates, state = update(jnp.asarray(grads, jnp.float32), state)
    ema = 0.5 * ema + 0.5 * grads
    # Thesis eq. 4.6–4.7: min-norm point of the unit vectors, mapped back to
    # weights on the raw (here: averaged) gradients.
    norms = np.linalg.norm(ema, axis=1)
    k = _numpy_min_norm_2(ema / norms[:, None])
    weights = (k / norms) / np.sum(k / norms)
    np.testing.assert_allclose(mtl.last_weights(state), weights, rtol=1e-5)
    np.testing.assert_allclose(updates, -(weights @ ema), rtol=1e-5,
                               atol=1e-6)
