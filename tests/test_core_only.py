"""The core works with nothing but its own dependencies (torch, NumPy, tqdm).

A subprocess hides (``sys.modules[name] = None``) every installed top-level module outside the
dependency closure of the core requirements, then imports and uses the core modules, and checks
that each extra-backed feature fails with an ImportError naming its extra. This stands in for a
venv with only ``pip install alkernels`` (CI builds no second venv).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

HIDE_EXTRAS = textwrap.dedent(
    """
    import importlib.metadata as md, re, sys

    CORE = ("torch", "numpy", "tqdm")

    def closure(names):
        seen, todo = set(), [n.lower() for n in names]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            try:
                requires = md.requires(name) or []
            except md.PackageNotFoundError:
                continue
            for req in requires:
                if "extra ==" in req:
                    continue
                todo.append(re.split(r"[ ;<>=!~\\[(]", req, maxsplit=1)[0].lower())
        return seen

    allowed = closure(CORE) | {"alkernels"}
    HIDDEN = {module for module, dists in md.packages_distributions().items()
              if not any(d.lower().replace("_", "-") in allowed or d.lower() in allowed for d in dists)}

    for module in HIDDEN:  # None in sys.modules: import raises ModuleNotFoundError, find_spec gives None
        sys.modules[module] = None
    assert "ase" in HIDDEN and "pandas" in HIDDEN and "torch" not in HIDDEN, sorted(HIDDEN)[:20]
    """
)

CORE_USE = textwrap.dedent(
    """
    import numpy as np
    import torch

    import alkernels
    from alkernels import acquisition as acq, ops
    from alkernels.data import GraphDataset, collate, random_graphs
    from alkernels.loop import ActiveLearningLoop
    from alkernels.models import EGNN, SpaceGroupClassifier, paper_classifier
    from alkernels import strategies

    # acquisition on every CPU backend available without extras
    logits = torch.randn(4, 300, 230) * 3
    scores = acq.score_all(logits)
    ref = acq.score_all(logits, backend="torch")
    assert all(torch.allclose(scores[k], ref[k], atol=1e-5) for k in acq.STRATEGIES)
    idx, _ = acq.select(logits, "bald", 20, exclude=[0, 1, 2])
    assert idx.shape == (20,) and not set(idx.tolist()) & {0, 1, 2}

    # the fused EGNN, forward and backward, on graphs built without any neighbour library
    graphs = random_graphs(12, atoms=(3, 8), seed=0)
    labels = np.arange(12) % 3
    data = GraphDataset(graphs, y=labels)
    batch = collate([data[i] for i in range(12)])
    model = paper_classifier(backend="auto")
    loss = torch.nn.functional.cross_entropy(model(batch), batch.y)
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.layers[0].edge_mlp[0].weight.grad is not None
    assert ops.edge_op_backend("auto", batch.pos) in ("cpu", "torch")

    # the AL loop with an uncertainty strategy
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        loop = ActiveLearningLoop(lambda: paper_classifier(backend="auto"), "bald", data[np.arange(9)],
                                  data[np.arange(9, 12)], initial=3, query_size=3, rounds=2, epochs=1,
                                  seed=0, out_dir=out, batch_size=4)
        records = loop.run()
    assert len(records) == 2 and records[-1]["labelled_count"] == 6

    # the compute-matched schedule, label modes, thread planning, seed statistics and work counts
    with tempfile.TemporaryDirectory() as out:
        loop = ActiveLearningLoop(lambda: paper_classifier(backend="auto"), "random", data[np.arange(9)],
                                  data[np.arange(9, 12)], initial=3, query_size=3, rounds=3, epoch_budget=3.0,
                                  seed=0, out_dir=out, batch_size=4)
        assert loop.epochs_per_round == [3, 2, 1] and len(loop.run()) == 3
    from alkernels.data import class_labels
    assert class_labels([225], "bravais").tolist() == [13]
    from alkernels._threads import oversubscription_warning
    assert oversubscription_warning(4, 4, cores=2) is not None
    from alkernels.experiments.spacegroup.stats import paired_interval
    assert paired_interval({0: 2.0, 1: 4.0}, {0: 1.0, 1: 1.0}).mean == 2.0
    from alkernels.experiments.spacegroup.cost import run_work
    assert run_work(100, 10, epochs=1).sample_epochs == 550

    # features behind extras fail with the extra's name
    def needs(extra, fn):
        try:
            fn()
        except ImportError as err:
            assert f"alkernels[{extra}]" in str(err), str(err)
        else:
            raise AssertionError(f"expected an ImportError naming the {extra!r} extra")

    import alkernels.data as data_mod
    needs("data", lambda: data_mod.read_structures)
    needs("data", lambda: data_mod.build_graphs)
    needs("data", lambda: data_mod.synthetic_crystals)
    needs("data", lambda: graphs.atoms(0))
    needs("study", lambda: __import__("alkernels.experiments.spacegroup.report"))
    needs("study", lambda: strategies.get("umap").order_from_features(np.random.rand(10, 3)))
    needs("triton", lambda: acq.score_all(logits, backend="triton"))
    import alkernels.adapters  # the package imports none of its adapters
    needs("baal", lambda: __import__("alkernels.adapters.baal"))

    leaked = sorted(m for m in HIDDEN if sys.modules.get(m) is not None)
    assert not leaked, leaked
    print("core ok")
    """
)


def test_core_works_without_extras() -> None:
    out = subprocess.run([sys.executable, "-c", HIDE_EXTRAS + CORE_USE], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.strip().endswith("core ok")


def test_cli_help_works_without_extras() -> None:
    script = HIDE_EXTRAS + "from alkernels.cli import main\nraise SystemExit(main(['run', '--help']))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "--strategy" in out.stdout
