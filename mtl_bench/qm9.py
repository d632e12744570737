"""QM9's 11 regression tasks as padded arrays, offline, from ``qm9pack``.

The benchmark of Nash-MTL (Navon et al., ICML 2022, ``experiments/
quantum_chemistry``) and DB-MTL (Lin et al., §4.2, Table 3): 130 831
molecules of up to 29 atoms (H, C, N, O, F; QM9's 133 885 less the 3 054
that fail its geometry check), 11 properties, split 110 831 / 10 000 /
10 000 (train / validation / test) by one fixed shuffle.

``qm9pack`` (Ramakrishnan, MIT) ships the molecules' element lists, xyz
coordinates (Å) and properties (Hartree, Debye, bohr³, bohr², cal/mol K) as
CSV files in its wheel; they are read with pandas, without importing the
package (its ``__init__`` needs ``pkg_resources``). RDKit perceives each
molecule's bonds from its geometry (``rdDetermineBonds``): bond orders,
aromaticity, hybridisation and hydrogen counts. Where ``DetermineBonds``
(charge 0) fails, about 5 % of the molecules (charge or valence
perception), ``DetermineConnectivity`` still gives the bonded pairs: those
bonds get their own edge type (``BOND_UNKNOWN``: bonded, order not
perceived), their atoms' aromatic and hybridisation flags stay 0 and the
atom feature ``not_perceived`` is 1. No molecule is dropped;
``QM9.num_not_perceived`` counts them.

The processed arrays are cached (``cache_path``), so a second load takes
seconds. Both packages are the ``[qm9]`` extra
(``pip install -e ".[qm9]"``); without them :func:`load` raises
:class:`MissingExtra` with one line saying so.
"""

import hashlib
import importlib.metadata
import importlib.util
import os
from typing import NamedTuple

import numpy as np


class Task(NamedTuple):
  name: str
  symbol: str
  unit: str


# The protocol's order (Nash-MTL, DB-MTL Table 3) and reporting units.
TASKS = (
    Task('mu', 'μ', 'D'),
    Task('alpha', 'α', 'bohr³'),
    Task('homo', 'ε_HOMO', 'meV'),
    Task('lumo', 'ε_LUMO', 'meV'),
    Task('r2', '⟨R²⟩', 'bohr²'),
    Task('zpve', 'ZPVE', 'meV'),
    Task('u0', 'U₀', 'meV'),
    Task('u', 'U', 'meV'),
    Task('h', 'H', 'meV'),
    Task('g', 'G', 'meV'),
    Task('cv', 'c_v', 'cal/mol K'),
)
NUM_TASKS = len(TASKS)
ELEMENTS = ('H', 'C', 'N', 'O', 'F')
ATOMIC_NUMBERS = (1, 6, 7, 8, 9)
MAX_ATOMS = 29

# 1 Hartree = 27.211386246 eV (CODATA 2018, the factor PyTorch Geometric's
# QM9 uses); the protocol reports energies in meV.
HARTREE_TO_MEV = 27211.386246

# Energies of the isolated atoms, Hartree, B3LYP/6-31G(2df,p): QM9's
# atomref table (Ramakrishnan et al. 2014, "Atomref: Reference
# thermochemical energies of H, C, N, O, F atoms", figshare 1057643), columns
# U(0 K), U(298.15 K), H(298.15 K), G(298.15 K); rows follow ELEMENTS.
ATOM_REFERENCE = np.array([
    [-0.500273, -0.498857, -0.497912, -0.510927],  # H
    [-37.846772, -37.845355, -37.844411, -37.861317],  # C
    [-54.583861, -54.582445, -54.581501, -54.598897],  # N
    [-75.064579, -75.063163, -75.062219, -75.079532],  # O
    [-99.718730, -99.717314, -99.716370, -99.733544],  # F
])

# Edge types of ``Molecules.bonds`` (0: not bonded).
BOND_SINGLE, BOND_DOUBLE, BOND_TRIPLE, BOND_AROMATIC, BOND_UNKNOWN = range(1, 6)
NUM_BOND_TYPES = 5
# Columns of ``Molecules.atom_flags``.
ATOM_FLAGS = ('aromatic', 'sp', 'sp2', 'sp3', 'not_perceived')

NUM_TEST = 10_000
NUM_VAL = 10_000
SPLIT_SEED = 0  # numpy.random.default_rng(SPLIT_SEED).permutation: the split

# Bump when the processing below changes what the cache holds.
FORMAT_VERSION = 1

_COLUMNS = ('Index', 'N_atoms', 'Elements', 'XYZ_Ang', 'Dipole_debye',
            'Polarizability_bohr3', 'HOMO_au', 'LUMO_au', 'R2_bohr2',
            'ZPVE_au', 'InternalEnergy_0K_au', 'InternalEnergy_298K_au',
            'Enthalphy_298K_au', 'GibbsFreeEnergy_298K_au',
            'Heatcapacity_Cv_cal_mol_K')
_PARTS = ('qm9_part1.csv', 'qm9_part2.csv', 'qm9_part3.csv')
INSTALL_HINT = ('QM9 needs the qm9 extra: pip install -e ".[qm9]" '
                '--config-settings editable_mode=compat '
                '(installs qm9pack and rdkit)')


class MissingExtra(ImportError):
  """``qm9pack`` or ``rdkit`` is not installed; the message says what to do."""


class Molecules(NamedTuple):
  """Padded molecules (leading axis: molecule; atoms past ``num_atoms`` are 0)."""
  index: np.ndarray  # [N] int32; QM9's molecule number (1 to 133 885)
  num_atoms: np.ndarray  # [N] int32
  elements: np.ndarray  # [N, 29] int8; 1..5 for ELEMENTS, 0 for padding
  positions: np.ndarray  # [N, 29, 3] float32; Å
  bonds: np.ndarray  # [N, 29, 29] int8; 0 or a BOND_* type, symmetric
  atom_flags: np.ndarray  # [N, 29, 5] int8; ATOM_FLAGS
  num_hs: np.ndarray  # [N, 29] int8; hydrogens bonded to the atom
  targets: np.ndarray  # [N, 11] float64; TASKS' units

  @property
  def count(self) -> int:
    """The number of molecules (``len`` stays the tuple's field count)."""
    return len(self.index)

  def take(self, rows) -> 'Molecules':
    return Molecules(*(field[rows] for field in self))


class QM9(NamedTuple):
  train: Molecules
  val: Molecules
  test: Molecules
  mean: np.ndarray  # [11] float64; of the training targets
  std: np.ndarray  # [11] float64; of the training targets (ddof 0)
  num_not_perceived: int  # molecules whose bond orders RDKit did not find


def require_extra() -> str:
  """The folder of qm9pack's CSV files; :class:`MissingExtra` if absent."""
  for module in ('qm9pack', 'rdkit', 'pandas'):
    if importlib.util.find_spec(module) is None:
      raise MissingExtra(f'{INSTALL_HINT}; {module} is missing.')
  spec = importlib.util.find_spec('qm9pack')
  return os.path.join(os.path.dirname(spec.origin), 'data')


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'unknown'


def _flat_numbers(strings) -> np.ndarray:
  """Every number of the bracketed lists in ``strings``, in order.

  Brackets become separators and numpy parses the rest: this reads ``0.``
  (which five molecules' coordinates contain and JSON rejects) and
  exponents alike, 50× faster than ``ast.literal_eval`` per string.
  """
  text = ','.join(s.replace('[', '').replace(']', '') for s in strings)
  return np.array(text.split(','), np.float64)


def targets_from_columns(frame) -> np.ndarray:
  """``[N, 11]`` targets in TASKS' units from qm9pack's columns.

  U₀, U, H and G become atomization energies: the molecule's total energy
  minus the sum of its atoms' ATOM_REFERENCE energies (negative: binding),
  then meV like the orbital energies and the ZPVE.
  """
  counts = np.stack([frame['Elements'].str.count(f"'{symbol}'").to_numpy()
                     for symbol in ELEMENTS], axis=1)  # [N, 5]
  totals = frame[['InternalEnergy_0K_au', 'InternalEnergy_298K_au',
                  'Enthalphy_298K_au',
                  'GibbsFreeEnergy_298K_au']].to_numpy(np.float64)
  atomization = totals - counts @ ATOM_REFERENCE  # [N, 4] Hartree
  return np.stack([
      frame['Dipole_debye'].to_numpy(np.float64),
      frame['Polarizability_bohr3'].to_numpy(np.float64),
      frame['HOMO_au'].to_numpy(np.float64) * HARTREE_TO_MEV,
      frame['LUMO_au'].to_numpy(np.float64) * HARTREE_TO_MEV,
      frame['R2_bohr2'].to_numpy(np.float64),
      frame['ZPVE_au'].to_numpy(np.float64) * HARTREE_TO_MEV,
      *(atomization * HARTREE_TO_MEV).T,
      frame['Heatcapacity_Cv_cal_mol_K'].to_numpy(np.float64),
  ], axis=1)


def read_frame(folder: str, rows: int | None = None):
  """qm9pack's molecules as one pandas frame (``rows``: the first ones only)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  frames, left = [], rows
  for part in _PARTS:
    frame = pd.read_csv(os.path.join(folder, part), usecols=list(_COLUMNS),
                        nrows=left)
    frames.append(frame)
    if left is not None:
      left -= len(frame)
      if left <= 0:
        break
  return pd.concat(frames, ignore_index=True)


def _perceive(symbols, positions):
  """RDKit's bonds and atom flags of one molecule from its geometry.

  Returns ``(bonds [n, n] int8, flags [n, 5] int8, num_hs [n] int8,
  perceived)``.
  """
  from rdkit import Chem  # pylint: disable=g-import-not-at-top
  from rdkit.Chem import rdDetermineBonds  # pylint: disable=g-import-not-at-top
  from rdkit.Geometry import Point3D  # pylint: disable=g-import-not-at-top
  n = len(symbols)
  bare = Chem.RWMol()
  for symbol in symbols:
    bare.AddAtom(Chem.Atom(symbol))
  conformer = Chem.Conformer(n)
  for i, (x, y, z) in enumerate(positions):
    conformer.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
  bare.AddConformer(conformer)
  molecule = Chem.Mol(bare)
  try:
    rdDetermineBonds.DetermineBonds(molecule, charge=0)
    perceived = True
  except (ValueError, RuntimeError):
    # Charge or valence perception failed; the bonded pairs still come from
    # the distances and covalent radii.
    molecule = Chem.Mol(bare)
    rdDetermineBonds.DetermineConnectivity(molecule)
    perceived = False
  bonds = np.zeros((n, n), np.int8)
  kinds = {Chem.BondType.SINGLE: BOND_SINGLE,
           Chem.BondType.DOUBLE: BOND_DOUBLE,
           Chem.BondType.TRIPLE: BOND_TRIPLE,
           Chem.BondType.AROMATIC: BOND_AROMATIC}
  for bond in molecule.GetBonds():
    i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
    kind = kinds.get(bond.GetBondType(), BOND_UNKNOWN) if perceived else (
        BOND_UNKNOWN)
    bonds[i, j] = bonds[j, i] = kind
  flags = np.zeros((n, len(ATOM_FLAGS)), np.int8)
  hybrid = {Chem.HybridizationType.SP: 1, Chem.HybridizationType.SP2: 2,
            Chem.HybridizationType.SP3: 3}
  num_hs = np.zeros(n, np.int8)
  for atom in molecule.GetAtoms():
    i = atom.GetIdx()
    num_hs[i] = sum(neighbour.GetAtomicNum() == 1
                    for neighbour in atom.GetNeighbors())
    if perceived:
      flags[i, 0] = atom.GetIsAromatic()
      column = hybrid.get(atom.GetHybridization())
      if column is not None:
        flags[i, column] = 1
    else:
      flags[i, 4] = 1
  return bonds, flags, num_hs, perceived


def molecules_from_frame(frame) -> Molecules:
  """Every row of ``frame`` as padded :class:`Molecules` (runs RDKit)."""
  from rdkit import RDLogger  # pylint: disable=g-import-not-at-top
  RDLogger.DisableLog('rdApp.*')  # Failed perceptions are counted instead.
  count = len(frame)
  num_atoms = frame['N_atoms'].to_numpy(np.int32)
  if num_atoms.max(initial=0) > MAX_ATOMS:
    raise ValueError(f'a molecule has more than {MAX_ATOMS} atoms')
  coordinates = _flat_numbers(frame['XYZ_Ang']).reshape(-1, 3)
  symbols = ''.join(s.replace('[', '').replace(']', '').replace("'", '') + ','
                    for s in frame['Elements']).rstrip(',').split(',')
  if len(symbols) != num_atoms.sum() or len(coordinates) != len(symbols):
    raise ValueError('qm9pack: element and coordinate counts disagree')
  code = {symbol: k + 1 for k, symbol in enumerate(ELEMENTS)}
  offsets = np.concatenate([[0], np.cumsum(num_atoms)])
  elements = np.zeros((count, MAX_ATOMS), np.int8)
  positions = np.zeros((count, MAX_ATOMS, 3), np.float32)
  bonds = np.zeros((count, MAX_ATOMS, MAX_ATOMS), np.int8)
  atom_flags = np.zeros((count, MAX_ATOMS, len(ATOM_FLAGS)), np.int8)
  num_hs = np.zeros((count, MAX_ATOMS), np.int8)
  for row in range(count):
    start, stop = offsets[row], offsets[row + 1]
    n = stop - start
    own = symbols[start:stop]
    elements[row, :n] = [code[symbol] for symbol in own]
    positions[row, :n] = coordinates[start:stop]
    (bonds[row, :n, :n], atom_flags[row, :n], num_hs[row, :n],
     _) = _perceive(own, coordinates[start:stop])
  return Molecules(frame['Index'].to_numpy(np.int32), num_atoms, elements,
                   positions, bonds, atom_flags, num_hs,
                   targets_from_columns(frame))


def split_rows(count: int, seed: int = SPLIT_SEED):
  """``(train, val, test)`` row indices: one shuffle, 10 000 test, 10 000 val."""
  order = np.random.default_rng(seed).permutation(count)
  test, val = order[:NUM_TEST], order[NUM_TEST:NUM_TEST + NUM_VAL]
  return np.sort(order[NUM_TEST + NUM_VAL:]), np.sort(val), np.sort(test)


def default_cache_dir() -> str:
  """``$XDG_CACHE_HOME/mtl_bench`` (``~/.cache/mtl_bench`` if unset)."""
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'mtl_bench')


def cache_path(cache_dir: str | None = None, rows=None) -> str:
  """The cache file; its name hashes everything that decides its content.

  ``rows`` (sorted row numbers) names the cache of those molecules only.
  """
  key = (f'format={FORMAT_VERSION};qm9pack={_version("qm9pack")};'
         f'rdkit={_version("rdkit")}')
  name = 'qm9'
  if rows is not None:
    rows_digest = hashlib.sha256(np.asarray(rows, np.int64).tobytes())
    name = f'qm9-rows{len(rows)}-{rows_digest.hexdigest()[:8]}'
  digest = hashlib.sha256(key.encode()).hexdigest()[:12]
  return os.path.join(cache_dir or default_cache_dir(), f'{name}-{digest}.npz')


def _cached(path: str, make) -> Molecules:
  """:class:`Molecules` from ``path``, or ``make()`` saved there first."""
  if os.path.exists(path):
    with np.load(path) as stored:
      return Molecules(*(stored[name] for name in Molecules._fields))
  molecules = make()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = f'{path}.{os.getpid()}.tmp.npz'
  np.savez(temporary, **molecules._asdict())
  os.replace(temporary, path)  # Atomic: a reader never sees half a file.
  return molecules


def load_all(cache_dir: str | None = None, *, progress=print) -> Molecules:
  """Every molecule, from the cache or processed (about a minute) and cached."""
  folder = require_extra()
  path = cache_path(cache_dir)
  if progress and not os.path.exists(path):
    progress(f'QM9: processing 130 831 molecules with RDKit, cached in {path}')
  return _cached(path, lambda: molecules_from_frame(read_frame(folder)))


def _subset(rows: np.ndarray, size: int | None, seed: int,
            name: str) -> np.ndarray:
  if size is None:
    return rows
  if not 0 < size <= len(rows):
    raise ValueError(f'{name} must be in 1..{len(rows)}, got {size}')
  return np.sort(np.random.default_rng(seed).choice(rows, size,
                                                    replace=False))


def load(cache_dir: str | None = None, *, num_train: int | None = None,
         num_eval: int | None = None, subset_seed: int = 0,
         progress=print) -> QM9:
  """The protocol's split, standardisation statistics from the training set.

  Args:
    cache_dir: where the processed arrays are cached (default
      :func:`default_cache_dir`).
    num_train: if given, a random subset of this many training molecules.
    num_eval: if given, a random subset of this many validation and as many
      test molecules.
    subset_seed: seed of the subsets (the split itself is fixed).
    progress: called with a line before a slow processing.

  Returns:
    :class:`QM9`; ``mean`` and ``std`` are those of the training molecules
    used. Without the full cache, a subset processes (and caches) only its
    own molecules, so a small run starts in seconds.
  """
  folder = require_extra()
  full = cache_path(cache_dir)
  frame = None
  if os.path.exists(full) or (num_train is None and num_eval is None):
    molecules = load_all(cache_dir, progress=progress)
    count = molecules.count
  else:
    frame = read_frame(folder)
    count = len(frame)
  train, val, test = split_rows(count)
  train = _subset(train, num_train, subset_seed, 'num_train')
  val = _subset(val, num_eval, subset_seed + 1, 'num_eval')
  test = _subset(test, num_eval, subset_seed + 2, 'num_eval')
  if frame is not None:
    needed = np.concatenate([train, val, test])
    molecules = _cached(
        cache_path(cache_dir, np.sort(needed)),
        lambda: molecules_from_frame(frame.iloc[np.sort(needed)]))
    position = np.searchsorted(np.sort(needed), np.arange(count))
    train, val, test = position[train], position[val], position[test]
  splits = [molecules.take(rows) for rows in (train, val, test)]
  targets = splits[0].targets
  not_perceived = sum(int(np.sum(split.atom_flags[:, 0, 4]))
                      for split in splits)
  return QM9(*splits, targets.mean(axis=0), targets.std(axis=0),
             not_perceived)
