"""lmjax.train.host_memory.release_freed_host_memory hands freed heap pages back to the OS."""
import os
import subprocess
import sys

import pytest

from lmjax.train import host_memory


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm") or host_memory.glibc() is None,
                    reason="needs Linux's /proc and glibc's malloc_trim")
def test_freed_pages_between_live_blocks_go_back_to_the_os():
    # 64 MiB in 8 KiB blocks, below glibc's mmap threshold, so they come from the heap; every
    # 64th stays alive, so the freed pages lie between live blocks, where glibc's own trimming
    # (of the heap's top only) never reaches: the compiler leaves the heap this way.
    blocks = [bytearray(8192) for _ in range(8192)]
    kept = blocks[::64]
    del blocks
    before = resident_mib()
    host_memory.release_freed_host_memory()
    after = resident_mib()
    assert before - after > 32, (before, after)
    assert len(kept) == 128


FREED_RESIDENT = """
import os, sys
from lmjax.train import host_memory
host_memory.configure_host_allocator(sys.argv[1])
def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
block = b"\\x01" * (64 << 20)  # written, so resident; far above glibc's mmap threshold
held = resident_mib()
del block
print(held - resident_mib())
"""


def freed_mib_returned(allocator: str) -> float:
    # A process of its own: the allocator setting is process-wide and cannot be undone.
    out = subprocess.run([sys.executable, "-c", FREED_RESIDENT, allocator], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/statm") or host_memory.glibc() is None,
                    reason="needs Linux's /proc and glibc's mallopt")
def test_retain_keeps_freed_blocks_that_system_returns():
    assert freed_mib_returned("system") > 60  # unmapped on free
    assert freed_mib_returned("retain") < 4  # kept for the next allocation of its size
