"""GLS: the weights of the geometric mean of the losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from one_backward import assert_both_paths_agree

_TX = mtl.gls(3)
_WEIGH = jax.jit(lambda losses: _TX.update(
    jnp.eye(3), _TX.init(None), task_losses=losses)[0])  # Update = weights.


def test_weights_by_hand():
  # GLS = (1 · 4 · 2)^{1/3} = 2, w_t = GLS / (3 L_t).
  np.testing.assert_allclose(_WEIGH(jnp.array([1.0, 4.0, 2.0])),
                             [2 / 3, 1 / 6, 1 / 3], rtol=1e-6)


def test_update_is_the_gradient_of_the_geometric_mean():
  # Independent check: autodiff of (Π_t L_t)^{1/T} itself.
  tx = mtl.gls(2)
  inputs = jnp.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.3]])

  def task_losses(params):
    residuals = inputs @ params - jnp.array([[1.0], [2.0], [0.0]])
    return jnp.stack([jnp.mean(residuals[:, 0] ** 2),
                      jnp.mean(jnp.abs(residuals[:, 1]))])

  params = jnp.array([[0.3, -0.2], [0.1, 0.4]])
  losses, task_grads = mtl.value_and_task_grads(task_losses)(params)
  updates, _ = jax.jit(tx.update)(task_grads, tx.init(params), params,
                                  task_losses=losses)
  expected = jax.grad(lambda p: jnp.prod(task_losses(p)) ** 0.5)(params)
  np.testing.assert_allclose(updates, expected, rtol=1e-5)


def test_common_loss_scale_leaves_weights_unchanged():
  losses = jnp.array([0.3, 2.0, 7.0])
  np.testing.assert_allclose(_WEIGH(1e4 * losses), _WEIGH(losses), rtol=1e-5)


def test_non_positive_losses_are_floored():
  # Losses [0, -1, 1] count as [1e-8, 1e-8, 1]: GLS = 1e-16/3,
  # w = GLS / (3 L) = [10^{8 - 16/3}, 10^{8 - 16/3}, 10^{-16/3}] / 3.
  weights = _WEIGH(jnp.array([0.0, -1.0, 1.0]))
  big, small = 10 ** (8 - 16 / 3) / 3, 10 ** (-16 / 3) / 3
  np.testing.assert_allclose(weights, [big, big, small], rtol=1e-4)


def test_losses_spanning_the_float32_range_give_finite_weights():
  # The product 3e38 · 3e38 overflows if it is ever formed; in log space
  # GLS = 3e38 and w = GLS / (2 L) = [0.5, 0.5].
  tx = mtl.gls(2)
  weights = jax.jit(lambda l: tx.update(jnp.eye(2), tx.init(None),
                                        task_losses=l)[0])(
                                            jnp.array([3e38, 3e38]))
  np.testing.assert_allclose(weights, [0.5, 0.5], rtol=1e-5)
  # Nine losses at 3e38 and one at the floor: w_0 = GLS / (10 · 1e-8) =
  # (3e38 / 1e-8)^{0.9} / 10 ~ 1e41 > float32 max, so it is capped there.
  tx = mtl.gls(10)
  losses = jnp.array([0.0] + [3e38] * 9)
  weights = jax.jit(lambda l: tx.update(jnp.eye(10), tx.init(None),
                                        task_losses=l)[0])(losses)
  np.testing.assert_allclose(weights[0], np.finfo(np.float32).max, rtol=1e-6)
  # w_t = GLS / (10 · 3e38) = (1e-8 / 3e38)^{0.1} / 10 for the others.
  np.testing.assert_allclose(weights[1:], (1e-8 / 3e38) ** 0.1 / 10,
                             rtol=1e-4)


def test_one_task_has_weight_one():
  tx = mtl.gls(1)
  updates, _ = jax.jit(tx.update)(jnp.array([[2.0, -1.0]]), tx.init(None),
                                  task_losses=jnp.array([5.0]))
  np.testing.assert_allclose(updates, [2.0, -1.0], rtol=1e-6)


def test_one_backward_path_gives_the_same_update():
  assert_both_paths_agree(mtl.gls(3), 3)


def test_bad_floor_is_rejected():
  with pytest.raises(ValueError, match='floor'):
    mtl.gls(2, floor=0.0)
