"""EGNN encoder: forward+backward of ours against its peers, and two end-to-end tasks.

Groups ``egnn/<mode>, <weights> weights/B=<batch>``: one forward+backward of the paper's encoder
on a batch, for ``fused`` (ours, backend "auto": C++ on CPU, Triton on CUDA, the baseline),
``torch`` (the plain-PyTorch reference backend) and ``pyg`` (the edge work as a torch_geometric
``MessagePassing``), with the seed-0 initial weights and (full size only) the weights after a
short AdamW training, since the fused CPU kernels skip the zeros of ReLU outputs, which grow
sparser with training; rows record that ReLU density. Peak extra memory of every
implementation is measured with the initial weights at the main batch sizes, in fresh processes.
The extra ``scaling_batches`` add matsciml rows of fused and torch only (no memory), for the
scaling plot.

Group ``egnn/tasks/...`` (full size only): one training epoch (the library's ``Trainer``: AdamW,
batch 24) and one pool-scoring pass (the library's BALD strategy: MC dropout, streaming top-k) on
synthetic crystals in matsciml mode, with the default fp32 edge kernels (``fused``) and the opt-in
bf16 ones (``fused bf16``, whose numbers differ: ``experiments/precision``). Where their time goes:
``benchmarks/profile_training.py``.

Group ``egnn/index checks/B=<batch>`` (CPU): the O(n + E) index checks that the C++ binding runs on
every kernel call (``_C.check_edge_index``) against one fused forward of the first layer on the
same periodic batch: the checks' share of a forward.

Group ``egnn/forces/B=<structures>``: one force-training step of
:class:`alkernels.models.EnergyForceModel` (energies, forces ``-dE/dx`` with create_graph, the
energy+force loss and its backward: the edge op differentiated twice) on EMT-labelled fcc cells,
fused against the torch backend, both eager and under ``torch.compile``; peak extra memory.

``+compile`` members are the same model under ``torch.compile(fullgraph=True)`` (inductor): the
compiled torch backend is the strongest peer a user has without alkernels. Their first call
(the compilation) is an untimed warm-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from alkernels.data import GraphSet, collate
from alkernels.models import EGNN, SpaceGroupClassifier
from alkernels.strategies import Pool
from benchmarks import settings
from benchmarks.harness import timed
from benchmarks.memory import peak_extra_mib
from benchmarks.workloads import (
    EGNN_IMPLS,
    FORCE_IMPLS,
    first_batch,
    force_batch,
    force_compile_config,
    force_step,
    forward_backward,
    graph_source,
    has_extra,
    make_encoder,
    make_force_model,
    query_size,
    relu_density,
    score_pool,
    synthetic_graphs,
    tiled,
    train_classifier,
    trained_encoder_state,
)

MODES: tuple[str, ...] = ("periodic", "matsciml")
WEIGHTS: dict[str, str] = {"init": "initial", "trained": "trained"}
TASK_MODE = "matsciml"
#: Task implementations and the edge kernels' precision of each: the default fp32 and the opt-in bf16.
TASK_IMPLS: dict[str, str] = {"fused": "fp32", "fused bf16": "bf16"}
needs_data = pytest.mark.skipif(not has_extra("data"), reason="needs the 'data' extra: pip install 'alkernels[data]'")


def _cases(sizes: settings.EGNNSizes) -> list[Any]:
    """(mode, weights, batch, impl) of every forward+backward test, group by group."""
    cases = []
    for mode in MODES:
        for weights in WEIGHTS:
            marks = [pytest.mark.full] if weights == "trained" else []
            for batch in sizes.batches:
                cases += [
                    pytest.param(mode, weights, batch, impl, marks=marks, id=f"{mode}-{weights}-B{batch}-{impl}")
                    for impl in EGNN_IMPLS
                ]
    for batch in sizes.scaling_batches:
        if batch not in sizes.batches:
            cases += [
                pytest.param("matsciml", "init", batch, impl, id=f"matsciml-init-B{batch}-{impl}")
                for impl in ("fused", "torch")
            ]
    return cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the forward+backward test with the cases of this run's sizes."""
    if metafunc.definition.name == "test_forward_backward":
        metafunc.parametrize("mode,weights,batch,impl", _cases(settings.from_config(metafunc.config).egnn))


@pytest.fixture(scope="module")
def trained_state(sizes: settings.Sizes, device: torch.device) -> Callable[[str], dict[str, torch.Tensor]]:
    """``mode -> encoder weights`` after ``train_steps`` of training in that mode (once per mode)."""
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def state(mode: str) -> dict[str, torch.Tensor]:
        if not has_extra("data"):
            pytest.skip("trained weights need the synthetic crystals of the 'data' extra")
        if mode not in cache:
            cache[mode] = trained_encoder_state(mode, sizes.egnn.distinct, sizes.egnn.train_steps, device)
        return cache[mode]

    return state


@pytest.fixture(scope="module")
def density() -> Callable[..., float | None]:
    """``(key, batch, device, state) -> ReLU density`` computed once per key; None without
    torch_geometric (the density is measured through the PyG peer)."""
    cache: dict[tuple[Any, ...], float | None] = {}

    def get(
        key: tuple[Any, ...], batch: Any, device: torch.device, state: dict[str, torch.Tensor] | None
    ) -> float | None:
        if key not in cache:
            try:
                cache[key] = relu_density(batch, device, state)
            except ImportError:
                cache[key] = None
        return cache[key]

    return get


def test_forward_backward(
    benchmark: Any,
    sizes: settings.Sizes,
    device: torch.device,
    egnn_graphs: Callable[[str], GraphSet],
    trained_state: Callable[[str], dict[str, torch.Tensor]],
    density: Callable[..., float | None],
    mode: str,
    weights: str,
    batch: int,
    impl: str,
) -> None:
    """One forward+backward of ``impl`` on a batch of ``batch`` graphs of ``mode``."""
    if impl == "pyg":
        pytest.importorskip("torch_geometric")
    if impl.endswith("+compile"):
        torch._dynamo.reset()  # each case compiles afresh, in its own cache
    data = first_batch(egnn_graphs(mode), batch, device)
    state = trained_state(mode) if weights == "trained" else None
    model = make_encoder(impl, device, state)
    relu = density((mode, weights, batch), data, device, state)
    notes: dict[str, Any] = {"edges": data.num_edges}
    if relu is not None:
        notes["ReLU density"] = round(relu, 2)
    timed(
        benchmark,
        lambda: forward_backward(model, data),
        group=f"egnn/{mode}, {WEIGHTS[weights]} weights/B={batch}",
        impl=impl,
        role="baseline" if impl == "fused" else "peer",
        items=batch,
        unit="graphs",
        rounds=sizes.egnn.rounds,
        warmup=1,
        device=device,
        mode=mode,
        weights=weights,
        batch=batch,
        nodes=data.num_nodes,
        edges=data.num_edges,
        graphs=graph_source(mode),
        relu_density=relu,
        scaling="batch",
        notes=notes,
    )
    if weights == "init" and batch in sizes.egnn.batches:
        params = {"impl": impl, "mode": mode, "batch": batch, "distinct": sizes.egnn.distinct, "device": device.type}
        benchmark.extra_info["peak_extra_mib"] = peak_extra_mib("egnn", params)


@pytest.mark.full
@needs_data
@pytest.mark.parametrize("impl", TASK_IMPLS)
def test_training_epoch(benchmark: Any, sizes: settings.Sizes, device: torch.device, impl: str) -> None:
    """One epoch of AdamW training (lr 1e-4, batch 24) of the classifier, through the library's
    :class:`alkernels.loop.Trainer`; ``fused bf16`` runs the edge kernels in bf16 (opt-in)."""
    e = sizes.egnn
    graphs, labels = synthetic_graphs(TASK_MODE, e.distinct)
    dataset = tiled(graphs, e.train_n, labels)
    timed(
        benchmark,
        lambda: train_classifier(dataset, device, lr=1e-4, precision=TASK_IMPLS[impl]),
        group="egnn/tasks/training epoch",
        impl=impl,
        role="baseline" if impl == "fused" else "peer",
        items=e.train_n,
        unit="structures",
        rounds=1,
        warmup=0,
        device=device,
        mode=TASK_MODE,
        batch=24,
        notes={"structures": e.train_n, "batch": 24},
    )


@pytest.mark.full
@needs_data
@pytest.mark.parametrize("impl", TASK_IMPLS)
def test_pool_scoring(benchmark: Any, sizes: settings.Sizes, device: torch.device, impl: str) -> None:
    """One pool-scoring pass of the library's BALD strategy: MC-dropout logits per chunk and a
    streaming top-k; ``fused bf16`` runs the edge kernels in bf16 (opt-in)."""
    e = sizes.egnn
    graphs, _ = synthetic_graphs(TASK_MODE, e.distinct)
    dataset = tiled(graphs, e.pool_n)
    pool = Pool(dataset, np.arange(e.pool_n), batch_size=e.pool_batch, collate_fn=collate)
    torch.manual_seed(0)
    model = SpaceGroupClassifier(EGNN(precision=TASK_IMPLS[impl]), dropout=0.1).to(device)
    k = query_size(e.pool_n, 0.1)
    timed(
        benchmark,
        lambda: score_pool(model, pool, e.T, k),
        group="egnn/tasks/pool scoring",
        impl=impl,
        role="baseline" if impl == "fused" else "peer",
        items=e.pool_n,
        unit="structures",
        rounds=1,
        warmup=0,
        device=device,
        mode=TASK_MODE,
        batch=e.pool_batch,
        T=e.T,
        k=k,
        notes={"structures": e.pool_n, "batch": e.pool_batch, "T": e.T},
    )


@needs_data
@pytest.mark.parametrize("impl", FORCE_IMPLS)
def test_force_step(benchmark: Any, sizes: settings.Sizes, device: torch.device, impl: str) -> None:
    """One force-training step (forward, forces with create_graph, loss, double backward)."""
    e = sizes.egnn
    torch._dynamo.reset()
    data = force_batch(e.force_structures, e.force_repeat, device)
    model = make_force_model(impl, device)

    def step() -> None:
        with force_compile_config():
            force_step(model, data)

    timed(
        benchmark,
        step,
        group=f"egnn/forces/B={e.force_structures}",
        impl=impl,
        role="baseline" if impl == "fused" else "peer",
        items=e.force_structures,
        unit="graphs",
        rounds=e.rounds,
        warmup=1,
        device=device,
        batch=e.force_structures,
        nodes=data.num_nodes,
        edges=data.num_edges,
        graphs="EMT fcc cells",
        notes={"edges": data.num_edges, "atoms": data.num_nodes},
    )
    params = {"impl": impl, "structures": e.force_structures, "repeat": e.force_repeat, "device": device.type}
    benchmark.extra_info["peak_extra_mib"] = peak_extra_mib("forces", params)


@needs_data
@pytest.mark.parametrize("impl", ["edge forward", "index checks"])
def test_index_check_cost(
    benchmark: Any, sizes: settings.Sizes, device: torch.device, egnn_graphs: Callable[[str], GraphSet], impl: str
) -> None:
    """The binding's index checks alone, and one fused edge forward (baseline), on one batch."""
    from alkernels.models.egnn import edge_shift_vectors
    from alkernels.ops.dispatch import ext
    from alkernels.ops.message_passing import build_edge_graph
    from alkernels.ops.message_passing.cpu import egnn_edge_cpu

    if device.type != "cpu" or ext() is None:
        pytest.skip("the C++ binding's checks: CPU with the extension built")
    batch = max(sizes.egnn.batches)
    data = first_batch(egnn_graphs("periodic"), batch, device)
    graph = build_edge_graph(data.edge_src, data.edge_dst, data.num_nodes)
    arrays = [t.numpy() for t in (graph.src, graph.dst, graph.rowptr, graph.src_perm, graph.src_ptr)]
    torch.manual_seed(0)
    layer = EGNN().layers[0]
    h = torch.randn(data.num_nodes, 32)
    shift = edge_shift_vectors(data, torch.float32)
    group = f"egnn/index checks/B={batch}"

    def forward() -> None:
        with torch.no_grad():
            egnn_edge_cpu(h, data.pos, shift, graph, layer.edge_weights(), 0.1)

    def check() -> None:
        ext().check_edge_index(*arrays)

    timed(
        benchmark,
        forward if impl == "edge forward" else check,
        group=group,
        impl=impl,
        role="baseline" if impl == "edge forward" else "ours",
        items=batch,
        unit="graphs",
        rounds=max(sizes.egnn.rounds, 10),
        warmup=1,
        device=device,
        batch=batch,
        edges=data.num_edges,
        notes={"edges": data.num_edges},
    )
