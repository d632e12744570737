"""Quick start: three regression tasks on one shared MLP trunk, balanced by MGDA.

  pip install -e . && python examples/quickstart.py
"""

import jax
import jax.numpy as jnp
import optax

import mtl_optax as mtl

NUM_TASKS = 3

# Synthetic data: 8 inputs, three related targets on different scales.
x = jax.random.normal(jax.random.key(0), (256, 8))
true_w = jax.random.normal(jax.random.key(1), (8, NUM_TASKS))
y = jnp.tanh(x @ true_w) * jnp.array([1.0, 2.0, 0.5])

def init_params(key):
  k1, k2, k3 = jax.random.split(key, 3)
  return {
      'trunk': {'w1': jax.random.normal(k1, (8, 32)) / jnp.sqrt(8.0),
                'w2': jax.random.normal(k2, (32, 32)) / jnp.sqrt(32.0)},
      'heads': jax.random.normal(k3, (NUM_TASKS, 32)) / jnp.sqrt(32.0),
  }

def task_losses(params, x, y):
  """The [T] per-task mean squared errors."""
  h = jnp.tanh(x @ params['trunk']['w1'])
  h = jnp.tanh(h @ params['trunk']['w2'])
  preds = h @ params['heads'].T  # [batch, T], one column per head
  return jnp.mean((preds - y) ** 2, axis=0)

# MGDA balances the shared trunk; each head steps on its own task's gradient.
balancer = mtl.mgda(num_tasks=NUM_TASKS,
                    task_specific={'trunk': False, 'heads': True})
tx = optax.chain(balancer, optax.adam(1e-3))
params = init_params(jax.random.key(2))
opt_state = tx.init(params)

@jax.jit
def train_step(params, opt_state, x, y):
  losses, task_grads = mtl.value_and_task_grads(task_losses)(params, x, y)
  updates, opt_state = tx.update(task_grads, opt_state, params,
                                 task_losses=losses)
  return optax.apply_updates(params, updates), opt_state, losses

fmt = lambda v: ' '.join(f'{float(e):.4f}' for e in v)
for step in range(501):
  batch = jax.random.choice(jax.random.key(step), 256, (64,), replace=False)
  params, opt_state, losses = train_step(params, opt_state, x[batch], y[batch])
  if step % 100 == 0:
    weights = opt_state[0].weights  # MGDA's task weights for this step
    print(f'step {step:3d}  losses {fmt(losses)}  weights {fmt(weights)}')
