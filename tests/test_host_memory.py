"""lmjax.train.memory.release_freed_host_memory hands freed heap pages back to the OS."""
import os

import pytest

from lmjax.train import memory


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm") or memory._malloc_trim() is None,
                    reason="needs Linux's /proc and glibc's malloc_trim")
def test_freed_pages_between_live_blocks_go_back_to_the_os():
    # 64 MiB in 8 KiB blocks, below glibc's mmap threshold, so they come from the heap; every
    # 64th stays alive, so the freed pages lie between live blocks, where glibc's own trimming
    # (of the heap's top only) never reaches: the compiler leaves the heap this way.
    blocks = [bytearray(8192) for _ in range(8192)]
    kept = blocks[::64]
    del blocks
    before = resident_mib()
    memory.release_freed_host_memory()
    after = resident_mib()
    assert before - after > 32, (before, after)
    assert len(kept) == 128
