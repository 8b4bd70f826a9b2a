"""Embedding models: sensor branches, the shared semantic head, the learned metric, the dual-encoder baseline."""

from rsretrieve.model.branches import SensorBranch, branch_class, build_branch, register_branch
from rsretrieve.model.checkpoint import EmbeddingModel, build_model, load_model
from rsretrieve.model.dual_encoder import DualEncoder
from rsretrieve.model.encoder import CrossSensorEncoder
from rsretrieve.model.head import HeadConfig, SemanticHead
from rsretrieve.model.metric import LearnedMetric

__all__ = [
    "CrossSensorEncoder",
    "DualEncoder",
    "EmbeddingModel",
    "HeadConfig",
    "LearnedMetric",
    "SemanticHead",
    "SensorBranch",
    "branch_class",
    "build_branch",
    "build_model",
    "load_model",
    "register_branch",
]
