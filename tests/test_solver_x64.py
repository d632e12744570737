"""Every solver under ``jax_enable_x64``, in a subprocess.

x64 is a process-wide switch, so it runs in a fresh interpreter. With x64 on,
Python floats and integer indices become 64-bit; before issue 10/16's fix the
dual-cone and PCGrad loops crashed on a carry dtype mismatch. Each solver is
run on a float64 and on a float32 Gramian (the result keeps the input's
precision) and its answer is compared with the float32 run outside x64,
within float32 accuracy. Every method's float64 update is checked by
tests/test_properties.py (float64 in, float64 out, close to float32).
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, sys
import jax
jax.config.update('jax_enable_x64', True)
import jax.numpy as jnp
import numpy as np
sys.path.insert(0, sys.argv[1] + '/tests')
import test_solver_x64 as t
out = {}
for dtype in ('float64', 'float32'):
  for name, weights in t.solver_weights(getattr(jnp, dtype)).items():
    out[name + ':' + dtype] = [str(weights.dtype), np.asarray(
        weights, np.float64).tolist()]
print(json.dumps(out))
'''


def jacobian():
  rng = np.random.default_rng(0)
  return (rng.normal(size=(4, 6)) + rng.normal(size=6)) * np.array(
      [10.0, 1.0, 0.1, 3.0])[:, None]


def solver_weights(dtype):
  """Each solver's answer on the Gramian of :func:`jacobian`, in ``dtype``."""
  # pylint: disable=import-outside-toplevel
  from mtl_optax._src.methods import pcgrad
  from mtl_optax._src.solvers import cagrad_dual
  from mtl_optax._src.solvers import dual_cone
  from mtl_optax._src.solvers import fair_allocation
  from mtl_optax._src.solvers import min_norm
  from mtl_optax._src.solvers import spectral
  jac = jacobian()
  gram = jnp.asarray(jac @ jac.T, dtype)
  uniform = jnp.full([4], 0.25, dtype)
  log_one = jnp.zeros([], dtype)
  return {
      'min_norm': jax.jit(min_norm.solve)(gram).weights,
      'cagrad_dual': jax.jit(lambda g: cagrad_dual.solve(g, 0.5))(
          gram).weights,
      'dual_cone': jax.jit(lambda g: dual_cone.project_each(
          dual_cone.normalised_gram(g, 1e-4), jnp.eye(4, dtype=dtype) / 4,
          26))(gram).weights,
      'fair_allocation': jax.jit(lambda g: fair_allocation.fair_weights(
          g, log_one, 1.0, max_iters=100, tol=1e-6))(gram),
      'aligned': jax.jit(lambda g: spectral.aligned_weights(g, uniform))(gram),
      'equal_projection': jax.jit(spectral.equal_projection_coefficients)(
          gram),
      'pcgrad': jax.jit(lambda g: pcgrad.pcgrad_weights(
          g, jax.random.PRNGKey(0)))(gram),
  }


@pytest.mark.slow
def test_every_solver_runs_under_x64():
  result = subprocess.run(
      [sys.executable, '-c', SCRIPT, str(ROOT)], capture_output=True,
      text=True, timeout=600, check=False,
      env={**os.environ, 'PYTHONPATH': str(ROOT)})
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  expected = {name: np.asarray(w, np.float64)
              for name, w in solver_weights(jnp.float32).items()}
  for name, weights in expected.items():
    for dtype in ('float64', 'float32'):
      got_dtype, got = out[name + ':' + dtype]
      assert got_dtype == dtype, (name, dtype, got_dtype)
      np.testing.assert_allclose(got, weights, rtol=2e-4, atol=1e-6,
                                 err_msg=f'{name} {dtype}')
