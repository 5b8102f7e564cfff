"""Files -> records, images, folds, transforms, datasets. Imports nothing from `hpa.models`."""
