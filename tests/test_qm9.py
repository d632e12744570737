"""QM9: the loader's units, split and cache, the encoders, the presets."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mtl_bench import qm9
from mtl_bench import qm9_model
from mtl_bench import qm9_train

HA = qm9.HARTREE_TO_MEV  # 27 211.386246 meV per Hartree (CODATA 2018)


@pytest.fixture(scope='module')
def first_molecules():
  """QM9 molecules 1-5: methane, ammonia, water, acetylene, HCN."""
  frame = qm9.read_frame(qm9.require_extra(), rows=5)
  return qm9.molecules_from_frame(frame)


def test_methane_by_hand(first_molecules):
  methane = first_molecules.take([0])
  np.testing.assert_array_equal(methane.index, [1])
  target = methane.targets[0]
  assert target[0] == 0.0  # μ: a tetrahedral molecule has no dipole.
  assert target[1] == 13.21  # α, bohr³, as QM9 gives it.
  # ε_HOMO = −0.3877 Ha = −0.3877 × 27 211.386246 meV = −10 549.854 meV.
  np.testing.assert_allclose(target[2], -10549.854, atol=1e-3)
  # ε_LUMO = 0.1171 Ha = 3186.453 meV; ⟨R²⟩ = 35.3641 bohr².
  np.testing.assert_allclose(target[3], 3186.453, atol=1e-3)
  assert target[4] == 35.3641
  # ZPVE = 0.044749 Ha = 1217.682 meV.
  np.testing.assert_allclose(target[5], 1217.682, atol=1e-3)
  # U₀ atomization: total −40.47893 Ha minus C (−37.846772) and 4 H
  # (4 × −0.500273 = −2.001092) from the atomref table:
  # −40.47893 + 37.846772 + 2.001092 = −0.631066 Ha = −17 172.181 meV.
  np.testing.assert_allclose(target[6], -17172.181, atol=1e-2)
  # G: −40.498597 − (−37.861317 + 4 × −0.510927 = −39.905025)
  # = −0.593572 Ha = −16 151.917 meV.
  np.testing.assert_allclose(target[9], -16151.917, atol=1e-2)
  assert target[10] == 6.469  # c_v, cal/mol K, unchanged.
  # Geometry: C first, then four H, each bonded to C by a single bond.
  np.testing.assert_array_equal(methane.elements[0, :6], [2, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(methane.bonds[0, 0, 1:5], [qm9.BOND_SINGLE] * 4)
  assert methane.bonds[0].sum() == 8 * qm9.BOND_SINGLE  # Symmetric, no H-H.
  assert methane.num_hs[0, 0] == 4
  np.testing.assert_array_equal(methane.atom_flags[0, 0], [0, 0, 0, 1, 0])


def test_water_and_acetylene_by_hand(first_molecules):
  water = first_molecules.targets[2]
  # U₀: −76.404702 − (−75.064579 + 2 × −0.500273) = −0.339577 Ha
  # = −9240.361 meV; ε_HOMO = −0.2928 Ha = −7967.494 meV; μ = 1.8511 D.
  np.testing.assert_allclose(water[6], -9240.361, atol=1e-2)
  np.testing.assert_allclose(water[2], -7967.494, atol=1e-3)
  assert water[0] == 1.8511
  # Acetylene (C#C): a triple bond between its two carbons, both sp.
  acetylene = first_molecules.take([3])
  carbons = np.flatnonzero(acetylene.elements[0] == 2)
  assert acetylene.bonds[0, carbons[0], carbons[1]] == qm9.BOND_TRIPLE
  np.testing.assert_array_equal(acetylene.atom_flags[0, carbons, 1], [1, 1])


def test_energies_are_atomization_energies():
  """A molecule made of isolated atoms has zero atomization energy."""
  import pandas as pd
  row = {'Elements': "['C','H']", 'Dipole_debye': 0.0,
         'Polarizability_bohr3': 1.0, 'HOMO_au': -1.0, 'LUMO_au': 0.5,
         'R2_bohr2': 2.0, 'ZPVE_au': 0.001, 'Heatcapacity_Cv_cal_mol_K': 3.0}
  reference = qm9.ATOM_REFERENCE[1] + qm9.ATOM_REFERENCE[0]  # C + H
  row.update(zip(['InternalEnergy_0K_au', 'InternalEnergy_298K_au',
                  'Enthalphy_298K_au', 'GibbsFreeEnergy_298K_au'],
                 reference - 0.01))
  targets = qm9.targets_from_columns(pd.DataFrame([row]))[0]
  np.testing.assert_allclose(targets[6:10], -0.01 * HA)  # −272.114 meV each
  np.testing.assert_allclose(targets[[2, 3, 5]], [-HA, 0.5 * HA, 0.001 * HA])
  np.testing.assert_allclose(targets[[0, 1, 4, 10]], [0.0, 1.0, 2.0, 3.0])


def test_numbers_written_as_zero_dot():
  """Five molecules write ``0.``; JSON rejects it, the parser does not."""
  parsed = qm9._flat_numbers(['[[0.,1.5,-2],[3e-05,0.,-7.5E-1]]', '[[1,2,3]]'])
  np.testing.assert_array_equal(parsed, [0, 1.5, -2, 3e-5, 0, -0.75, 1, 2, 3])


def test_split_sizes_disjoint_and_fixed():
  train, val, test = qm9.split_rows(130_831)
  assert (len(train), len(val), len(test)) == (110_831, 10_000, 10_000)
  every = np.concatenate([train, val, test])
  np.testing.assert_array_equal(np.sort(every), np.arange(130_831))
  again = qm9.split_rows(130_831)
  for first, second in zip((train, val, test), again):
    np.testing.assert_array_equal(first, second)


def _fake_molecules(count, seed=0):
  rng = np.random.default_rng(seed)
  n = qm9.MAX_ATOMS
  elements = np.zeros((count, n), np.int8)
  elements[:, :3] = rng.integers(1, 6, (count, 3))
  return qm9.Molecules(
      np.arange(1, count + 1, dtype=np.int32), np.full(count, 3, np.int32),
      elements, rng.normal(size=(count, n, 3)).astype(np.float32),
      np.zeros((count, n, n), np.int8),
      np.zeros((count, n, len(qm9.ATOM_FLAGS)), np.int8),
      np.zeros((count, n), np.int8),
      rng.normal(3.0, 2.0, (count, qm9.NUM_TASKS)))


def test_standardisation_uses_the_training_split(tmp_path):
  molecules = _fake_molecules(20_400)
  path = qm9.cache_path(str(tmp_path))
  np.savez(path, **molecules._asdict())
  data = qm9.load(str(tmp_path), progress=None)
  assert (data.train.count, data.val.count, data.test.count) == (
      400, 10_000, 10_000)
  train_rows, _, _ = qm9.split_rows(20_400)
  np.testing.assert_array_equal(data.train.index, train_rows + 1)
  np.testing.assert_allclose(data.mean, molecules.targets[train_rows].mean(0))
  np.testing.assert_allclose(data.std, molecules.targets[train_rows].std(0))
  standard = (data.train.targets - data.mean) / data.std
  np.testing.assert_allclose(standard.mean(0), 0.0, atol=1e-12)
  np.testing.assert_allclose(standard.std(0), 1.0, atol=1e-12)
  subset = qm9.load(str(tmp_path), num_train=100, progress=None)
  assert subset.train.count == 100
  assert set(subset.train.index) <= set(data.train.index)
  np.testing.assert_allclose(subset.mean, subset.train.targets.mean(0))


def test_cache_round_trip(tmp_path, monkeypatch, first_molecules):
  frame = qm9.read_frame(qm9.require_extra(), rows=5)
  monkeypatch.setattr(qm9, 'read_frame', lambda folder, rows=None: frame)
  first = qm9.load_all(str(tmp_path), progress=None)
  assert os.path.exists(qm9.cache_path(str(tmp_path)))

  def fail(*args, **kwargs):
    raise AssertionError('the second load must read the cache')

  monkeypatch.setattr(qm9, 'read_frame', fail)
  second = qm9.load_all(str(tmp_path), progress=None)
  for name, a, b, c in zip(qm9.Molecules._fields, first, second,
                           first_molecules):
    np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(a, c, err_msg=name)
    assert a.dtype == b.dtype, name


@pytest.mark.slow
def test_a_subset_processes_only_its_molecules(tmp_path):
  """Without the full cache, a small run reads and caches its rows only."""
  data = qm9.load(str(tmp_path), num_train=30, num_eval=10, progress=None)
  assert (data.train.count, data.val.count, data.test.count) == (30, 10, 10)
  train, val, test = qm9.split_rows(130_831)
  # QM9's numbers skip the 3 054 excluded molecules, so compare through the
  # row → number map of the CSV files: row r holds molecule index[r].
  numbers = qm9.read_frame(qm9.require_extra())['Index'].to_numpy()
  for split, rows in ((data.train, train), (data.val, val), (data.test, test)):
    assert set(split.index) <= set(numbers[rows])
  assert not os.path.exists(qm9.cache_path(str(tmp_path)))
  (cached,) = os.listdir(tmp_path)
  assert cached.startswith('qm9-rows50-')
  again = qm9.load(str(tmp_path), num_train=30, num_eval=10, progress=None)
  np.testing.assert_array_equal(again.train.targets, data.train.targets)
  np.testing.assert_allclose(data.mean, data.train.targets.mean(0))


def _without(monkeypatch, module):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == module
                      else real(name, *a))


@pytest.mark.parametrize('module', ['qm9pack', 'rdkit'])
def test_missing_extra_is_one_line(monkeypatch, capsys, module):
  _without(monkeypatch, module)
  with pytest.raises(qm9.MissingExtra, match=r'pip install -e "\.\[qm9\]"'):
    qm9.load(progress=None)
  with pytest.raises(SystemExit) as exit_info:
    qm9_train.parse_args(['--preset', 'smoke'])
  assert exit_info.value.code == 2
  error = capsys.readouterr().err
  assert error.count('\n') == 1 and 'pip install -e ".[qm9]"' in error
  assert module in error


def _graphs(molecules):
  return jax.tree.map(jnp.asarray, qm9_model.graphs(molecules))


def _permuted(molecules, row, order):
  """Molecule ``row`` with its real atoms reordered by ``order``."""
  one = molecules.take([row])
  n = int(one.num_atoms[0])
  full = np.concatenate([order, np.arange(n, qm9.MAX_ATOMS)])
  return one._replace(
      elements=one.elements[:, full], positions=one.positions[:, full],
      bonds=one.bonds[:, full][:, :, full],
      atom_flags=one.atom_flags[:, full], num_hs=one.num_hs[:, full])


@pytest.mark.slow
def test_mpnn_ignores_atom_order_and_padding(first_molecules):
  net = qm9_model.QM9Net('mpnn', width=16, rngs=nnx.Rngs(0))
  base = np.asarray(net(_graphs(first_molecules.take([0]))))
  permuted = _permuted(first_molecules, 0, np.array([3, 1, 4, 0, 2]))
  np.testing.assert_allclose(np.asarray(net(_graphs(permuted))), base,
                             rtol=1e-5, atol=1e-6)
  moved = first_molecules.take([0])
  positions = moved.positions.copy()
  positions[:, 5:] = 7.0  # Padded atoms' coordinates must not matter.
  np.testing.assert_allclose(
      np.asarray(net(_graphs(moved._replace(positions=positions)))), base,
      rtol=1e-6, atol=1e-7)
  assert np.asarray(net(_graphs(first_molecules))).shape == (5, 11)


def test_mpnn_message_is_the_edge_network_product():
  """The reassociated message equals Σ_j h_j W(e_ij) with explicit W."""
  net = qm9_model.MPNN(width=4, edge_hidden=3, rngs=nnx.Rngs(1))
  rng = np.random.default_rng(0)
  edges = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)  # A_ij, [B,N,N,K]
  hidden = rng.normal(size=(2, 3, 4)).astype(np.float32)
  kernel = np.asarray(net.edge_matrix.kernel[...]).reshape(3, 4, 4)
  bias = np.asarray(net.edge_matrix.bias[...]).reshape(4, 4)
  matrices = np.einsum('bijk,kde->bijde', edges, kernel) + bias  # W_ij
  explicit = np.einsum('bjd,bijde->bie', hidden, matrices)
  projected = np.einsum('bjd,kde->bjke', hidden, kernel)
  ones = np.ones((2, 3, 3), np.float32)
  fast = (np.einsum('bijk,bjke->bie', edges, projected)
          + np.einsum('bij,bjd->bid', ones, hidden) @ bias)
  np.testing.assert_allclose(fast, explicit, rtol=1e-5, atol=1e-5)


def test_descriptors_of_methane(first_molecules):
  features = qm9_model.descriptors(first_molecules.take([0]))[0]
  assert features.shape == (qm9_model.DESCRIPTOR_SIZE,)
  np.testing.assert_array_equal(features[:5], [4, 1, 0, 0, 0])  # H C N O F
  # Atom flags: no aromatic atom, no sp, no sp2, one sp3 (C), and the sum
  # of bonded hydrogens is 4.
  np.testing.assert_array_equal(features[5:11], [0, 0, 0, 1, 0, 4])
  # The (H, C) block (the 2nd element pair of the upper triangle) starts
  # with its bond counts by type: 4 single C-H bonds.
  size = qm9.NUM_BOND_TYPES + len(qm9_model._CENTERS) + 1
  start = 11 + 1 * size
  np.testing.assert_array_equal(features[start:start + 5], [4, 0, 0, 0, 0])
  # Rotating the molecule leaves the descriptor unchanged.
  angle = 0.7
  rotation = np.array([[np.cos(angle), -np.sin(angle), 0],
                       [np.sin(angle), np.cos(angle), 0], [0, 0, 1]],
                      np.float32)
  methane = first_molecules.take([0])
  turned = methane._replace(positions=methane.positions @ rotation.T)
  np.testing.assert_allclose(qm9_model.descriptors(turned)[0], features,
                             rtol=1e-4, atol=1e-4)


def test_heads_are_the_task_specific_leaves():
  net = qm9_model.QM9Net('descriptor_mlp', width=8, depth=1, inputs=4,
                         rngs=nnx.Rngs(0))
  params = nnx.state(net, nnx.Param)
  flags = jax.tree_util.tree_leaves_with_path(
      qm9_model.task_specific(params))
  heads = [flag for path, flag in flags if 'heads' in jax.tree_util.keystr(
      path)]
  others = [flag for path, flag in flags if 'heads' not in
            jax.tree_util.keystr(path)]
  assert len(heads) == 2 * qm9.NUM_TASKS and all(heads)
  assert others and not any(others)


def test_plateau_follows_pytorch_rules():
  plateau = qm9_train.Plateau([1e-3, 2e-5])
  # Improves once, then 6 epochs without improvement (> patience 5): the
  # 7th call reduces by 0.7, the floor holds the second member at 1e-5.
  for score in [1.0, 2.0, 2.0, 1.0, 1.5, 1.9, 2.0]:
    lrs = plateau([score, score])
  assert lrs.tolist() == [1e-3, 2e-5]
  lrs = plateau([2.0, 2.0])
  np.testing.assert_allclose(lrs, [7e-4, 1.4e-5])
  lrs = plateau([3.0, 3.0])  # An improvement resets the count.
  np.testing.assert_allclose(lrs, [7e-4, 1.4e-5])


def test_every_row_builds_and_takes_its_faster_path():
  """Each row's spec builds for 11 tasks; loss-level weightings take the
  Gramian engine's one backward pass, every other method the stacked path
  (measured faster here, see GRAMIAN_METHODS)."""
  from mtl_bench import methods
  loss_level = {'EW', 'GLS', 'RLW', 'UW', 'DWA', 'IMTL-L', 'FAMO', 'STCH'}
  labels = [label for label, _ in qm9_train.METHODS]
  assert set(qm9_train.PAPER_DELTA_P) <= set(labels)
  for label, spec in qm9_train.METHODS:
    methods.check(spec, qm9.NUM_TASKS)
    expected = 'gramian' if label in loss_level else 'stacked'
    assert qm9_train.engine_for(spec) == expected, label
  assert qm9_train.PRESETS['cpu'].methods == tuple(labels)


def test_ranks_and_spearman():
  assert qm9_train.ranks([3.0, 1.0, 2.0, 2.0]) == [1.0, 4.0, 2.5, 2.5]
  # Ranks (1, 2, 3) against (1, 3, 2): d² = 0 + 1 + 1, ρ = 1 − 6·2/(3·8).
  assert qm9_train.spearman([3, 2, 1], [3, 1, 2]) == pytest.approx(0.5)
  assert qm9_train.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path):
  """``python -m mtl_bench --dataset qm9 --preset smoke`` writes finite
  results (the trainer hands ``--dataset qm9`` to ``mtl_bench.qm9_train``)."""
  command = [sys.executable, '-m', 'mtl_bench', '--dataset', 'qm9',
             '--preset', 'smoke', '--out', str(tmp_path), '--no-progress']
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run(command, check=True, cwd=root, timeout=600)
  (run_dir,) = [os.path.join(dirpath, '') for dirpath, _, files
                in os.walk(tmp_path) if 'results.json' in files]
  with open(os.path.join(run_dir, 'results.json')) as file:
    results = json.load(file)
  assert results['command'].startswith('python -m mtl_bench --dataset qm9')
  rows = results['rows']
  assert set(rows) == set(qm9_train.PRESETS['smoke'].methods)
  for row in rows.values():
    mae = np.asarray(row['test_mae'], np.float64)
    assert mae.shape == (2, qm9.NUM_TASKS) and np.all(np.isfinite(mae))
    assert np.all(mae > 0)
    assert np.all(np.isfinite(row['delta_p']))
  stl = np.asarray(results['single_task']['test_mae'], np.float64)
  assert stl.shape == (2, qm9.NUM_TASKS) and np.all(np.isfinite(stl))
  with open(os.path.join(run_dir, 'results.md')) as file:
    table = file.read()
  for task in qm9.TASKS:
    assert f'{task.symbol} ({task.unit})' in table
  assert 'Spearman' in table and 'Table 3' in table
  for name in ('delta_p.png', 'delta_p_vs_paper.png'):
    assert os.path.getsize(os.path.join(run_dir, name)) > 0
