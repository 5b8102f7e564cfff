import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The files that take longest (seconds on an idle 2-core box, `--durations`), in the order the
# workers should start them: longest first, so that the two finish together instead of one
# waiting while the other runs a long file it took last (the Makefile turns off pytest-xdist's
# own order, by number of tests, with --no-loadscope-reorder). The rest follow in name order.
LONGEST_FIRST = [
    "test_faults.py",  # 243 s
    "test_hpacellseg.py",  # 201
    "test_kaggle_env.py",  # 184
    "test_train_safety.py",  # 146
    "test_learning.py",  # 123, one module fixture
    "test_train.py",  # 123
    "test_launchers.py",  # 95
    "test_show.py",  # 83
    "test_benchmark.py",  # 58
    "test_entry_points.py",  # 52
    "test_doctor.py",  # 49
    "test_extending.py",  # ~40
    "test_kaggle_data.py",  # 37
    "test_config_check.py",  # 36
]
REAL_FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures" / "hpa_real"


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """The two real HPA samples (../shared/fixtures/hpa_real); skipped where absent."""
    if not (REAL_FIXTURES / "train.csv").exists():
        pytest.skip(
            f"real HPA fixtures not found at {REAL_FIXTURES} (a user's clone has no ../shared)"
        )
    return REAL_FIXTURES


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A small synthetic HPA-format set (64 px, 40 images) shared by the fast tests."""
    from hpa.synthetic import SyntheticConfig, generate_dataset

    out = tmp_path_factory.mktemp("tiny") / "data"
    generate_dataset(
        SyntheticConfig(
            n_images=40, seed=3, image_size=64, cells_per_image=(2, 4), skew=0.0, workers=1
        ),
        out,
        progress=False,
    )
    return out
