"""``python -m mtl_bench``: the trainer (see ``mtl_bench.train``)."""

from mtl_bench import train

if __name__ == '__main__':
  train.run(prog=train.MODULE_PROG)
