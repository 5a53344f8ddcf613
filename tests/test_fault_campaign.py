"""A slice of the fault campaign (benchmarks/fault_campaign.py): hostile TIFFs and model files
through the command line and ``load_model`` end in success or one line, never a traceback, a
hang or files left behind."""

import importlib.util
import sys
from pathlib import Path

import pytest

CAMPAIGN = Path(__file__).resolve().parent.parent / "benchmarks" / "fault_campaign.py"
SPECIAL = (
    "strips ImageLength=4294967295",
    "zlib-tiles ImageLength=4294967295",
    "strips ImageWidth=0",
    "zlib-strips RowsPerStrip=0",
    "zlib-tiles TileWidth=0",
    "bigtiff-tiles SamplesPerPixel=0",
    "strips BitsPerSample=12",
    "first 2 bytes",
    "BigTIFF of empty tiles claiming 200000x200000",
    "FIFO named input.tif",
    "symlink loop input.tif",
)
MODELS = (
    "base_channels 20000",
    "format_version '1'",
    "all NaN weights",
    "a pickled os.system call",
    "one missing tensor",
)


@pytest.fixture(scope="module")
def campaign():
    spec = importlib.util.spec_from_file_location("fault_campaign", CAMPAIGN)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_campaign"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("fault_campaign", None)


@pytest.mark.slow
def test_thirty_hostile_cases_end_in_success_or_one_line(campaign, tmp_path):
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    cases = campaign.build_cases(
        seed=1, tiff_cases=8, model_cases_n=31, fixtures=fixtures, bomb=False
    )
    chosen = [c for c in cases if c.name.endswith("(unmodified)")][:1]
    chosen += cases[5:13]  # the seeded mutations
    chosen += [c for c in cases if c.name in SPECIAL]
    chosen += [c for c in cases if c.name in MODELS]
    assert len(chosen) == 1 + 8 + len(SPECIAL) + 2 * len(MODELS)
    done = campaign.run_campaign(chosen, fixtures, jobs=2, timeout=60)
    bad = [
        f"[{c.outcome}] {c.name}: {c.detail}" for c in done if c.outcome not in ("success", "error")
    ]
    assert not bad, "\n".join(bad)
    assert {c.outcome for c in done if c.name in SPECIAL} == {"error"}
