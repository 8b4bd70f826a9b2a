"""Training objectives, one per file, and the joint objective that combines them."""

from rsretrieve.losses.adversarial import DomainAdversarialLoss, GradientReversal, reverse_gradient
from rsretrieve.losses.info_nce import InfoNCE, SymmetricInfoNCE, info_nce
from rsretrieve.losses.joint import JointObjective, SensorEmbeddings
from rsretrieve.losses.queue import MemoryQueue
from rsretrieve.losses.supcon import SupConLoss
from rsretrieve.losses.uncertainty import UncertaintyWeighting
from rsretrieve.losses.vicreg import VICRegRegularizer, covariance_term, variance_term

__all__ = [
    "DomainAdversarialLoss",
    "GradientReversal",
    "InfoNCE",
    "JointObjective",
    "MemoryQueue",
    "SensorEmbeddings",
    "SupConLoss",
    "SymmetricInfoNCE",
    "UncertaintyWeighting",
    "VICRegRegularizer",
    "covariance_term",
    "info_nce",
    "reverse_gradient",
    "variance_term",
]
