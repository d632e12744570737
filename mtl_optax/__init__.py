"""mtl_optax: multi-task loss and gradient balancing as optax transformations."""

from mtl_optax._src.aligned_mtl import aligned_mtl
from mtl_optax._src.base import LossBalancer
from mtl_optax._src.base import TaskStats
from mtl_optax._src.base import WeightsState
from mtl_optax._src.base import balancer
from mtl_optax._src.cagrad import cagrad
from mtl_optax._src.central_direction import central_direction
from mtl_optax._src.config import config
from mtl_optax._src.db_mtl import DBMTLState
from mtl_optax._src.db_mtl import db_mtl
from mtl_optax._src.dualproj import dualproj
from mtl_optax._src.dwa import DWAState
from mtl_optax._src.dwa import dwa
from mtl_optax._src.equal_weighting import equal_weighting
from mtl_optax._src.fairgrad import fairgrad
from mtl_optax._src.famo import FAMOState
from mtl_optax._src.famo import famo
from mtl_optax._src.fixed_weighting import fixed_weighting
from mtl_optax._src.gls import gls
from mtl_optax._src.graddrop import GradDropState
from mtl_optax._src.graddrop import graddrop
from mtl_optax._src.gradient_ema import GradientEmaState
from mtl_optax._src.gradient_ema import gradient_ema
from mtl_optax._src.gradnorm import GradNormState
from mtl_optax._src.gradnorm import gradnorm
from mtl_optax._src.gradvac import GradVacState
from mtl_optax._src.gradvac import gradvac
from mtl_optax._src.gramian import gramian
from mtl_optax._src.gramian import weighted_sum
from mtl_optax._src.imtl import IMTLState
from mtl_optax._src.imtl import imtl
from mtl_optax._src.log_scaling import log_scaling
from mtl_optax._src.logse import logse
from mtl_optax._src.max_norm_weighting import max_norm_weighting
from mtl_optax._src.mgda import mgda
from mtl_optax._src.mgda_ub import representation_balanced_grads
from mtl_optax._src.min_norm import min_norm_weights
from mtl_optax._src.nash_mtl import NashMTLState
from mtl_optax._src.nash_mtl import nash_mtl
from mtl_optax._src.pcgrad import PCGradState
from mtl_optax._src.pcgrad import pcgrad
from mtl_optax._src.rlw import RLWState
from mtl_optax._src.rlw import rlw
from mtl_optax._src.task_grads import value_and_task_grads
from mtl_optax._src.task_tensioner import TaskTensionerState
from mtl_optax._src.task_tensioner import task_tensioner
from mtl_optax._src.uncertainty_weighting import UncertaintyWeightingState
from mtl_optax._src.uncertainty_weighting import uncertainty_weighting
from mtl_optax._src.upgrad import upgrad

__version__ = '0.1.0'

__all__ = [
    'aligned_mtl',
    'balancer',
    'cagrad',
    'central_direction',
    'config',
    'db_mtl',
    'DBMTLState',
    'dualproj',
    'dwa',
    'DWAState',
    'equal_weighting',
    'fairgrad',
    'famo',
    'FAMOState',
    'fixed_weighting',
    'gls',
    'graddrop',
    'GradDropState',
    'gradient_ema',
    'GradientEmaState',
    'gradnorm',
    'GradNormState',
    'gradvac',
    'GradVacState',
    'gramian',
    'imtl',
    'IMTLState',
    'log_scaling',
    'logse',
    'LossBalancer',
    'max_norm_weighting',
    'mgda',
    'min_norm_weights',
    'nash_mtl',
    'NashMTLState',
    'pcgrad',
    'PCGradState',
    'representation_balanced_grads',
    'rlw',
    'RLWState',
    'task_tensioner',
    'TaskStats',
    'TaskTensionerState',
    'uncertainty_weighting',
    'UncertaintyWeightingState',
    'upgrad',
    'value_and_task_grads',
    'weighted_sum',
    'WeightsState',
]
