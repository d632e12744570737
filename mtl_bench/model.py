"""A Flax NNX network for MultiDigits: a shared trunk and one head per task."""

import jax
import jax.numpy as jnp
from flax import nnx

from mtl_bench import multidigits

NUM_CLASSES = 10
NUM_PIXELS = multidigits.DIGIT * multidigits.DIGIT


class MultiDigitsNet(nnx.Module):
  """Hard parameter sharing: ``trunk`` is shared, ``heads[t]`` belongs to task t."""

  def __init__(self, *, hidden: int = 64, rngs: nnx.Rngs):
    inputs = multidigits.CANVAS * multidigits.CANVAS
    self.trunk = nnx.Sequential(
        nnx.Linear(inputs, hidden, rngs=rngs), jax.nn.relu,
        nnx.Linear(hidden, hidden, rngs=rngs), jax.nn.relu)
    self.heads = nnx.List([
        nnx.Linear(hidden, NUM_CLASSES, rngs=rngs),  # top_left_class
        nnx.Sequential(  # bottom_right_pixels
            nnx.Linear(hidden, hidden, rngs=rngs), jax.nn.relu,
            nnx.Linear(hidden, NUM_PIXELS, rngs=rngs)),
        nnx.Linear(hidden, 1, rngs=rngs),  # digit_sum
    ])

  def __call__(self, images, trunk_mask=None):
    """``trunk_mask`` (``[hidden]`` of 0/1), if given, keeps only some of the
    trunk's output units: a narrower shared representation without a new
    network shape (the ``bottleneck`` regime)."""
    features = self.trunk(images.reshape(images.shape[0], -1))
    if trunk_mask is not None:
      features = features * trunk_mask
    return [head(features) for head in self.heads]


def is_head(path, leaf) -> bool:
  """The ``task_specific`` predicate: True for every leaf under ``heads``."""
  del leaf
  return any(getattr(key, 'key', None) == 'heads' for key in path)


def task_specific(params):
  """Boolean pytree like ``params``: which leaves belong to one task only."""
  return jax.tree_util.tree_map_with_path(is_head, params)


def task_losses(outputs, batch) -> jax.Array:
  """``[3]`` per-task training losses of a batch (see ``multidigits.TASKS``)."""
  logits, pixels, digit_sum = outputs
  images, top_left, bottom_right, target_sum = batch
  del images
  cross_entropy = -jnp.mean(jnp.take_along_axis(
      jax.nn.log_softmax(logits), top_left[:, None], axis=1))
  reconstruction = jnp.mean((pixels - bottom_right) ** 2)
  scaled_sum = target_sum.astype(jnp.float32) / multidigits.SUM_SCALE
  sum_error = jnp.mean((digit_sum[:, 0] - scaled_sum) ** 2)
  return jnp.stack([cross_entropy, reconstruction, sum_error])


def task_metrics(outputs, batch) -> jax.Array:
  """``[3]`` test metrics: accuracy, reconstruction MSE, MAE of the sum."""
  logits, pixels, digit_sum = outputs
  images, top_left, bottom_right, target_sum = batch
  del images
  accuracy = jnp.mean(jnp.argmax(logits, axis=1) == top_left)
  reconstruction = jnp.mean((pixels - bottom_right) ** 2)
  predicted_sum = digit_sum[:, 0] * multidigits.SUM_SCALE
  sum_error = jnp.mean(jnp.abs(predicted_sum - target_sum))
  return jnp.stack([accuracy, reconstruction, sum_error])
