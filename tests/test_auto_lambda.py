"""Auto-Lambda (first order): λ moved along J g_val by the meta optimizer.

Expected values are worked by hand from the official code's update
(``lorenmt/auto-lambda``, ``auto_lambda.py``): the meta-gradient of ``λ_t``
is ``−α g_t · g_val`` (``mw.grad = −α · hessian``), summed over every
parameter, and the model step uses ``Σ_t λ_t L_t`` with the new ``λ``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_optax as mtl

# T = 2; a shared 'trunk' and a task-specific 'head' (entry t is task t's).
_GRADS = {'trunk': jnp.array([[1.0, 0.0], [0.0, 1.0]]),
          'head': jnp.array([[3.0, 0.0], [0.0, 5.0]])}
_VAL = {'trunk': jnp.array([2.0, -1.0]), 'head': jnp.array([1.0, 0.0])}
_PARAMS = {'trunk': jnp.zeros(2), 'head': jnp.zeros(2)}
_SPECIFIC = {'trunk': False, 'head': True}


def test_two_sgd_steps_match_the_hand_worked_update():
  tx = mtl.auto_lambda(2, optimizer=optax.sgd(0.1), task_specific=_SPECIFIC)
  step = jax.jit(lambda state: tx.update(_GRADS, state, _PARAMS,
                                         val_grads=_VAL))
  # J g_val over every leaf: task 0: (1, 0)·(2, −1) + (3, 0)·(1, 0) = 5;
  # task 1: (0, 1)·(2, −1) + (0, 5)·(1, 0) = −1. SGD on −J g_val:
  # λ = 0.1 + 0.1 [5, −1] = [0.6, 0]. Trunk: 0.6 (1, 0) + 0 (0, 1);
  # head: λ_t g_t = (0.6 · 3, 0 · 5).
  updates, state = step(tx.init(_PARAMS))
  np.testing.assert_allclose(state.weights, [0.6, 0.0], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(updates['trunk'], [0.6, 0.0], rtol=1e-6,
                             atol=1e-7)
  np.testing.assert_allclose(updates['head'], [1.8, 0.0], rtol=1e-6,
                             atol=1e-7)
  # Step 2, same gradients: λ = [0.6, 0] + 0.1 [5, −1] = [1.1, −0.1] (the
  # code neither clips nor normalises λ).
  updates, state = step(state)
  np.testing.assert_allclose(state.weights, [1.1, -0.1], rtol=1e-6)
  np.testing.assert_allclose(updates['trunk'], [1.1, -0.1], rtol=1e-6)
  np.testing.assert_allclose(updates['head'], [3.3, -0.5], rtol=1e-6)


def test_default_adam_first_step_is_a_signed_step():
  # Adam's first step is lr · m̂ / (√v̂ + ε) = lr · sign(g) (up to ε):
  # J g_val = [5, −1], so λ = 0.1 + 1e-4 [1, −1].
  tx = mtl.auto_lambda(2, task_specific=_SPECIFIC)
  _, state = tx.update(_GRADS, tx.init(_PARAMS), _PARAMS, val_grads=_VAL)
  np.testing.assert_allclose(state.weights, [0.1001, 0.0999], rtol=1e-6)
  np.testing.assert_allclose(mtl.last_weights(state), [0.1001, 0.0999],
                             rtol=1e-6)


def test_huge_gradients_give_a_finite_step():
  # J g_val = 1e40 overflows float32; the products are taken on rescaled
  # gradients and the meta-gradient clipped, so Adam still takes its step.
  tx = mtl.auto_lambda(2)
  grads = jnp.array([[1e20, 0.0], [0.0, 1e20]])
  updates, state = tx.update(grads, tx.init(jnp.zeros(2)),
                             val_grads=jnp.array([1e20, -1e20]))
  np.testing.assert_allclose(state.weights, [0.1001, 0.0999], rtol=1e-6)
  assert np.all(np.isfinite(updates))


def test_training_step_recipe_runs():
  # The docs recipe: validation gradient of the primary task (task 0).
  def task_losses(params, x, y):
    prediction = x @ params['w']
    return jnp.stack([jnp.mean((prediction - y[:, 0]) ** 2),
                      jnp.mean((prediction - y[:, 1]) ** 2)])

  tx = optax.chain(mtl.auto_lambda(2), optax.sgd(0.1))
  params = {'w': jnp.ones(3)}
  state = tx.init(params)
  x = jnp.arange(12.0).reshape(4, 3) / 10
  y = jnp.stack([x.sum(1), -x.sum(1)], axis=1)

  @jax.jit
  def train_step(params, state, batch, val_batch):
    losses, task_grads = mtl.value_and_task_grads(task_losses)(params, *batch)
    val_grads = jax.grad(lambda p: task_losses(p, *val_batch)[0])(params)
    updates, state = tx.update(task_grads, state, params, task_losses=losses,
                               val_grads=val_grads)
    return optax.apply_updates(params, updates), state

  for _ in range(3):
    params, state = train_step(params, state, (x, y), (x[::-1], y[::-1]))
  assert np.all(np.isfinite(params['w']))


def test_missing_or_malformed_val_grads_raise():
  tx = mtl.auto_lambda(2)
  state = tx.init(jnp.zeros(2))
  with pytest.raises(ValueError, match='val_grads'):
    tx.update(jnp.eye(2), state)
  with pytest.raises(ValueError, match='shape'):
    tx.update(jnp.eye(2), state, val_grads=jnp.ones(3))
  with pytest.raises(ValueError, match='structure'):
    tx.update(jnp.eye(2), state, val_grads={'w': jnp.ones(2)})
  with pytest.raises(ValueError, match='learning_rate'):
    mtl.auto_lambda(2, learning_rate=0.0)
