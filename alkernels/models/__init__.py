"""The paper's EGNN encoder (on the fused message-passing op) and its task heads."""
from alkernels.models.egnn import EGNN, EGNNConfig, EGNNLayer
from alkernels.models.heads import PropertyRegressor, SpaceGroupClassifier, paper_classifier

__all__ = ["EGNN", "EGNNConfig", "EGNNLayer", "PropertyRegressor", "SpaceGroupClassifier", "paper_classifier"]
