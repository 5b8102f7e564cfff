"""Synthetic HPA-format data with known ground truth (`python -m hpa.synthetic`)."""

from hpa.synthetic.generator import SyntheticConfig, generate_dataset, render_sample

__all__ = ["SyntheticConfig", "generate_dataset", "render_sample"]
