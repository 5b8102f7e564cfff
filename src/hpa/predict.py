"""python -m hpa.predict models=[MODEL_DIR,...] input_dir=DIR sample_submission=FILE submission=OUT.csv

On Kaggle, `models=auto input_dir=auto sample_submission=auto` find the attached model data sets
and the competition data under /kaggle/input (hpa.kaggle.inputs; `input_root=` moves it).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hpa.cli import compose, override_key, setup_logging
from hpa.errors import InputError, exit_on_input_error
from hpa.outputs import check_output, lock
from hpa.signals import graceful_sigterm

log = logging.getLogger("hpa.predict")
REQUIRED = ("models", "input_dir", "sample_submission")
COMMAND = "hpa.predict"
RESUME_HINT = "the rows written so far are kept; run the same command to resume"


def predict(cfg: DictConfig, explicit: set[str] | None = None) -> Path:
    """Write the submission for every row of the sample submission; return its path.

    With `ensemble=FILE`, the file's settings replace the config's, except the keys in
    `explicit` (the command line's; None: every key set to other than predict.yaml's default).
    """
    apply_ensemble(cfg, explicit)
    check_required(cfg)  # before the imports below (seconds): bad input fails at once
    from hpa.threads import configure_threads

    configure_threads(cfg.get("threads"))  # every core this process may use, or threads=N
    from tqdm import tqdm

    from hpa.data.images import read_sample
    from hpa.gpu import choose_device
    from hpa.inference.classifiers import load_classifiers
    from hpa.inference.predictor import PredictOptions, Predictor
    from hpa.inference.weights import resolve_model_weights
    from hpa.models.export import model_checksums
    from hpa.segment.factory import segmenter_from_config, segmenter_label
    from hpa.submission.writer import SubmissionWriter, prediction_string, read_sample_submission

    # A GPU this torch cannot run (a P100 with a cu128 build) stops here or falls back to the
    # CPU, before any model is loaded; not at the first kernel launch.
    device = choose_device(cfg.device)
    rows = read_sample_submission(cfg.sample_submission)
    models = models_of(cfg)
    weights = resolve_model_weights(container(cfg.model_weights), models)
    used = [(m, w) for m, w in zip(models, weights, strict=True) if w > 0]  # weight 0: not run
    classifiers = load_classifiers([m for m, _ in used], device)
    for classifier, (_, weight) in zip(classifiers, used, strict=True):
        classifier.weight = weight
    segmenter = segmenter_from_config(container(cfg.segmenter))
    predictor = Predictor(classifiers, segmenter, options_from(cfg, PredictOptions))
    log.info(
        "predict: %d images, models %s (%s, weights %s) on %s, segmenter %s",
        len(rows),
        [c.name for c in classifiers],
        [c.level for c in classifiers],
        [c.weight for c in classifiers],
        device,
        segmenter_label(container(cfg.segmenter)),
    )

    fingerprint = OmegaConf.to_container(cfg, resolve=True)
    for key in ("progress", "resume", "submission"):
        fingerprint.pop(key, None)
    # What the models are, not only where: a model folder exported anew since the partial rows
    # were written must not be resumed with them.
    fingerprint["model_checksums"] = [model_checksums(m) for m in models]
    writer = SubmissionWriter(cfg.submission, rows["ID"].tolist(), fingerprint, resume=cfg.resume)
    if writer.done:
        log.info("predict: resuming after %d rows already in %s", writer.done, writer.partial)
    n_cells = 0
    # Rows go to disk one image at a time: no mask outlives its image, and a killed run resumes.
    todo = rows.iloc[writer.done :].itertuples(index=False)
    bar = tqdm(
        todo,
        total=len(rows),
        initial=writer.done,
        desc="predict",
        unit="img",
        disable=not cfg.progress,
    )
    for row in bar:
        # row.ID is checked as a name, not a path; no channel larger than the row says is decoded
        image = read_sample(cfg.input_dir, row.ID, max_pixels=row.ImageWidth * row.ImageHeight)
        if image.shape[:2] != (row.ImageHeight, row.ImageWidth):
            raise InputError(
                f"image {row.ID} in {cfg.input_dir} is {image.shape[1]}x{image.shape[0]} px but "
                f"{cfg.sample_submission} says {row.ImageWidth}x{row.ImageHeight}; fix one of them"
            )
        cells = predictor(row.ID, image)
        n_cells += len(cells.masks)
        text = prediction_string(cells.masks, cells.probs, float(cfg.min_confidence))
        writer.write(row.ID, row.ImageWidth, row.ImageHeight, text)
    out = writer.commit()
    timing = ", ".join(f"{k} {v:.3f}" for k, v in predictor.per_image_seconds().items())
    log.info("predict: seconds per image: %s", timing)
    print(f"wrote {len(rows)} rows ({n_cells} cells) to {out}")
    return out


def check_required(cfg: DictConfig) -> None:
    missing = [key for key in REQUIRED if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise InputError(
            f"missing {', '.join(missing)}; run python -m hpa.predict models=[MODEL_DIR,...] "
            "input_dir=DIR sample_submission=FILE submission=OUT.csv (or KEY=auto on Kaggle)"
        )
    find_auto_inputs(cfg)
    folder = Path(cfg.input_dir)
    if not folder.is_dir():
        from hpa.data.cache import cached_sizes

        root = folder.parent
        if cached_sizes(root, folder.name):  # a root from `hpa.kaggle data`: no raw images
            raise InputError(
                f"input_dir={folder} is missing: {root} holds only resized caches, and predict "
                "segments and encodes cells at full resolution from the raw images; get them "
                f"with `python -m hpa.kaggle data --out {root} --keep-images`"
            )
        raise InputError(
            f"input_dir={cfg.input_dir} is not a folder of {{ID}}_{{red,green,blue,yellow}} images"
        )
    check_output(
        cfg.submission,
        "submission",
        COMMAND,
        inputs=[cfg.sample_submission, cfg.input_dir, *models_of(cfg), cfg.get("ensemble")],
    )


def models_of(cfg: DictConfig) -> list[str]:
    return [str(m) for m in (cfg.models if OmegaConf.is_list(cfg.models) else [cfg.models])]


def find_auto_inputs(cfg: DictConfig) -> None:
    """Replace each `auto` of models, sample_submission and input_dir by what is attached under
    input_root, in cfg itself: a resumed run then compares the paths, not the word `auto`."""
    from hpa.kaggle.inputs import find_models, find_sample_submission, find_test_dir, is_auto

    root = cfg.get("input_root")
    models = cfg.models if isinstance(cfg.models, str) else list(cfg.models)
    if is_auto(models):
        cfg.models = [str(p) for p in find_models(root, param="models")]
        log.info("predict: models=auto found %s", list(cfg.models))
    if is_auto(cfg.sample_submission):
        cfg.sample_submission = str(find_sample_submission(root, param="sample_submission"))
        log.info("predict: sample_submission=auto found %s", cfg.sample_submission)
    if is_auto(cfg.input_dir):
        sample = Path(cfg.sample_submission)
        cfg.input_dir = str(find_test_dir(root, sample, param="input_dir"))
        log.info("predict: input_dir=auto found %s", cfg.input_dir)
    # HPA-Cell-Segmentation's weights attached (segmenter=hpacellseg or a subclass): KEY=auto.
    for key in ("nuclei_model", "cell_model"):
        if is_auto(cfg.segmenter.get(key)):
            from hpa.kaggle.inputs import find_hpacellseg_weight

            found = find_hpacellseg_weight(key, root, param=f"segmenter.{key}")
            cfg.segmenter[key] = str(found)
            log.info("predict: segmenter.%s=auto found %s", key, found)


def container(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def override_keys(argv: list[str]) -> set[str]:
    """The keys a command line sets (`+key=v`, `++key=v` and `key=v` alike)."""
    return {override_key(a) for a in argv if "=" in a}


def apply_ensemble(cfg: DictConfig, explicit: set[str] | None) -> None:
    """Copy an ensemble file's settings (hpa.ensemble) into cfg, but not over keys set explicitly."""
    if not cfg.get("ensemble"):
        return
    from hpa.config_check import check_config
    from hpa.inference.weights import read_ensemble_file

    settings = read_ensemble_file(cfg.ensemble)
    if explicit is None:  # a composed config without its command line: compare with the defaults
        defaults = compose("predict", [])
        explicit = {
            key
            for key in settings
            if OmegaConf.select(cfg, key, throw_on_missing=False)
            != OmegaConf.select(defaults, key, throw_on_missing=False)
        }
    kept = {
        k
        for k in settings
        if any(e == k or e.startswith(f"{k}.") or k.startswith(f"{e}.") for e in explicit)
    }
    for key, value in settings.items():
        if key not in kept:
            OmegaConf.update(cfg, key, value, merge=False)
    try:
        check_config(cfg, "predict")
    except InputError as err:
        raise InputError(f"ensemble={cfg.ensemble}: {err}") from None
    log.info("predict: ensemble=%s set %s", cfg.ensemble, sorted(set(settings) - kept))


def options_from(cfg: DictConfig, options_cls):
    area = cfg.downweight.area
    return options_cls(
        tta=cfg.tta if isinstance(cfg.tta, (int, str)) else list(cfg.tta),
        tta_scales=[float(s) for s in cfg.tta_scales],
        batch_size=int(cfg.batch_size),
        image_model_on_cells=bool(cfg.image_model_on_cells),
        image_model_crop=cfg.image_model_crop,
        image_model_cells=cfg.image_model_cells,
        cell_margin=float(cfg.cell_margin),
        method=cfg.combine.method,
        cell_weight=float(cfg.combine.cell_weight),
        border_weight=float(cfg.downweight.border),
        small_weight=float(cfg.downweight.small),
        small_fraction=float(cfg.downweight.small_fraction),
        area_border=area.border,
        area_interior=area.interior,
        area_reference_size=float(area.reference_size),
    )


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    cfg = compose("predict", argv)
    try:
        # One writer per submission: a second predict into it stops at once, naming this one.
        with lock(cfg.submission, "submission"), graceful_sigterm(RESUME_HINT):
            predict(cfg, explicit=override_keys(argv))
    except KeyboardInterrupt:
        print(f"interrupted: {RESUME_HINT}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
