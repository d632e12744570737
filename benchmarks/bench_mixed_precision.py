"""bfloat16 task gradients: how far the weights move from float32.

The same stacked gradients ``J`` are given to a balancer once in float32 and
once rounded to bfloat16 (what a bf16 backward pass would produce, minus its
own rounding). The Gramian always accumulates in float32
(``preferred_element_type``), the weighting runs in float32, and the update
comes back in bfloat16. Reported, against the float32 run:

* ``input``: ``‖J_bf16 - J‖ / ‖J‖``, the rounding every bf16 pipeline has;
* ``gram``: ``max |G_bf16 - G| / max |G|`` (float32 accumulation);
* ``weights``: ``max_t |w_bf16 - w| / max_t |w|``;
* ``update``: ``‖d_bf16 - d‖ / ‖d‖``.

``J`` is random with a common direction (tasks agree on average) and one
task pointing partly against it, so the min-norm problem has an interior
solution that the rounding can move.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import mtl_optax as mtl

SIZES = ((2, 10**3), (2, 10**5), (8, 10**3), (8, 10**5), (32, 10**3),
         (32, 10**5))
QUICK_SIZES = ((4, 10**3),)
ALL_METHODS_SIZE = (8, 10**4)
QUICK_METHODS = ('mgda', 'upgrad', 'db_mtl', 'equal_weighting')


@functools.cache
def methods():
  from mtl_optax import catalog as registry  # pylint: disable=g-import-not-at-top
  return {method.name: method for method in registry.METHODS}


def problem(num_tasks: int, size: int, seed: int = 0):
  """``(J [T, size] float32, losses [T])``: agreeing tasks and one dissenter."""
  rng = np.random.default_rng(seed)
  common = rng.normal(size=size)
  matrix = common + 1.5 * rng.normal(size=(num_tasks, size))
  matrix[0] = -0.5 * common + rng.normal(size=size)
  matrix *= rng.uniform(0.5, 2.0, size=(num_tasks, 1))  # Unequal norms.
  losses = rng.uniform(0.5, 2.0, size=num_tasks)
  return (jnp.asarray(matrix, jnp.float32), jnp.asarray(losses, jnp.float32))


def _relative(a, b, norm=np.linalg.norm):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = norm(b)
  return float(norm(a - b) / scale) if scale > 0 else float(norm(a - b))


def _max_norm(x):
  return np.max(np.abs(x))


def compare(method, num_tasks: int, size: int) -> dict[str, float]:
  """Errors of the bf16 run of ``method`` against its float32 run."""
  task_grads, task_losses = problem(num_tasks, size)
  tx = method.make(num_tasks)
  params = jnp.zeros((size,), jnp.float32)

  @jax.jit
  def step(task_grads):
    state = tx.init(params.astype(task_grads.dtype))
    losses = task_losses if method.needs_losses else None
    update, state = tx.update(task_grads, state, params, task_losses=losses)
    return update, state.weights if hasattr(state, 'weights') else None

  update32, weights32 = step(task_grads)
  half = task_grads.astype(jnp.bfloat16)
  update16, weights16 = step(half)
  assert update16.dtype == jnp.bfloat16
  gram32, scale32 = jax.jit(mtl.gramian)(task_grads)
  gram16, scale16 = jax.jit(mtl.gramian)(half)
  return {
      'input': _relative(half.astype(jnp.float32), task_grads),
      'gram': _relative(gram16 * scale16**2, gram32 * scale32**2, _max_norm),
      'weights': (_relative(weights16, weights32, _max_norm)
                  if weights32 is not None else float('nan')),
      'update': _relative(update16.astype(jnp.float32), update32),
  }


def _sizes_table(sizes):
  rows = []
  for num_tasks, size in sizes:
    for name in ('mgda', 'upgrad'):
      errors = compare(methods()[name], num_tasks, size)
      rows.append([name, num_tasks, f'{size:.0e}', errors['input'],
                   errors['gram'], errors['weights'], errors['update']])
  return {
      'title': 'bfloat16 gradients, float32 Gramian: relative error vs float32',
      'columns': ['method', 'T', 'P', 'input', 'gram', 'weights', 'update'],
      'rows': rows,
      'notes': (
          '"input" is the rounding of J to bfloat16 (≈ 2^-9 relative per '
          'entry); the other columns are what it does to the Gramian, the '
          'weights and the update. mgda is min-norm (Frank-Wolfe); upgrad '
          'projects onto the dual cone. One problem per row (seed 0).'),
  }


def _methods_table(names):
  num_tasks, size = ALL_METHODS_SIZE
  rows = []
  for name in names:
    errors = compare(methods()[name], num_tasks, size)
    rows.append([name, errors['weights'], errors['update']])
  return {
      'title': (f'Every method, bfloat16 vs float32 gradients (T = {num_tasks}, '
                f'P = {size:.0e})'),
      'columns': ['method', 'weights error', 'update error'],
      'rows': rows,
      'notes': (
          'Relative errors as in the table above, on the same kind of '
          'problem. Loss-level methods read no gradient, so their weights '
          'are exact and their update error is the rounding of J alone. '
          'Randomised methods use the same key in both runs.'),
  }


def run(quick: bool = False) -> list[dict]:
  if quick:
    return [_sizes_table(QUICK_SIZES), _methods_table(QUICK_METHODS)]
  return [_sizes_table(SIZES), _methods_table(sorted(methods()))]


if __name__ == '__main__':
  for table in run(quick=True):
    print(table['title'])
    print(table['columns'])
    for row in table['rows']:
      print([f'{v:.3g}' if isinstance(v, float) else v for v in row])
