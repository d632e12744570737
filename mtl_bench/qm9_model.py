"""Flax NNX encoders for QM9 with one linear head per task.

Two shared encoders, one head per task (``Linear(width, 1)``, the
task-specific parameters: :func:`task_specific` marks them for the
balancers):

* :class:`MPNN`, the papers' encoder (Gilmer et al. 2017, "Neural message
  passing for quantum chemistry", ICML; as Nash-MTL and DB-MTL use it): an
  edge network (NNConv, mean aggregation) applied three times with a GRU
  update, Set2Set readout (three steps), width 64, on the complete graph
  whose edge features are the perceived bond type and the distance. Graphs
  are padded to 29 atoms; padded atoms send and receive nothing.
* :class:`DescriptorMLP`, the cheap encoder for CPUs: an MLP on a fixed
  per-molecule descriptor (:func:`descriptors`: element counts, atom-flag
  sums, bond counts per element pair and type, and per element pair a
  Gaussian histogram of the interatomic distances with a 1/r channel),
  computed once per molecule, so a training step is three dense layers.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mtl_bench import qm9

NUM_ELEMENTS = len(qm9.ELEMENTS)
# Node features: element one-hot, atomic number, the four RDKit flags
# (aromatic, sp, sp2, sp3), hydrogens bonded, not_perceived.
NODE_FEATURES = NUM_ELEMENTS + 1 + len(qm9.ATOM_FLAGS) + 1
# Edge features: bond type one-hot (0 on non-bonded pairs), distance in Å.
EDGE_FEATURES = qm9.NUM_BOND_TYPES + 1


class Graphs(NamedTuple):
  """A batch of padded molecules as the MPNN reads them (leading axis: B)."""
  elements: jax.Array  # [B, 29] int8; 0 for padding
  positions: jax.Array  # [B, 29, 3] float32
  bonds: jax.Array  # [B, 29, 29] int8
  atom_flags: jax.Array  # [B, 29, 5] int8
  num_hs: jax.Array  # [B, 29] int8


def graphs(molecules: qm9.Molecules) -> Graphs:
  return Graphs(molecules.elements, molecules.positions, molecules.bonds,
                molecules.atom_flags, molecules.num_hs)


def atom_mask(elements: jax.Array) -> jax.Array:
  """``[..., 29]`` float32: 1 for a real atom, 0 for padding."""
  return (elements > 0).astype(jnp.float32)


def pair_distances(positions: jax.Array) -> jax.Array:
  """``[..., 29, 29]`` distances; 0 on the diagonal with a finite gradient."""
  difference = positions[..., :, None, :] - positions[..., None, :, :]
  squared = jnp.sum(difference ** 2, axis=-1)
  safe = jnp.where(squared > 0, squared, 1.0)  # Double where: no NaN grad.
  return jnp.where(squared > 0, jnp.sqrt(safe), 0.0)


def node_features(batch: Graphs) -> jax.Array:
  """``[B, 29, NODE_FEATURES]`` float32 (zero rows on padding)."""
  onehot = jax.nn.one_hot(batch.elements.astype(jnp.int32) - 1, NUM_ELEMENTS)
  numbers = jnp.asarray((0,) + qm9.ATOMIC_NUMBERS, jnp.float32)[
      batch.elements.astype(jnp.int32)]
  return jnp.concatenate([
      onehot, numbers[..., None], batch.atom_flags.astype(jnp.float32),
      batch.num_hs.astype(jnp.float32)[..., None]], axis=-1)


def edge_features(batch: Graphs) -> jax.Array:
  """``[B, 29, 29, EDGE_FEATURES]``: bond one-hot and distance (Å)."""
  bond = jax.nn.one_hot(batch.bonds.astype(jnp.int32) - 1,
                        qm9.NUM_BOND_TYPES)
  return jnp.concatenate([bond, pair_distances(batch.positions)[..., None]],
                         axis=-1)


class MPNN(nnx.Module):
  """Gilmer et al.'s MPNN on padded complete graphs; returns ``[B, width]``."""

  def __init__(self, *, width: int = 64, edge_hidden: int = 128,
               iterations: int = 3, readout_steps: int = 3,
               rngs: nnx.Rngs):
    self.width, self.iterations = width, iterations
    self.readout_steps = readout_steps
    self.embed = nnx.Linear(NODE_FEATURES, width, rngs=rngs)
    # The edge network maps an edge's features to a width x width matrix.
    self.edge_hidden = nnx.Linear(EDGE_FEATURES, edge_hidden, rngs=rngs)
    self.edge_matrix = nnx.Linear(edge_hidden, width * width, rngs=rngs)
    self.root = nnx.Linear(width, width, rngs=rngs)  # NNConv's root weight
    self.gru = nnx.GRUCell(width, width, rngs=rngs)
    self.lstm = nnx.LSTMCell(2 * width, width, rngs=rngs)  # Set2Set's
    self.out = nnx.Linear(2 * width, width, rngs=rngs)

  def __call__(self, batch: Graphs) -> jax.Array:
    width = self.width
    mask = atom_mask(batch.elements)  # [B, N]
    pair_mask = mask[:, :, None] * mask[:, None, :] * (
        1.0 - jnp.eye(mask.shape[1]))  # [B, N, N]; no self loops
    degree = jnp.maximum(jnp.sum(pair_mask, axis=2), 1.0)[..., None]
    hidden = jax.nn.relu(self.embed(node_features(batch))) * mask[..., None]
    # Edge network: A_ij = relu(e_ij W1 + b1), W_ij = A_ij W2 + b2 (a
    # [width, width] matrix per edge). The message Σ_j h_j W_ij is
    # reassociated as Σ_k A_ijk (h_j W2_k) + (Σ_j h_j) b2: the same sum
    # without forming the [B, N, N, width²] edge matrices (≈20x fewer
    # multiplications at width 64). The matrices do not change across
    # iterations (the edge features do not), as in NNConv.
    edges = jax.nn.relu(self.edge_hidden(edge_features(batch)))
    edges = edges * pair_mask[..., None]  # [B, N, N, K]
    kernel = self.edge_matrix.kernel[...].reshape(-1, width, width)
    bias = self.edge_matrix.bias[...].reshape(width, width)
    state = hidden
    for _ in range(self.iterations):
      projected = jnp.einsum('bjd,kde->bjke', hidden, kernel)
      messages = (jnp.einsum('bijk,bjke->bie', edges, projected)
                  + jnp.einsum('bij,bjd->bid', pair_mask, hidden) @ bias)
      update = jax.nn.relu(self.root(hidden) + messages / degree)
      state, _ = self.gru(state.reshape(-1, width), update.reshape(-1, width))
      state = state.reshape(hidden.shape) * mask[..., None]
      hidden = state
    return jax.nn.relu(self.out(self._set2set(hidden, mask)))

  def _set2set(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Set2Set (Vinyals et al. 2016): attention readout with an LSTM query."""
    batch = hidden.shape[0]
    carry = (jnp.zeros((batch, self.width)), jnp.zeros((batch, self.width)))
    readout = jnp.zeros((batch, 2 * self.width))
    for _ in range(self.readout_steps):
      carry, query = self.lstm(carry, readout)
      scores = jnp.einsum('bnd,bd->bn', hidden, query)
      scores = jnp.where(mask > 0, scores, -jnp.inf)
      attention = jax.nn.softmax(scores, axis=1)
      pooled = jnp.einsum('bn,bnd->bd', attention, hidden)
      readout = jnp.concatenate([query, pooled], axis=1)
    return readout


# The descriptor's distance basis: Gaussians every 0.1 Å from 0.8 to 5.5 Å
# (bond lengths and second neighbours), plus 1/r (a Coulomb-like channel).
_CENTERS = np.arange(0.8, 5.55, 0.1, dtype=np.float32)
_WIDTH = 0.1
_PAIRS = np.triu_indices(NUM_ELEMENTS)  # the 15 unordered element pairs
DESCRIPTOR_SIZE = (NUM_ELEMENTS + len(qm9.ATOM_FLAGS) + 1
                   + len(_PAIRS[0]) * (qm9.NUM_BOND_TYPES
                                       + len(_CENTERS) + 1))


@jax.jit
def _descriptor_chunk(batch: Graphs) -> jax.Array:
  mask = atom_mask(batch.elements)
  onehot = jax.nn.one_hot(batch.elements.astype(jnp.int32) - 1,
                          NUM_ELEMENTS)  # [B, N, 5]; 0 rows on padding
  pair_mask = mask[:, :, None] * mask[:, None, :] * (
      1.0 - jnp.eye(mask.shape[1]))
  distance = pair_distances(batch.positions)
  basis = jnp.exp(-0.5 * ((distance[..., None] - _CENTERS) / _WIDTH) ** 2)
  inverse = 1.0 / jnp.where(pair_mask > 0, distance, 1.0)
  basis = jnp.concatenate([basis, inverse[..., None]], axis=-1)
  basis = basis * pair_mask[..., None]  # [B, N, N, K]
  bond = jax.nn.one_hot(batch.bonds.astype(jnp.int32) - 1,
                        qm9.NUM_BOND_TYPES)  # [B, N, N, 5]
  per_pair = jnp.concatenate([bond, basis], axis=-1)
  # Σ over ordered pairs (i, j) of species (a, b): contract j, then i.
  by_species = jnp.einsum('bia,bjc,bijk->back', onehot, onehot, per_pair,
                          optimize=True)
  upper = by_species[:, _PAIRS[0], _PAIRS[1]]  # [B, 15, K + 5]
  atoms = jnp.concatenate([
      onehot, batch.atom_flags.astype(jnp.float32),
      batch.num_hs.astype(jnp.float32)[..., None]], axis=-1).sum(axis=1)
  return jnp.concatenate([atoms, upper.reshape(upper.shape[0], -1)], axis=1)


def descriptors(molecules: qm9.Molecules, chunk: int = 2048) -> np.ndarray:
  """``[N, DESCRIPTOR_SIZE]`` float32 descriptors of every molecule.

  Counts and sums over atoms and atom pairs (invariant to the atoms' order,
  to rotations and translations), standardised by the caller.
  """
  count = molecules.count
  chunk = max(1, min(chunk, count))
  padded = -(-count // chunk) * chunk
  parts = []
  for start in range(0, padded, chunk):
    rows = np.arange(start, start + chunk) % max(count, 1)
    parts.append(np.asarray(_descriptor_chunk(graphs(molecules.take(rows)))))
  return np.concatenate(parts)[:count] if parts else np.zeros(
      (0, DESCRIPTOR_SIZE), np.float32)


class DescriptorMLP(nnx.Module):
  """An MLP on :func:`descriptors`; returns ``[B, width + inputs]``.

  The shared representation is the MLP's last hidden layer next to the
  descriptor itself, so each linear head also holds a linear model of the
  descriptor (atomization energies are close to linear in the bond counts
  and distance histograms); the MLP learns the rest.
  """

  def __init__(self, *, width: int = 256, depth: int = 3,
               inputs: int = DESCRIPTOR_SIZE, rngs: nnx.Rngs):
    sizes = [inputs] + [width] * depth
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs)
                            for a, b in zip(sizes[:-1], sizes[1:])])
    self.features = width + inputs

  def __call__(self, descriptor: jax.Array) -> jax.Array:
    hidden = descriptor
    for layer in self.layers:
      hidden = jax.nn.silu(layer(hidden))
    return jnp.concatenate([hidden, descriptor], axis=-1)


class QM9Net(nnx.Module):
  """A shared encoder and one ``Linear(features, 1)`` head per task."""

  def __init__(self, encoder: str = 'descriptor_mlp', *, width: int = 256,
               depth: int = 3, inputs: int = DESCRIPTOR_SIZE,
               rngs: nnx.Rngs):
    if encoder == 'mpnn':
      self.encoder = MPNN(width=width, rngs=rngs)
      features = width
    elif encoder == 'descriptor_mlp':
      self.encoder = DescriptorMLP(width=width, depth=depth, inputs=inputs,
                                   rngs=rngs)
      features = self.encoder.features
    else:
      raise ValueError(f"encoder must be 'mpnn' or 'descriptor_mlp', got "
                       f'{encoder!r}')
    self.heads = nnx.List([nnx.Linear(features, 1, rngs=rngs)
                           for _ in range(qm9.NUM_TASKS)])

  def __call__(self, inputs) -> jax.Array:
    """``[B, 11]`` standardised predictions."""
    features = self.encoder(inputs)
    return jnp.concatenate([head(features) for head in self.heads], axis=1)


def is_head(path, leaf) -> bool:
  del leaf
  return any(getattr(key, 'key', None) == 'heads' for key in path)


def task_specific(params):
  """Boolean pytree like ``params``: True on the heads' leaves."""
  return jax.tree_util.tree_map_with_path(is_head, params)


def task_losses(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """``[11]`` mean squared errors on standardised targets."""
  return jnp.mean((predictions - targets) ** 2, axis=0)
