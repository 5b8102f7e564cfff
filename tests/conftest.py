import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures" / "hpa_real"


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
