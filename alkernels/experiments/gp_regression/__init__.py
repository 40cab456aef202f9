"""Protocol B: regression active learning with GP uncertainty on frozen features (``grid``: the
presets and the resumable grid; ``report``: MAE curves, the final-MAE table and the labels each
strategy needs to reach random's final MAE)."""
