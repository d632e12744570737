"""Published tables reproduced with the library: ``python -m mtl_bench.reproduce.<name>``."""
