"""What the inducing-point (SGPR) switch costs in accuracy: exact GP against SGPR with m inducing
points on the same labelled sets and the same fixed test split.

    python -m alkernels.experiments.gp_regression.sparse --preset perovskite-composition \\
        --data-dir ../shared/data --out experiments/gp-regression/results/sparse-perovskite

For each labelled-set size n (nested random subsets of the pool, seed 0) both methods fit their
hyper-parameters with gpytorch (the same settings: at most ``max_fit_points`` points, validation
iterate rule), condition on all n points and predict the test split. Writes ``sparse.json`` and
``sparse.md`` (test MAE / RMSE, their change against exact, seconds, the exact posterior's memory).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from alkernels._logging import configure_cli, emit
from alkernels._paths import user_path
from alkernels.gp import GPConfig, GPRegressor
from alkernels.ops.gp import exact_memory_bytes

_log = logging.getLogger(__name__)


def sparse_accuracy(
    features: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    sizes: Sequence[int],
    inducing: Sequence[int],
    seed: int = 0,
    gp: GPConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Rows ``{"n", "method", "inducing", "inducing_used", "mae", "rmse", "seconds", "exact_bytes"}``
    (the sparse fit uses at most as many inducing points as it has fit points); a line per row
    goes to ``log``, by default to the ``alkernels.experiments`` logger at INFO."""
    order = np.random.default_rng(seed).permutation(train)
    rows = []
    for n in sizes:
        lab = order[:n]
        for m in (None, *inducing):
            t0 = time.perf_counter()
            base = gp or GPConfig()
            solver = replace(base.solver, method="exact" if m is None else "sparse", inducing_points=m or 1)
            model = GPRegressor(base.kernel, base.fit, solver, seed=seed)
            model.fit(features[lab], y[lab], pool=features[test])
            err = model.pool_mean.numpy() - y[test]
            used = None if model.inducing_ is None else int(model.inducing_.shape[0])
            rows.append(
                {
                    "n": int(n),
                    "method": model.method_,
                    "inducing": m,
                    "inducing_used": used,
                    "mae": float(np.abs(err).mean()),
                    "rmse": float(np.sqrt((err**2).mean())),
                    "seconds": time.perf_counter() - t0,
                    "exact_bytes": exact_memory_bytes(int(n), len(test), features.shape[1]),
                }
            )
            emit(
                log,
                _log,
                f"n={n} {model.method_}{'' if m is None else f' m={m}'}: MAE {rows[-1]['mae']:.4f} "
                f"({rows[-1]['seconds']:.1f} s)",
            )
    return rows


def markdown(rows: list[dict], title: str) -> str:
    """The table of :func:`sparse_accuracy`'s rows, with the change against exact per n."""
    exact = {r["n"]: r for r in rows if r["method"] == "exact"}
    lines = [
        f"# {title}",
        "",
        "| labelled n | method | test MAE | vs exact | test RMSE | vs exact | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = exact[r["n"]]
        name = (
            "exact"
            if r["method"] == "exact"
            else f"SGPR, m = {r['inducing_used']}"
            + (f" (asked {r['inducing']}, capped at the fit points)" if r["inducing_used"] != r["inducing"] else "")
        )
        lines.append(
            f"| {r['n']} | {name} | {r['mae']:.4f} | {100 * (r['mae'] / e['mae'] - 1):+.1f}% | "
            f"{r['rmse']:.4f} | {100 * (r['rmse'] / e['rmse'] - 1):+.1f}% | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from alkernels.experiments.gp_regression.grid import PRESETS, load_data
    from alkernels.gp import Embedding

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="perovskite-composition", choices=sorted(PRESETS))
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--features", default=None, help="a .npy of features [N, d] instead of the preset's embedding")
    p.add_argument("--sizes", default="606,2000,6058", help="labelled-set sizes (capped at the pool)")
    p.add_argument("--inducing", default="128,256,512,1024")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    configure_cli(0)
    preset = PRESETS[args.preset]
    data = load_data(preset, args.data_dir, cache_dir=args.cache_dir, workers=1)
    if args.features:
        features = np.load(user_path(args.features))
        source = Path(args.features).name
    else:
        if preset.embedding != "composition":
            raise ValueError("give --features for a trained embedding (e.g. a grid's cache/embedding-*.npy)")
        features = Embedding("composition")(data.dataset, np.empty(0, dtype=np.int64))
        source = "composition"
    sizes = [min(int(s), len(data.train)) for s in args.sizes.split(",")]
    rows = sparse_accuracy(
        features, data.y, data.train, data.test, sizes=sizes, inducing=[int(m) for m in args.inducing.split(",")]
    )
    out = user_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": data.name, "target": data.target, "features": source, "n_test": len(data.test), "rows": rows}
    (out / "sparse.json").write_text(json.dumps(meta, indent=1))
    (out / "sparse.md").write_text(
        markdown(
            rows,
            f"Exact GP against SGPR: {data.name}, `{data.target}`, "
            f"features `{source}`, {len(data.test)} test structures",
        )
        + "\n"
    )
    print((out / "sparse.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
