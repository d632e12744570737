"""Quick start: three regression tasks on one shared trunk, balanced by MGDA."""

import jax
import jax.numpy as jnp
import optax

import mtl_optax as mtl

# Synthetic data: 8 inputs, three related targets on different scales.
k1, k2, k3, k4, k5 = jax.random.split(jax.random.key(0), 5)
x = jax.random.normal(k1, (256, 8))
y = jnp.tanh(x @ jax.random.normal(k2, (8, 3))) * jnp.array([1.0, 2.0, 0.5])
params = {'trunk': jax.random.normal(k3, (8, 32)) / jnp.sqrt(8.0),
          'heads': jax.random.normal(k4, (32, 3)) / jnp.sqrt(32.0)}

def task_losses(params, x, y):  # [T] per-task mean squared errors
  hidden = jnp.tanh(x @ params['trunk'])
  return jnp.mean((hidden @ params['heads'] - y) ** 2, axis=0)

# MGDA balances the shared trunk; the heads step on their own task's gradient.
tx = optax.chain(
    mtl.mgda(num_tasks=3, task_specific={'trunk': False, 'heads': True}),
    optax.adam(1e-3))
opt_state = tx.init(params)

@jax.jit
def train_step(params, opt_state, x, y):
  losses, task_grads = mtl.value_and_task_grads(task_losses)(params, x, y)
  updates, opt_state = tx.update(task_grads, opt_state, params,
                                 task_losses=losses)
  return optax.apply_updates(params, updates), opt_state, losses

fmt = lambda values: ' '.join(f'{float(v):.3f}' for v in values)
for step in range(501):
  batch = jax.random.choice(jax.random.fold_in(k5, step), 256, (64,))
  params, opt_state, losses = train_step(params, opt_state, x[batch], y[batch])
  if step % 100 == 0:  # MGDA's weights of this step: mtl.last_weights
    weights = mtl.last_weights(opt_state)
    print(f'step {step:3d}  losses {fmt(losses)}  weights {fmt(weights)}')
