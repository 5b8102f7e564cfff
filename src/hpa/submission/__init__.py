"""The competition's submission format: masks as base64(zlib(COCO RLE)), rows per sample."""

from hpa.submission.encoding import decode_binary_mask, encode_binary_mask

__all__ = ["decode_binary_mask", "encode_binary_mask"]
