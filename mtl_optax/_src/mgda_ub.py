"""MGDA-UB: task weights from the gradients w.r.t. the shared representation."""

from typing import Any, Callable

import jax
import optax

from mtl_optax._src import task_grads as task_grads_lib


def representation_balanced_grads(
    balancer: optax.GradientTransformationExtraArgs,
    encoder_fn: Callable[[Any, Any], Any],
    heads_loss_fn: Callable[..., Any],
    *,
    has_aux: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
  r"""Balances tasks on the shared representation, then backpropagates once.

  MGDA-UB (Sener and Koltun, "Multi-Task Learning as Multi-Objective
  Optimization", NeurIPS 2018, section 3.3): for an encoder
  ``z = encoder(θ, x)`` shared by T heads, the Gramian of the task gradients
  ``∇_z L_t`` (flattened over the batch and the features) stands in for the
  Gramian of ``∇_θ L_t``. The paper shows that the min-norm point on ``∇_z``
  gives an upper bound of the MGDA objective, and that the cost collapses to
  one forward pass, T backward passes through the heads only, and one backward
  pass through the encoder:

  1. ``z, pullback = vjp(encoder, θ)`` (one forward);
  2. ``(∇_ψ L_t, ∇_z L_t)`` for every task, through the heads only;
  3. ``(c, state) = balancer.update(∇_z L, state, task_losses=L)``, where
     ``c = Σ_t w_t ∇_z L_t`` is exactly the cotangent of ``Σ_t w_t L_t`` at
     ``z``;
  4. ``∇_θ = pullback(c)`` (one backward through the encoder), i.e. the
     gradient of ``Σ_t w_t L_t`` with the weights held fixed.

  Any balancer works: ``mgda`` gives MGDA-UB (``mgda(T,
  solver='frank_wolfe')`` with the paper's own Frank-Wolfe solver,
  Algorithm 2, instead of the exact default), and ``central_direction``,
  ``task_tensioner`` or a loss-level weighting use the same ``∇_z`` Gramian
  (METHODS.md, MGDA-UB). Build the balancer with ``task_specific=None``: every
  leaf of ``z`` is shared. Its ``update`` must return the combination
  ``Σ_t w_t ∇_z L_t``, as every weighting in the library does: chain no
  optimizer into it (the optimizer takes the returned grads), and no
  pre-transform such as :func:`gradient_ema` (an average of ``∇_z`` across
  batches has no meaning, since ``z`` depends on the batch).

  The head parameters get ``Σ_t ∇_ψ L_t``: a head used by task t alone gets
  its own task's gradient, unweighted (only the encoder is balanced). A
  parameter several heads share would get their plain sum.

  Args:
    balancer: a transformation of ``[T, *z.shape]`` task gradients, e.g.
      ``mtl.mgda(T)``.
    encoder_fn: ``encoder_fn(encoder_params, inputs) -> z``, any pytree.
    heads_loss_fn: ``heads_loss_fn(head_params, z, *args) -> task_losses``
      of shape ``[T]`` (or ``(task_losses, aux)`` if ``has_aux``).
    has_aux: whether ``heads_loss_fn`` returns an auxiliary value.
    chunk_size: passed to :func:`value_and_task_grads` for the T backward
      passes through the heads.

  Returns:
    ``fn(encoder_params, head_params, balancer_state, inputs, *args)``
    returning ``(task_losses, (encoder_grads, head_grads), balancer_state)``
    (``task_losses`` is ``(task_losses, aux)`` if ``has_aux``). The grads have
    the structure of the parameters, no task axis, ready for any optax
    optimizer; the new balancer state holds the weights
    (``balancer_state.weights``).

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> encoder = lambda w, x: x * w  # z = w x, one feature per example
    >>> heads = lambda h, z: jnp.stack([jnp.sum((z - h[0]) ** 2),
    ...                                 jnp.sum((z - h[1]) ** 2)])
    >>> balancer = mtl.equal_weighting(2)
    >>> step = mtl.representation_balanced_grads(balancer, encoder, heads)
    >>> losses, (enc_grads, head_grads), state = step(
    ...     jnp.float32(1.0), jnp.array([0.0, 3.0]), balancer.init(None),
    ...     jnp.array([1.0, 2.0]))
    >>> losses  # z = [1, 2]: [1 + 4, 4 + 1]
    Array([5., 5.], dtype=float32)
    >>> enc_grads  # Σ_t 2 (z - h_t) · x = 10 - 8
    Array(2., dtype=float32)
  """

  def heads_on_pair(head_params_and_z, *args):
    head_params, z = head_params_and_z
    return heads_loss_fn(head_params, z, *args)

  pair_task_grads = task_grads_lib.value_and_task_grads(
      heads_on_pair, has_aux=has_aux, chunk_size=chunk_size)

  def balanced_grads(encoder_params, head_params, balancer_state, inputs,
                     *args):
    z, encoder_pullback = jax.vjp(  # One forward pass through the encoder.
        lambda params: encoder_fn(params, inputs), encoder_params)
    value, (head_task_grads, z_task_grads) = pair_task_grads(
        (head_params, z), *args)
    task_losses = value[0] if has_aux else value
    # Σ_t w_t ∇_z L_t: the cotangent of the weighted loss at z.
    z_cotangent, balancer_state = balancer.update(
        z_task_grads, balancer_state, task_losses=task_losses)
    (encoder_grads,) = encoder_pullback(z_cotangent)  # One backward pass.
    head_grads = jax.tree.map(lambda leaf: leaf.sum(0), head_task_grads)
    return value, (encoder_grads, head_grads), balancer_state

  return balanced_grads
