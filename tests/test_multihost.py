"""Two JAX processes on one machine train like one process with 8 devices.

``examples/train_sharded.py --distributed`` runs as two processes on the
loopback address, each with 4 simulated CPU devices: ``jax.distributed``
joins them into one 8-device mesh, each process loads only its half of every
global batch (``jax.make_array_from_process_local_data``), and the Gramian's
all-reduce and the gradient all-reduces cross the process boundary through
the CPU collectives (gloo). A third process runs the same script with 8
devices of its own. Data-parallel and FSDP, with MGDA (a Gramian weighting)
and DB-MTL (a T x P state), must end at the same parameters (rtol 1e-5 of
each parameter's largest entry): only the order of the floating-point sums
may differ.

The three processes run at once, a few steps each, and are killed if they
have not ended within ``TIMEOUT_S``.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'examples', 'train_sharded.py')
TIMEOUT_S = 600
MODES = ('data', 'fsdp')
METHODS = ('mgda', 'db_mtl')  # a Gramian weighting and a T x P state
TRAINING = ['--mode', ','.join(MODES), '--method', ','.join(METHODS),
            '--steps', '3', '--hidden', '32', '--num-train', '512',
            '--batch-size', '64']


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def _start(args, devices):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.Popen([sys.executable, SCRIPT] + args + TRAINING,
                          env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _finish(processes):
  """Each process's output; every process is ended, even on a failure."""
  outputs = []
  try:
    for process in processes:
      output, _ = process.communicate(timeout=TIMEOUT_S)
      outputs.append(output)
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-3000:]
  return outputs


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  coordinator = f'127.0.0.1:{_free_port()}'
  distributed_file = tmp_path / 'two_processes.npz'
  reference_file = tmp_path / 'one_process.npz'
  processes = [
      _start(['--distributed', '--coordinator', coordinator,
              '--num-processes', '2', '--process-id', str(process_id),
              '--save', str(distributed_file)], devices=4)
      for process_id in range(2)
  ]
  processes.append(_start(['--save', str(reference_file)], devices=8))
  first, second, reference = _finish(processes)

  # One mesh over both processes' devices; only process 0 prints.
  assert '8 devices (cpu), 2 process(es)' in first
  assert 'process(es)' not in second
  assert '8 devices (cpu), 1 process(es)' in reference
  for mode, shape in (('data', "{'data': 8}"),
                      ('fsdp', "{'data': 2, 'model': 4}")):
    assert f'mesh {shape}, mode {mode}' in first

  with np.load(distributed_file) as two, np.load(reference_file) as one:
    assert sorted(two.files) == sorted(one.files)
    for mode in MODES:
      for method in METHODS:
        keys = [key for key in one.files
                if key.startswith(f'{mode}/{method}/')]
        assert len(keys) == 12, (mode, method, keys)  # 6 Dense layers.
        for key in keys:
          # rtol 1e-5 of each parameter's largest entry: entries near zero
          # differ by the same float32 rounding (~1e-8) as the large ones.
          np.testing.assert_allclose(
              two[key], one[key], rtol=1e-5,
              atol=1e-5 * np.abs(one[key]).max(), err_msg=key)
    # Different methods end elsewhere: matching files are not a vacuous pass.
    kernel = "['trunk']['layers'][0]['kernel'].value"
    assert np.abs(one[f'data/mgda/{kernel}']
                  - one[f'data/db_mtl/{kernel}']).max() > 1e-4
