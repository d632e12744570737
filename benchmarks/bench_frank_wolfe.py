"""The two min-norm solvers side by side: Wolfe's method and Frank-Wolfe.

``min_norm_weights(gram, solver=...)`` with ``'wolfe'`` (the default:
Wolfe's minimum-norm-point method, exact after finitely many steps) and
``'frank_wolfe'`` (Sener and Koltun 2018, Algorithm 2: uniform start, exact
line search, at most 250 steps, stop when a step changes α by less than 1e-5
in ℓ1), each at its defaults, for T in {2, 8, 32, 128} on two kinds of
Jacobian (P = 2T + 2): ``common`` (N(0, 1) rows plus one shared N(0, 1) row,
norms alike) and ``scaled`` (the same rows times norms log-uniform over
1e-3 … 1e3). Iterations, the relative error of the update
``‖d − d*‖ / ‖d*‖`` against a float64 reference (Wolfe's algorithm in NumPy,
tests/solver_references.py, certified by its KKT conditions) and the time of
one compiled solve.
"""

import functools
import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

import common
from mtl_optax._src.solvers import min_norm

TESTS = pathlib.Path(__file__).resolve().parents[1] / 'tests'
KINDS = ('common', 'scaled')
SOLVERS = ('wolfe', 'frank_wolfe')


@functools.lru_cache(maxsize=None)
def _reference():
  sys.path.insert(0, str(TESTS))
  spec = importlib.util.spec_from_file_location(
      'solver_references', TESTS / 'solver_references.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _jacobian(kind, num_tasks, seed):
  rng = np.random.default_rng(seed)
  dim = 2 * num_tasks + 2
  jacobian = rng.normal(size=(num_tasks, dim)) + rng.normal(size=dim)
  if kind == 'scaled':
    jacobian *= 10.0 ** rng.uniform(-3, 3, size=(num_tasks, 1))
  return jacobian.astype(np.float32).astype(np.float64)


def _certified_reference(gram):
  weights = _reference().simplex_projection_weights(gram)
  dots = gram @ weights  # KKT: min_t (Gα)_t >= αᵀGα, to float64 rounding.
  assert dots.min() >= weights @ dots - 1e-12 * np.abs(gram).max()
  return weights


def _row(kind, num_tasks, solver, num_problems):
  jacobians = [_jacobian(kind, num_tasks, seed)
               for seed in range(num_problems)]
  grams32 = jnp.asarray(np.stack([j @ j.T for j in jacobians]), jnp.float32)
  solve = jax.jit(functools.partial(min_norm.solve_with, solver))
  results = [solve(gram) for gram in grams32]
  iterations = np.array([int(r.iterations) for r in results])
  converged = np.mean([bool(r.converged) for r in results])
  errors = []
  for jacobian, result in zip(jacobians, results):
    expected = _certified_reference(jacobian @ jacobian.T) @ jacobian
    update = np.asarray(result.weights, np.float64) @ jacobian
    errors.append(np.linalg.norm(update - expected) / np.linalg.norm(expected))
  times = common.interleaved_ms({'solve': lambda: solve(grams32[0])})
  return [num_tasks, kind, solver, int(np.median(iterations)),
          int(iterations.max()), float(converged),
          float(f'{np.median(errors):.1e}'), float(f'{max(errors):.1e}'),
          round(times['solve'], 3)]


def run(quick: bool = False) -> list[dict]:
  task_counts = (2, 8) if quick else (2, 8, 32, 128)
  num_problems = 3 if quick else 10
  rows = [_row(kind, num_tasks, solver, num_problems)
          for num_tasks in task_counts for kind in KINDS
          for solver in SOLVERS]
  return [{
      'title': 'Min-norm solvers: Wolfe (default) and Frank-Wolfe '
               '(solver=\'frank_wolfe\')',
      'columns': ['T', 'Jacobian', 'solver', 'median iterations',
                  'max iterations', 'fraction converged',
                  'median relative error of d', 'worst relative error of d',
                  'one solve (ms)'],
      'rows': rows,
      'notes': (
          f'{num_problems} Jacobians per row (seeds 0..{num_problems - 1}), '
          'P = 2T + 2, float32 Gramians. common: N(0, 1) rows plus a shared '
          'N(0, 1) row; scaled: the same times row norms log-uniform over '
          '1e-3 … 1e3. Relative error ‖d − d*‖ / ‖d*‖ of d = Σ α_t g_t '
          'against a KKT-certified float64 reference (Wolfe\'s algorithm '
          'in NumPy). Each solver at its defaults: Wolfe max_iters 2000, '
          'tol 1e-8 (closed form at T = 2, 0 iterations); Frank-Wolfe '
          'max_iters 250, tol 1e-5 (ℓ1 change of α). "converged": the '
          'stopping rule, not the cap, ended the loop. One solve: the '
          'median of interleaved repeats of the compiled solver on seed 0.'),
  }]
