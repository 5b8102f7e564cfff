"""Backbones (timm) + head, losses, and the exported `model/` inference package."""

from hpa.models.export import export_model, load_exported
from hpa.models.factory import create_backbone
from hpa.models.net import HPANet

__all__ = ["HPANet", "create_backbone", "export_model", "load_exported"]
