"""``python -m alkernels`` (and ``torchrun ... -m alkernels``): the ``alkernels`` command."""

from alkernels.cli import main

raise SystemExit(main())
