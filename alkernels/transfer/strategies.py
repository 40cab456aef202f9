"""Fine-tuning strategies: which parameters of a pre-trained model train, and which head starts.

Strategy names (the same strings in the API and on the command line):

==============================  ===========================================================
``scratch``                     the same architecture from random initialisation; all train
``all``                         pre-trained encoder and pre-trained head; all train
``head``                        pre-trained head trains; the whole encoder is frozen
``new_head_frozen_trunk``       a fresh head trains; the whole encoder is frozen
``new_head_frozen_embedding``   a fresh head; all trains except the atom embedding table
``last_k_layers=K``             a fresh head, the last K EGNN layers and the node projection
                                train; the atom embedding, the input Linear and the first
                                ``num_layers - K`` layers are frozen (``last_k_layers`` alone
                                means K = :data:`DEFAULT_LAST_K`)
==============================  ===========================================================

"Pre-trained head" (``all``, ``head``): the pre-trained head of the fine-tuning target when the
pre-trained model has one, else the only head of a single-target model, else (several heads,
none for the target) the head named by ``init_head``; without it such a model raises ValueError.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from alkernels.models import EGNN, PropertyRegressor
from alkernels.ops.dispatch import normalize_backend

#: Strategy names (``last_k_layers`` also takes ``=K``).
STRATEGIES: tuple[str, ...] = (
    "scratch",
    "all",
    "head",
    "new_head_frozen_trunk",
    "new_head_frozen_embedding",
    "last_k_layers",
)
#: K of a plain ``last_k_layers``.
DEFAULT_LAST_K = 2
#: Strategies that start from the pre-trained head rather than a fresh one.
REUSES_HEAD = ("all", "head")


@dataclass(frozen=True)
class Strategy:
    """A parsed strategy: ``name`` from :data:`STRATEGIES` and ``k`` (``last_k_layers`` only)."""

    name: str
    k: int | None = None

    def __str__(self) -> str:
        return f"{self.name}={self.k}" if self.name == "last_k_layers" else self.name


def parse_strategy(text: str | Strategy, *, default_k: int = DEFAULT_LAST_K) -> Strategy:
    """``"all"`` -> Strategy("all"); ``"last_k_layers=3"`` -> Strategy("last_k_layers", 3);
    ``"last_k_layers"`` -> k = ``default_k``. Raises ValueError on an unknown name or a bad K."""
    if isinstance(text, Strategy):
        return text
    name, eq, arg = str(text).strip().partition("=")
    if name not in STRATEGIES:
        raise ValueError(
            f"unknown fine-tuning strategy {text!r}; use one of {', '.join(STRATEGIES)} (last_k_layers=K for K layers)"
        )
    if name != "last_k_layers":
        if eq:
            raise ValueError(f"strategy {name!r} takes no '=' argument, got {text!r}")
        return Strategy(name)
    if eq and not arg.strip().isdigit():
        raise ValueError(f"last_k_layers=K needs a positive integer K, got {text!r}")
    k = int(arg) if eq else default_k
    if k < 1:
        raise ValueError(f"last_k_layers=K needs K >= 1, got {k}")
    return Strategy(name, k)


def _source_head(pretrained: PropertyRegressor, target: str, init_head: str | None) -> str:
    if target in pretrained.targets:
        return target
    if len(pretrained.targets) == 1:
        return pretrained.targets[0]
    if init_head is not None:
        if init_head not in pretrained.targets:
            raise ValueError(
                f"init_head {init_head!r} is not a head of the pre-trained model "
                f"(its heads: {', '.join(pretrained.targets)})"
            )
        return init_head
    raise ValueError(
        f"this strategy starts from a pre-trained head, but the pre-trained model has "
        f"{len(pretrained.targets)} heads ({', '.join(pretrained.targets)}) and none is "
        f"named {target!r}: choose one with init_head (--init-head) or use a new_head_* strategy"
    )


def frozen_prefixes(strategy: Strategy, num_layers: int) -> tuple[str, ...]:
    """Parameter-name prefixes (in a :class:`PropertyRegressor`) that ``strategy`` freezes."""
    if strategy.name in ("scratch", "all"):
        return ()
    if strategy.name in ("head", "new_head_frozen_trunk"):
        return ("encoder.",)
    if strategy.name == "new_head_frozen_embedding":
        return ("encoder.embedding.",)
    k = strategy.k or DEFAULT_LAST_K
    if k > num_layers:
        raise ValueError(f"last_k_layers={k} but the encoder has only {num_layers} layers")
    return ("encoder.embedding.", "encoder.input.", *(f"encoder.layers.{i}." for i in range(num_layers - k)))


def finetune_model(
    pretrained: PropertyRegressor | None,
    target: str,
    strategy: str | Strategy = "all",
    *,
    init_head: str | None = None,
    seed: int = 0,
    backend: str | None = None,
) -> PropertyRegressor:
    """The model to fine-tune on ``target``, with ``requires_grad`` set by ``strategy``.

    The pre-trained model is never modified: the encoder (and a reused head) are deep copies.
    Fresh parameters (a new head; everything for ``scratch``) are drawn under
    ``torch.manual_seed(seed)``. The normalisation starts at mean 0, std 1 (fitting sets it).

    Args:
        pretrained: the pre-trained :class:`PropertyRegressor`; for ``scratch`` it only supplies
            the architecture (and may be None: the default :class:`EGNN` and head).
        target: the fine-tuning property; the new model has exactly one head, named ``target``.
        strategy: a name from :data:`STRATEGIES` or a :class:`Strategy`.
        init_head: for ``all`` and ``head`` on a multi-head model without a head for ``target``:
            the pre-trained head to start from (ignored otherwise; see the module docstring).
        seed: seed of the fresh parameters.
        backend: EGNN edge-op backend of the new model (default: the pre-trained encoder's).
    """
    strat = parse_strategy(strategy)
    if pretrained is None and strat.name != "scratch":
        raise ValueError(f"strategy {strat} needs a pre-trained model")
    source = _source_head(pretrained, target, init_head) if strat.name in REUSES_HEAD else None
    torch.manual_seed(seed)
    if pretrained is None:
        encoder: EGNN = EGNN(backend=backend or "auto")
        head_args: dict = {}
    else:
        old = pretrained.encoder
        if strat.name == "scratch":
            encoder = EGNN(old.config, backend=backend or old.backend, precision=old.precision)
        else:
            encoder = copy.deepcopy(old)
            if backend is not None:
                encoder.backend = normalize_backend(backend)
        head_args = dict(hidden=pretrained.hidden, dropout=pretrained.dropout, activation=pretrained.activation)
    model = PropertyRegressor(encoder, [target], **head_args)
    if source is not None:
        model.heads[target] = copy.deepcopy(pretrained.heads[source])
    if pretrained is not None:
        model.to(next(pretrained.parameters()).device)
    frozen = frozen_prefixes(strat, encoder.config.num_layers)
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(frozen))
    return model


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model`` that will train (``requires_grad``)."""
    return [name for name, p in model.named_parameters() if p.requires_grad]
