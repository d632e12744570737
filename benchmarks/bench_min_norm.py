"""The Gramian solvers: iterations, accuracy against float64, and cost.

Three tables.

1. The min-norm solver (``mtl.min_norm_weights``: Wolfe's active-set
   method on the equilibrated Gramian, scale-free stopping rule, see
   docs/solvers.md) for each T and kind of Jacobian: random (a common
   component plus noise), ill-conditioned (singular values from 1 to 1e-4),
   rank-deficient (rank T/3, norms over e^±2) and scaled (row norms
   log-uniform over 1e-3 … 1e3, the case of issue 16). Iterations, the worst
   relative error of the update ``‖d − d*‖ / ‖d*‖`` against a float64 NumPy
   reference (Wolfe's algorithm, tests/solver_references.py), the time of one
   solve and the time per problem of a ``jax.vmap`` batch.
2. The other iterative solvers on scaled Jacobians: CAGrad's dual (min-norm
   iterations summed over its root search), the fair-allocation Newton
   method (FairGrad / Nash-MTL, α = 1) and the dual-cone active set
   (DualProj's ``u = 1/T``): iterations, worst relative error of the update
   against float64, time of one solve.
3. Each solver's time (and Aligned-MTL's Jacobi eigen-decomposition)
   next to the time of the Gramian it needs, for
   T = 10 and P >= 1e5 parameters (one float32 ``[T, P]`` leaf).
"""

import functools
import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

import common
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src.solvers import cagrad_dual
from mtl_optax._src.solvers import dual_cone
from mtl_optax._src.solvers import fair_allocation
from mtl_optax._src.solvers import min_norm
from mtl_optax._src.solvers import spectral

TESTS = pathlib.Path(__file__).resolve().parents[1] / 'tests'
KINDS = ('random', 'ill_conditioned', 'rank_deficient', 'scaled')


@functools.lru_cache(maxsize=None)
def _reference():
  # The float64 references live with the tests (they import each other).
  sys.path.insert(0, str(TESTS))
  spec = importlib.util.spec_from_file_location(
      'solver_references', TESTS / 'solver_references.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _jacobian(kind, num_tasks, seed):
  rng = np.random.default_rng(seed)
  dim = 3 * num_tasks
  if kind == 'random':
    jacobian = rng.normal(size=(num_tasks, dim)) + 0.5 * rng.normal(size=dim)
  elif kind == 'ill_conditioned':
    left, _ = np.linalg.qr(rng.normal(size=(num_tasks, num_tasks)))
    right, _ = np.linalg.qr(rng.normal(size=(dim, num_tasks)))
    jacobian = left @ np.diag(np.logspace(0, -4, num_tasks)) @ right.T
  elif kind == 'rank_deficient':
    rank = max(1, num_tasks // 3)
    left = rng.normal(size=(num_tasks, rank))
    left[:, 0] = 1.0 + np.abs(left[:, 0])  # 0 outside the hull: d* != 0.
    jacobian = (left @ rng.normal(size=(rank, dim))
                * np.exp(rng.normal(size=(num_tasks, 1))))
  else:  # scaled: a common component keeps 0 out of the hull.
    jacobian = ((rng.normal(size=(num_tasks, dim)) + rng.normal(size=dim))
                * 10.0 ** rng.uniform(-3, 3, size=(num_tasks, 1)))
  return jacobian.astype(np.float32).astype(np.float64)


def _worst_error(jacobians, weights, references):
  errors = []
  for jacobian, weight, reference in zip(jacobians, weights, references):
    expected = reference @ jacobian
    errors.append(np.linalg.norm(np.asarray(weight, np.float64) @ jacobian
                                 - expected) / np.linalg.norm(expected))
  return float(f'{max(errors):.1e}')


def _min_norm_row(kind, num_tasks, num_problems, solve, batched):
  jacobians = [_jacobian(kind, num_tasks, seed) for seed in range(num_problems)]
  grams = np.stack([j @ j.T for j in jacobians])
  grams32 = jnp.asarray(grams, jnp.float32)
  results = batched(grams32)
  iterations = np.asarray(results.iterations)
  references = [_reference().simplex_projection_weights(g) for g in grams]
  times = common.interleaved_ms({
      'single': lambda: solve(grams32[0]),
      'batched': lambda: batched(grams32),
  })
  return [num_tasks, kind, int(np.median(iterations)), int(iterations.max()),
          _worst_error(jacobians, np.asarray(results.weights), references),
          round(times['single'], 3), round(times['batched'] / num_problems, 4)]


def _cagrad_solve(gram):
  return cagrad_dual.solve(gram, 0.5)


def _fair_solve(gram):
  cos, norms, active = fair_allocation.cosines(gram)
  result = fair_allocation.solve(cos, jnp.ones_like(norms), 1.0,
                                 max_iters=100, tol=1e-6)
  weights = jnp.where(active, result.weights / jnp.where(active, norms, 1.0),
                      0.0)  # α = 1: w = v / n.
  return result._replace(weights=weights)


def _dual_cone_solve(gram):
  num_tasks = gram.shape[0]
  return dual_cone.project(dual_cone.normalised_gram(gram, 1e-4),
                           jnp.full([num_tasks], 1.0 / num_tasks),
                           dual_cone.default_max_iters(num_tasks))


def _other_references(name, gram):
  reference = _reference()
  if name == 'cagrad_dual':
    return _to_update_weights(name, gram, reference.cagrad_dual(gram, 0.5))
  if name == 'fair_allocation':
    return reference.fair_root(gram, 1.0)
  matrix = gram / np.trace(gram) + 1e-4 * np.eye(len(gram))
  return reference.bound_projection(matrix, np.full(len(gram), 1 / len(gram)))


def _to_update_weights(name, gram, weights):
  """CAGrad's update d = g_0 + r g_w / ‖g_w‖ as weights on the raw gradients."""
  if name != 'cagrad_dual':
    return weights
  mean_norm = np.sqrt(gram.mean())
  return 1.0 / len(gram) + 0.5 * mean_norm / np.sqrt(
      weights @ gram @ weights) * weights


SOLVERS = {'cagrad_dual': _cagrad_solve, 'fair_allocation': _fair_solve,
           'dual_cone': _dual_cone_solve}


def _solver_row(name, num_tasks, num_problems):
  jacobians = [_jacobian('scaled', num_tasks, seed)
               for seed in range(num_problems)]
  grams = np.stack([j @ j.T for j in jacobians])
  grams32 = jnp.asarray(grams, jnp.float32)
  solve = jax.jit(SOLVERS[name])
  batched = jax.jit(jax.vmap(SOLVERS[name]))
  results = batched(grams32)
  iterations = np.asarray(results.iterations)
  weights = [_to_update_weights(name, g, np.asarray(w, np.float64))
             for g, w in zip(grams, np.asarray(results.weights))]
  references = [_other_references(name, g) for g in grams]
  times = common.interleaved_ms({'single': lambda: solve(grams32[0])})
  return [name, num_tasks, int(np.median(iterations)), int(iterations.max()),
          _worst_error(jacobians, weights, references),
          round(times['single'], 3)]


def _cost_rows(num_params_list):
  num_tasks = 10
  gram = jnp.asarray(_jacobian('scaled', num_tasks, 0) @ _jacobian(
      'scaled', num_tasks, 0).T, jnp.float32)
  solvers = {'min_norm': jax.jit(min_norm.solve), **{
      name: jax.jit(fn) for name, fn in SOLVERS.items()},
             'graded_eigh': jax.jit(spectral.graded_eigh)}
  rows = []
  for num_params in num_params_list:
    grads = jax.random.normal(jax.random.PRNGKey(0), (num_tasks, num_params))
    compute = jax.jit(gramian_lib.gramian)
    fns = {'gramian': lambda: compute(grads)}
    fns.update({name: functools.partial(fn, gram)
                for name, fn in solvers.items()})
    times = common.interleaved_ms(fns)
    rows.append([num_tasks, f'{num_params:.0e}', round(times['gramian'], 3)]
                + [round(times[name] / times['gramian'], 3)
                   for name in solvers])
  return rows, list(solvers)


def run(quick: bool = False) -> list[dict]:
  task_counts = (2, 4, 10) if quick else (2, 4, 10, 40, 100)
  num_problems = 4 if quick else 16
  solve = jax.jit(min_norm.solve)
  # T = 2 uses the closed form; its iteration count is 0.
  batched = jax.jit(jax.vmap(min_norm.solve))
  rows = [_min_norm_row(kind, num_tasks, num_problems, solve, batched)
          for num_tasks in task_counts for kind in KINDS]
  other_counts = (4, 10) if quick else (4, 10, 40)
  other_rows = [_solver_row(name, num_tasks, num_problems)
                for name in SOLVERS for num_tasks in other_counts]
  cost_rows, names = _cost_rows((100_000,) if quick else (100_000, 1_000_000))
  return [{
      'title': 'Min-norm solver (min_norm_weights): iterations, accuracy and '
               'time versus T',
      'columns': ['T', 'Jacobian', 'median iterations', 'max iterations',
                  'worst relative error of d', 'one solve (ms)',
                  f'vmap over {num_problems}, per problem (ms)'],
      'rows': rows,
      'notes': (
          f'{num_problems} Jacobians per row (seeds 0..{num_problems - 1}). '
          'Relative error: ‖d − d*‖ / ‖d*‖ with d = Σ α_t g_t and d* from a '
          'float64 reference (Wolfe\'s algorithm); the tested target is '
          '1e-4. ill_conditioned: singular values of J from 1 to 1e-4, so '
          'cond(G) = 1e8 and the float32 Gramian itself carries a relative '
          'error of eps·cond(G) ≈ 10 in its smallest directions: errors '
          'there measure float32, not the solver. rank_deficient: rank T/3, '
          'norms over e^±2, 0 outside the hull; scaled: row norms '
          'log-uniform over 1e-3 … 1e3. T = 2 is the closed form (0 '
          'iterations). vmap runs all problems until the slowest stops.'),
  }, {
      'title': 'CAGrad dual, fair allocation and dual cone: iterations and '
               'accuracy on scaled Jacobians',
      'columns': ['solver', 'T', 'median iterations', 'max iterations',
                  'worst relative error of d', 'one solve (ms)'],
      'rows': other_rows,
      'notes': (
          'Scaled Jacobians (row norms log-uniform over 1e-3 … 1e3, a '
          'common component). Iterations: cagrad_dual, min-norm iterations '
          'summed over its root search (c = 0.5); fair_allocation, Newton '
          'steps (α = 1); dual_cone, active-set steps (u = 1/T, reg_eps = '
          '1e-4). Error of the update against float64 references written in '
          'tests/solver_references.py.'),
  }, {
      'title': 'Solver time relative to the Gramian time (T = 10)',
      'columns': ['T', 'P', 'Gramian (ms)'] + [f'{n} / Gramian'
                                               for n in names],
      'rows': cost_rows,
      'notes': (
          'Gramian of one float32 [T, P] leaf (mtl.gramian, jit); each '
          'solver on one scaled T = 10 Gramian; ratios of interleaved '
          'medians within this run. graded_eigh: the Jacobi '
          'eigen-decomposition of Aligned-MTL.'),
  }]
