"""The Lightning module, callbacks and the end-of-run outputs (metrics.json, model/)."""
