"""XLA's persistent compilation cache for training runs (train.compile_cache_dir).

A rerun, a resumed run or a sweep point of the same shapes loads its compiled train, eval and
sampling steps from disk instead of compiling them: a whole baby shakespeare_char run took 97.0
instead of 103.4 s, at a peak RSS of 473 instead of 581 MiB (benchmarks/train_throughput.py
--train_to_end), since the compiler's own memory is never needed. Entries are keyed by the
program, the devices, the flags and the jax version, so a hit is the executable the compiler
would have built.
"""
import os

import jax


def use_compile_cache(directory: str, dumping: bool = False) -> None:
    """Points JAX at `directory` ("" = no cache; ~ is expanded) unless the environment already
    names one (JAX_COMPILATION_CACHE_DIR, which lmjax-sweep sets to share one across points).
    `dumping` (train.xla_options names an xla_dump_* option) turns the cache off: the cache's key
    leaves those options out, so a hit would load a program without writing its dump.
    Effective only before the process's first compile."""
    if dumping:
        jax.config.update("jax_enable_compilation_cache", False)
        print("compilation cache off for this run: train.xla_options dumps every program")
        return
    from_env = os.environ.get("JAX_COMPILATION_CACHE_DIR", "")
    if not (from_env or directory):
        return
    if not from_env:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    # Cache even the small steps (unless the environment says otherwise): the default skips
    # compiles under a second, which are most of a CPU run's and add up over a sweep.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
