"""Drop-in backends for the active-learning frameworks people already run.

Each adapter is a module of its own, behind the extra named after its framework; importing it
without that framework raises an ImportError naming the extra. This package imports none of them.

``alkernels.adapters.baal`` (extra ``baal``)
    baal heuristics (``BALD``, ``Entropy``, ``Margin``, ``Certainty``, ``Variance`` and the
    predictive/expected variants) scored by the fused acquisition kernel; they subclass baal's
    ``AbstractHeuristic``, so ``ActiveLearningLoop`` takes them unchanged.
``alkernels.adapters.modal`` (extra ``modal``)
    modAL query strategies.
``alkernels.adapters.skactiveml`` (extra ``skactiveml``)
    scikit-activeml query strategies.

A plain PyTorch loop needs no adapter: feed each batch of logits to
``alkernels.acquisition.StreamingSelector`` (see ``examples/pytorch_streaming.py``).
"""
