"""convert2018, merging data roots, and grouped folds: the merged root is an ordinary data set."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hpa.cli import compose
from hpa.data.folds import grouped_stratified_folds
from hpa.data.images import CHANNELS, read_sample
from hpa.external.__main__ import main
from hpa.pipeline import build_datamodule
from hpa.synthetic import SyntheticConfig, generate_dataset
from procs import child_env

SIZE = 64


def write_root(root: Path, table: pd.DataFrame, image_for) -> Path:
    """A data root: train.csv plus four grayscale PNGs per row, pixels from image_for(ID)."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    for sid in table["ID"]:
        image = image_for(sid)
        for c, channel in enumerate(CHANNELS):
            cv2.imwrite(str(root / "train" / f"{sid}_{channel}.png"), image[..., c])
    table.to_csv(root / "train.csv", index=False)
    return root


def noise(sid: str, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(abs(hash(sid)) % 2**32).integers(
        0, 256, (size, size, 4), dtype=np.uint8
    )


def test_convert2018_maps_labels_and_links_or_resizes(tmp_path, capsys):
    ids = ["a-1", "b-2", "c-3", "d-4"]
    table = pd.DataFrame({"Id": ids, "Target": ["25 0", "16", "8 27", "23"]})
    images = write_root(tmp_path / "2018", table.rename(columns={"Id": "ID"}), noise) / "train"
    table.to_csv(tmp_path / "2018" / "train.csv", index=False)
    (images / "d-4_yellow.png").unlink()
    args = [f"csv={tmp_path / '2018' / 'train.csv'}", f"images={images}", "progress=false"]

    main(["convert2018", *args, f"out={tmp_path / 'same'}", f"size={SIZE}"])
    out = pd.read_csv(tmp_path / "same" / "train.csv", dtype=str)
    assert dict(zip(out["ID"], out["Label"], strict=True)) == {"a-1": "0|16", "c-3": "17"}
    printed = capsys.readouterr().out
    assert "no label left: 1" in printed and "Rods & rings: 1" in printed
    assert "1 samples with unusable images left out, e.g. d-4" in printed
    for channel in CHANNELS:  # already 64 px grayscale PNG: hard-linked, not re-encoded
        assert os.path.samefile(
            images / f"a-1_{channel}.png", tmp_path / "same" / "train" / f"a-1_{channel}.png"
        )

    main(
        [
            "convert2018",
            *args,
            f"out={tmp_path / 'small'}",
            "size=32",
            "convert2018.unmapped_labels=drop_sample",
        ]
    )
    out = pd.read_csv(tmp_path / "small" / "train.csv", dtype=str)
    assert out["ID"].tolist() == ["a-1"]
    assert read_sample(tmp_path / "small" / "train", "a-1").shape == (32, 32, 4)
    assert "4 converted" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "small" / "train").iterdir()) == [
        f"a-1_{channel}.png" for channel in sorted(CHANNELS)
    ]  # d-4 lacks a channel: none of its files stay


@pytest.fixture()
def sources(tmp_path) -> Path:
    """data_dir with hpa/ (competition-like) and hpa_public/ (download-like, with duplicates)."""
    comp = tmp_path / "hpa"
    generate_dataset(SyntheticConfig(n_images=10, image_size=SIZE, workers=1), comp, progress=False)
    comp_table = pd.read_csv(comp / "train.csv", dtype=str)
    public = pd.DataFrame(
        {
            "ID": [f"{g}_{i}_A1_1" for i, g in enumerate([7, 7, 7, 8, 8, 9, 9, 9])]
            + [comp_table["ID"][0], "copy"],
            "Label": ["0", "16", "0|16", "2", "14", "17", "10", "12", "0", "5"],
            "group": ["7", "7", "7", "8", "8", "9", "9", "9", "1", "2"],
            "url": [f"https://images.proteinatlas.org/x/{i}" for i in range(10)],
        }
    )
    public.loc[2, "url"] = public.loc[1, "url"]  # the same image listed under two IDs

    def pixels(sid: str) -> np.ndarray:
        # "copy" is the competition's second sample byte for byte; IDs differ.
        if sid == "copy":
            return read_sample(comp / "train", comp_table["ID"][1])
        return noise(sid)

    write_root(tmp_path / "hpa_public", public, pixels)
    return tmp_path


def merged_args(data_dir: Path) -> list[str]:
    return ["merge", f"paths.data_dir={data_dir}", "progress=false"]


def test_merge_builds_one_root_without_duplicates(sources, capsys):
    main(merged_args(sources))
    printed = capsys.readouterr().out
    table = pd.read_csv(sources / "merged" / "train.csv", dtype=str, keep_default_na=False)
    assert len(table) == 10 + 7
    assert table["source"].value_counts().to_dict() == {"competition": 10, "hpa_public": 7}
    assert "copy" not in set(table["ID"]) and "7_2_A1_1" not in set(table["ID"])
    assert "hpa_public: same id: 1" in printed and "hpa_public: same url: 1" in printed
    assert "hpa_public: same sha1: 1" in printed
    for sid in table["ID"]:  # hard links: no extra disk, same pixels
        for channel in CHANNELS:
            merged = sources / "merged" / "train" / f"{sid}_{channel}.png"
            src = (
                "hpa" if table.set_index("ID").at[sid, "source"] == "competition" else "hpa_public"
            )
            assert os.path.samefile(merged, sources / src / "train" / f"{sid}_{channel}.png")

    main(merged_args(sources))
    assert "is up to date" in capsys.readouterr().out

    public = pd.read_csv(sources / "hpa_public" / "train.csv", dtype=str)
    public.drop(index=1).to_csv(
        sources / "hpa_public" / "train.csv", index=False
    )  # a sample leaves
    main(merged_args(sources))
    table = pd.read_csv(sources / "merged" / "train.csv", dtype=str)
    assert "7_1_A1_1" not in set(table["ID"]) and "7_2_A1_1" in set(
        table["ID"]
    )  # its URL twin stays
    assert not list((sources / "merged" / "train").glob("7_1_A1_1_*"))  # pruned
    assert len(list((sources / "merged" / "train").glob("7_2_A1_1_*"))) == 4


def test_merge_refuses_a_source_folder_as_target(sources, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*merged_args(sources), f"data.root={sources / 'hpa'}"])
    assert exit_info.value.code == 2
    assert "is also source 'competition'" in capsys.readouterr().err
    shutil.rmtree(sources / "hpa_public")
    with pytest.raises(SystemExit):
        main(merged_args(sources))
    assert "source 'hpa_public': missing" in capsys.readouterr().err


def test_grouped_folds_keep_groups_together():
    rng = np.random.default_rng(0)
    targets = (rng.random((300, 19)) < 0.15).astype(np.float32)
    groups = [str(i // 4) for i in range(200)] + [""] * 100  # 50 groups of 4, 100 ungrouped rows
    folds = grouped_stratified_folds(targets, groups, 5, seed=1)
    frame = pd.DataFrame({"group": groups[:200], "fold": folds[:200]})
    assert frame.groupby("group")["fold"].nunique().max() == 1
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    assert np.bincount(folds).min() >= 40  # ungrouped rows still spread over every fold


def test_merged_config_feeds_the_datamodule(sources):
    cfg = compose(
        "train",
        ["data=merged", f"paths.data_dir={sources}", f"data.image_size={SIZE}", "data.n_folds=3"],
    )
    module = build_datamodule(compose_data(cfg))  # builds the merged root on first use
    module.setup()
    records = module.records
    assert len(records) == 17 and (sources / "merged" / "merge.json").exists()
    public = records[records["source"] == "hpa_public"]
    assert public.groupby("group")["fold"].nunique().max() == 1
    image, target = module.train_set[0]
    assert tuple(image.shape) == (4, SIZE, SIZE) and target.shape[0] == 19


def compose_data(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.data, resolve=True)


@pytest.mark.slow
def test_merged_root_feeds_prepare_and_training(sources):
    env = child_env(threads=None)
    main(merged_args(sources))
    merged = sources / "merged"
    prepare = [
        sys.executable,
        "-m",
        "hpa.prepare",
        f"data.root={merged}",
        f"data.image_size={SIZE}",
    ]
    result = subprocess.run(prepare, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "17 of 17 samples" in result.stdout
    train = [
        sys.executable,
        "-m",
        "hpa.train",
        "data=merged",
        f"paths.data_dir={sources}",
        "model.backbone=resnet18",
        f"data.image_size={SIZE}",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.pin_memory=false",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "report=false",
        f"paths.output_dir={sources / 'run'}",
    ]
    result = subprocess.run(train, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (sources / "run" / "metrics.json").exists() and (sources / "run" / "model").is_dir()


def brute_force_roots(codes: list[str], max_distance: int) -> list[int]:
    ints = [int(c, 16) if c else None for c in codes]
    parent = list(range(len(codes)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(codes)):
        for j in range(i + 1, len(codes)):
            if ints[i] is None or ints[j] is None:
                continue
            if bin(ints[i] ^ ints[j]).count("1") <= max_distance:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(codes))]


@pytest.mark.parametrize("max_distance", [0, 3, 12])
def test_near_duplicate_roots_match_a_brute_force_search(max_distance):
    from hpa.external.merge import near_duplicate_roots

    rng = np.random.default_rng(max_distance)
    base = [int(x) for x in rng.integers(0, 2**63, 60)]
    codes = []
    for value in base:  # each base code plus copies 0, 2, max_distance, +1 and 20 bits away
        code = (value << 64) | int(rng.integers(0, 2**63))
        codes.append(code)
        for flips in (0, 2, max_distance, max_distance + 1, 20):
            bits = rng.choice(128, flips, replace=False)
            codes.append(code ^ sum(1 << int(b) for b in bits))
    order = rng.permutation(len(codes))
    hexes = [f"{codes[i]:032x}" for i in order] + ["", ""]  # unreadable images never match
    got = near_duplicate_roots(hexes, max_distance)
    assert got == brute_force_roots(hexes, max_distance)
    assert got[-2:] == [len(hexes) - 2, len(hexes) - 1]
    assert len(set(got)) < len(hexes)  # the copies within reach did cluster


def test_phash_finds_the_same_field_saved_smaller_as_jpg(tmp_path, capsys):
    comp = tmp_path / "hpa"
    config = SyntheticConfig(n_images=24, image_size=256, workers=1, seed=5)
    generate_dataset(config, comp, progress=False)
    comp_table = pd.read_csv(comp / "train.csv", dtype=str)
    others = tmp_path / "others"
    generate_dataset(SyntheticConfig(n_images=6, image_size=256, workers=1, seed=6), others, False)
    other_table = pd.read_csv(others / "train.csv", dtype=str)
    public = tmp_path / "hpa_public" / "train"
    public.mkdir(parents=True)
    rows = []
    for k, sid in enumerate(comp_table["ID"][:3]):  # the same fields: half size, JPG
        image = read_sample(comp / "train", sid, 128)
        for c, channel in enumerate(CHANNELS):
            jpg = public / f"public{k}_{channel}.jpg"
            cv2.imwrite(str(jpg), image[..., c], [cv2.IMWRITE_JPEG_QUALITY, 80])
        rows.append({"ID": f"public{k}", "Label": comp_table["Label"][k]})
    for sid, label in zip(other_table["ID"], other_table["Label"], strict=True):  # new fields
        for channel in CHANNELS:
            shutil.copy(
                others / "train" / f"{sid}_{channel}.png", public / f"new-{sid}_{channel}.png"
            )
        rows.append({"ID": f"new-{sid}", "Label": label})
    pd.DataFrame(rows).to_csv(tmp_path / "hpa_public" / "train.csv", index=False)

    main(merged_args(tmp_path))
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "merged" / "train.csv", dtype=str)
    assert "hpa_public: same phash: 3" in printed
    assert len(table) == 24 + 6 and not table["ID"].str.startswith("public").any()
    assert (tmp_path / "merged" / ".merge_phash.json").is_file()

    # Without phash the JPG copies are not caught: they would leak across folds.
    merge_opts = "data.merge.dedupe=[id,url,sha1]"
    main([*merged_args(tmp_path), merge_opts, f"data.root={tmp_path / 'plain'}"])
    assert len(pd.read_csv(tmp_path / "plain" / "train.csv")) == 24 + 6 + 3


def test_bad_phash_distance_exits_2(sources, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*merged_args(sources), "data.merge.phash_distance=99"])
    assert exit_info.value.code == 2
    assert "merge.phash_distance=99" in capsys.readouterr().err


def test_phash_matches_real_hpa_fields_across_encodings(real_fixtures, tmp_path, capsys):
    """The real samples as the public HPA set serves them (smaller JPG) are caught as duplicates."""
    table = pd.read_csv(real_fixtures / "train.csv", dtype=str)
    comp = tmp_path / "hpa"
    shutil.copytree(real_fixtures / "train", comp / "train")
    table.to_csv(comp / "train.csv", index=False)
    public = tmp_path / "hpa_public" / "train"
    public.mkdir(parents=True)
    for sid in table["ID"]:
        image = read_sample(real_fixtures / "train", sid, 512)
        for c, channel in enumerate(CHANNELS):
            cv2.imwrite(str(public / f"pub-{sid}_{channel}.jpg"), image[..., c])
    table.assign(ID="pub-" + table["ID"]).to_csv(tmp_path / "hpa_public" / "train.csv", index=False)
    main(merged_args(tmp_path))
    assert f"hpa_public: same phash: {len(table)}" in capsys.readouterr().out
    merged = pd.read_csv(tmp_path / "merged" / "train.csv", dtype=str)
    assert sorted(merged["ID"]) == sorted(table["ID"])
