"""Pictures of what a model sees and says: cell outlines over composites (draw), HTML reports
of a training run or a benchmark (report). Used by `python -m hpa.show`, the end of
`hpa.train` and the explore notebook; nothing here needs a network or a server."""
