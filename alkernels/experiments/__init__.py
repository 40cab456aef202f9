"""The studies alkernels reproduces, kept apart from the library code they run on.

Each study is a subpackage that the ``alkernels`` CLI imports (so ``alkernels reproduce`` and
``alkernels report`` work from an installed package); its README, commands and committed results
live in the repository's ``experiments/<study>/`` folder. Studies need the ``data`` and
``study`` extras.

    spacegroup     protocol A: AL for 230-class space-group classification (the paper's Table 1)
    gp_regression  protocol B: regression AL with GP uncertainty on frozen features (the ``gp`` extra)
    transfer       protocol C: pre-training, fine-tuning strategies and multi-property pre-training
"""
