"""A multi-task network on every device JAX sees: data-parallel or FSDP.

Three regression tasks on synthetic data (a shared MLP trunk, one head per
task, the heads task-specific) and any balancer of the library
(``--method``: ``mgda``, ``upgrad``, ``db_mtl``, ...). Only the placement of
the arrays changes, and the balancer's code does not:

* ``--mode data``: parameters (and optimizer state) replicated, each batch
  split over the devices along a ``'data'`` axis. XLA all-reduces the per-task
  gradients.
* ``--mode fsdp``: a ``('data', 'model')`` mesh. Each parameter is sharded
  along ``'model'`` (on its largest dimension that the axis divides), and so
  are the per-task gradients, the optimizer state and a DB-MTL EMA; the batch
  is split over both axes. The forward pass gathers the weights it needs;
  the task Gramian is an all-reduce of ``T x T`` partial sums, and no device
  ever holds the full ``T x P`` gradients.

The mesh comes from ``jax.make_mesh``, whose axes are Explicit: a sharding is
part of each array's type, so the script says where the gathers happen.

On a CPU-only machine the script asks XLA for 8 simulated devices (the flag
only affects the host platform; GPUs and TPUs are used as they are)::

  python examples/train_sharded.py --mode fsdp --method mgda --steps 20

Many hosts (a TPU pod slice, a GPU cluster). Run the same command on every
host with ``--distributed``. It calls ``jax.distributed.initialize()`` before
anything else touches JAX. On Cloud TPU, SLURM, Open MPI and Kubernetes the
coordinator, the number of processes and this process's id are detected;
elsewhere pass them with ``--coordinator``, ``--num-processes`` and
``--process-id`` (JAX reads ``JAX_COORDINATOR_ADDRESS`` from the environment,
but not the other two)::

  # on host i of N:
  python examples/train_sharded.py --distributed --coordinator host0:1234 \
    --num-processes N --process-id i --mode fsdp --method mgda

``jax.devices()`` then lists the devices of every host and the mesh spans
them. Every host computes the same global batch indices (same seed) and
loads only its own slice of the batch; ``jax.make_array_from_process_local_data``
assembles the global batch from the slices. Parameters start from the same
seed on every host. Only process 0 prints. Nothing in ``mtl_optax`` changes:
the Gramian's all-reduce and the weighted sum run where the gradient shards
live.

Two processes on one machine, 4 simulated CPU devices each, make the same
8-device mesh as one process with 8 (``tests/test_multihost.py`` checks that
they train to the same parameters)::

  export XLA_FLAGS=--xla_force_host_platform_device_count=4
  for i in 0 1; do
    python examples/train_sharded.py --distributed --coordinator \
      127.0.0.1:1234 --num-processes 2 --process-id $i --mode fsdp &
  done; wait

With a loopback coordinator everything stays on 127.0.0.1: the coordinator
binds there, and so do the CPU collectives (gloo), which otherwise use the
address the host name resolves to. ``--mode`` and ``--method`` take
comma-separated lists: every pair trains in turn, from the same initial
parameters, under one distributed initialization; ``--save`` writes the final
parameters of every pair to one ``.npz`` file (process 0).
"""

import argparse
import inspect
import ipaddress
import os
import sys
import time
from typing import NamedTuple

_FLAG = '--xla_force_host_platform_device_count=8'
if _FLAG.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _FLAG).strip()

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import mtl_optax as mtl

NUM_TASKS = 3
NUM_INPUTS = 16
TASK_SCALES = (1.0, 3.0, 0.3)  # the targets' scales differ


class Data(NamedTuple):
  inputs: np.ndarray  # shape=[N, NUM_INPUTS], float32
  targets: np.ndarray  # shape=[N, T], float32


def make_data(num_examples: int, seed: int) -> Data:
  """Inputs ~ N(0, 1); task t's target is tanh(x · v_t), times its scale."""
  rng = np.random.default_rng(seed)
  inputs = rng.standard_normal((num_examples, NUM_INPUTS)).astype(np.float32)
  directions = rng.standard_normal((NUM_INPUTS, NUM_TASKS)) / NUM_INPUTS**0.5
  targets = np.tanh(inputs @ directions) * np.asarray(TASK_SCALES)
  return Data(inputs, targets.astype(np.float32))


class MultiTaskMLP(nnx.Module):
  """A shared two-layer trunk and one head per task (the second one deeper)."""

  def __init__(self, hidden: int, rngs: nnx.Rngs):
    self.trunk = nnx.Sequential(
        nnx.Linear(NUM_INPUTS, hidden, rngs=rngs), jax.nn.relu,
        nnx.Linear(hidden, hidden, rngs=rngs), jax.nn.relu)
    self.heads = nnx.List([
        nnx.Linear(hidden, 1, rngs=rngs),
        nnx.Sequential(nnx.Linear(hidden, hidden, rngs=rngs), jax.nn.relu,
                       nnx.Linear(hidden, 1, rngs=rngs)),
        nnx.Linear(hidden, 1, rngs=rngs)])

  def __call__(self, inputs):
    features = self.trunk(inputs)
    return jnp.concatenate([head(features) for head in self.heads], axis=-1)


def is_head(params):
  """The task-specific leaves: every parameter of a head."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: 'heads' in jax.tree_util.keystr(path), params)


def make_balancer(method: str, seed: int):
  """``mtl.<method>(T)`` with the heads task-specific (and a key if random)."""
  factory = getattr(mtl, method)
  extra = {'key': seed} if 'key' in inspect.signature(factory).parameters else {}
  return factory(NUM_TASKS, task_specific=is_head, **extra)


def make_mesh(mode: str) -> jax.sharding.Mesh:
  """All devices: ``('data',)`` or ``('data', 'model')`` (model axis <= 4)."""
  count = jax.device_count()
  if mode == 'data':
    return jax.make_mesh((count,), ('data',))
  model_size = max(size for size in (1, 2, 4) if count % size == 0)
  return jax.make_mesh((count // model_size, model_size), ('data', 'model'))


def param_spec(leaf: jax.Array, mesh: jax.sharding.Mesh) -> P:
  """FSDP: shard the largest dimension the ``'model'`` axis divides."""
  if 'model' not in mesh.axis_names:
    return P()
  size = mesh.shape['model']
  dims = [d for d in range(leaf.ndim) if leaf.shape[d] % size == 0]
  if not dims:
    return P()  # A bias of size 1: replicated.
  dim = max(dims, key=lambda d: leaf.shape[d])
  return P(*([None] * dim + ['model']))


def batch_spec(mesh: jax.sharding.Mesh) -> P:
  return P(tuple(mesh.axis_names))  # The batch over every device.


def gather(params, mesh):
  """FSDP's all-gather before the forward pass (a no-op when replicated).

  With Explicit axes a matmul over a sharded contraction dimension is a type
  error rather than a silent choice, so the gather is written out; its
  transpose in the backward pass scatters each task's gradient back to the
  parameter's sharding.
  """
  replicated = NamedSharding(mesh, P())
  return jax.tree.map(lambda leaf: jax.sharding.reshard(leaf, replicated),
                      params)


def make_train_step(graphdef, tx, mesh):

  @jax.jit
  def train_step(params, opt_state, batch):
    def task_losses_fn(params):
      outputs = nnx.merge(graphdef, gather(params, mesh))(batch[0])
      return jnp.mean((outputs - batch[1]) ** 2, axis=0)  # [T] MSEs

    task_losses, task_grads = mtl.value_and_task_grads(task_losses_fn)(params)
    updates, opt_state = tx.update(task_grads, opt_state, params,
                                   task_losses=task_losses)
    return optax.apply_updates(params, updates), opt_state, task_losses

  return train_step


def global_batch(data: Data, indices: np.ndarray, mesh):
  """This process's slice of the batch, assembled into global arrays."""
  process, processes = jax.process_index(), jax.process_count()
  local = np.array_split(indices, processes)[process]
  sharding = NamedSharding(mesh, batch_spec(mesh))
  return tuple(jax.make_array_from_process_local_data(sharding, array[local])
               for array in data)


def train(args, mode: str, method: str, data: Data) -> dict:
  """Trains one (mode, method) pair; returns its losses, weights, params."""
  mesh = make_mesh(mode)
  model = MultiTaskMLP(args.hidden, nnx.Rngs(args.seed))
  graphdef, params = nnx.split(model)
  params = jax.tree.map(
      lambda leaf: jax.device_put(leaf, NamedSharding(
          mesh, param_spec(leaf, mesh))), params)
  balancer = make_balancer(method, args.seed)
  tx = optax.chain(balancer, optax.adam(args.lr))
  opt_state = tx.init(params)  # Params-shaped state inherits their sharding.
  train_step = make_train_step(graphdef, tx, mesh)

  talk = jax.process_index() == 0
  if talk:
    print(f'{jax.device_count()} devices ({jax.devices()[0].device_kind}), '
          f'{jax.process_count()} process(es), mesh {dict(mesh.shape)}, '
          f'mode {mode}, method {method}')
  rng = np.random.default_rng(args.seed)  # The same on every host.
  num_train = len(data.inputs)
  losses = None
  start = time.perf_counter()
  for step in range(args.steps):
    indices = rng.choice(num_train, args.batch_size, replace=False)
    batch = global_batch(data, indices, mesh)
    params, opt_state, losses = train_step(params, opt_state, batch)
    if talk:
      print(f'step {step:3d}  losses ' + '  '.join(
          f'{loss:.4f}' for loss in np.asarray(losses)))
  weights = np.asarray(mtl.last_weights(opt_state))
  seconds = time.perf_counter() - start
  if talk:
    print('final weights ' + '  '.join(f'{w:.4f}' for w in weights))
    print(f'{args.steps} steps in {seconds:.1f} s (compilation included)')
  return {'losses': np.asarray(losses), 'weights': weights, 'params': params}


def host_params(params) -> dict[str, np.ndarray]:
  """Every parameter as a NumPy array on this host, keyed by its path.

  With many processes a sharded parameter spans devices this process cannot
  read; ``process_allgather`` assembles the whole array on every host.
  """
  leaves = jax.tree_util.tree_leaves_with_path(params)
  values = multihost_utils.process_allgather([leaf for _, leaf in leaves],
                                             tiled=True)
  return {jax.tree_util.keystr(path): np.asarray(value)
          for (path, _), value in zip(leaves, values)}


def is_loopback(address: str) -> bool:
  host = address.rsplit(':', 1)[0].strip('[]')
  if host == 'localhost':
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def pin_cpu_collectives_to_loopback() -> None:
  """Makes the CPU collectives (gloo) listen on 127.0.0.1 only.

  Gloo binds to the address the host name resolves to, which is not always a
  loopback one. JAX has no option for it, so the CPU backend is registered
  again, before it starts, with gloo given the address.
  """
  # pylint: disable=g-import-not-at-top
  from jax._src import distributed
  from jax._src import xla_bridge
  from jax._src.lib import _jax

  def make_cpu_client():
    collectives = _jax.make_gloo_tcp_collectives(
        distributed_client=distributed.global_state.client,
        hostname='127.0.0.1')
    return xla_bridge.make_cpu_client(collectives=collectives)

  xla_bridge.register_backend_factory('cpu', make_cpu_client, priority=0,
                                      fail_quietly=False)


def initialize_distributed(args) -> None:
  """``jax.distributed.initialize``, from the flags or the cluster."""
  if args.coordinator is None:
    jax.distributed.initialize()  # Cloud TPU, SLURM, Open MPI, Kubernetes.
    return
  kwargs = {}
  if is_loopback(args.coordinator):
    kwargs['coordinator_bind_address'] = args.coordinator  # Not [::].
  jax.distributed.initialize(
      coordinator_address=args.coordinator,
      num_processes=args.num_processes, process_id=args.process_id,
      initialization_timeout=args.timeout, **kwargs)
  if is_loopback(args.coordinator):
    pin_cpu_collectives_to_loopback()


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n')[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--mode', default='data',
                      help='data or fsdp, or a comma-separated list of both')
  parser.add_argument('--method', default='mgda',
                      help='a balancer of mtl_optax (mgda, upgrad, db_mtl, '
                      '...), or a comma-separated list')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--batch-size', type=int, default=256,
                      help='global batch; a multiple of the device count')
  parser.add_argument('--hidden', type=int, default=128)
  parser.add_argument('--num-train', type=int, default=4096)
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--save', default=None,
                      help='.npz file for the final parameters (process 0)')
  parser.add_argument('--distributed', action='store_true',
                      help='call jax.distributed.initialize() first')
  parser.add_argument('--coordinator', default=None,
                      help='with --distributed: host:port of process 0\'s '
                      'coordinator (default: detected from the cluster)')
  parser.add_argument('--num-processes', type=int, default=None)
  parser.add_argument('--process-id', type=int, default=None)
  parser.add_argument('--timeout', type=int, default=120,
                      help='seconds to wait for every process to join')
  args = parser.parse_args(argv)
  args.modes = [mode.strip() for mode in args.mode.split(',')]
  args.methods = [method.strip() for method in args.method.split(',')]
  unknown_modes = [mode for mode in args.modes if mode not in ('data', 'fsdp')]
  if unknown_modes:
    parser.error(f'unknown modes {unknown_modes}; choose data or fsdp')
  for method in args.methods:
    try:
      make_balancer(method, args.seed)
    except (AttributeError, TypeError, ValueError) as error:
      parser.error(f'--method {method!r}: {error}')
  explicit = (args.coordinator, args.num_processes, args.process_id)
  if any(value is not None for value in explicit):
    if not args.distributed:
      parser.error('--coordinator, --num-processes and --process-id need '
                   '--distributed')
    if any(value is None for value in explicit):
      parser.error('give --coordinator, --num-processes and --process-id '
                   'together')
    if not 0 <= args.process_id < args.num_processes:
      parser.error(f'--process-id must be in [0, {args.num_processes})')
  if args.steps < 1 or args.batch_size < 1:
    parser.error('--steps and --batch-size must be positive')
  return args


def main(argv=None) -> dict:
  """Trains every (mode, method) pair; returns ``{(mode, method): result}``."""
  args = parse_args(argv)
  if args.distributed:
    initialize_distributed(args)
  if args.batch_size % jax.device_count():
    print(f'error: --batch-size {args.batch_size} is not a multiple of the '
          f'{jax.device_count()} devices', file=sys.stderr)
    sys.exit(2)
  data = make_data(args.num_train, args.seed)
  results, saved = {}, {}
  for mode in args.modes:
    for method in args.methods:
      result = train(args, mode, method, data)
      results[mode, method] = result
      if args.save:
        saved.update({f'{mode}/{method}/{path}': value for path, value
                      in host_params(result['params']).items()})
  if args.save and jax.process_index() == 0:
    np.savez(args.save, **saved)
  return results


if __name__ == '__main__':
  main()
