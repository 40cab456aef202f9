"""The core works with nothing but its own dependencies (torch, NumPy, tqdm).

A subprocess hides (``sys.modules[name] = None``) every installed top-level module outside the
dependency closure of the core requirements, then imports and uses the core modules, and checks
that each extra-backed feature fails with an ImportError naming its extra. It runs in the
development venv, where every extra is installed; ``make wheel-check`` (run by ``.ci/run``) also
installs the built wheel into a fresh venv with only the pinned CPU torch and runs the core tests
there.
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
    from alkernels.loop import ActiveLearningLoop, LoopConfig
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
                                  data[np.arange(9, 12)],
                                  LoopConfig(initial=3, query_size=3, rounds=2, epochs=1, seed=0, batch_size=4),
                                  out_dir=out)
        records = loop.run()
    assert len(records) == 2 and records[-1]["labelled_count"] == 6

    # sharded selection in a one-rank gloo job (torch.distributed is part of torch)
    import os
    from alkernels import distributed as D
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as store:
        D.init_process_group(init_method=f"file://{store}/s", rank=0, world_size=1, timeout=60)
        got = D.select_distributed(logits, "bald", 20, offset=0, exclude=[0, 1, 2])
        D.destroy_process_group()
    assert torch.equal(got[0], idx)

    # the GP ops are core: an exact posterior grown incrementally equals the refit
    from alkernels.ops.gp import ExactPosterior, GPParams, exact_posterior
    gp_params = GPParams("matern12", torch.tensor([1.5]), 1.0, 0.1)
    xg = torch.randn(40, 3, dtype=torch.float64)
    yg = xg[:, 0].sin()
    post = ExactPosterior(gp_params, xg[20:])
    post.condition(xg[:10], yg[:10])
    post.condition(xg[20:25], yg[20:25], pool_index=torch.arange(5))
    ref_mean, _ = exact_posterior(gp_params, torch.cat([xg[:10], xg[20:25]]), torch.cat([yg[:10], yg[20:25]]), xg[20:])
    assert torch.allclose(post.pool_mean, ref_mean, atol=1e-10)

    # transfer learning: pre-train, save, load, fine-tune with a frozen trunk
    from alkernels import transfer
    from alkernels.models import EGNN, EGNNConfig
    small = EGNNConfig(num_layers=2, node_dim=16, edge_hidden=16, coord_hidden=16, node_hidden=16, proj_dim=16)
    props = transfer.PropertyData(graphs, {"a": np.arange(12.0), "b": np.arange(12.0) ** 2})
    pt = transfer.pretrain(EGNN(small), props, ["a"], config=transfer.TrainConfig(max_epochs=1), progress=False)
    with tempfile.TemporaryDirectory() as out:
        transfer.save(pt, out + "/pt.ckpt")
        ft = transfer.finetune(out + "/pt.ckpt", props, "b", "new_head_frozen_trunk",
                               config=transfer.TrainConfig(max_epochs=1), progress=False)
        assert transfer.load_encoder(out + "/pt.ckpt").config == small
    assert ft.model.targets == ["b"] and np.isfinite(transfer.mae(ft.model, props)["b"])

    # the compute-matched schedule, label modes, thread planning, seed statistics and work counts
    with tempfile.TemporaryDirectory() as out:
        loop = ActiveLearningLoop(lambda: paper_classifier(backend="auto"), "random", data[np.arange(9)],
                                  data[np.arange(9, 12)],
                                  LoopConfig(initial=3, query_size=3, rounds=3, epoch_budget=3.0, seed=0,
                                             batch_size=4),
                                  out_dir=out)
        assert loop.epochs_per_round == [3, 2, 1] and len(loop.run()) == 3
    from alkernels.data import class_labels
    assert class_labels([225], "bravais").tolist() == [13]
    from alkernels._threads import oversubscription_warning
    assert oversubscription_warning(4, 4, cores=2) is not None
    from alkernels.experiments.spacegroup.stats import paired_interval
    assert paired_interval({0: 2.0}, {0: 1.0}).mean == 1.0  # one seed: no t quantile needed
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
    needs("study", lambda: __import__("alkernels.experiments.transfer.report"))
    needs("data", lambda: __import__("alkernels.data.specs").data.specs.load_property_graphs)
    needs("study", lambda: strategies.get("umap").order_from_features(np.random.rand(10, 3)))
    needs("study", lambda: paired_interval({0: 2.0, 1: 4.0}, {0: 1.0, 1: 1.0}))  # scipy's t quantile
    needs("triton", lambda: acq.score_all(logits, backend="triton"))
    import alkernels.adapters  # the package imports none of its adapters
    needs("baal", lambda: __import__("alkernels.adapters.baal"))
    from alkernels.ops import aot, arch
    needs("triton", lambda: aot.run([90]))
    assert arch.occupancy(90, 64, 0, 4).fraction == 0.5

    # the GPU-path training step runs its plain eager step on the CPU
    from alkernels.loop.step import TrainStep, bucket_for, pad_batch
    step = TrainStep(paper_classifier(backend="auto"), lr=1e-3)
    assert torch.isfinite(step(batch))
    assert pad_batch(batch, *bucket_for(batch)).num_graphs == batch.num_graphs + 1

    from alkernels.gp import GPRegressor
    needs("gp", lambda: GPRegressor(iterations=2).fit(xg[:10], yg[:10]))

    leaked = sorted(m for m in HIDDEN if sys.modules.get(m) is not None)
    assert not leaked, leaked
    print("core ok")
    """
)


def test_core_works_without_extras() -> None:
    out = subprocess.run([sys.executable, "-c", HIDE_EXTRAS + CORE_USE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.strip().endswith("core ok")


def test_cli_help_works_without_extras() -> None:
    script = HIDE_EXTRAS + "from alkernels.cli import main\nraise SystemExit(main(['run', '--help']))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "--strategy" in out.stdout
