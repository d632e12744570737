"""Options the peers offer on existing methods (issues 12, item 8; 16, item 5).

Aligned-MTL's ``scale_mode``, the per-task gradient normalisation
pre-transform, GradVac's per-leaf targets, IMTL-L's scaling of task-specific
leaves, the preference vectors of UPGrad, DualProj and ConFIG, GradDrop's
per-task leak and ``f``, and CAGrad's LibMTL rescale codes. Each test says
where its expected numbers come from.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_optax as mtl

import gradvac_reference  # pylint: disable=g-bad-import-order

J2 = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)
J5 = np.array([[-4.0, 1.0, 1.0, 0.0], [6.0, 1.0, 1.0, 2.0],
               [1.0, -2.0, 0.0, 1.0], [0.5, 0.5, 3.0, -1.0],
               [2.0, 2.0, 2.0, 2.0]], np.float32)


def _update(tx, grads, losses=None, params=None):
  grads = jax.tree.map(jnp.asarray, grads)
  state = tx.init(params)
  return jax.jit(lambda g, s, l: tx.update(g, s, params, task_losses=l))(
      grads, state, losses)


# ---------------------------------------------------------------------------
# Aligned-MTL scale_mode.


@pytest.mark.parametrize('scale_mode, jacobian, expected', [
    # TorchJD 0.18, AlignedMTL(scale_mode=...) on the same matrices (the
    # values in issue 12's table).
    ('min', J5, [0.127, -0.0162, 0.6619, 0.4226]),
    ('median', J5, [0.1684, -0.0214, 0.8773, 0.5601]),
    ('rmse', J5, [0.3318, -0.0422, 1.7283, 1.1035]),
    ('rmse', J2, [0.5764, 2.6142, 2.6142]),
])
def test_aligned_mtl_scale_mode_matches_torchjd(scale_mode, jacobian,
                                                 expected):
  tx = mtl.aligned_mtl(jacobian.shape[0], scale_mode=scale_mode)
  updates, _ = _update(tx, jacobian)
  np.testing.assert_allclose(updates, expected, atol=1e-4)


def test_aligned_mtl_scale_modes_on_a_diagonal_system():
  # Hand derivation: J = diag(1, 2, 4, 8) has eigenvalues 1, 4, 16, 64, so
  # B w = sqrt(s) Λ^{-1/2} w and d_t = sqrt(s)/4 for every t (w = 1/4), with
  # s = 1 (min), 4 (lower median of four) and 85/4 (mean).
  jacobian = np.diag([1.0, 2.0, 4.0, 8.0]).astype(np.float32)
  for mode, scale in (('min', 1.0), ('median', 4.0), ('rmse', 85.0 / 4)):
    updates, _ = _update(mtl.aligned_mtl(4, scale_mode=mode), jacobian)
    np.testing.assert_allclose(updates, np.full(4, np.sqrt(scale) / 4),
                               rtol=1e-6)


def test_aligned_mtl_rejects_an_unknown_scale_mode():
  with pytest.raises(ValueError, match='scale_mode'):
    mtl.aligned_mtl(2, scale_mode='max')


# ---------------------------------------------------------------------------
# normalize_task_grads.


def test_normalize_task_grads_modes_by_hand():
  # ‖g_1‖ = 5, ‖g_2‖ = 0.5 (shared leaf 'w'); the head 'h' is left alone.
  grads = {'w': np.array([[3.0, 4.0], [0.0, 0.5]], np.float32),
           'h': np.array([[7.0], [0.0]], np.float32)}
  losses = jnp.array([2.0, 0.25])
  task_specific = {'w': False, 'h': True}
  expected = {
      'l2': [[0.6, 0.8], [0.0, 1.0]],
      'loss': [[1.5, 2.0], [0.0, 2.0]],
      'loss+': [[0.3, 0.4], [0.0, 4.0]],
  }
  for mode, shared in expected.items():
    tx = mtl.normalize_task_grads(2, mode, task_specific=task_specific)
    params = {'w': jnp.zeros(2), 'h': jnp.zeros(1)}
    updates, _ = _update(tx, grads, losses, params)
    np.testing.assert_allclose(updates['w'], shared, rtol=1e-6)
    np.testing.assert_array_equal(updates['h'], grads['h'])


def test_normalize_task_grads_norm_spans_both_leaves_and_every_scale():
  # ‖g_1‖ over both leaves is sqrt(9 + 16 + 144) = 13.
  grads = {'a': np.array([[3.0, 4.0]], np.float32),
           'b': np.array([[12.0]], np.float32)}
  for scale in (1e-30, 1.0, 1e30):  # Squares of both leave the f32 range.
    scaled = jax.tree.map(lambda x: x * np.float32(scale), grads)
    updates, _ = _update(mtl.normalize_task_grads(1), scaled)
    np.testing.assert_allclose(updates['a'], [[3 / 13, 4 / 13]], rtol=1e-6)
    np.testing.assert_allclose(updates['b'], [[12 / 13]], rtol=1e-6)


def test_normalize_task_grads_guards_zero_gradients_and_losses():
  grads = np.array([[0.0, 0.0], [1.0, 0.0]], np.float32)
  losses = jnp.array([0.0, -1.0])  # Both floored at loss_floor = 0.5.
  tx = mtl.normalize_task_grads(2, 'loss+', loss_floor=0.5)
  updates, _ = _update(tx, grads, losses)
  np.testing.assert_array_equal(updates, [[0.0, 0.0], [2.0, 0.0]])
  # Derivatives through the guarded divisions are finite too.
  _, tangent = jax.jvp(
      lambda g, l: tx.update(g, tx.init(None), task_losses=l)[0],
      (jnp.asarray(grads), losses), (jnp.ones((2, 2)), jnp.ones(2)))
  assert np.all(np.isfinite(tangent))


def test_normalize_task_grads_then_mgda_is_mgda_on_unit_gradients():
  # Hand derivation: unit gradients u_1 = (1, 0), u_2 = (0, 1) have the
  # min-norm point (1/2, 1/2), whatever the raw lengths 3 and 0.1.
  grads = np.array([[3.0, 0.0], [0.0, 0.1]], np.float32)
  tx = optax.chain(mtl.normalize_task_grads(2), mtl.mgda(2))
  updates, state = _update(tx, grads)
  np.testing.assert_allclose(updates, [0.5, 0.5], rtol=1e-6)
  np.testing.assert_allclose(mtl.last_weights(state), [0.5, 0.5], rtol=1e-6)


def test_normalize_task_grads_needs_losses_for_loss_modes():
  tx = mtl.normalize_task_grads(2, 'loss')
  with pytest.raises(ValueError, match='task_losses'):
    tx.update(jnp.ones((2, 3)), tx.init(None))
  with pytest.raises(ValueError, match='normalization'):
    mtl.normalize_task_grads(2, 'max')


# ---------------------------------------------------------------------------
# GradVac per-leaf targets.


def test_gradvac_leaf_targets_follow_libmtl_all_matrix():
  rng = np.random.default_rng(0)
  steps = [rng.normal(size=(2, 5)) for _ in range(4)]
  # Positive cosines first, so the targets grow and later steps vaccinate.
  steps[0][1] = steps[0][0] + 0.3 * steps[0][1]
  expected_updates, expected_targets = gradvac_reference.libmtl_groups(
      steps, [(0, 3), (3, 5)], beta=0.5)
  tx = mtl.gradvac(2, target_rate=0.5, group='leaf')
  params = {'a': jnp.zeros(3), 'b': jnp.zeros(2)}
  state = tx.init(params)
  update = jax.jit(lambda g, s: tx.update(g, s, params))
  for grads, expected in zip(steps, expected_updates):
    grads = grads.astype(np.float32)
    updates, state = update({'a': grads[:, :3], 'b': grads[:, 3:]}, state)
    np.testing.assert_allclose(
        np.concatenate([updates['a'], updates['b']]), expected, rtol=1e-4,
        atol=1e-5)
  np.testing.assert_allclose(
      state.weighting_state.targets, expected_targets,
      rtol=1e-4, atol=1e-6)


def test_gradvac_leaf_with_one_leaf_is_gradvac_whole():
  grads = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
  whole = mtl.gradvac(4, target_rate=0.5)
  leaf = mtl.gradvac(4, target_rate=0.5, group='leaf')
  params = jnp.zeros(6)
  state_whole, state_leaf = whole.init(params), leaf.init(params)
  for step in range(3):
    matrix = grads * (step + 1) - step
    updates_whole, state_whole = whole.update(matrix, state_whole)
    updates_leaf, state_leaf = leaf.update(matrix, state_leaf)
    np.testing.assert_allclose(updates_leaf, updates_whole, rtol=1e-5,
                               atol=1e-6)
  np.testing.assert_allclose(state_leaf.weighting_state.targets[0],
                             state_whole.weighting_state.targets, atol=1e-6)
  with pytest.raises(ValueError, match='group'):
    mtl.gradvac(2, group='module')


# ---------------------------------------------------------------------------
# IMTL-L scaling of task-specific leaves.


@pytest.mark.parametrize('mode', ['loss', 'hybrid'])
def test_imtl_scales_task_specific_leaves_by_the_loss_scale(mode):
  # Hand derivation: s = 0 at the start; with SGD(1) on ∂/∂s = e^s L − 1 and
  # L = (0.5, 2), s becomes (0.5, −1); the second step scales the heads by
  # e^{0.5} and e^{−1}, the scales its shared weights use.
  task_specific = {'shared': False, 'h0': True, 'h1': True}
  grads = {'shared': jnp.array([[1.0, 0.0], [0.0, 2.0]]),
           'h0': jnp.array([[1.0, 1.0], [0.0, 0.0]]),
           'h1': jnp.array([[0.0], [3.0]])}
  losses = jnp.array([0.5, 2.0])
  tx = mtl.imtl(2, mode=mode, optimizer=optax.sgd(1.0),
                scale_task_specific=True, task_specific=task_specific)
  plain = mtl.imtl(2, mode=mode, optimizer=optax.sgd(1.0),
                   task_specific=task_specific)
  state, plain_state = tx.init(None), plain.init(None)
  for step, (head0, head1) in enumerate([(1.0, 1.0),
                                         (np.exp(0.5), np.exp(-1.0))]):
    updates, state = tx.update(grads, state, task_losses=losses)
    plain_updates, plain_state = plain.update(grads, plain_state,
                                              task_losses=losses)
    np.testing.assert_allclose(updates['h0'], [head0, head0], rtol=1e-6)
    np.testing.assert_allclose(updates['h1'], [3.0 * head1], rtol=1e-6)
    np.testing.assert_array_equal(plain_updates['h1'], [3.0])
    np.testing.assert_array_equal(updates['shared'], plain_updates['shared'])
  with pytest.raises(ValueError, match='scale_task_specific'):
    mtl.imtl(2, mode='gradient', scale_task_specific=True)


# ---------------------------------------------------------------------------
# Preference vectors (TorchJD's pref_vector).


def test_upgrad_and_dualproj_preference_by_hand():
  # J = [[1, 0], [-2, 1]], G = [[1, -2], [-2, 5]]. Hand derivation of
  # argmin_{v >= u} vᵀGv: from u = (1, 0) the constraint g_2·d >= 0 binds,
  # v = (1, 0.4); from (0, 1), g_1·d >= 0 binds, v = (2, 1). With p = (2, 1)
  # UPGrad sums (2, 0.8) and (2, 1); DualProj from p = (1, 2) raises v_1
  # until g_1·d = v_1 − 2 v_2 = 0: (4, 2).
  grads = np.array([[1.0, 0.0], [-2.0, 1.0]], np.float32)
  _, state = _update(mtl.upgrad(2, reg_eps=0.0, preference=[2.0, 1.0]), grads)
  np.testing.assert_allclose(state.weights, [4.0, 1.8], rtol=1e-5)
  _, state = _update(mtl.upgrad(2, reg_eps=0.0, preference=[0.5, 0.5]), grads)
  _, default = _update(mtl.upgrad(2, reg_eps=0.0), grads)
  np.testing.assert_allclose(state.weights, default.weights, rtol=1e-6)
  np.testing.assert_allclose(default.weights, [1.5, 0.7], rtol=1e-5)
  updates, state = _update(
      mtl.dualproj(2, reg_eps=0.0, preference=[1.0, 2.0]), grads)
  np.testing.assert_allclose(state.weights, [4.0, 2.0], rtol=1e-5)
  np.testing.assert_allclose(updates, [0.0, 2.0], atol=1e-5)


def test_config_preference_by_hand():
  # Orthogonal gradients: U = I, so g_u = p = (1, 2), ĝ_u = (1, 2)/√5 and the
  # length is Σ_t g_t·ĝ_u = (1·1 + 3·2)/√5: d = (7/5)(1, 2).
  grads = np.array([[1.0, 0.0], [0.0, 3.0]], np.float32)
  updates, _ = _update(mtl.config(2, preference=[1.0, 2.0]), grads)
  np.testing.assert_allclose(updates, [1.4, 2.8], rtol=1e-5)
  # p = 1 is the default.
  ones, _ = _update(mtl.config(2, preference=[1.0, 1.0]), J2)
  default, _ = _update(mtl.config(2), J2)
  np.testing.assert_allclose(ones, default, rtol=1e-5)


@pytest.mark.parametrize('factory', [mtl.upgrad, mtl.dualproj, mtl.config])
def test_preference_of_the_wrong_length_is_rejected(factory):
  with pytest.raises(ValueError, match='preference'):
    factory(3, preference=[1.0, 2.0])


# ---------------------------------------------------------------------------
# GradDrop: per-task leak and f.


def test_graddrop_per_task_leak_and_purity_fn_by_hand():
  # Column 0: g = (1, -3), P = ½(1 − 2/4) = 1/4. With f(P) = 0 the negative
  # entries are kept whatever the draw: M = (0, 1). Column 1: g = (2, 2),
  # P = 1, f(P) = 1: both kept. The update is Σ_t (ℓ_t + (1 − ℓ_t) M_t) g_t
  # with ℓ = (0.5, 0): column 0 gives 0.5·1 + (−3) = −2.5, column 1 gives 4.
  grads = np.array([[1.0, 2.0], [-3.0, 2.0]], np.float32)
  tx = mtl.graddrop(2, leak=np.array([0.5, 0.0]),
                    purity_fn=lambda p: jnp.where(p < 1, 0.0, 1.0))
  updates, state = _update(tx, grads)
  np.testing.assert_allclose(updates, [-2.5, 4.0], rtol=1e-6)
  # Kept shares of ‖g_t‖²: task 1 keeps 4 of 5, task 2 all 13.
  np.testing.assert_allclose(state.kept_share, [0.5 + 0.5 * 0.8, 1.0],
                             rtol=1e-6)
  # A leak of 1 for every task is the plain sum, whatever f.
  updates, _ = _update(mtl.graddrop(2, leak=np.ones(2)), grads)
  np.testing.assert_allclose(updates, grads.sum(axis=0), rtol=1e-6)


def test_graddrop_rejects_bad_leaks():
  with pytest.raises(ValueError, match='leak'):
    mtl.graddrop(2, leak=np.array([0.5, 0.5, 0.5]))
  with pytest.raises(ValueError, match='leak'):
    mtl.graddrop(2, leak=np.array([0.5, 1.5]))
  with pytest.raises(ValueError, match='purity_fn'):
    mtl.graddrop(2, purity_fn=0.5)


# ---------------------------------------------------------------------------
# CAGrad: LibMTL's rescale codes.


@pytest.mark.parametrize('code, divisor', [(0, 1.0), (1, 1.25), (2, 1.5)])
def test_cagrad_accepts_libmtl_rescale_codes(code, divisor):
  # The paper's update on J2 with c = 0.5 is [0.1835, 1.2041, 1.2041] (the
  # cagrad docstring); LibMTL's rescale 1 divides it by 1 + c², 2 by 1 + c.
  updates, _ = _update(mtl.cagrad(2, c=0.5, rescale=code), J2)
  np.testing.assert_allclose(updates,
                             np.array([0.1835, 1.2041, 1.2041]) / divisor,
                             atol=1e-4)
  with pytest.raises(ValueError, match='rescale'):
    mtl.cagrad(2, rescale=3)
