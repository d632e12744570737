"""MultiDigits: two handwritten digits per image, three tasks of different kinds.

Built from scikit-learn's bundled 8×8 digits (``sklearn.datasets.load_digits``,
1 797 images, no download), in the spirit of MultiMNIST (Sener & Koltun 2018)
and of the thesis's classification + reconstruction variant (Nakamura 2023,
§5.3): a digit in the top-left corner and another in the bottom-right corner
of a 12×12 canvas, overlapping on a 4×4 patch (pixel-wise maximum there).

Tasks, chosen so that the losses live on very different scales:

* ``top_left_class``: classify the top-left digit (cross-entropy, ~2.3 at
  the start; metric: accuracy, higher is better);
* ``bottom_right_pixels``: reconstruct the bottom-right digit's 64 pixels on
  their raw 0..16 scale (MSE, ~40 at the start; metric: MSE, lower is
  better) — the overlap hides part of it;
* ``digit_sum``: regress the sum of the two digits divided by 18 (MSE,
  ~0.05 at the start; metric: mean absolute error of the sum in digit units,
  lower is better).

The source digits are split into train, validation and test sources
*before* the pairs are drawn, so no validation or test image shares a digit
with a training image (the validation split tunes the baselines' learning
rates and weightings; the test split is only reported).

*Regimes* (``REGIMES``) change the training set size, the scales of the
losses the balancer sees, or the width of the shared representation, on the
same images, network and metrics.
"""

from typing import NamedTuple

import numpy as np

DIGIT = 8  # side of a source digit
OFFSET = 4  # the bottom-right digit starts at (OFFSET, OFFSET)
CANVAS = DIGIT + OFFSET  # 12
PIXEL_MAX = 16.0  # the source images hold integers 0..16
SUM_SCALE = 18.0  # the largest digit sum


class Task(NamedTuple):
  name: str
  loss: str  # what is minimised
  metric: str  # what is reported on the test split
  higher_is_better: bool


TASKS = (
    Task('top_left_class', 'cross-entropy', 'accuracy', True),
    Task('bottom_right_pixels', 'MSE (raw 0..16 pixels)', 'MSE', False),
    Task('digit_sum', 'MSE (sum / 18)', 'MAE (digits)', False),
)


class Split(NamedTuple):
  images: np.ndarray  # shape=[N, CANVAS, CANVAS], float32 in [0, 1]
  top_left_label: np.ndarray  # shape=[N], int32 in 0..9
  bottom_right_pixels: np.ndarray  # shape=[N, 64], float32 in [0, 16]
  digit_sum: np.ndarray  # shape=[N], int32 in 0..18
  top_left_source: np.ndarray  # shape=[N], int64 index into load_digits()
  bottom_right_source: np.ndarray  # shape=[N], int64 index into load_digits()


class MultiDigits(NamedTuple):
  train: Split
  val: Split
  test: Split


class Regime(NamedTuple):
  """A benchmark setting on MultiDigits (see ``REGIMES``)."""
  name: str
  description: str
  num_train: int  # training images used (the first of the training pool)
  loss_scales: tuple = (1.0, 1.0, 1.0)  # the losses the balancer sees: s_t L_t
  width: int = 1 << 30  # trunk output units kept (the rest masked to 0)


# All regimes share the images, the network shape and the metrics, so one
# compiled program per method serves them all. ``loss_scales`` multiply the
# training losses (and gradients) only; the test metrics do not change.
REGIMES = {
    regime.name: regime for regime in (
        Regime('multidigits', 'MultiDigits as built: 20 000 training images; '
               'loss scales ~2.3 / ~40 / ~0.05 at the start.', 20_000),
        Regime('small_data', 'only 300 training images: a single-task '
               'network overfits, the other tasks can regularise a shared '
               'trunk.', 300),
        Regime('bottleneck', 'the shared representation keeps 6 of the '
               'trunk\'s units: the tasks compete for capacity and their '
               'gradients on the trunk conflict.', 20_000, width=6),
        Regime('loss_scales', 'the losses the balancer sees are scaled by '
               '1, 100 and 0.01 (start ~2.3 / ~4 000 / ~5e-4): equal '
               'weighting follows the reconstruction only.', 20_000,
               loss_scales=(1.0, 100.0, 0.01)),
    )
}


def compose(top_left: np.ndarray, bottom_right: np.ndarray) -> np.ndarray:
  """Places ``[N, 8, 8]`` digits on ``[N, 12, 12]`` canvases (max where they overlap)."""
  count = top_left.shape[0]
  canvas = np.zeros((count, CANVAS, CANVAS), top_left.dtype)
  canvas[:, :DIGIT, :DIGIT] = top_left
  corner = canvas[:, OFFSET:, OFFSET:]
  canvas[:, OFFSET:, OFFSET:] = np.maximum(corner, bottom_right)
  return canvas


def _pairs(images, labels, sources, count, rng) -> Split:
  first = rng.choice(sources, size=count)
  second = rng.choice(sources, size=count)
  canvas = compose(images[first], images[second]) / PIXEL_MAX
  return Split(
      images=canvas.astype(np.float32),
      top_left_label=labels[first].astype(np.int32),
      bottom_right_pixels=images[second].reshape(count, -1).astype(np.float32),
      digit_sum=(labels[first] + labels[second]).astype(np.int32),
      top_left_source=first,
      bottom_right_source=second,
  )


def load(num_train: int = 20_000, num_val: int = 1_000,
         num_test: int = 2_000, *, test_fraction: float = 0.25,
         val_fraction: float = 0.2, seed: int = 0) -> MultiDigits:
  """Builds the train, validation and test splits (deterministic for ``seed``).

  Args:
    num_train: number of composed training images.
    num_val: number of composed validation images.
    num_test: number of composed test images.
    test_fraction: share of the 1 797 source digits kept for the test split
      (stratified by class).
    val_fraction: share of the remaining source digits kept for the
      validation split (stratified by class).
    seed: seed of the source split and of the pairing.

  Returns:
    A :class:`MultiDigits` with train, validation and test :class:`Split` s.
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = digits.images.astype(np.float32)
  labels = digits.target.astype(np.int32)
  rest, test_sources = model_selection.train_test_split(
      np.arange(len(labels)), test_size=test_fraction, stratify=labels,
      random_state=seed)
  train_sources, val_sources = model_selection.train_test_split(
      rest, test_size=val_fraction, stratify=labels[rest], random_state=seed)
  rng = np.random.default_rng(seed)
  return MultiDigits(
      train=_pairs(images, labels, train_sources, num_train, rng),
      val=_pairs(images, labels, val_sources, num_val, rng),
      test=_pairs(images, labels, test_sources, num_test, rng),
  )


def as_arrays(split: Split) -> tuple:
  """``(images, top_left_label, bottom_right_pixels, digit_sum)`` for a model."""
  return (split.images, split.top_left_label, split.bottom_right_pixels,
          split.digit_sum)
