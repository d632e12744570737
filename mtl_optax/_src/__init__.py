"""Private implementation of mtl_optax; import from ``mtl_optax``."""
