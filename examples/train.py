"""The benchmark trainer, by path: ``python examples/train.py --help``.

A thin wrapper over the ``mtl_bench`` package (``python -m mtl_bench`` is
the same program). The package is importable from here once the project is
installed in setuptools' compat editable mode, which puts the repository
root on the import path:

  pip install -e ".[examples]" --config-settings editable_mode=compat
"""

from mtl_bench.train import run

if __name__ == '__main__':
  run()
