"""hpa: Human Protein Atlas single-cell classification."""

import os

# Albumentations phones home for updates on import; Kaggle notebooks have no network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
