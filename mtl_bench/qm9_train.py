"""QM9 (11 tasks) with every balancing method, beside DB-MTL's Table 3.

  pip install -e ".[qm9]" --config-settings editable_mode=compat
  python -m mtl_bench --dataset qm9 --preset smoke   # ~2 min on 2 cores
  python -m mtl_bench --dataset qm9 --preset cpu     # the CPU report
  python -m mtl_bench --dataset qm9 --preset paper   # the papers' settings

(``python -m mtl_bench.qm9_train --preset ...`` is the same program.) It

trains single-task networks (STL: one network per task and seed) and then
each method's multi-task network (a shared encoder, one linear head per
task), all seeds of a row in one vmapped program; writes the table (test
MAE per task in the protocol's units and Δp over STL with 95 % intervals,
DB-MTL Table 3's Δp and rank beside ours, Spearman's rank correlation),
``results.json`` and plots into a new run folder.

The protocol (Nash-MTL, DB-MTL §4.2): targets standardised with the training
mean and std, MSE per task, Adam, ReduceLROnPlateau (factor 0.7, patience
5 epochs, floor 1e-5) on the validation Δp (an STL network: on its task's
validation MAE), the epoch with the best validation Δp chosen, its test
MAEs reported. ``Δp = (100/T) Σ_t −(MAE_t − MAE_t^STL) / MAE_t^STL``.

Encoders (``mtl_bench/qm9_model.py``): ``paper`` uses the papers' MPNN;
``smoke`` and ``cpu`` an MLP on a whitened per-molecule descriptor (bond
counts and interatomic-distance histograms per element pair), the cheaper
encoder per unit of CPU that was measured (``cpu`` also trains on a fixed
subset of 25 000 of the 110 831 training molecules, validation and test
whole). Absolute MAEs are therefore far above Table 3's; Δp, ranks and the
rank correlation are what stand beside it.

Each row runs through the faster of the library's two paths: loss-level
weightings through the Gramian engine (``mtl.value_and_balanced_grad``:
one backward pass), the others through ``mtl.value_and_task_grads`` and the
balancer (see ``GRAMIAN_METHODS`` for the measured choice).
"""

import argparse
import json
import math
import os
import sys
import time
from typing import Any, NamedTuple

from mtl_bench import cli
from mtl_bench import qm9

# DB-MTL's Table 3 (Lin et al., "Dual-Balancing for Multi-Task Learning"):
# the STL row's test MAEs (TASKS' order and units) and each method's Δp (%).
PAPER_STL = (0.062, 0.192, 58.82, 51.95, 0.529, 4.52, 63.69, 60.83, 68.33,
             60.31, 0.069)
PAPER_DELTA_P = {
    'EW': -146.3, 'GLS': -81.16, 'RLW': -200.9, 'UW': -92.35, 'DWA': -160.9,
    'IMTL-L': -77.06, 'MGDA': -103.0, 'GradNorm': -227.5, 'PCGrad': -117.8,
    'GradDrop': -191.4, 'GradVac': -150.7, 'IMTL-G': -1250.0,
    'CAGrad': -87.25, 'Nash-MTL': -73.92, 'MoCo': -1314.0,
    'Aligned-MTL': -80.58, 'IMTL': -104.3, 'DB-MTL': -58.10,
}

# Row label -> method spec (mtl_bench.methods): Table 3's methods that the
# library has, then the others the report adds.
METHODS = (
    ('EW', 'equal_weighting'), ('GLS', 'gls'), ('RLW', 'rlw'),
    ('UW', 'uncertainty_weighting'), ('DWA', 'dwa'),
    ('IMTL-L', "imtl(mode='loss')"), ('MGDA', 'mgda'),
    ('GradNorm', 'gradnorm'), ('PCGrad', 'pcgrad'), ('GradDrop', 'graddrop'),
    ('GradVac', 'gradvac'), ('IMTL-G', "imtl(mode='gradient')"),
    ('CAGrad', 'cagrad'), ('Nash-MTL', 'nash_mtl'), ('MoCo', 'moco'),
    ('Aligned-MTL', 'aligned_mtl'), ('IMTL', 'imtl'), ('DB-MTL', 'db_mtl'),
    ('UPGrad', 'upgrad'), ('FAMO', 'famo'), ('FairGrad', 'fairgrad'),
    ('STCH', 'stch'), ('ExcessMTL', 'excess_mtl'),
    ('central_direction', 'central_direction'),
    ('task_tensioner', 'task_tensioner'),
)
STL = 'STL'

# Gradient-level weightings that run faster through the Gramian engine
# than through the stacked per-task gradients. None here: on the descriptor
# MLP (2 cores, 3 vmapped seeds) UPGrad took 14.2 CPU-s per epoch through
# the engine against 12.1 stacked, MGDA 14.5 against 12.1 (the engine adds
# a forward-mode pass per task). Loss-level weightings always take the
# engine's one backward pass (2.0 CPU-s against 11-12 stacked).
GRAMIAN_METHODS = ()


class Preset(NamedTuple):
  name: str
  encoder: str  # 'descriptor_mlp' or 'mpnn'
  width: int
  num_train: int | None  # training molecules (None: all 110 831)
  num_eval: int | None  # validation and test molecules each (None: 10 000)
  epochs: int
  batch_size: int
  seeds: int
  methods: tuple  # row labels of METHODS
  lr: float = 1e-3
  description: str = ''
  engine: str = 'auto'  # or 'stacked' / 'gramian' for every method
  task_chunk: int | None = None  # chunk_size of the per-task passes
  components: int | None = None  # whitened descriptor axes kept (None: all)
  depth: int = 3  # the descriptor MLP's hidden layers


PRESETS = {
    'smoke': Preset(
        'smoke', 'descriptor_mlp', 64, 2000, 500, 2, 128, 2,
        ('EW', 'DB-MTL', 'UPGrad'), depth=2,
        description='a quick end-to-end check (the tests run it)'),
    # Planned from per-epoch costs measured on this project's 2-core
    # machine (mtl_bench/results/qm9_cost.md): about 5 400 CPU-seconds,
    # about an hour of wall time with both cores free.
    'cpu': Preset(
        'cpu', 'descriptor_mlp', 128, 25_000, None, 25, 128, 3,
        tuple(label for label, _ in METHODS), depth=2,
        description='every method, 3 seeds, 25 000 training molecules, 25 '
        'epochs: under 2 hours on 2 CPU cores'),
    'paper': Preset(
        'paper', 'mpnn', 64, None, None, 300, 128, 3,
        tuple(label for label, _ in METHODS),
        description="the papers' MPNN, full split, 300 epochs (an "
        "accelerator's job)"),
}

# ReduceLROnPlateau as the protocol sets it (PyTorch's, mode 'max' on Δp).
PLATEAU_FACTOR = 0.7
PLATEAU_PATIENCE = 5
PLATEAU_MIN_LR = 1e-5
PLATEAU_THRESHOLD = 1e-4  # relative, as PyTorch's default


class Data(NamedTuple):
  """Model inputs and standardised targets of the three splits."""
  train: tuple  # (inputs, targets [N, 11] standardised, float32)
  val: tuple
  test: tuple
  std: Any  # [11] float32: standardised error x std = error in TASKS' units
  sizes: tuple  # (train, val, test) molecules
  num_not_perceived: int


def _standardise_features(components, train, *others):
  """Standardised, then whitened, with the training set's statistics.

  Whitening (rotating onto the principal axes of the training descriptors
  and scaling each by 1/√(λ + 0.01)) makes the linear part of the problem
  well conditioned: the descriptors are strongly correlated, and Adam on
  the raw ones stays far from even the least-squares fit in a few epochs.
  Both scales have floors (std ≥ 1, one count; λ + 0.01), so that a
  feature rare in the training molecules (an F–F pair) cannot blow up in
  another split. ``components`` keeps the leading axes only (None: all).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  mean = train.mean(axis=0)
  std = np.maximum(train.std(axis=0), 1.0)
  splits = [(x - mean) / std for x in (train,) + others]
  values, vectors = np.linalg.eigh(np.cov(splits[0], rowvar=False))
  keep = np.argsort(values)[::-1][:components]
  projection = vectors[:, keep] / np.sqrt(np.maximum(values[keep], 0.0)
                                          + 1e-2)
  return [(x @ projection).astype(np.float32) for x in splits]


def prepare(preset: Preset, cache_dir: str | None = None, *,
            progress=print) -> Data:
  """Loads QM9 (cached), subsets it as ``preset`` says, builds the inputs."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtl_bench import qm9_model  # pylint: disable=g-import-not-at-top
  data = qm9.load(cache_dir, num_train=preset.num_train,
                  num_eval=preset.num_eval, progress=progress)
  splits = [data.train, data.val, data.test]
  if preset.encoder == 'descriptor_mlp':
    features = [descriptors_cached(split, cache_dir) for split in splits]
    inputs = _standardise_features(preset.components, *features)
  else:
    inputs = [qm9_model.graphs(split) for split in splits]
  targets = [((split.targets - data.mean) / data.std).astype(np.float32)
             for split in splits]
  return Data(*zip(inputs, targets), std=data.std.astype(np.float32),
              sizes=tuple(split.count for split in splits),
              num_not_perceived=data.num_not_perceived)


def descriptors_cached(molecules, cache_dir: str | None = None):
  """:func:`qm9_model.descriptors`, cached by the molecules' QM9 numbers."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtl_bench import qm9_model  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256(
      molecules.index.tobytes()
      + f'{qm9_model.DESCRIPTOR_SIZE}'.encode()).hexdigest()[:12]
  path = os.path.join(os.path.dirname(qm9.cache_path(cache_dir)),
                      f'qm9-descriptors-{digest}.npy')
  if os.path.exists(path):
    return np.load(path)
  features = qm9_model.descriptors(molecules)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = f'{path}.{os.getpid()}.tmp.npy'
  np.save(temporary, features)
  os.replace(temporary, path)
  return features


def spec_of(label: str) -> str:
  return dict(METHODS)[label]


def _weighting(spec: str, seed):
  """``mtl.weightings.<name>(...)`` of a one-piece spec, or None."""
  import inspect  # pylint: disable=g-import-not-at-top
  import mtl_optax as mtl  # pylint: disable=g-import-not-at-top
  from mtl_bench import methods  # pylint: disable=g-import-not-at-top
  pieces = methods.parse(spec)
  if len(pieces) != 1:
    return None
  factory = getattr(mtl.weightings, pieces[0].name, None)
  if factory is None:
    return None
  kwargs = dict(pieces[0].kwargs)
  if 'key' in inspect.signature(factory).parameters:
    kwargs['key'] = seed
  return factory(**kwargs)


def engine_for(spec: str, engine: str = 'auto') -> str:
  """``'gramian'`` or ``'stacked'``: the faster path of ``spec`` here.

  ``engine`` other than ``'auto'`` forces that path where it exists.
  """
  weighting = _weighting(spec, 0)
  if weighting is None or engine == 'stacked':
    return 'stacked'
  if engine == 'gramian' or not weighting.reads_gram or spec in GRAMIAN_METHODS:
    return 'gramian'
  return 'stacked'


class History(NamedTuple):
  """A group's training (leading axis: member)."""
  val_mae: Any  # [M, E, 11] float64, TASKS' units
  test_mae: Any  # [M, 11] of the chosen epoch's parameters
  chosen_epoch: Any  # [M] int; best validation score (0: none was finite)
  train_loss: Any  # [M, E, 11] mean standardised MSE over the epoch
  lr: Any  # [M, E] learning rate during the epoch
  compile_seconds: float
  train_seconds: float  # training and evaluation, compilation excluded
  train_cpu_seconds: float  # the same, process CPU time (every thread)


def _program(kind: str, spec: str | None, preset: Preset, num_train: int):
  """Jitted, member-vmapped ``init``, ``epoch`` and ``evaluate``."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import mtl_optax as mtl  # pylint: disable=g-import-not-at-top
  from mtl_bench import methods  # pylint: disable=g-import-not-at-top
  from mtl_bench import qm9_model  # pylint: disable=g-import-not-at-top

  graphdef, _ = nnx.split(network(preset, 0), nnx.Param)
  batch_size = preset.batch_size
  steps = num_train // batch_size
  adam = optax.inject_hyperparams(optax.adam)

  def losses_fn(params, inputs, targets):
    return qm9_model.task_losses(nnx.merge(graphdef, params)(inputs), targets)

  def parts(seed):
    """The method's transformation and engine step for one member."""
    if kind == STL:
      return None, None
    if engine_for(spec, preset.engine) == 'gramian':
      weighting = _weighting(spec, seed)
      return weighting, mtl.value_and_balanced_grad(
          losses_fn, weighting, task_specific=qm9_model.task_specific,
          chunk_size=preset.task_chunk)
    balancer = methods.make(spec, qm9.NUM_TASKS, qm9_model.task_specific,
                            key=seed)
    return balancer, mtl.value_and_task_grads(losses_fn,
                                              chunk_size=preset.task_chunk)

  def init_one(params, seed, lr):
    method, _ = parts(seed)
    if method is None:
      method_state = optax.EmptyState()
    elif isinstance(method, mtl.Weighting):
      method_state = method.init(qm9.NUM_TASKS)
    else:
      method_state = method.init(params)
    return method_state, adam(learning_rate=lr).init(params)

  def step(params, state, seed, task_weights, inputs, targets):
    method, grad_fn = parts(seed)
    method_state, adam_state = state
    if kind == STL:
      def weighted(p):
        losses = losses_fn(p, inputs, targets)
        return jnp.sum(task_weights * losses), losses

      (_, losses), grads = jax.value_and_grad(weighted, has_aux=True)(params)
    elif isinstance(method, mtl.Weighting):
      losses, grads, method_state = grad_fn(params, method_state, inputs,
                                            targets)
    else:
      losses, task_grads = grad_fn(params, inputs, targets)
      grads, method_state = method.update(task_grads, method_state, params,
                                          task_losses=losses)
    updates, adam_state = adam(learning_rate=0.0).update(grads, adam_state,
                                                         params)
    return (optax.apply_updates(params, updates), (method_state, adam_state),
            losses)

  def epoch_one(params, state, seed, task_weights, epoch, inputs, targets):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), epoch)
    order = jax.random.permutation(key, num_train)[:steps * batch_size]

    def body(carry, rows):
      params, state = carry
      batch = jax.tree.map(lambda array: array[rows], inputs)
      params, state, losses = step(params, state, seed, task_weights, batch,
                                   targets[rows])
      return (params, state), losses

    (params, state), losses = jax.lax.scan(
        body, (params, state), order.reshape(steps, batch_size))
    return params, state, jnp.mean(losses, axis=0)

  def evaluate_one(params, inputs, targets, std):
    model = nnx.merge(graphdef, params)
    count = targets.shape[0]
    # The MPNN's edge tensors are [chunk, 29, 29, 128] per member.
    chunk = min(count, 1000 if preset.encoder == 'descriptor_mlp' else 128)
    padded = -(-count // chunk) * chunk
    rows = jnp.arange(padded) % count
    chunks = jax.tree.map(
        lambda array: array[rows].reshape((-1, chunk) + array.shape[1:]),
        (inputs, targets))
    errors = jax.lax.map(lambda batch: jnp.abs(model(batch[0]) - batch[1]),
                         chunks).reshape(padded, -1)[:count]
    return jnp.mean(errors, axis=0) * std

  init = jax.jit(jax.vmap(init_one))
  epoch = jax.jit(jax.vmap(epoch_one,
                           in_axes=(0, 0, 0, 0, None, None, None)),
                  donate_argnums=(0, 1))
  evaluate = jax.jit(jax.vmap(evaluate_one, in_axes=(0, None, None, None)))
  return init, epoch, evaluate


def _set_lr(state, lrs):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  method_state, adam_state = state
  hyperparams = dict(adam_state.hyperparams)
  hyperparams['learning_rate'] = jnp.asarray(
      lrs, hyperparams['learning_rate'].dtype)
  return method_state, adam_state._replace(hyperparams=hyperparams)


def input_size(preset: Preset) -> int:
  """The descriptor MLP's input size after whitening."""
  from mtl_bench import qm9_model  # pylint: disable=g-import-not-at-top
  return preset.components or qm9_model.DESCRIPTOR_SIZE


def network(preset: Preset, seed: int):
  """The preset's network with seed ``seed``'s initial parameters."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from mtl_bench import qm9_model  # pylint: disable=g-import-not-at-top
  return qm9_model.QM9Net(
      preset.encoder, width=preset.width, depth=preset.depth,
      inputs=input_size(preset),
      rngs=nnx.Rngs(seed))


def init_params(seeds, preset: Preset):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  states = [nnx.split(network(preset, int(seed)), nnx.Param)[1]
            for seed in seeds]
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


class Plateau:
  """ReduceLROnPlateau (PyTorch's rules, mode 'max'), one per member."""

  def __init__(self, lrs):
    import numpy as np  # pylint: disable=g-import-not-at-top
    self.lr = np.asarray(lrs, np.float64)
    self.best = np.full(len(self.lr), -np.inf)
    self.bad = np.zeros(len(self.lr), np.int64)

  def __call__(self, scores):
    """Records one epoch's validation scores (higher is better)."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    scores = np.asarray(scores, np.float64)
    finite = np.isfinite(self.best)
    margin = PLATEAU_THRESHOLD * np.abs(np.where(finite, self.best, 0.0))
    better = ~finite | (scores > self.best + margin)
    self.best = np.where(better, scores, self.best)
    self.bad = np.where(better, 0, self.bad + 1)
    reduce = self.bad > PLATEAU_PATIENCE
    self.lr = np.where(reduce, np.maximum(self.lr * PLATEAU_FACTOR,
                                          PLATEAU_MIN_LR), self.lr)
    self.bad = np.where(reduce, 0, self.bad)
    return self.lr


def train_group(kind: str, spec: str | None, seeds, task_weights,
                data: Data, preset: Preset, *, stl_val=None,
                epochs: int | None = None, progress=None) -> History:
  """Trains the members (one per seed) of a row; returns their history.

  ``kind`` is ``STL`` (``task_weights`` one-hot: member m trains on its
  task alone, the scheduler reads that task's validation MAE) or a row
  label (the scheduler reads the validation Δp against ``stl_val``).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtl_bench import report  # pylint: disable=g-import-not-at-top
  epochs = preset.epochs if epochs is None else epochs
  num_train = data.sizes[0]
  init, epoch_fn, evaluate = _program(kind, spec, preset, num_train)
  seeds = np.asarray(seeds, np.int32)
  task_weights = jnp.asarray(task_weights, jnp.float32)
  train, val, test = (tuple(map(_as_device, split))
                      for split in (data.train, data.val, data.test))
  std = jnp.asarray(data.std)
  report_line = progress or (lambda line: None)
  start = time.perf_counter()
  params = init_params(seeds, preset)
  state = init(params, jnp.asarray(seeds), jnp.full(len(seeds), preset.lr))
  args = (jnp.asarray(seeds), task_weights, jnp.int32(0)) + train
  compiled = epoch_fn.lower(params, state, *args).compile()
  evaluate(params, *val, std)  # Compiles the evaluation too.
  compile_seconds = time.perf_counter() - start
  report_line(f'{kind}: compiled in {compile_seconds:.1f} s')
  plateau = Plateau(np.full(len(seeds), preset.lr))
  own_task = np.argmax(np.asarray(task_weights), axis=1)
  # Model selection: each member keeps the parameters of its epoch with the
  # best validation score; the test split is evaluated once, on those.
  # A copy: the epoch program donates (reuses) the buffers of ``params``.
  best_params = jax.tree.map(jnp.copy, params)
  best_score = np.full(len(seeds), -np.inf)
  chosen = np.zeros(len(seeds), np.int64)
  vals, losses, lrs = [], [], []
  start, cpu_start = time.perf_counter(), time.process_time()
  for number in range(epochs):
    lrs.append(plateau.lr.copy())
    state = _set_lr(state, plateau.lr)
    params, state, loss = compiled(params, state, jnp.asarray(seeds),
                                   task_weights, jnp.int32(number), *train)
    val_mae = np.asarray(evaluate(params, *val, std), np.float64)
    if kind == STL:
      scores = -val_mae[np.arange(len(seeds)), own_task]
    else:
      scores = report.delta_p(val_mae, stl_val, [False] * qm9.NUM_TASKS)
    plateau(scores)
    improved = np.isfinite(scores) & (scores > best_score)
    best_score = np.where(improved, scores, best_score)
    chosen = np.where(improved, number + 1, chosen)
    best_params = _keep(best_params, params, improved)
    vals.append(val_mae)
    losses.append(np.asarray(loss, np.float64))
    report_line(f'{kind}: epoch {number + 1}/{epochs}, '
                f'{time.perf_counter() - start:.1f} s')
  test_mae = np.asarray(evaluate(best_params, *test, std), np.float64)
  return History(np.stack(vals, 1), test_mae, chosen, np.stack(losses, 1),
                 np.stack(lrs, 1), compile_seconds,
                 time.perf_counter() - start, time.process_time() - cpu_start)


def _keep(best, new, improved):
  """``new``'s members where ``improved`` (bool [M]), else ``best``'s."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  mask = jnp.asarray(improved)
  return jax.tree.map(
      lambda b, n: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, b),
      best, new)


def _as_device(value):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jax.tree.map(jnp.asarray, value)


def single_task(data: Data, preset: Preset, seeds, *, progress=None) -> dict:
  """STL: one network per (task, seed); each task's epoch chosen on its
  validation MAE. Returns the chosen validation and test MAEs [S, 11]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  tasks = np.repeat(np.arange(qm9.NUM_TASKS), len(seeds))
  member_seeds = np.tile(np.asarray(seeds), qm9.NUM_TASKS)
  weights = np.eye(qm9.NUM_TASKS, dtype=np.float32)[tasks]
  history = train_group(STL, None, member_seeds, weights, data, preset,
                        progress=progress)
  members = np.arange(len(tasks))
  chosen = history.chosen_epoch
  val = history.val_mae[members, np.maximum(chosen - 1, 0), tasks].reshape(
      qm9.NUM_TASKS, len(seeds)).T
  test = history.test_mae[members, tasks].reshape(qm9.NUM_TASKS,
                                                  len(seeds)).T
  return {'val_mae': val, 'test_mae': test, 'chosen_epoch': chosen,
          'seconds': history.train_seconds,
          'cpu_seconds': history.train_cpu_seconds,
          'compile_seconds': history.compile_seconds,
          'seconds_per_epoch': history.train_seconds / history.lr.shape[1],
          'members': len(tasks)}


def method_row(label: str, data: Data, preset: Preset, seeds, stl: dict, *,
               progress=None) -> dict:
  """One method's row: per seed, the epoch of best validation Δp."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtl_bench import report  # pylint: disable=g-import-not-at-top
  spec = spec_of(label)
  stl_val = stl['val_mae'].mean(axis=0)
  stl_test = stl['test_mae'].mean(axis=0)
  weights = np.ones((len(seeds), qm9.NUM_TASKS), np.float32)
  history = train_group(label, spec, seeds, weights, data, preset,
                        stl_val=stl_val, progress=progress)
  no_stl = [False] * qm9.NUM_TASKS
  val_delta = report.delta_p(history.val_mae, stl_val, no_stl)  # [S, E]
  test = history.test_mae
  return {'spec': spec, 'engine': engine_for(spec, preset.engine),
          'test_mae': test, 'delta_p': report.delta_p(test, stl_test, no_stl),
          'chosen_epoch': history.chosen_epoch,
          'final_lr': history.lr[:, -1],
          'val_delta_p_curve': val_delta,
          'seconds': history.train_seconds,
          'cpu_seconds': history.train_cpu_seconds,
          'compile_seconds': history.compile_seconds,
          'seconds_per_epoch': history.train_seconds / history.lr.shape[1]}


def ranks(values) -> list:
  """1 for the largest value; ties share their mean rank."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  values = np.asarray(values, np.float64)
  order = np.argsort(-values, kind='stable')
  result = np.empty(len(values))
  result[order] = np.arange(1, len(values) + 1)
  for value in np.unique(values):
    tied = values == value
    result[tied] = result[tied].mean()
  return result.tolist()


def spearman(a, b) -> float:
  """Spearman's rank correlation: Pearson's of the (tie-averaged) ranks."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if len(a) < 2:
    return float('nan')
  ra, rb = np.asarray(ranks(a)), np.asarray(ranks(b))
  ra, rb = ra - ra.mean(), rb - rb.mean()
  denominator = math.sqrt(float(np.sum(ra ** 2) * np.sum(rb ** 2)))
  return float(np.sum(ra * rb) / denominator) if denominator else float('nan')


def _cell(interval, digits: int = 3) -> str:
  if math.isnan(interval.half_width):
    return f'{interval.mean:.{digits}g}'
  return f'{interval.mean:.{digits}g} ± {interval.half_width:.2g}'


def markdown(results: dict) -> str:
  """The results table, Table 3's Δp and ranks beside ours."""
  from mtl_bench import stats  # pylint: disable=g-import-not-at-top
  rows = results['rows']
  shared = [label for label in rows if label in PAPER_DELTA_P]
  our_rank = dict(zip(rows, ranks([rows[k]['delta_p_mean'] for k in rows])))
  # Ranks among Table 3's methods only, ours and the paper's: the pairs
  # that the rank correlation compares.
  shared_rank = dict(zip(shared, ranks([rows[k]['delta_p_mean']
                                        for k in shared])))
  paper_rank = dict(zip(shared, ranks([PAPER_DELTA_P[k] for k in shared])))
  header = ('| method | ' + ' | '.join(
      f'{task.symbol} ({task.unit})' for task in qm9.TASKS)
            + f' | Δp % (ours) | rank of {len(rows)} | rank of '
            f'{len(shared)} (Table 3\'s methods) | Δp % (Table 3) | rank '
            f'of {len(shared)} (Table 3) |')
  lines = [header, '|' + '---|' * (qm9.NUM_TASKS + 6)]
  stl = results['single_task']['test_mae']
  lines.append('| STL (ours) | ' + ' | '.join(
      _cell(stats.mean_interval([seed[t] for seed in stl]))
      for t in range(qm9.NUM_TASKS)) + ' | 0 | | | 0 | |')
  lines.append('| STL (Table 3) | ' + ' | '.join(
      f'{value:g}' for value in PAPER_STL) + ' | | | | 0 | |')
  for label, row in rows.items():
    mae = row['test_mae']
    paper = PAPER_DELTA_P.get(label)
    lines.append(
        f'| {label} | ' + ' | '.join(
            _cell(stats.mean_interval([seed[t] for seed in mae]))
            for t in range(qm9.NUM_TASKS))
        + f' | {_cell(stats.mean_interval(row["delta_p"]), 4)} | '
        + f'{our_rank[label]:g} | '
        + ('' if paper is None else f'{shared_rank[label]:g}') + ' | '
        + ('' if paper is None else f'{paper:g}') + ' | '
        + ('' if paper is None else f'{paper_rank[label]:g}') + ' |')
  correlation = results['spearman']
  lines.append('')
  lines.append(f'Spearman rank correlation of Δp with Table 3 over the '
               f'{len(shared)} shared methods: {correlation:.2f}.')
  return '\n'.join(lines)


def _jsonable(value):
  import numpy as np  # pylint: disable=g-import-not-at-top
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, (np.floating, float)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def plot(run_dir: str, results: dict) -> list[str]:
  """Δp per method (bars) and ours against Table 3's (one point per method)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = results['rows']
  labels = sorted(rows, key=lambda k: -rows[k]['delta_p_mean'])
  paths = []
  figure, axes = plt.subplots(figsize=(8, 0.3 * len(labels) + 1.5))
  means = [rows[k]['delta_p_mean'] for k in labels]
  errors = [rows[k]['delta_p_half_width'] or 0.0 for k in labels]
  axes.barh(labels, means, xerr=errors, color='tab:blue')
  axes.axvline(0.0, color='black', linewidth=0.8)
  axes.invert_yaxis()
  axes.set_xlabel('Δp over STL, % (higher is better; 95 % interval)')
  axes.set_title(f'QM9, preset {results["preset"]["name"]}')
  figure.tight_layout()
  paths.append(os.path.join(run_dir, 'delta_p.png'))
  figure.savefig(paths[-1], dpi=120)
  plt.close(figure)
  shared = [k for k in labels if k in PAPER_DELTA_P]
  figure, axes = plt.subplots(figsize=(6, 5))
  axes.scatter([PAPER_DELTA_P[k] for k in shared],
               [rows[k]['delta_p_mean'] for k in shared])
  for k in shared:
    axes.annotate(k, (PAPER_DELTA_P[k], rows[k]['delta_p_mean']),
                  fontsize=7)
  axes.set_xscale('symlog', linthresh=10)
  axes.set_xlabel('Δp in DB-MTL Table 3, %')
  axes.set_ylabel('Δp here, %')
  axes.set_title(f'Spearman ρ = {results["spearman"]:.2f}')
  figure.tight_layout()
  paths.append(os.path.join(run_dir, 'delta_p_vs_paper.png'))
  figure.savefig(paths[-1], dpi=120)
  plt.close(figure)
  return paths


def run(preset: Preset, *, out: str = 'runs', cache_dir: str | None = None,
        plots: bool = True, progress: bool = True, command: str = '') -> dict:
  """Trains STL and every row of ``preset``; writes table, JSON and plots."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtl_bench import report  # pylint: disable=g-import-not-at-top
  from mtl_bench import stats  # pylint: disable=g-import-not-at-top
  say = (lambda line: print(line, flush=True)) if progress else None
  run_dir = cli.new_run_dir(os.path.join(out, f'qm9-{preset.name}'))
  if say:
    say(f'Writing to {run_dir}')
  start = time.perf_counter()
  data = prepare(preset, cache_dir, progress=say)
  seeds = list(range(preset.seeds))
  stl = single_task(data, preset, seeds, progress=say)
  rows = {}
  for label in preset.methods:
    row = method_row(label, data, preset, seeds, stl, progress=say)
    interval = stats.mean_interval(row['delta_p'])
    row['delta_p_mean'], row['delta_p_half_width'] = (interval.mean,
                                                      interval.half_width)
    rows[label] = row
  shared = [label for label in rows if label in PAPER_DELTA_P]
  seconds = time.perf_counter() - start
  results = {
      'preset': preset._asdict(), 'command': command,
      'machine': report.versions(), 'seconds': seconds,
      'tasks': [task._asdict() for task in qm9.TASKS],
      'sizes': {'train': data.sizes[0], 'val': data.sizes[1],
                'test': data.sizes[2]},
      'num_not_perceived': data.num_not_perceived,
      'split_seed': qm9.SPLIT_SEED, 'seeds': seeds,
      'single_task': stl, 'rows': rows,
      'spearman': spearman([rows[k]['delta_p_mean'] for k in shared],
                           [PAPER_DELTA_P[k] for k in shared]),
      'paper': {'stl_mae': PAPER_STL, 'delta_p': PAPER_DELTA_P},
  }
  table = markdown(results)
  settings = (
      f'QM9, preset {preset.name}: {preset.encoder} encoder (width '
      f'{preset.width}) and 11 linear heads; {data.sizes[0]} training / '
      f'{data.sizes[1]} validation / {data.sizes[2]} test molecules; '
      f'{preset.epochs} epochs, batch {preset.batch_size}, Adam '
      f'{preset.lr:g} with ReduceLROnPlateau (0.7, patience 5, min 1e-5) on '
      f'the validation Δp, the epoch of best validation Δp; seeds {seeds}. '
      f'Machine: {results["machine"]}. Wall time {seconds:.0f} s.')
  text = (f'# QM9, preset {preset.name}\n\n`{command}`\n\n{settings}\n\n'
          f'{table}\n')
  paths = [os.path.join(run_dir, 'results.md'),
           os.path.join(run_dir, 'results.json')]
  with open(paths[0], 'w') as file:
    file.write(text)
  with open(paths[1], 'w') as file:
    json.dump(_jsonable(results), file, indent=1)
  if plots:
    paths += plot(run_dir, results)
  if progress:
    print(text)
    print('Wrote:\n' + '\n'.join('  ' + path for path in paths))
  results.update(run_dir=run_dir, paths=paths, table=text)
  del np
  return results


PROG = 'python -m mtl_bench.qm9_train'


def parse_args(argv=None, prog: str = PROG):
  """Parses and checks the options; a bad one exits with one line and 2."""
  parser = cli.Parser(prog=prog, description=__doc__.split('\n')[0])
  # The trainer (python -m mtl_bench --dataset qm9) hands its arguments on.
  parser.add_argument('--dataset', choices=('qm9',), default='qm9',
                      help=argparse.SUPPRESS)
  parser.add_argument('--preset', choices=tuple(PRESETS), default='smoke',
                      help='; '.join(f'{p.name}: {p.description}'
                                     for p in PRESETS.values()))
  parser.add_argument('--methods', nargs='+', metavar='LABEL',
                      help='rows to train (default: the preset\'s); from '
                      + ', '.join(label for label, _ in METHODS))
  parser.add_argument('--epochs', type=cli.positive_int)
  parser.add_argument('--seeds', type=cli.positive_int)
  parser.add_argument('--num-train', type=cli.positive_int,
                      help='training molecules (a fixed random subset)')
  parser.add_argument('--out', default='runs')
  parser.add_argument('--cache-dir', default=None,
                      help='processed QM9 arrays (default: '
                      '$XDG_CACHE_HOME/mtl_bench or ~/.cache/mtl_bench)')
  parser.add_argument('--no-plots', action='store_true')
  parser.add_argument('--no-progress', action='store_true')
  args = parser.parse_args(argv)
  preset = PRESETS[args.preset]
  if args.methods:
    unknown = [m for m in args.methods if m not in dict(METHODS)]
    if unknown:
      parser.error(f'--methods: unknown row {unknown[0]!r}')
    preset = preset._replace(methods=tuple(args.methods))
  for field, value in (('epochs', args.epochs), ('seeds', args.seeds),
                       ('num_train', args.num_train)):
    if value is not None:
      preset = preset._replace(**{field: value})
  cli.check_writable_dir(args.out, '--out')
  try:
    qm9.require_extra()
  except qm9.MissingExtra as error:
    cli.fail(str(error), prog)
  return args, preset


def main(argv=None, prog: str = PROG, command_prefix: str = PROG) -> dict:
  """Parses ``argv`` (default ``sys.argv[1:]``), trains, writes the run."""
  args, preset = parse_args(argv, prog)
  command = command_prefix + ' ' + ' '.join(
      sys.argv[1:] if argv is None else argv)
  return run(preset, out=args.out, cache_dir=args.cache_dir,
             plots=not args.no_plots, progress=not args.no_progress,
             command=command.strip())


if __name__ == '__main__':
  main()
