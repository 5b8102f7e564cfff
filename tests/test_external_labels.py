"""Label mapping of external data: HPA location names, ids, unknown labels, the 2018 classes."""

from __future__ import annotations

import pandas as pd
import pytest

from hpa.errors import InputError
from hpa.external.labels import CLASSES_2018, MAP_2018, LabelMapper, translate_2018, translate_names
from hpa.external.listing import read_listing, sample_id, url_stem
from hpa.labels import CLASS_NAMES


def test_every_class_name_maps_to_its_id_case_and_spacing_aside():
    for i, name in enumerate(CLASS_NAMES):
        assert translate_names(name) == ([i], [])
        assert translate_names(f"  {name.upper().replace(' ', '  ')} ") == ([i], [])


@pytest.mark.parametrize(
    ("text", "ids", "unmapped"),
    [
        ("Nucleoplasm,Cytosol", [0, 16], []),
        ("0|16", [0, 16], []),
        ("16;0", [0, 16], []),
        ("Vesicles,Endosomes,Lysosomes,Peroxisomes,Lipid droplets,Cytoplasmic bodies", [17], []),
        ("Focal adhesion sites|Actin filaments", [9], []),
        ("Centriolar satellite,Cell Junctions", [12, 13], []),
        ("No staining", [18], []),
        ("Nucleoplasm,Rods & Rings,Midbody", [0], ["Rods & Rings", "Midbody"]),
        ("19|0", [0], ["19"]),
        ("", [], []),
    ],
)
def test_translate_names(text, ids, unmapped):
    assert translate_names(text) == (ids, unmapped)


def test_mapper_policies_count_what_they_drop():
    strict = LabelMapper(translate_names, "drop_sample")
    loose = LabelMapper(translate_names, "drop_label")
    texts = ["Nucleoplasm,Rods & Rings", "Rods & Rings", "Cytosol", "", "No staining,Cytosol"]
    assert [strict(t) for t in texts] == [None, None, "16", None, None]
    assert [loose(t) for t in texts] == ["0", None, "16", None, None]
    assert strict.n_dropped == 4 and loose.n_dropped == 3
    assert strict.dropped_samples["unmapped label 'Rods & Rings'"] == 2
    assert loose.dropped_labels == {"Rods & Rings": 2}
    assert loose.dropped_samples == {
        "no label left": 1,
        "no label": 1,
        "Negative combined with other labels": 1,
    }
    with pytest.raises(InputError, match="unmapped_labels='keep'"):
        LabelMapper(translate_names, "keep")


def test_2018_mapping_table():
    assert len(CLASSES_2018) == 28
    unmapped = {CLASSES_2018[i] for i, cls in MAP_2018.items() if cls is None}
    assert unmapped == {"Microtubule ends", "Cytokinetic bridge", "Rods & rings"}
    expected = {
        0: 0,
        1: 1,
        2: 2,
        3: 3,
        4: 4,
        5: 5,
        6: 6,
        7: 7,
        8: 17,
        9: 17,
        10: 17,
        11: 8,
        12: 9,
        13: 9,
        14: 10,
        17: 11,
        18: 12,
        19: 12,
        20: 17,
        21: 13,
        22: 13,
        23: 14,
        24: 15,
        25: 16,
        26: 17,
    }
    assert {i: c for i, c in MAP_2018.items() if c is not None} == expected
    assert translate_2018("25 0 8 10") == ([0, 16, 17], [])
    assert translate_2018("16 0 27") == ([0], ["Cytokinetic bridge", "Rods & rings"])
    for bad in ("28", "0|5", "x"):
        with pytest.raises(InputError, match="not a class id"):
            translate_2018(bad)


def test_ids_come_from_the_url_stem():
    stem = "https://images.proteinatlas.org/10005/1054_E4_1"
    assert sample_id(stem) == "10005_1054_E4_1"
    for url in (
        stem + "_blue_red_green.jpg",
        stem + "_green.JPG",
        stem + "_red.tif.gz",
        stem + "  ",
    ):
        assert url_stem(url) == stem
    assert sample_id("images.proteinatlas.org/1/2") is None
    assert sample_id("https://example.org/") is None


def test_listing_auto_detects_columns_and_drops_duplicates(tmp_path):
    rows = [
        (
            "https://images.proteinatlas.org/7/1_A1_1",
            "Nucleoli|Cytosol",
            "HPA000007",
            "A549",
            "False",
        ),
        (
            "https://images.proteinatlas.org/7/1_A1_1_red.jpg",
            "Cytosol",
            "HPA000007",
            "A549",
            "False",
        ),
        ("https://images.proteinatlas.org/8/2_B2_1", "Mitochondria", "HPA000008", "U-2 OS", "True"),
        ("ftp://images.proteinatlas.org/9/3_C3_1", "Mitochondria", "", "U-2 OS", "False"),
        ("https://images.proteinatlas.org/10/4_D4_1", "Kinetochore", "", "HeLa", "False"),
        ("https://images.proteinatlas.org/11/5_E5_2", "Aggresome", "", "HeLa", "False"),
    ]
    frame = pd.DataFrame(rows, columns=["url", "Target", "antibody", "cell_line", "in_trainset"])
    frame.to_csv(tmp_path / "list.csv", index=False)
    listing = read_listing(
        tmp_path / "list.csv", columns={}, unmapped_labels="drop_sample", skip_in_trainset=True
    )
    assert listing.samples["ID"].tolist() == ["7_1_A1_1", "11_5_E5_2"]
    assert listing.samples["Label"].tolist() == ["2|16", "15"]
    assert listing.samples["group"].tolist() == ["HPA000007", "11"]  # else the URL's folder
    assert listing.samples["Cellline"].tolist() == ["A549", "HeLa"]
    assert listing.n_dropped == 4
    assert listing.dropped["duplicate row"] == 1
    assert listing.dropped["already in the competition train set (in_trainset)"] == 1
    assert listing.dropped["not an http(s) URL"] == 1
    assert listing.dropped["unmapped label 'Kinetochore'"] == 1

    kept = read_listing(
        tmp_path / "list.csv",
        columns={"group": None},
        unmapped_labels="drop_sample",
        skip_in_trainset=False,
        cell_lines=["u-2 os"],
    )
    assert kept.samples["ID"].tolist() == ["8_2_B2_1"]
    with pytest.raises(InputError, match="no column 'Image'"):
        read_listing(
            tmp_path / "list.csv",
            columns={"image": "Image"},
            unmapped_labels="drop_sample",
            skip_in_trainset=True,
        )
    pd.DataFrame({"url": ["https://x.org/1/a"]}).to_csv(tmp_path / "nolabel.csv", index=False)
    with pytest.raises(InputError, match="no label column"):
        read_listing(
            tmp_path / "nolabel.csv",
            columns={},
            unmapped_labels="drop_sample",
            skip_in_trainset=True,
        )
