"""A callback for subprocess tests: logs `test/worse`, a metric that gets worse every epoch."""

import pytorch_lightning as pl


class WorseMetric(pl.Callback):
    def on_validation_epoch_end(self, trainer, pl_module):
        pl_module.log("test/worse", -float(trainer.current_epoch))
