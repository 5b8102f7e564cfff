"""Cell segmentation behind one interface: an H x W x 4 image in, instance labels out."""

from hpa.segment.base import Segmentation, Segmenter

__all__ = ["Segmentation", "Segmenter"]
