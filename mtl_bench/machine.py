"""The machine a result was measured on, named the same way everywhere.

Standard library only: the benchmark scripts (``benchmarks/common.py``) use
it as well as the reports of ``mtl_bench``.
"""

import platform


def cpu_model() -> str:
  """The CPU's model name (Linux), else the machine type."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
      for line in cpuinfo:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()
