"""Fixed feature maps for the GP: a frozen EGNN embedding or a model-free descriptor.

Specs (``alkernels run --embedding``):

``train-initial`` (default)
    train the EGNN with a :class:`~alkernels.models.PropertyRegressor` head on the initial
    labelled set only, then freeze it and embed every structure. No label outside the labelled
    set reaches the features (protocol B's MEGNet was pre-trained on the whole dataset, so its
    features had seen every label).
``checkpoint:PATH``
    a pre-trained encoder from an alkernels weights file (:func:`load_encoder`).
``composition``
    :func:`composition_features`, no model.

EGNN embeddings are standardised per dimension over all structures (no labels involved).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from alkernels._logging import progress_bar
from alkernels._paths import user_path
from alkernels.data._store import load_cached_array, save_cached_array
from alkernels.data.batch import GraphBatch
from alkernels.data.dataset import GraphDataset, collate
from alkernels.data.graphset import GraphSet
from alkernels.loop.rundir import atomic_write_bytes, file_lock
from alkernels.loop.trainer import Trainer
from alkernels.models import EGNN, PropertyRegressor
from alkernels.transfer import checkpoint as transfer_checkpoint

#: The embedding kinds (``checkpoint`` takes ``:PATH``).
EMBEDDINGS = ("train-initial", "checkpoint", "composition")
#: Largest atomic number of the composition fractions.
MAX_Z = 99
#: Period boundaries (atomic number of the last element of each period).
_PERIOD_END = (2, 10, 18, 36, 54, 86, 118)


def parse_embedding(spec: str) -> tuple[str, str | None]:
    """``(kind, path)`` of an embedding spec; ValueError for an unknown one."""
    kind, _, path = spec.partition(":")
    if kind not in EMBEDDINGS or (kind == "checkpoint") != bool(path):
        raise ValueError(f"unknown embedding {spec!r}; expected train-initial, checkpoint:PATH or composition")
    if kind == "checkpoint" and not user_path(path).is_file():
        raise ValueError(f"embedding checkpoint {path!r} does not exist")
    return kind, path or None


def period_and_group(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Periodic-table period (1..7) and group (1..18; lanthanides and actinides count as 3) of
    atomic numbers ``z`` (int [n], 1..118)."""
    z = np.asarray(z, dtype=np.int64)
    period = np.searchsorted(np.asarray(_PERIOD_END), z) + 1
    start = np.asarray((0,) + _PERIOD_END)[period - 1]
    pos = z - start
    group = np.where(period == 1, np.where(z == 1, 1, 18), 0)
    group = np.where((period == 2) | (period == 3), np.where(pos <= 2, pos, pos + 10), group)
    group = np.where((period == 4) | (period == 5), pos, group)
    group = np.where(period >= 6, np.where(pos <= 2, pos, np.where(pos <= 17, 3, pos - 14)), group)
    return period, group


def composition_features(graphs: GraphSet) -> np.ndarray:
    """A model-free composition and structure descriptor, float64 [B, 111].

    Per structure: the atom fractions of Z = 1..99; the mean and standard deviation over its
    atoms of Z, period, group, atomic mass and covalent radius (ASE's tables); the log atom count
    and the log volume per atom. The 12 non-fraction columns are standardised over the set.
    """
    try:
        from ase.data import atomic_masses, covalent_radii
    except ImportError as err:
        from alkernels._extras import missing_extra

        raise missing_extra("data", "composition features", err) from err
    z_all = np.asarray(graphs.z, dtype=np.int64)
    ptr = np.asarray(graphs.node_ptr)
    period, group = period_and_group(z_all)
    props = np.stack([z_all, period, group, atomic_masses[z_all], covalent_radii[z_all]], 1).astype(np.float64)
    rows = []
    for b in range(len(ptr) - 1):
        sl = slice(ptr[b], ptr[b + 1])
        z, n = z_all[sl], ptr[b + 1] - ptr[b]
        frac = np.bincount(z - 1, minlength=MAX_Z)[:MAX_Z] / n
        p = props[sl]
        volume = abs(float(np.linalg.det(np.asarray(graphs.cell[b], dtype=np.float64))))
        rows.append(np.concatenate([frac, p.mean(0), p.std(0), [np.log(n), np.log(max(volume, 1e-9) / n)]]))
    feats = np.stack(rows)
    tail = feats[:, MAX_Z:]
    std = tail.std(0)
    feats[:, MAX_Z:] = (tail - tail.mean(0)) / np.where(std > 0, std, 1.0)
    return feats


def standardise(features: np.ndarray) -> np.ndarray:
    """Per-column z-scores of ``features`` [N, d] (constant columns become 0)."""
    std = features.std(0)
    return (features - features.mean(0)) / np.where(std > 0, std, 1.0)


def file_digest(path: str | os.PathLike) -> str:
    """The first 16 hex digits of the sha256 of a file's bytes (a weights file's identity: two runs
    from different weights under one file name never share features or a run folder)."""
    h = hashlib.sha256()
    with open(user_path(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def load_encoder(path: str | os.PathLike, backend: str = "auto") -> EGNN:
    """The EGNN encoder stored in an alkernels weights file.

    Accepted (loaded with ``torch.load(weights_only=True)``): an :class:`EGNN` ``state_dict``
    (the ``encoder.pt`` that ``train-initial`` writes), a model ``state_dict`` whose encoder
    keys start with ``encoder.`` (:class:`PropertyRegressor`, ``SpaceGroupClassifier``), or
    the ``{"model": state_dict, ...}`` of an :class:`~alkernels.loop.ActiveLearningLoop`'s
    ``initial.pt``; or a transfer checkpoint (:mod:`alkernels.transfer.checkpoint`, what
    ``alkernels transfer`` pre-trains), whose checks it runs.
    """
    try:
        state = torch.load(user_path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors of every kind: report the file and the cause
        raise ValueError(f"cannot read encoder weights from {path}: {err}") from err
    if isinstance(state, dict) and state.get("format") == transfer_checkpoint.FORMAT:
        return transfer_checkpoint.load_encoder(path, backend=backend)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict")
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    encoder = EGNN(backend=backend)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} is not an EGNN state_dict of the default configuration: {err}") from err
    return encoder


@torch.no_grad()
def encoder_features(
    encoder: EGNN, dataset: GraphDataset, *, batch_size: int = 256, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Frozen graph embeddings, float64 [len(dataset), encoder.out_dim]."""
    encoder = encoder.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    return np.concatenate([encoder(batch.to(device)).double().cpu().numpy() for batch in loader])


def train_encoder(
    dataset: GraphDataset,
    labelled: np.ndarray,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> PropertyRegressor:
    """Train an EGNN + :class:`PropertyRegressor` head on ``dataset[labelled]`` only.

    Targets (``dataset`` items' float ``y``) are standardised with the labelled mean and std;
    AdamW (weight decay 0), mean squared error, shuffled batches, seeded init and order.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    labelled = np.asarray(labelled, dtype=np.int64)
    y = np.asarray([float(np.asarray(dataset[int(i)].y).reshape(-1)[0]) for i in labelled])
    mu, sd = float(y.mean()), float(y.std()) or 1.0
    torch.manual_seed(seed)
    model = PropertyRegressor(EGNN(backend=backend), ["target"]).to(device)
    trainer = Trainer.adamw(model.parameters(), lr=lr, weight_decay=0.0)
    loader = DataLoader(
        Subset(dataset, labelled.tolist()),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate,
    )
    model.train()
    bar = progress_bar(range(epochs), enabled=progress, leave=False, desc=f"encoder ({len(labelled)} labelled)")

    def batch_loss(batch: GraphBatch) -> torch.Tensor:
        batch = batch.to(device)
        return model.loss(model(batch), (batch.y.double() - mu).div(sd).float())

    for _ in bar:
        bar.set_postfix(loss=f"{trainer.epoch(loader, batch_loss).mean_loss:.3f}")
    return model.eval()


class Embedding:
    """A feature source for :class:`~alkernels.gp.GPActiveLearner`: ``embedding(data, labelled,
    seed) -> float64 [N, d]`` for every structure of the dataset.

    Args:
        spec: ``"train-initial"``, ``"checkpoint:PATH"`` or ``"composition"``.
        epochs, lr, batch_size: the encoder training of ``train-initial``.
        backend: EGNN edge-op backend. device: torch device of the encoder.
        cache_dir: where trained features (``embedding-<key>.npy``) and encoders
            (``encoder-<key>.pt``, usable as ``checkpoint:PATH``) are kept; the key hashes the
            spec, its settings, the graphs, the labelled indices and targets and the seed, so
            runs that share an initial set share the encoder.
        progress: tqdm bar while training, drawn where stderr is a terminal.
    """

    def __init__(
        self,
        spec: str = "train-initial",
        *,
        epochs: int = 100,
        lr: float = 1e-3,
        batch_size: int = 32,
        backend: str = "auto",
        device: str | torch.device = "cpu",
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> None:
        self.kind, self.path = parse_embedding(spec)
        self.spec = spec
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.backend, self.device = backend, device
        self.cache_dir = user_path(cache_dir)
        self.progress = progress

    @property
    def uses_labels(self) -> bool:
        """Whether the features depend on the labelled set (so retraining changes them)."""
        return self.kind == "train-initial"

    def describe(self) -> dict:
        """JSON-serialisable settings (no machine paths)."""
        out: dict = {"embedding": self.kind}
        if self.kind == "checkpoint":
            out["checkpoint"] = Path(self.path).name
            out["checkpoint_sha256"] = file_digest(self.path)
        if self.kind == "train-initial":
            out.update(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size)
        return out

    def _key(self, dataset: GraphDataset, labelled: np.ndarray, seed: int) -> str:
        h = hashlib.sha256(json.dumps({**self.describe(), "seed": seed, "graphs": dataset.graphs.key}).encode())
        h.update(np.asarray(dataset.indices, dtype=np.int64).tobytes())
        h.update(np.asarray(labelled, dtype=np.int64).tobytes())
        h.update(np.asarray([dataset[int(i)].y for i in labelled], dtype=np.float64).tobytes())
        return h.hexdigest()[:32]

    def __call__(self, dataset: GraphDataset, labelled: np.ndarray, seed: int = 0) -> np.ndarray:
        """Features of every item of ``dataset`` (float targets ``y``), float64 [N, d]."""
        if self.kind == "composition":
            return composition_features(dataset.graphs)[dataset.indices]
        if self.kind == "checkpoint":
            return standardise(encoder_features(load_encoder(self.path, self.backend), dataset, device=self.device))
        key = self._key(dataset, labelled, seed)
        if self.cache_dir is None:
            return self._train(dataset, labelled, seed)[0]
        cached = self.cache_dir / f"embedding-{key}.npy"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.cache_dir / f".embedding-{key}.lock"):  # processes sharing the cache train it once
            features = load_cached_array(cached)  # damaged: rebuilt
            if features is not None:
                return features
            feats, encoder = self._train(dataset, labelled, seed)
            buffer = io.BytesIO()
            torch.save(encoder.state_dict(), buffer)
            atomic_write_bytes(self.cache_dir / f"encoder-{key}.pt", buffer.getvalue())
            save_cached_array(cached, feats)
        return feats

    def _train(self, dataset: GraphDataset, labelled: np.ndarray, seed: int) -> tuple[np.ndarray, torch.nn.Module]:
        """Train the encoder on ``labelled``; returns its standardised features (float64 [N, d])
        and the encoder."""
        model = train_encoder(
            dataset,
            labelled,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=seed,
            backend=self.backend,
            device=self.device,
            progress=self.progress,
        )
        return standardise(encoder_features(model.encoder, dataset, device=self.device)), model.encoder
