"""Renamed arguments and 0.1 interfaces: they still work, and they warn.

Each old name gives exactly what the new one gives, with a
``DeprecationWarning`` that names the new argument and the removal version.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl

GRADS = jnp.array([[3.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
LOSSES = jnp.array([1.0, 2.0])

RENAMED = [
    # (factory, old keyword arguments, the same with the new names)
    (mtl.moco, {'beta': 0.3, 'beta_sigma': 0.2, 'gamma': 0.05,
                'gamma_sigma': 0.1},
     {'tracking_rate': 0.3, 'tracking_rate_sigma': 0.2, 'learning_rate': 0.05,
      'learning_rate_sigma': 0.1}),
    (mtl.modo, {'gamma': 0.2}, {'learning_rate': 0.2}),
    (mtl.excess_mtl, {'robust_step_size': 0.5}, {'learning_rate': 0.5}),
    (mtl.normalize_task_grads, {'mode': 'loss'}, {'normalization': 'loss'}),
    (mtl.logse, {'floor': 0.5}, {'loss_floor': 0.5}),
    (mtl.gls, {'floor': 0.5}, {'loss_floor': 0.5}),
    (mtl.gradvac, {'beta': 0.3}, {'target_rate': 0.3}),
    (mtl.dwa, {'floor': 0.5}, {'loss_floor': 0.5}),
    (mtl.famo, {'floor': 0.5}, {'loss_floor': 0.5}),
    (mtl.gradnorm, {'floor': 0.5}, {'loss_floor': 0.5}),
]


def _two_steps(tx):
  state = tx.init(jnp.zeros(3))
  for _ in range(2):
    updates, state = tx.update(GRADS, state, task_losses=LOSSES)
  return updates


@pytest.mark.parametrize('factory, old, new', RENAMED,
                         ids=[entry[0].__name__ for entry in RENAMED])
def test_an_old_name_warns_and_gives_the_new_names_result(factory, old, new):
  with pytest.warns(DeprecationWarning) as caught:
    old_tx = factory(2, **old)
  messages = ' '.join(str(warning.message) for warning in caught)
  for old_name, new_name in zip(old, new):
    assert f'{old_name}=' in messages and f'{new_name}=' in messages
  assert 'removed in 0.3' in messages
  np.testing.assert_array_equal(_two_steps(old_tx), _two_steps(factory(2, **new)))


def test_the_0_1_balancer_arguments_warn():
  weigh = lambda stats, state: (jnp.ones([2]) / 2, state)
  with pytest.warns(DeprecationWarning, match='0.1 interface'):
    tx = mtl.balancer(2, weigh, name='half', uses_gram=False)
  updates, _ = tx.update(GRADS, tx.init(None))
  np.testing.assert_allclose(updates, [1.5, 1.0, 1.0])


@pytest.mark.parametrize('factory, old_field, new_field', [
    (lambda: mtl.graddrop(2), 'weights', 'kept_share'),
    (lambda: mtl.trimmed_mean(3, trim_number=1), 'weights', 'kept_share'),
    (lambda: mtl.moco(2), 'weights', 'tracked_weights'),
])
def test_renamed_state_fields_warn(factory, old_field, new_field):
  tx = factory()
  state = tx.init(jnp.zeros(3))
  with pytest.warns(DeprecationWarning, match=new_field):
    old = getattr(state, old_field)
  np.testing.assert_array_equal(old, getattr(state, new_field))
  np.testing.assert_array_equal(mtl.last_weights(state), old)
