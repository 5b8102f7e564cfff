"""Cell segmentation behind one interface: an H x W x 4 image in, instance labels out."""

from hpa.segment.base import Segmentation, Segmenter
from hpa.segment.factory import SEGMENTERS, build_segmenter, segmenter_from_config

__all__ = ["SEGMENTERS", "Segmentation", "Segmenter", "build_segmenter", "segmenter_from_config"]
