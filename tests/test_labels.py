import numpy as np
import pytest

from hpa.errors import InputError
from hpa.labels import CLASS_NAMES, NUM_CLASSES, format_labels, parse_labels, to_multi_hot


def test_nineteen_classes_with_competition_names():
    assert NUM_CLASSES == 19
    assert CLASS_NAMES[0] == "Nucleoplasm"
    assert CLASS_NAMES[17] == "Vesicles and punctate cytosolic patterns"
    assert CLASS_NAMES[18] == "Negative"


def test_parse_sorts_and_deduplicates():
    assert parse_labels("8|5|0") == [0, 5, 8]
    assert parse_labels("17|17") == [17]  # the real train.csv has such rows
    assert parse_labels(" 3 ") == [3]
    assert parse_labels(16) == [16]


def test_format_round_trips():
    assert format_labels([8, 0, 5]) == "0|5|8"
    assert parse_labels(format_labels([1, 2, 3])) == [1, 2, 3]


@pytest.mark.parametrize("text", ["19", "0|42", "-1", "a|b", "", "0,1", "18|0"])
def test_invalid_labels_name_the_value(text):
    with pytest.raises(InputError) as err:
        parse_labels(text, where="train.csv row 7")
    assert "train.csv row 7" in str(err.value)


def test_negative_alone_is_valid():
    assert parse_labels("18") == [18]


def test_multi_hot():
    target = to_multi_hot([0, 18])
    assert target.shape == (19,) and target.dtype == np.float32
    assert target.sum() == 2 and target[0] == 1 and target[18] == 1
