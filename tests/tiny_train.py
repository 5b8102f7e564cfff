"""The overrides of a seconds-long CPU training run, shared by every test that trains."""

from __future__ import annotations


def tiny(data_root, out, *extra: str, batch_size: int = 8, n_folds: int = 4) -> list[str]:
    """Overrides for a seconds-long CPU run on the tiny synthetic set: test_resnet at 32 px, one
    epoch, CSV logs, no pictures (report=false), into `out` (None: no paths.output_dir, the caller sets it), then `extra`."""
    return [
        f"data.root={data_root}",
        "data.synthetic=null",
        "data.image_size=32",
        f"data.batch_size={batch_size}",
        "data.num_workers=0",
        f"data.n_folds={n_folds}",
        "model.backbone=test_resnet",
        "model.pretrained=false",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "logger=csv",
        # No pictures: drawing them is most of a tiny run's time; tests of plots/ and
        # report.html ask for them with report=true.
        "report=false",
        *([] if out is None else [f"paths.output_dir={out}"]),
        *extra,
    ]
