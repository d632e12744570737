"""Flax NNX: a shared trunk and three heads, the trunk balanced by MGDA.

  pip install -e ".[examples]" && python examples/flax_nnx.py

``nnx.Optimizer.update`` forwards keyword arguments to the transformation,
so the per-task losses reach the balancer inside ``nnx.jit``. The heads are
task-specific: each steps on its own task's gradient and stays out of the
Gramian (docs/guides/task_specific.md). The mask is given as a callable of
the parameters, which works on an ``nnx.State`` as on any pytree.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import mtl_optax as mtl

NUM_TASKS = 3


class MultiTaskMLP(nnx.Module):

  def __init__(self, rngs: nnx.Rngs):
    self.trunk = nnx.Linear(8, 32, rngs=rngs)
    self.heads = nnx.List([nnx.Linear(32, 1, rngs=rngs)
                           for _ in range(NUM_TASKS)])

  def __call__(self, x):
    h = nnx.relu(self.trunk(x))
    return jnp.concatenate([head(h) for head in self.heads], axis=-1)


def is_head(params):
  """True for every leaf under ``heads``: the task-specific parameters."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: 'heads' in jax.tree_util.keystr(path), params)


def per_task_losses(model, x, y):
  return jnp.mean((model(x) - y) ** 2, axis=0)  # [T] mean squared errors


x = jax.random.normal(jax.random.key(0), (256, 8))
y = jnp.tanh(x @ jax.random.normal(jax.random.key(1), (8, NUM_TASKS)))
y = y * jnp.array([1.0, 3.0, 0.3])  # three scales
model = MultiTaskMLP(nnx.Rngs(0))
tx = optax.chain(mtl.mgda(NUM_TASKS, task_specific=is_head), optax.adam(3e-3))
optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, x, y):
  graphdef, params = nnx.split(model, nnx.Param)

  def task_losses(params):
    return per_task_losses(nnx.merge(graphdef, params), x, y)

  losses, task_grads = mtl.value_and_task_grads(task_losses)(params)
  optimizer.update(model, task_grads, task_losses=losses)  # kwargs forwarded
  return losses


fmt = lambda values: ' '.join(f'{float(v):.4f}' for v in values)
for step in range(301):
  batch = jax.random.choice(jax.random.key(step), 256, (64,), replace=False)
  losses = train_step(model, optimizer, x[batch], y[batch])
  if step % 100 == 0:
    weights = mtl.last_weights(optimizer.opt_state)  # MGDA's weights
    print(f'step {step:3d}  losses {fmt(losses)}  weights {fmt(weights)}')
