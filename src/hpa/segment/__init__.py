"""Cell segmentation behind one interface: an H x W x 4 image in, instance labels out."""

from hpa.segment.base import Segmentation, Segmenter
from hpa.segment.factory import build_segmenter, segmenter_from_config, segmenter_names

__all__ = [
    "Segmentation",
    "Segmenter",
    "build_segmenter",
    "segmenter_from_config",
    "segmenter_names",
]
