"""The paper's EGNN encoder (on the fused message-passing op), its task heads and a force model."""

from alkernels.models.egnn import EGNN, EGNNConfig, EGNNLayer
from alkernels.models.forces import EnergyForceModel
from alkernels.models.heads import PropertyRegressor, SpaceGroupClassifier, paper_classifier

__all__ = [
    "EGNN",
    "EGNNConfig",
    "EGNNLayer",
    "EnergyForceModel",
    "PropertyRegressor",
    "SpaceGroupClassifier",
    "paper_classifier",
]
