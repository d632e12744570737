"""Test-session set-up: 8 simulated CPU devices, and cheaper CPU code generation.

XLA reads its flags when the backend starts, so they are set before anything
imports jax (subprocesses started by the tests inherit them). On a machine
with real accelerators they only affect the host platform.

* 8 simulated CPU devices, for the sharding tests.
* The suite compiles far more than it runs (hundreds of small programs, each
  run a few times), so LLVM's optimisation passes are turned down: the
  programs XLA builds (its HLO passes, fusion, the order of every float
  operation) are the same, only the machine code is less optimised. This
  takes about a quarter off the suite's time.
"""

import os

_FLAGS = ('--xla_force_host_platform_device_count=8',
          '--xla_backend_optimization_level=0',
          '--xla_llvm_disable_expensive_passes=true')
for _flag in _FLAGS:
  if _flag.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (
        os.environ.get('XLA_FLAGS', '') + ' ' + _flag).strip()
