"""Test-session set-up: 8 simulated CPU devices for the sharding tests.

XLA reads the flag when the backend starts, so it is set before anything
imports jax. On a machine with real accelerators the flag only affects the
host platform.
"""

import os

_FLAG = '--xla_force_host_platform_device_count=8'
if _FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _FLAG).strip()
