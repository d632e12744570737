"""A whole multi-task training step: ours against TorchJD (and LibMTL).

One step = forward pass, per-task losses, the method's combination of the
task gradients, one Adam (lr 1e-3) update, on the same model, batch and
method. Models (float32, one linear head per task, MSE per task):

* ``mlp``: a tanh MLP trunk 64 -> 512 -> 512 -> 512, batch 256, T = 4 and 16;
* ``conv``: 1 x 28 x 28 inputs, two 3 x 3 convolutions (16, 32 channels)
  each with ReLU and 2 x 2 max pooling, a dense ReLU layer of width 128,
  T = 4, batch 128;
* ``qm9``: the QM9 benchmark's CPU encoder (``mtl_bench/qm9_train.py``'s
  ``cpu`` preset: ``qm9_model.DescriptorMLP``, width 128, depth 2, SiLU, the
  heads reading the last hidden layer next to the descriptor), 11 heads,
  batch 128, on random inputs of the descriptor's shape.

Ours, each step one ``jax.jit`` with the parameters and the optimizer state
donated:

* stacked: ``mtl.value_and_task_grads`` (one forward, T backward passes),
  then ``optax.chain(<method>(T, task_specific=heads), optax.adam(1e-3))``;
* engine: ``mtl.value_and_balanced_grad(fn, <weighting>)`` then
  ``optax.adam(1e-3)``, for the methods that are weightings (DB-MTL is a
  transformation of the stacked gradients, it has no engine path). Equal
  weighting reads no Gramian: its engine step is one backward pass of the
  mean loss.

TorchJD 0.18 (the ``bench`` extra), each step ending with
``torch.optim.Adam.step()``:

* autojac: ``torchjd.autojac.mtl_backward(losses, features)`` (the heads get
  their own task's gradient, the trunk a T-row Jacobian) then
  ``jac_to_grad(trunk parameters, <Aggregator>)``;
* autogram: ``Engine(trunk, batch_dim=None).compute_gramian(losses)``, the
  ``<Weighting>`` of that T x T Gramian, then ``losses.backward(weights)``
  (so the heads get their gradient times the task's weight).

Torch runs in a separate process per (model, library, method), with
``torch.set_num_threads(2)`` (``TORCH_THREADS``), so that neither JAX's
threads nor another configuration's allocations are in it. Times are the
fastest step after warm-up on both sides (the machine is shared; ours are
interleaved across methods and paths, one step each per round).

LibMTL is not timed: its PyPI release does not import beside the bench
extra's torch (the tables' notes say why, probed again at every run).
Without torch and torchjd the tables hold our columns only and say so.

Run: ``python benchmarks/run.py --only end_to_end`` (``--quick``: one tiny
MLP, a smoke test); TorchJD needs ``pip install -e '.[bench]'``.
"""

import dataclasses
import json
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import common
import mtl_optax as mtl

LEARNING_RATE = 1e-3
TORCH_THREADS = 2
# Processes per TorchJD cell, the fastest kept: a torch process's fastest
# step varied by up to 25 % from one process to the next (the same cell,
# 94 and 109 ms, in two runs of this benchmark).
PEER_PROCESSES = 2
WORKER_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Model:
  """A shared trunk and ``tasks`` linear heads; ``inputs`` is the input width
  (the image side for ``conv``), ``width`` the trunk's output width."""
  name: str
  kind: str  # 'mlp', 'conv' or 'qm9'
  tasks: int
  batch: int
  inputs: int
  width: int
  depth: int


def _qm9_inputs() -> int:
  # common put the repository root on the path.
  from mtl_bench import qm9_model  # pylint: disable=g-import-not-at-top
  return qm9_model.DESCRIPTOR_SIZE


def models(quick: bool) -> list[Model]:
  if quick:
    return [Model('MLP 16→32→32 tanh, T=4, batch 16', 'mlp', 4, 16, 16, 32,
                  2)]
  inputs = _qm9_inputs()
  return [
      Model('MLP 64→512³ tanh, T=4, batch 256', 'mlp', 4, 256, 64, 512, 3),
      Model('MLP 64→512³ tanh, T=16, batch 256', 'mlp', 16, 256, 64, 512, 3),
      Model('Conv 16/32 ch. → 128, T=4, batch 128', 'conv', 4, 128, 28, 128,
            2),
      Model(f'QM9 descriptor MLP {inputs}→128² SiLU, T=11, batch 128', 'qm9',
            11, 128, inputs, 128, 2),
  ]


# Our method -> (row label, TorchJD Aggregator, TorchJD Weighting); None:
# TorchJD has no such class.
METHODS = {
    'mean': ('Mean (equal weighting)', 'Mean', 'MeanWeighting'),
    'upgrad': ('UPGrad', 'UPGrad', 'UPGradWeighting'),
    'mgda': ('MGDA', 'MGDA', 'MGDAWeighting'),
    'db_mtl': ('DB-MTL', None, None),
    'nash_mtl': ('Nash-MTL', 'NashMTL', None),
}

# --------------------------------------------------------------------------
# Ours.


def _dense(key, fan_in, fan_out):
  scale = 1.0 / np.sqrt(fan_in)
  return {'w': scale * jax.random.normal(key, (fan_in, fan_out), jnp.float32),
          'b': jnp.zeros((fan_out,), jnp.float32)}


def init(model: Model, seed: int = 0):
  """``(params, x, y)`` of ``model``: random weights and a random batch."""
  keys = iter(jax.random.split(jax.random.key(seed), 8))
  if model.kind == 'conv':
    conv = lambda key, c_in, c_out: {
        'w': jax.random.normal(key, (3, 3, c_in, c_out), jnp.float32)
             / np.sqrt(9 * c_in),
        'b': jnp.zeros((c_out,), jnp.float32)}
    pooled = (model.inputs // 4) ** 2 * 32
    trunk = [conv(next(keys), 1, 16), conv(next(keys), 16, 32),
             _dense(next(keys), pooled, model.width)]
    features = model.width
    x = jax.random.normal(next(keys),
                          (model.batch, model.inputs, model.inputs, 1))
  else:
    sizes = [model.inputs] + [model.width] * model.depth
    trunk = [_dense(next(keys), a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    features = model.width + (model.inputs if model.kind == 'qm9' else 0)
    x = jax.random.normal(next(keys), (model.batch, model.inputs))
  params = {'trunk': trunk, 'heads': _dense(next(keys), features, model.tasks)}
  y = jax.random.normal(next(keys), (model.batch, model.tasks))
  return params, x, y


TASK_SPECIFIC = {'trunk': False, 'heads': True}


def _conv(x, layer):
  out = jax.lax.conv_general_dilated(
      x, layer['w'], (1, 1), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return out + layer['b']


def _max_pool(x):
  """2 x 2 max pooling, stride 2, of an NHWC array with even H and W.

  Written as a max over reshaped axes, not ``lax.reduce_window`` (what
  ``flax.linen.max_pool`` calls): the gradient of reduce_window is XLA's
  ``select_and_scatter``, slow on CPU. Measured on this model (T = 4, batch
  128, 2-core AMD EPYC, jax 0.10.2): one backward pass 40.3 ms against
  13.7 ms, the 4 task gradients 75.1 ms against 44.0 ms, the gradients
  equal. The two give the same values and, away from ties (which the ReLU
  before the pooling leaves at 0, where its own gradient is 0), the same
  gradients.
  """
  batch, height, width, channels = x.shape
  windows = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
  return jnp.max(windows, axis=(2, 4))


def features(model: Model, trunk, x):
  """The trunk's output, ``[batch, features]``."""
  if model.kind == 'conv':
    hidden = _max_pool(jax.nn.relu(_conv(x, trunk[0])))
    hidden = _max_pool(jax.nn.relu(_conv(hidden, trunk[1])))
    hidden = hidden.reshape(hidden.shape[0], -1)
    return jax.nn.relu(hidden @ trunk[2]['w'] + trunk[2]['b'])
  activation = jnp.tanh if model.kind == 'mlp' else jax.nn.silu
  hidden = x
  for layer in trunk:
    hidden = activation(hidden @ layer['w'] + layer['b'])
  if model.kind == 'qm9':  # qm9_model.DescriptorMLP: [hidden, descriptor].
    hidden = jnp.concatenate([hidden, x], axis=-1)
  return hidden


def loss_fn(model: Model):
  def task_losses(params, x, y):
    """``[T]`` mean squared errors, one per head."""
    hidden = features(model, params['trunk'], x)
    predictions = hidden @ params['heads']['w'] + params['heads']['b']
    return jnp.mean((predictions - y) ** 2, axis=0)

  return task_losses


def _balancer(method: str, num_tasks: int):
  if method == 'mean':
    return mtl.equal_weighting(num_tasks, reduction='mean',
                               task_specific=TASK_SPECIFIC)
  return getattr(mtl, method)(num_tasks, task_specific=TASK_SPECIFIC)


def _weighting(method: str):
  """Our weighting for the engine path, or None (a transformation)."""
  if method == 'mean':
    return mtl.weightings.equal_weighting(reduction='mean')
  factory = getattr(mtl.weightings, method, None)
  return None if factory is None else factory()


def stacked_step(model: Model, method: str):
  """``(step, init_state)``: value_and_task_grads, the method, then Adam."""
  tx = optax.chain(_balancer(method, model.tasks), optax.adam(LEARNING_RATE))
  task_grads = mtl.value_and_task_grads(loss_fn(model))

  def step(params, state, x, y):
    losses, grads = task_grads(params, x, y)
    updates, state = tx.update(grads, state, params, task_losses=losses)
    return optax.apply_updates(params, updates), state, losses

  return step, tx.init


def engine_step(model: Model, method: str):
  """``(step, init_state)`` through the Gramian engine, or None."""
  weighting = _weighting(method)
  if not isinstance(weighting, mtl.Weighting):
    return None
  adam = optax.adam(LEARNING_RATE)
  balanced = mtl.value_and_balanced_grad(loss_fn(model), weighting,
                                         task_specific=TASK_SPECIFIC)

  def step(params, state, x, y):
    weighting_state, adam_state = state
    losses, grads, weighting_state = balanced(params, weighting_state, x, y)
    updates, adam_state = adam.update(grads, adam_state, params)
    return (optax.apply_updates(params, updates),
            (weighting_state, adam_state), losses)

  return step, lambda params: (weighting.init(model.tasks), adam.init(params))


def compile_step(step, init_state, params, x, y):
  """``(compiled, state, memory)``, params and state donated."""
  state = init_state(params)
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
      params, state, x, y).compile()
  analysis = compiled.memory_analysis()
  memory = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
            + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
  return compiled, state, memory


class _Training:
  """Calls a compiled step on its own copy of the parameters, as a loop."""

  def __init__(self, compiled, params, state, x, y):
    self.compiled = compiled
    self.params = jax.tree.map(jnp.copy, params)  # The step donates them.
    self.state = jax.tree.map(jnp.copy, state)
    self.x, self.y = x, y

  def __call__(self):
    self.params, self.state, _ = self.compiled(self.params, self.state,
                                               self.x, self.y)
    return self.params, self.state


def measure_ours(model: Model, methods: list[str], repeats: int) -> dict:
  """``{(method, path): {'ms', 'mib'}}``, paths 'stacked' and 'engine'."""
  params, x, y = init(model)
  loops, found = {}, {}
  for method in methods:
    for path, make in (('stacked', stacked_step), ('engine', engine_step)):
      made = make(model, method)
      if made is None:
        continue
      compiled, state, memory = compile_step(*made, params, x, y)
      loops[(method, path)] = _Training(compiled, params, state, x, y)
      found[(method, path)] = {'mib': memory / common.MB}
  times = common.interleaved_ms(
      {f'{method} {path}': loop for (method, path), loop in loops.items()},
      repeats, 'min')
  for (method, path), cell in found.items():
    cell['ms'] = times[f'{method} {path}']
  return found


# --------------------------------------------------------------------------
# The peers, each in its own process (``python bench_end_to_end.py --peer
# '<json>'``); JAX is imported there but never initialised.


def _torch_model(torch, spec: dict):
  """``(trunk, heads, x, y)``: the same architecture as :func:`init`."""
  nn = torch.nn
  batch, tasks, width = spec['batch'], spec['tasks'], spec['width']
  if spec['kind'] == 'conv':
    side = spec['inputs']
    trunk = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear((side // 4) ** 2 * 32, width), nn.ReLU())
    x = torch.randn(batch, 1, side, side)
    num_features = width
  else:
    activation = nn.Tanh if spec['kind'] == 'mlp' else nn.SiLU
    sizes = [spec['inputs']] + [width] * spec['depth']
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
      layers += [nn.Linear(fan_in, fan_out), activation()]
    trunk = nn.Sequential(*layers)
    num_features = width
    if spec['kind'] == 'qm9':

      class Descriptor(nn.Module):
        """qm9_model.DescriptorMLP: the MLP's output next to its input."""

        def __init__(self, mlp):
          super().__init__()
          self.mlp = mlp

        def forward(self, inputs):
          return torch.cat([self.mlp(inputs), inputs], dim=-1)

      trunk = Descriptor(trunk)
      num_features += spec['inputs']
    x = torch.randn(batch, spec['inputs'])
  # One module per head, as TorchJD's examples have them: autojac's
  # per-task backward passes free their graph, which must not be shared.
  heads = nn.ModuleList([nn.Linear(num_features, 1) for _ in range(tasks)])
  return trunk, heads, x, torch.randn(batch, tasks)


def _rss_kib(field: str) -> int:
  with open('/proc/self/status') as status:
    for line in status:
      if line.startswith(field + ':'):
        return int(line.split()[1])
  return 0


def _reset_peak_rss() -> bool:
  """Sets the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
  try:
    with open('/proc/self/clear_refs', 'w') as clear_refs:
      clear_refs.write('5')
    return True
  except OSError:
    return False


def _missing_dependency(error: ImportError) -> str:
  """A short cell for TorchJD's optional-dependency errors."""
  message = str(error)
  if ' requires ' in message and ' to be installed' in message:
    needs = message.split(' requires ', 1)[1].split(' to be installed')[0]
    needs = needs.strip('[]').replace("'", '')
    return f'needs {needs} (not installed)'
  return f'ImportError: {message[:80]}'


def torch_worker(spec: dict) -> dict:
  """Times one (model, library, method) of TorchJD in this process."""
  import torch  # pylint: disable=g-import-not-at-top
  from torchjd import aggregation  # pylint: disable=g-import-not-at-top
  from torchjd import autogram  # pylint: disable=g-import-not-at-top
  from torchjd import autojac  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(spec['threads'])
  torch.manual_seed(0)
  trunk, heads, x, y = _torch_model(torch, spec)
  optimizer = torch.optim.Adam([*trunk.parameters(), *heads.parameters()],
                               lr=LEARNING_RATE)
  shared = list(trunk.parameters())
  try:
    if spec['library'] == 'autojac':
      kwargs = {'n_tasks': spec['tasks']} if spec['class'] == 'NashMTL' else {}
      aggregator = getattr(aggregation, spec['class'])(**kwargs)

      def backward(losses, hidden):
        autojac.mtl_backward(losses, features=hidden)
        autojac.jac_to_grad(shared, aggregator)
    else:
      weighting = getattr(aggregation, spec['class'])()
      engine = autogram.Engine(trunk, batch_dim=None)

      def backward(losses, hidden):
        del hidden
        losses = torch.stack(losses)
        losses.backward(weighting(engine.compute_gramian(losses)))
  except ImportError as error:
    return {'unavailable': _missing_dependency(error)}

  def step():
    optimizer.zero_grad(set_to_none=True)
    hidden = trunk(x)
    # One graph per task loss (autojac frees each task's graph after its
    # backward pass, so the losses cannot share nodes past the features).
    losses = [((head(hidden)[:, 0] - y[:, task]) ** 2).mean()
              for task, head in enumerate(heads)]
    backward(losses, hidden)
    optimizer.step()

  try:
    rss_before = _rss_kib('VmRSS')
    reset = _reset_peak_rss()
    if not reset:
      rss_before = _rss_kib('VmHWM')
    for _ in range(spec['warmup']):
      step()
    times = []
    for _ in range(spec['steps']):
      start = time.perf_counter()
      step()
      times.append(time.perf_counter() - start)
  except ImportError as error:  # Optional dependencies load lazily.
    return {'unavailable': _missing_dependency(error)}
  return {'ms': 1e3 * min(times),
          'median_ms': 1e3 * float(np.median(times)),
          'parameters': sum(parameter.numel() for parameter in
                            [*trunk.parameters(), *heads.parameters()]),
          'rss_mib': (_rss_kib('VmHWM') - rss_before) / 1024,
          'rss_exact': reset}


def libmtl_worker() -> dict:
  try:
    import LibMTL.weighting  # noqa: F401  pylint: disable=g-import-not-at-top
  except Exception as error:  # pylint: disable=broad-except
    return {'error': f'{type(error).__name__}: {str(error)[:120]}'}
  return {'error': None}


def _run_worker(request: dict) -> dict:
  try:
    return common.json_from_process([__file__, '--peer', json.dumps(request)],
                                    WORKER_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    return {'failed': f'timed out after {WORKER_TIMEOUT_S} s'}
  except RuntimeError as error:
    return {'failed': str(error)[:100]}


def measure_torchjd(model: Model, method: str, library: str, warmup: int,
                    steps: int) -> dict | str:
  """``{'ms', 'rss_mib', ...}`` of TorchJD's step, or a cell saying why not."""
  _, aggregator, weighting = METHODS[method]
  name = aggregator if library == 'autojac' else weighting
  if name is None:
    if aggregator is None:
      return 'not in TorchJD'
    return 'no TorchJD Weighting'
  spec = dict(dataclasses.asdict(model), library=library, threads=TORCH_THREADS,
              warmup=warmup, steps=steps)
  spec['class'] = name
  runs = []
  for _ in range(PEER_PROCESSES):
    found = _run_worker({'kind': 'torchjd', 'spec': spec})
    if 'ms' not in found:
      return found.get('unavailable') or f"failed: {found.get('failed')}"
    runs.append(found)
  return min(runs, key=lambda found: found['ms'])


LIBMTL_PYPI = (
    'LibMTL: not timed. `pip install LibMTL` gets 1.1.5 (PyPI), whose '
    'torchvision requirement replaces the bench extra\'s torch 2.13 CPU by '
    'torch 2.14 with CUDA wheels; with torch pinned to 2.13 it installs '
    'torchvision 0.28, which fails to load against the CPU torch (`import '
    'LibMTL` raises "operator torchvision::nms does not exist"). That '
    'release also imports torchvision.models.utils (gone since torchvision '
    '0.14) and predates its DB_MTL and Nash_MTL.')


def libmtl_notice() -> str:
  if not common.installed('LibMTL'):
    return LIBMTL_PYPI
  found = _run_worker({'kind': 'libmtl'})
  error = found.get('error') or found.get('failed')
  if error:
    return f'LibMTL: installed but does not import ({error}). {LIBMTL_PYPI}'
  return ('LibMTL: imports, but is not timed: this module has no adapter '
          'for its weighting classes.')


# --------------------------------------------------------------------------


def _ratio(ours: dict | None, theirs: Any) -> float | None:
  if ours is None or not isinstance(theirs, dict):
    return None
  return ours['ms'] / theirs['ms']


def model_table(model: Model, methods: list[str], quick: bool,
                with_torch: bool) -> dict:
  ours = measure_ours(model, methods, 3 if quick else 20)
  warmup, steps = (1, 3) if quick else (3, 20)
  rows, rss_exact, torch_counts = [], True, set()
  for method in methods:
    stacked, engine = ours.get((method, 'stacked')), ours.get((method,
                                                               'engine'))
    peers = {}
    for library in ('autojac', 'autogram'):
      peers[library] = (measure_torchjd(model, method, library, warmup, steps)
                        if with_torch else 'torch/torchjd not installed')
      if isinstance(peers[library], dict):
        rss_exact &= peers[library]['rss_exact']
        torch_counts.add(peers[library]['parameters'])
    cell = lambda found, key: found[key] if isinstance(found, dict) else found
    rows.append([
        METHODS[method][0], stacked['ms'],
        engine['ms'] if engine else 'no engine path',
        cell(peers['autojac'], 'ms'), cell(peers['autogram'], 'ms'),
        _ratio(stacked, peers['autojac']), _ratio(engine, peers['autojac']),
        stacked['mib'], engine['mib'] if engine else None,
        cell(peers['autojac'], 'rss_mib'), cell(peers['autogram'], 'rss_mib'),
    ])
  count = sum(leaf.size for leaf in jax.tree.leaves(init(model)[0]))
  if torch_counts:
    same = torch_counts == {count}
    count = f'{count} ' + ('(the torch model: the same)' if same else
                           f'(the torch model: {sorted(torch_counts)})')
  rss = ('peak RSS of its process during warm-up and timed steps minus its '
         'RSS before them' if rss_exact else
         'increase of the process\'s peak RSS over the steps (a lower bound: '
         'the peak could not be reset)')
  notes = (
      f'Parameters: {count}. '
      'Milliseconds per training step (forward, task gradients, the method, '
      f'Adam lr {LEARNING_RATE:g}), float32 on the CPU, the fastest step '
      'after warm-up. Ours: one jitted step, params and optimizer state '
      'donated, the two paths and every method interleaved one step each '
      f'per round, {"3" if quick else "20"} rounds (fewer, at least 2, where '
      f'a round takes over {common.SECONDS_PER_MEASUREMENT:g} s / that '
      'number). TorchJD: torch '
      f'{TORCH_THREADS} threads, {steps} steps after {warmup} warm-up in '
      f'each of {PEER_PROCESSES} processes per cell, the fastest process '
      'kept (its RSS too). Ratios: ours / TorchJD autojac (< 1: ours faster; '
      'target <= 0.8). Our MiB: XLA memory analysis of the compiled step, '
      'arguments + outputs + temporaries - aliased (donated) bytes. Torch '
      f'MiB: {rss} (so with the first step\'s one-time allocations: the Adam '
      'state, lazy initialisation). Each library\'s solver settings are its '
      'defaults. DB-MTL is a transformation of the stacked gradients, '
      'with no engine path here and no TorchJD counterpart. TorchJD autogram '
      'gives each head its gradient times the task\'s weight; autojac and '
      'ours give it its own gradient unweighted. TorchJD\'s NashMTL needs '
      'cvxpy and ecos (torchjd[nash_mtl]), which the bench extra leaves out.')
  if not with_torch:
    notes += (' TorchJD: not timed, torch or torchjd is not installed '
              "(install the optional extra: pip install -e '.[bench]').")
  columns = ['method', 'ours stacked ms', 'ours engine ms',
             'TorchJD autojac ms', 'TorchJD autogram ms',
             'stacked / autojac', 'engine / autojac', 'ours stacked MiB',
             'ours engine MiB', 'autojac RSS Δ MiB', 'autogram RSS Δ MiB']
  return {'title': f'Training step: {model.name}', 'columns': columns,
          'rows': rows, 'notes': notes}


def run(quick: bool = False, methods: list[str] | None = None) -> list[dict]:
  with_torch = common.installed('torch', 'torchjd')
  methods = list(METHODS) if methods is None else methods
  tables = []
  for model in models(quick):
    tables.append(model_table(model, methods, quick, with_torch))
    print(f'  {model.name}: done', file=sys.stderr, flush=True)
  notice = libmtl_notice()
  for table in tables:
    table['notes'] += ' ' + notice
  return tables


def main(argv: list[str]) -> int:
  if len(argv) == 2 and argv[0] == '--peer':
    request = common.request_from_argument(argv[1], 'bench_end_to_end.py',
                                           ('kind',))
    if request['kind'] == 'libmtl':
      print(json.dumps(libmtl_worker()))
    else:
      print(json.dumps(torch_worker(request['spec'])))
    return 0
  import run as runner  # pylint: disable=g-import-not-at-top
  return runner.main(['--only', 'end_to_end', *argv])


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
