"""mtl_bench: the MultiDigits benchmark of mtl_optax, an application of it.

Not part of the library (its wheel ships ``mtl_optax`` alone): the trainer
(``train``), its command line (``cli``), the methods it offers, read from
``mtl_optax.catalog`` (``methods``), the MultiDigits data and network
(``multidigits``, ``model``), the vmapped training program (``vmapped``),
statistics and reports (``stats``, ``report``) and the reproductions of
published tables (``reproduce``). Run it from the repository root:

  python -m mtl_bench --help           # the same as python examples/train.py
  python -m mtl_bench.report RUN_DIR   # redraws a run's plots
  python -m mtl_bench.reproduce.xor_and
"""
