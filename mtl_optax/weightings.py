"""Every method's weighting, as a value.

``mtl_optax.weightings.<name>(...)`` takes the method's hyper-parameters
(those of the factory ``mtl_optax.<name>``, without ``num_tasks`` and
``task_specific``) and returns a :class:`mtl_optax.Weighting`:
``init(num_tasks) -> state`` and ``weigh(stats, state) -> (weights, state)``.
``mtl_optax.<name>(T, ...)`` is exactly
``mtl_optax.balancer(T, mtl_optax.weightings.<name>(...))``; the same
weighting runs in the Gramian engine (:func:`mtl_optax.value_and_balanced_grad`),
in the loss path (:func:`mtl_optax.weigh_losses`) and in combinators
(:func:`smoothed`, :func:`mtl_optax.weightings.task_tensioner`'s ``base``).
"""

from mtl_optax._src.methods.aligned_mtl import aligned_mtl
from mtl_optax._src.methods.cagrad import cagrad
from mtl_optax._src.methods.central_direction import central_direction
from mtl_optax._src.methods.config import config
from mtl_optax._src.methods.cosmos import cosmos
from mtl_optax._src.methods.dualproj import dualproj
from mtl_optax._src.methods.dwa import dwa
from mtl_optax._src.methods.equal_weighting import equal_weighting
from mtl_optax._src.methods.fairgrad import fairgrad
from mtl_optax._src.methods.famo import famo
from mtl_optax._src.methods.fixed_weighting import fixed_weighting
from mtl_optax._src.methods.gls import gls
from mtl_optax._src.methods.go4align import go4align
from mtl_optax._src.methods.gradnorm import gradnorm
from mtl_optax._src.methods.gradvac import gradvac
from mtl_optax._src.methods.igb import igb
from mtl_optax._src.methods.imtl import imtl
from mtl_optax._src.methods.krum import krum
from mtl_optax._src.methods.logse import logse
from mtl_optax._src.methods.max_norm_weighting import max_norm_weighting
from mtl_optax._src.methods.metabalance import metabalance
from mtl_optax._src.methods.mgda import mgda
from mtl_optax._src.methods.modo import modo
from mtl_optax._src.methods.nash_mtl import nash_mtl
from mtl_optax._src.methods.pbi import pbi
from mtl_optax._src.methods.pcd import pcd
from mtl_optax._src.methods.pcgrad import pcgrad
from mtl_optax._src.methods.pmgda import pmgda
from mtl_optax._src.methods.rlw import rlw
from mtl_optax._src.methods.sdmgrad import sdmgrad
from mtl_optax._src.methods.smoothed import smoothed
from mtl_optax._src.methods.stch import stch
from mtl_optax._src.methods.task_tensioner import task_tensioner
from mtl_optax._src.methods.uncertainty_weighting import uncertainty_weighting
from mtl_optax._src.methods.upgrad import upgrad

__all__ = [
    'aligned_mtl',
    'cagrad',
    'central_direction',
    'config',
    'cosmos',
    'dualproj',
    'dwa',
    'equal_weighting',
    'fairgrad',
    'famo',
    'fixed_weighting',
    'gls',
    'go4align',
    'gradnorm',
    'gradvac',
    'igb',
    'imtl',
    'krum',
    'logse',
    'max_norm_weighting',
    'metabalance',
    'mgda',
    'modo',
    'nash_mtl',
    'pbi',
    'pcd',
    'pcgrad',
    'pmgda',
    'rlw',
    'sdmgrad',
    'smoothed',
    'stch',
    'task_tensioner',
    'uncertainty_weighting',
    'upgrad',
]
