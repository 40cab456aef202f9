"""Study C: transfer learning (pre-train, fine-tune at several sizes, multi-property pre-training).

``study``: settings, the resumable cell grid and the pre-training cache (core); ``report``: tables
and plots (the ``study`` extra).
"""
