"""Kaggle delivery: the offline wheel bundle, dataset/kernel metadata, and Kaggle's package list.

`python -m hpa.kaggle bundle --out DIR` is the entry point; see `__main__.py`.
"""
