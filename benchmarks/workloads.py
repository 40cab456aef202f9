"""Inputs, models and timed steps of the benchmarks.

Shared by the pytest fixtures and by the memory probes of :mod:`benchmarks.memory`, which rebuild
the same input from the same seeds in a fresh process.

Graphs (``docs/model.md``): ``matsciml`` batches come from :func:`alkernels.data.random_graphs`
(NumPy only, so they exist wherever the core imports); ``periodic`` batches, the trained weights
and the training and pool-scoring tasks use the built-in synthetic crystals with their space-group
labels (``synthetic_crystals`` + ``build_graphs``, the ``data`` extra). A set of ``distinct``
structures is tiled to the batch or task size, and everything generated is cached on disk under
``alkernels.data.default_cache_dir()`` (``$ALKERNELS_CACHE``).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from alkernels._extras import EXTRAS
from alkernels.data import (
    GraphBatch,
    GraphDataset,
    GraphSet,
    collate,
    default_cache_dir,
    random_graphs,
)
from alkernels.loop import Trainer
from alkernels.models import EGNN, SpaceGroupClassifier
from alkernels.strategies import Pool, UncertaintyStrategy

#: Neighbour cutoff in Angstrom per graph mode (the paper's settings).
CUTOFFS: dict[str, float] = {"periodic": 6.0, "matsciml": 20.0}
#: EGNN implementations: ours (backend "auto": C++ on CPU, Triton on CUDA), the plain-PyTorch
#: reference backend, the torch_geometric peer, and ours and the reference under torch.compile
#: (inductor, fullgraph: the strongest thing a user can get without alkernels is the compiled
#: reference).
EGNN_IMPLS: tuple[str, ...] = (
    "fused",
    "torch",
    "pyg",
    "torch+compile",
    "fused+compile",
    "fused bf16",
    "torch+autocast bf16",
)
#: Implementations of the force-training step (energies and forces, forward and double backward).
FORCE_IMPLS: tuple[str, ...] = ("fused", "torch", "torch+compile", "fused+compile")


def has_extra(name: str) -> bool:
    """Whether every package of the alkernels extra ``name`` is importable."""
    return all(importlib.util.find_spec(module) is not None for module in EXTRAS[name])


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_logits(T: int, N: int, C: int, device: torch.device) -> torch.Tensor:
    """float32 logits [T, N, C]: standard normal scaled by 3 (softmax far from one-hot), seed 0."""
    gen = torch.Generator(device=device).manual_seed(0)
    return torch.randn(T, N, C, generator=gen, device=device) * 3.0


def query_size(N: int, fraction: float) -> int:
    """The query size ``k`` for a pool of ``N``: ``fraction * N``, at least 1."""
    return max(1, int(N * fraction))


def graph_source(mode: str) -> str:
    """Name of the generator of the timed graphs of ``mode``."""
    return "random_graphs" if mode == "matsciml" else "synthetic_crystals"


def synthetic_graphs(mode: str, distinct: int) -> tuple[GraphSet, np.ndarray]:
    """``distinct`` synthetic crystals (seed 0) as graphs of ``mode`` and their 0-based space-group
    classes. Needs the ``data`` extra (ImportError otherwise)."""
    from alkernels.data import build_graphs, synthetic_crystals

    structures = synthetic_crystals(distinct, seed=0, cache_dir=default_cache_dir())
    graphs = build_graphs(structures, cutoff=CUTOFFS[mode], mode=mode, cache_dir=default_cache_dir())
    return graphs, structures.labels - 1


def timing_graphs(mode: str, distinct: int) -> GraphSet:
    """The ``distinct`` graphs the throughput rows of ``mode`` are timed on (see module doc)."""
    if mode == "matsciml":
        return random_graphs(distinct, cutoff=CUTOFFS["matsciml"], seed=0)
    return synthetic_graphs(mode, distinct)[0]


def tiled(graphs: GraphSet, size: int, labels: np.ndarray | None = None) -> GraphDataset:
    """``size`` items cycling over ``graphs`` (with their ``labels``, if given)."""
    return GraphDataset(graphs, y=labels, indices=np.resize(np.arange(len(graphs)), size))


def first_batch(graphs: GraphSet, size: int, device: torch.device) -> GraphBatch:
    """The first ``size`` items of ``graphs`` tiled, collated onto ``device``."""
    dataset = tiled(graphs, size)
    return collate([dataset[i] for i in range(size)]).to(device)


def make_encoder(impl: str, device: torch.device, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The EGNN encoder of ``impl`` (one of :data:`EGNN_IMPLS`) with the seed-0 initial weights,
    or the encoder weights ``state``."""
    if impl not in EGNN_IMPLS:
        raise ValueError(f"unknown EGNN implementation {impl!r}; expected one of {EGNN_IMPLS}")
    if impl.endswith("+compile"):
        return torch.compile(make_encoder(impl.removesuffix("+compile"), device, state), fullgraph=True)
    torch.manual_seed(0)
    fused = impl.startswith("fused")
    encoder = EGNN(backend="auto" if fused else "torch", precision="bf16" if impl == "fused bf16" else "fp32")
    if state is not None:
        encoder.load_state_dict(state)
    if impl == "torch+autocast bf16":
        return _Autocast(encoder.to(device), device)
    if impl == "pyg":
        from benchmarks.pyg_peer import PygEGNN

        return PygEGNN(encoder).to(device)
    return encoder.to(device)


class _Autocast(torch.nn.Module):
    """``module`` run under ``torch.autocast(device.type, dtype=torch.bfloat16)``: the peer a user
    tries first for bf16 (the op and the node MLPs choose their own precision under autocast)."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.module = module
        self.device_type = device.type

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.module(batch).float()


def forward_backward(model: torch.nn.Module, batch: GraphBatch) -> None:
    """One forward and backward pass of an encoder on ``batch`` (loss: sum of squared outputs)."""
    model.zero_grad(set_to_none=True)
    model(batch).square().sum().backward()


def relu_density(batch: GraphBatch, device: torch.device, state: dict[str, torch.Tensor] | None = None) -> float:
    """Mean fraction of positive outputs of the ReLUs of every layer's edge and coordinate MLPs on
    ``batch`` (initial weights, or the encoder weights ``state``): the share of multiply-adds that
    the zero-skipping fused CPU kernels still do. Runs the torch_geometric peer, the one
    implementation that calls those MLP modules per edge (ImportError without torch_geometric)."""
    model = make_encoder("pyg", device, state)
    fractions: list[float] = []
    for layer in model.encoder.layers:
        for module in [*layer.edge_mlp, *layer.coord_mlp]:
            if isinstance(module, torch.nn.ReLU):
                module.register_forward_hook(lambda _m, _i, out: fractions.append((out > 0).float().mean().item()))
    with torch.no_grad():
        model(batch)
    return float(np.mean(fractions))


def train_classifier(
    dataset: GraphDataset, device: torch.device, lr: float, steps: int | None = None, precision: str = "fp32"
) -> SpaceGroupClassifier:
    """A seed-0 ``SpaceGroupClassifier(EGNN(precision=precision), dropout=0.1)`` trained the way
    the AL loop trains (:meth:`alkernels.loop.Trainer.adamw`, no weight decay, batch 24,
    shuffled, :meth:`~alkernels.loop.Trainer.epoch`) for one epoch over ``dataset``, or for
    ``steps`` steps cycling over it."""
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=24, shuffle=True, collate_fn=collate)
    model = SpaceGroupClassifier(EGNN(precision=precision), dropout=0.1).to(device)
    model.train()
    trainer = Trainer.adamw(model.parameters(), lr=lr, weight_decay=0.0)

    def loss(batch: GraphBatch) -> torch.Tensor:
        batch = batch.to(device)
        return torch.nn.functional.cross_entropy(model(batch), batch.y)

    done = 0
    while steps is None or done < steps:
        done += trainer.epoch(loader, loss, max_steps=None if steps is None else steps - done).steps
        if steps is None:
            break
    sync(device)
    return model


def trained_encoder_state(mode: str, distinct: int, steps: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Encoder weights after ``steps`` AdamW steps (lr 1e-3, batch 24) of space-group
    classification on the synthetic crystals in ``mode``. The fused CPU kernels skip the zeros of
    the edge MLPs' ReLUs, which grow sparser with training, so their speed depends on the weights
    while the dense peers' does not."""
    graphs, labels = synthetic_graphs(mode, distinct)
    model = train_classifier(GraphDataset(graphs, y=labels), device, lr=1e-3, steps=steps)
    return {name: value.detach().clone() for name, value in model.encoder.state_dict().items()}


def score_pool(model: SpaceGroupClassifier, pool: Pool, T: int, k: int) -> np.ndarray:
    """One pool-scoring pass as the AL loop queries: the library's BALD strategy with ``T`` MC
    passes (per chunk the encoder once and the head ``T`` times with dropout on,
    ``model.mc_logits``) and its streaming top-``k``; the ``k`` chosen dataset indices."""
    return UncertaintyStrategy("bald", passes=T).query(model, pool, k, rng=np.random.default_rng(0))


def force_batch(structures: int, repeat: int, device: torch.device) -> GraphBatch:
    """A batch of ``structures`` EMT-labelled fcc cells (:func:`alkernels.data.emt_structures`,
    4 repeat^3 atoms each, seed 0) in periodic mode with a 5 A cutoff, energies in ``y`` and
    forces in ``forces``; the ``data`` extra."""
    from alkernels.data import build_graphs, emt_structures

    data = emt_structures(structures, seed=0, repeat=repeat)
    graphs = build_graphs(data.structures, cutoff=5.0, mode="periodic", workers=1)
    dataset = GraphDataset(graphs, y=data.energy, forces=data.forces)
    return collate([dataset[i] for i in range(structures)]).to(device)


def make_force_model(impl: str, device: torch.device) -> torch.nn.Module:
    """The paper's encoder as :class:`alkernels.models.EnergyForceModel` for ``impl`` (one of
    :data:`FORCE_IMPLS`), seed 0; compiled ones trace the force gradient
    (``trace_autograd_ops``), so call them inside :func:`force_compile_config`."""
    from alkernels.models import EnergyForceModel

    if impl not in FORCE_IMPLS:
        raise ValueError(f"unknown force implementation {impl!r}; expected one of {FORCE_IMPLS}")
    torch.manual_seed(0)
    base = impl.removesuffix("+compile")
    model = EnergyForceModel(EGNN(backend="auto" if base == "fused" else "torch")).to(device)
    return torch.compile(model, fullgraph=True) if impl.endswith("+compile") else model


def force_compile_config():  # noqa: ANN201 (a config patch context)
    """The dynamo setting under which a compiled force model traces ``torch.autograd.grad``."""
    return torch._dynamo.config.patch(trace_autograd_ops=True)


def force_step(model: torch.nn.Module, batch: GraphBatch) -> None:
    """One force-training step without the optimiser: energies and forces (``-dE/dx`` with
    create_graph), the energy+force loss, and its backward (the double backward of the edge op)."""
    from alkernels.models import EnergyForceModel

    model.zero_grad(set_to_none=True)
    batch.pos.requires_grad_(True)  # a compiled model cannot return outputs of a leaf it creates
    energy, forces = model(batch)
    EnergyForceModel.loss(energy, forces, batch).backward()
