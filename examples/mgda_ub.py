"""MGDA-UB on scikit-learn's 8×8 digits with a Flax NNX model.

  pip install -e ".[examples]" && python examples/mgda_ub.py

A shared MLP encoder and one linear head per task, three tasks of different
kinds read from the same image:

* ``digit``: which digit, 0..9 (cross-entropy);
* ``parity``: even or odd (cross-entropy);
* ``ink``: how much ink the image holds, the mean pixel in 0..16 (MSE on
  the raw scale, so its loss starts far above the others).

Each step balances the tasks MGDA-UB style (Sener and Koltun 2018, section
3.3): the min-norm weights come from the gradients of the task losses with
respect to the encoder's output ``z``, then the weighted loss goes back
through the encoder once. ``mtl.representation_balanced_grads`` does both;
any balancer (``mtl.central_direction(T)``, ``mtl.task_tensioner(T)``, …)
can replace ``mtl.mgda(T)``. Runs in well under a minute on a CPU.
``--help`` lists the options (JAX loads only after they are checked).
"""

import argparse
import time


class Parser(argparse.ArgumentParser):
  """``argparse`` whose errors are one line (exit status 2, no usage)."""

  def error(self, message):
    self.exit(2, f'{self.prog}: error: {message}\n')


def parse_args(argv=None):
  """Parses and checks the options; a bad one exits with one line and 2."""
  parser = Parser(prog='mgda_ub.py', description=__doc__.split('\n')[0],
                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--steps', type=int, default=400, metavar='N',
                      help='training steps')
  parser.add_argument('--batch-size', type=int, default=128, metavar='N',
                      help='images per step (at most the 1347 training '
                      'images)')
  parser.add_argument('--lr', type=float, default=3e-3,
                      help="Adam's learning rate")
  parser.add_argument('--seed', type=int, default=0, metavar='N',
                      help='seed of the initialisation and the batches')
  parser.add_argument('--log-every', type=int, default=50, metavar='N',
                      help='steps between two printed lines')
  args = parser.parse_args(argv)
  for name in ('steps', 'batch_size', 'log_every'):
    if getattr(args, name) < 1:
      parser.error(f'--{name.replace("_", "-")}: must be ≥ 1')
  if not 0 < args.lr < float('inf'):
    parser.error(f'--lr: must be finite and > 0, got {args.lr}')
  if args.seed < 0:
    parser.error('--seed: must be ≥ 0')
  if args.batch_size > 1347:
    parser.error(f'--batch-size: at most 1347 (the training images), got '
                 f'{args.batch_size}')
  return args


if __name__ == '__main__':
  ARGS = parse_args()  # --help and bad options end here, before JAX loads.

# pylint: disable=g-import-not-at-top,wrong-import-position,wrong-import-order
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn import datasets
from sklearn import model_selection

import mtl_optax as mtl

TASKS = ('digit', 'parity', 'ink')
NUM_TASKS = len(TASKS)


class Encoder(nnx.Module):

  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(64, 128, rngs=rngs)
    self.out = nnx.Linear(128, 64, rngs=rngs)

  def __call__(self, images):
    return jax.nn.relu(self.out(jax.nn.relu(self.hidden(images))))


class Heads(nnx.Module):
  """One linear head per task: 10 digit logits, 2 parity logits, 1 ink."""

  def __init__(self, rngs: nnx.Rngs):
    self.digit = nnx.Linear(64, 10, rngs=rngs)
    self.parity = nnx.Linear(64, 2, rngs=rngs)
    self.ink = nnx.Linear(64, 1, rngs=rngs)

  def __call__(self, z):
    return self.digit(z), self.parity(z), self.ink(z)[:, 0]


def load_digits():
  """Train/test splits of images (scaled to 0..1) and the three targets."""
  digits = datasets.load_digits()
  images = digits.data.astype(np.float32)
  labels = digits.target.astype(np.int32)
  targets = {'digit': labels, 'parity': labels % 2,
             'ink': images.mean(axis=1)}  # Raw 0..16 pixel scale.
  split = model_selection.train_test_split(
      images / 16.0, *targets.values(), test_size=0.25, random_state=0)
  train = (split[0], dict(zip(targets, split[2::2])))
  test = (split[1], dict(zip(targets, split[3::2])))
  return train, test


def task_losses(outputs, targets):
  digit_logits, parity_logits, ink = outputs
  return jnp.stack([
      optax.softmax_cross_entropy_with_integer_labels(
          digit_logits, targets['digit']).mean(),
      optax.softmax_cross_entropy_with_integer_labels(
          parity_logits, targets['parity']).mean(),
      jnp.mean((ink - targets['ink']) ** 2),
  ])


def main(args):
  (train_images, train_targets), (test_images, test_targets) = load_digits()
  rngs = nnx.Rngs(args.seed)
  encoder_def, encoder_params = nnx.split(Encoder(rngs))
  heads_def, head_params = nnx.split(Heads(rngs))

  def encoder_fn(params, images):
    return nnx.merge(encoder_def, params)(images)

  def heads_loss_fn(params, z, targets):
    return task_losses(nnx.merge(heads_def, params)(z), targets)

  balancer = mtl.mgda(NUM_TASKS)
  balanced_grads = mtl.representation_balanced_grads(
      balancer, encoder_fn, heads_loss_fn)
  optimizer = optax.adam(args.lr)
  params = (encoder_params, head_params)
  optimizer_state = optimizer.init(params)
  balancer_state = balancer.init(None)  # z has no parameters to mirror.

  @jax.jit
  def train_step(params, optimizer_state, balancer_state, images, targets):
    losses, grads, balancer_state = balanced_grads(
        *params, balancer_state, images, targets)
    updates, optimizer_state = optimizer.update(grads, optimizer_state, params)
    params = optax.apply_updates(params, updates)
    return params, optimizer_state, balancer_state, losses

  @jax.jit
  def evaluate(params, images, targets):
    encoder_params, head_params = params
    outputs = nnx.merge(heads_def, head_params)(
        encoder_fn(encoder_params, images))
    digit_logits, parity_logits, ink = outputs
    return (jnp.mean(digit_logits.argmax(-1) == targets['digit']),
            jnp.mean(parity_logits.argmax(-1) == targets['parity']),
            jnp.mean((ink - targets['ink']) ** 2))

  rng = np.random.default_rng(args.seed)
  start = time.perf_counter()
  print(f'{"step":>5}  ' + '  '.join(f'{f"L_{t}":>9}' for t in TASKS) + '  '
        + '  '.join(f'{f"w_{t}":>8}' for t in TASKS))
  for step in range(1, args.steps + 1):
    batch = rng.choice(len(train_images), args.batch_size, replace=False)
    batch_targets = {name: value[batch]
                     for name, value in train_targets.items()}
    params, optimizer_state, balancer_state, losses = train_step(
        params, optimizer_state, balancer_state, train_images[batch],
        batch_targets)
    if step % args.log_every == 0 or step == 1:
      print(f'{step:5d}  ' + '  '.join(f'{x:9.4f}' for x in losses) + '  '
            + '  '.join(f'{x:8.3f}'
                        for x in mtl.last_weights(balancer_state)))
  elapsed = time.perf_counter() - start
  digit_acc, parity_acc, ink_mse = evaluate(params, test_images, test_targets)
  print(f'test: digit accuracy {digit_acc:.3f}, parity accuracy '
        f'{parity_acc:.3f}, ink MSE {ink_mse:.4f} '
        f'({args.steps} steps in {elapsed:.1f} s)')


if __name__ == '__main__':
  main(ARGS)
