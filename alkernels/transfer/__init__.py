"""Transfer learning for the EGNN: pre-training (pair-wise or multi-property), fine-tuning with the
study's freezing strategies, and one checkpoint file that the GP study and the AL loop read.

Typical use (core: torch only; reading crystal files needs the ``data`` extra)::

    from alkernels.data.specs import load_property_graphs
    from alkernels.models import EGNN
    from alkernels import transfer

    graphs, columns = load_property_graphs("perov5_val.csv.gz", cutoff=6.0, max_neighbors=12)
    perov = transfer.PropertyData(graphs, columns, name="perov5_val")
    result = transfer.pretrain(EGNN(backend="auto"), [perov], targets=["heat_ref"])
    transfer.save(result, "pt.ckpt")
    ft = transfer.finetune("pt.ckpt", small_data, "dir_gap", strategy="new_head_frozen_trunk")
    print(ft.val_mae, transfer.mae(ft.model, test_data))

See ``docs/transfer.md`` for the strategies, the training loop and the checkpoint format.
"""

from __future__ import annotations

from alkernels.transfer.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    check_compatible,
    classifier_from_checkpoint,
    load,
    load_encoder,
    read_checkpoint,
    save,
)
from alkernels.transfer.data import PropertyData, content_hash
from alkernels.transfer.strategies import (
    DEFAULT_LAST_K,
    STRATEGIES,
    Strategy,
    finetune_model,
    frozen_prefixes,
    parse_strategy,
    trainable_names,
)
from alkernels.transfer.train import TrainConfig, TrainResult, embeddings, finetune, fit, mae, predict, pretrain

__all__ = [
    "CheckpointError",
    "DEFAULT_LAST_K",
    "FORMAT_VERSION",
    "PropertyData",
    "STRATEGIES",
    "Strategy",
    "TrainConfig",
    "TrainResult",
    "check_compatible",
    "classifier_from_checkpoint",
    "content_hash",
    "embeddings",
    "finetune",
    "finetune_model",
    "fit",
    "frozen_prefixes",
    "load",
    "load_encoder",
    "mae",
    "parse_strategy",
    "predict",
    "pretrain",
    "read_checkpoint",
    "save",
    "trainable_names",
]
