"""From an image to per-cell class probabilities: classifiers, TTA, ensembling and combination."""
