import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import numpy as np
from napari_tiled_unet._malloc import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for _ in range(2):
    a = np.ones(64 << 20, np.uint8)  # one tile's activations, say
    del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(64 << 20, np.uint8)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(run.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_freed_tile_memory_is_reused_without_page_faults():
    default = _page_faults("default")  # glibc unmapped the block; it is faulted in again
    assert default >= (64 << 20) // (2 << 20)  # one fault per page, at most 2 MiB a page
    assert _page_faults("keep") < default / 10
