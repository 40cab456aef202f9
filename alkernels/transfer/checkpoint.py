"""The transfer checkpoint: one file with everything needed to rebuild a pre-trained model.

A checkpoint is a ``torch.save`` file of a plain dict (loadable with ``weights_only=True``):

=======================  ================================================================
``format``               ``"alkernels.transfer.checkpoint"``
``format_version``       int, :data:`FORMAT_VERSION` when written; a reader refuses newer ones
``alkernels_version``    the package version that wrote it
``egnn_config``          the :class:`~alkernels.models.EGNNConfig` fields, a dict
``head``                 ``{"hidden", "dropout", "activation"}`` of the property heads
``targets``              the property names, in head order
``normalization``        ``{"mean": [P], "std": [P]}`` of the targets, physical units
``data_hash``            sha256 of the training data (:func:`~alkernels.transfer.data.content_hash`) or None
``metadata``             a JSON-serialisable dict (training settings, timings, ...)
``state_dict``           the :class:`~alkernels.models.PropertyRegressor` weights on CPU:
                         ``encoder.*``, ``heads.<target>.*``, ``target_mean``, ``target_std``
=======================  ================================================================

:func:`load` rebuilds the model (or loads into a given one after checking that its architecture,
head layout and target names match, naming any difference); :func:`load_encoder` returns only the
encoder (for the GP study's embeddings); :func:`classifier_from_checkpoint` puts a fresh
space-group head on the pre-trained encoder (a ``model_factory`` for
:class:`~alkernels.loop.ActiveLearningLoop`).
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from alkernels import __version__
from alkernels._paths import user_path
from alkernels.models import EGNN, EGNNConfig, PropertyRegressor, SpaceGroupClassifier
from alkernels.transfer.train import TrainResult

FORMAT = "alkernels.transfer.checkpoint"
#: The layout version written by :func:`save`; files with a larger version are refused.
FORMAT_VERSION = 1
_KEYS = (
    "format",
    "format_version",
    "alkernels_version",
    "egnn_config",
    "head",
    "targets",
    "normalization",
    "data_hash",
    "metadata",
    "state_dict",
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model it is loaded into."""


def save(
    model: PropertyRegressor | TrainResult,
    path: str | os.PathLike,
    *,
    data_hash: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (or a :class:`TrainResult`'s model and data hash) to ``path`` atomically.

    Args:
        model: a :class:`PropertyRegressor` or the result of ``pretrain``/``finetune``/``fit``.
        path: the file to write (its folder is created; ``~`` expands); written to a temporary
            file, fsynced and renamed, so a reader never sees a partial checkpoint.
        data_hash: the training data's content hash (default: the result's, else None).
        metadata: JSON-serialisable extra information.

    Returns:
        ``path`` as a Path, ``~`` expanded.
    """
    if isinstance(model, TrainResult):
        data_hash = data_hash if data_hash is not None else model.data_hash
        model = model.model
    if not isinstance(model, PropertyRegressor):
        raise TypeError(f"save expects a PropertyRegressor or a TrainResult, got {type(model).__name__}")
    meta = dict(metadata or {})
    try:
        json.dumps(meta)
    except TypeError as err:
        raise ValueError(f"checkpoint metadata must be JSON-serialisable: {err}") from err
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "alkernels_version": __version__,
        "egnn_config": model.encoder.config.record(),
        "head": {"hidden": model.hidden, "dropout": model.dropout, "activation": model.activation},
        "targets": list(model.targets),
        "normalization": {"mean": model.target_mean.tolist(), "std": model.target_std.tolist()},
        "data_hash": data_hash,
        "metadata": meta,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    path = user_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's dict after checking its format and version (tensors on CPU).

    Raises:
        CheckpointError: the file is missing, is not a transfer checkpoint, lacks a field, or has
            a format version newer than :data:`FORMAT_VERSION`.
    """
    path = user_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not its format
        raise CheckpointError(
            f"{path} is not a readable alkernels transfer checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an alkernels transfer checkpoint (no format field {FORMAT!r})")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}, newer than version "
            f"{FORMAT_VERSION} that alkernels {__version__} reads (written by alkernels "
            f"{payload.get('alkernels_version')}); upgrade alkernels to load it"
        )
    missing = [k for k in _KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks the field(s) {', '.join(missing)}")
    return payload


def _config(payload: dict, path: Path) -> EGNNConfig:
    known = {f.name for f in fields(EGNNConfig)}
    unknown = sorted(set(payload["egnn_config"]) - known)
    if unknown:
        raise CheckpointError(f"{path}: EGNNConfig fields {', '.join(unknown)} are unknown to alkernels {__version__}")
    try:
        return EGNNConfig(**payload["egnn_config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid EGNNConfig in the checkpoint: {err}") from err


def _differences(ckpt: dict, model: dict) -> list[str]:
    return [
        f"{k}: checkpoint {ckpt.get(k)!r}, model {model.get(k)!r}"
        for k in sorted(set(ckpt) | set(model))
        if ckpt.get(k) != model.get(k)
    ]


def check_compatible(payload: dict, model: PropertyRegressor, path: str | os.PathLike = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming every difference between the checkpoint's
    architecture, head layout or target names and ``model``'s."""
    diffs = _differences(_config(payload, Path(str(path))).record(), model.encoder.config.record())
    if diffs:
        raise CheckpointError(f"{path}: the encoder architecture differs from the model's: " + "; ".join(diffs))
    head = {"hidden": model.hidden, "dropout": model.dropout, "activation": model.activation}
    diffs = _differences(payload["head"], head)
    if diffs:
        raise CheckpointError(f"{path}: the head layout differs from the model's: " + "; ".join(diffs))
    if list(payload["targets"]) != list(model.targets):
        raise CheckpointError(
            f"{path}: target names differ: checkpoint {list(payload['targets'])}, model {list(model.targets)}"
        )


def load(
    path: str | os.PathLike,
    *,
    model: PropertyRegressor | None = None,
    backend: str = "auto",
    device: torch.device | str = "cpu",
) -> PropertyRegressor:
    """The pre-trained :class:`PropertyRegressor` of a checkpoint, in eval mode.

    Args:
        path: the checkpoint file.
        model: load into this model instead of building one; its encoder config, head layout and
            target names must equal the checkpoint's (else :class:`CheckpointError` names the
            difference).
        backend: EGNN backend of a newly built model (see :mod:`alkernels.ops.dispatch`).
        device: where a newly built model's weights go.
    """
    path = user_path(path)
    payload = read_checkpoint(path)
    config = _config(payload, path)
    if model is None:
        head = payload["head"]
        model = PropertyRegressor(
            EGNN(config, backend=backend),
            payload["targets"],
            hidden=head["hidden"],
            dropout=head["dropout"],
            activation=head["activation"],
        ).to(device)
    else:
        check_compatible(payload, model, path)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit the model: {str(err).splitlines()[0]}") from err
    return model.eval()


def load_encoder(path: str | os.PathLike, *, backend: str = "auto", device: torch.device | str = "cpu") -> EGNN:
    """Only the pre-trained :class:`EGNN` encoder of a checkpoint, in eval mode; ``encoder(batch)``
    gives the float [B, 128] graph embeddings (what the GP study's ``checkpoint:PATH`` uses)."""
    return load(path, backend=backend, device=device).encoder


def classifier_from_checkpoint(
    path: str | os.PathLike,
    *,
    dropout: float = 0.1,
    hidden: int = 128,
    num_classes: int = 230,
    backend: str = "auto",
    freeze_encoder: bool = False,
) -> SpaceGroupClassifier:
    """A :class:`SpaceGroupClassifier` whose encoder starts from a checkpoint and whose head is
    fresh (drawn from the current torch RNG state).

    Use it as :class:`~alkernels.loop.ActiveLearningLoop`'s ``model_factory``, e.g.
    ``functools.partial(classifier_from_checkpoint, "pt.ckpt")``: the loop calls the factory under
    its seed, so runs stay reproducible. ``freeze_encoder`` keeps the encoder fixed (only the head
    trains; the loop's optimiser then skips the encoder, whose parameters get no gradient).
    """
    encoder = load_encoder(path, backend=backend).train()
    model = SpaceGroupClassifier(encoder, dropout=dropout, hidden=hidden, num_classes=num_classes)
    if freeze_encoder:
        encoder.requires_grad_(False)
    return model
