"""Drop-in backends for the active-learning frameworks people already run.

Each adapter lives in its own module and needs its framework, installed as the extra of the
same name (``alkernels.adapters.modal`` needs ``alkernels[modal]``,
``alkernels.adapters.skactiveml`` needs ``alkernels[skactiveml]``); importing one without it
raises an ImportError naming the extra.
"""
