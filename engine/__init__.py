"""lrfr's research library: data, resolution augmentation, models, losses, training, evaluation.

Nothing here touches SQLite or draws UI; progress goes through ``engine.reporting.Reporter``.
"""

__version__ = "0.1.0"
