"""The process's own (host) memory: handing freed pages back, and how glibc's allocator behaves.

On CPU the device is the host, so this is where XLA's buffers live too. Both knobs act through
glibc (malloc_trim, mallopt) and do nothing on a C library without them (macOS, musl).
"""
import ctypes
import ctypes.util
import functools

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


@functools.cache
def glibc():
    """The C library if it is glibc (it has malloc_trim and mallopt), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def release_freed_host_memory() -> None:
    """Returns the host memory the process has freed to the OS.

    XLA's compiler allocates and frees a few hundred MiB per compile (about 300 MiB for the baby
    shakespeare_char step); glibc keeps those pages mapped, so each later compile, eval or save
    adds to the peak instead of reusing them. Called after each compile, it keeps the peak at the
    largest single compile's. Device memory is untouched.
    """
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _system() -> None:
    """glibc as configured: large blocks mmapped and unmapped on free, the heap's top trimmed."""


def _retain() -> None:
    """Keeps freed memory in the process: no mmapped blocks (so no unmapping on free), no automatic
    trimming of the heap, one arena. XLA:CPU frees its scratch buffers after every step; by
    default glibc unmaps them and the next step page-faults them back in. On one machine that
    cost small steps 20-30% of their time, on another nothing (README, Benchmarks). The trims
    of release_freed_host_memory still happen, so the peak stays the largest compile's."""
    libc = glibc()
    if libc is None:
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # the largest value (a C int) it takes
    libc.mallopt(_M_ARENA_MAX, 1)


# train.host_allocator: how glibc's allocator treats memory the process frees.
HOST_ALLOCATORS = {"system": _system, "retain": _retain}


def configure_host_allocator(name: str) -> None:
    """Applies HOST_ALLOCATORS[name]; first thing in a run, before XLA starts its threads (each
    thread's arena is fixed when it first allocates)."""
    HOST_ALLOCATORS[name]()
