"""Test-session set-up: 8 simulated CPU devices, and cheaper CPU code generation.

XLA reads its flags when the backend starts, so they are set before anything
imports jax (subprocesses started by the tests, and pytest-xdist's workers,
inherit them). On a machine with real accelerators they only affect the host
platform.

* 8 simulated CPU devices, for the sharding tests.
* The suite compiles far more than it runs (thousands of small programs, each
  run a few times; compilation is about three quarters of its time), so the
  CPU code generation is made cheaper. The programs XLA builds (its HLO
  passes, fusion decisions, the order of every float operation in the HLO)
  are the same; only the machine code differs:
  - LLVM's optimisation passes are turned down (about a quarter off the
    suite's time);
  - where the installed jaxlib still has them (0.10 and 0.11), XLA's older
    loop emitters write the fused kernels instead of the MLIR fusion
    emitters: compiling 40 catalog updates took 11 CPU-s against 29 on
    jaxlib 0.10.2. jaxlib 0.12 removed the switch (an unknown XLA flag is
    fatal), so a child process first checks that this jaxlib accepts it;
    the newest-versions run of ``.ci/run`` thus tests the default emitters.
"""

import os
import subprocess
import sys

_FLAGS = ('--xla_force_host_platform_device_count=8',
          '--xla_backend_optimization_level=0',
          '--xla_llvm_disable_expensive_passes=true')
# Used only where the installed jaxlib accepts it (see the module docstring).
_OPTIONAL_FLAGS = ('--xla_cpu_use_fusion_emitters=false',)


def _accepted(flag: str) -> bool:
  """Whether XLA starts with ``flag`` (it aborts on a flag it does not know)."""
  env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS='cpu')
  probe = subprocess.run(
      [sys.executable, '-c', 'import jax.numpy as jnp; jnp.zeros(1).block_until_ready()'],
      env=env, capture_output=True, check=False)
  return probe.returncode == 0


def _add(flag: str) -> None:
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + ' ' + flag).strip()


for _flag in _FLAGS:
  if _flag.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
    _add(_flag)
# Decided once per session: pytest-xdist's workers inherit the result.
_CHECKED = 'MTL_OPTAX_TEST_FLAGS_CHECKED'
if os.environ.get(_CHECKED) != '1':
  for _flag in _OPTIONAL_FLAGS:
    if _flag.split('=')[0] not in os.environ.get('XLA_FLAGS', '') and \
        _accepted(_flag):
      _add(_flag)
  os.environ[_CHECKED] = '1'
