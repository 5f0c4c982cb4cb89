"""XLA's persistent compilation cache for training runs (train.compile_cache_dir).

A rerun, a resumed run or a sweep point of the same shapes loads its compiled train, eval and
sampling steps from disk instead of compiling them: on the baby shakespeare_char run, the
compile goes from seconds to a fraction of one, and so does the compiler's share of the peak
host memory. Entries are keyed by the program, the devices, the flags and the jax version, so a
hit is the executable the compiler would have built.
"""
import os

import jax


def use_compile_cache(directory: str) -> str:
    """Points JAX at `directory` ("" = no cache; ~ is expanded) unless the environment already
    names one (JAX_COMPILATION_CACHE_DIR, which lmjax-sweep sets to share one across points).
    Effective only before the process's first compile. Returns the directory in use, or ""."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    if not directory:
        return ""
    directory = os.path.expanduser(directory)
    jax.config.update("jax_compilation_cache_dir", directory)
    # Cache even the small steps: the default skips compiles under a second, which are most of
    # a CPU run's and add up over a sweep.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return directory
