"""Flax Linen: a shared trunk and three heads, the trunk balanced by MGDA.

  pip install -e ".[examples]" && python examples/flax_linen.py

``TrainState.apply_gradients`` does not forward keyword arguments, so the
per-task losses cannot reach the balancer through it: ``train_step`` calls
``tx.update`` itself (the two lines marked below). The heads are
task-specific (docs/guides/task_specific.md): a boolean mask with the
structure of the parameters says so.
"""

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax.training import train_state

import mtl_optax as mtl

NUM_TASKS = 3


class MultiTaskMLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(32, name='trunk')(x))
    return jnp.concatenate([nn.Dense(1, name=f'head_{t}')(h)
                            for t in range(NUM_TASKS)], axis=-1)


x = jax.random.normal(jax.random.key(0), (256, 8))
y = jnp.tanh(x @ jax.random.normal(jax.random.key(1), (8, NUM_TASKS)))
y = y * jnp.array([1.0, 3.0, 0.3])  # three scales
model = MultiTaskMLP()
params = model.init(jax.random.key(2), x)['params']
# A prefix of the parameter tree: each head's kernel and bias are its own.
task_specific = {name: name.startswith('head_') for name in params}
state = train_state.TrainState.create(
    apply_fn=model.apply, params=params,
    tx=optax.chain(mtl.mgda(NUM_TASKS, task_specific=task_specific),
                   optax.adam(3e-3)))


@jax.jit
def train_step(state, x, y):
  def task_losses(params):  # [T] mean squared errors
    return jnp.mean((state.apply_fn({'params': params}, x) - y) ** 2, axis=0)

  losses, task_grads = mtl.value_and_task_grads(task_losses)(state.params)
  # The two lines that replace state.apply_gradients(grads=...):
  updates, opt_state = state.tx.update(task_grads, state.opt_state,
                                       state.params, task_losses=losses)
  state = state.replace(step=state.step + 1, opt_state=opt_state,
                        params=optax.apply_updates(state.params, updates))
  return state, losses


fmt = lambda values: ' '.join(f'{float(v):.4f}' for v in values)
for step in range(301):
  batch = jax.random.choice(jax.random.key(step), 256, (64,), replace=False)
  state, losses = train_step(state, x[batch], y[batch])
  if step % 100 == 0:
    weights = mtl.last_weights(state.opt_state)  # MGDA's weights
    print(f'step {step:3d}  losses {fmt(losses)}  weights {fmt(weights)}')
