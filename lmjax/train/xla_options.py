"""XLA compile options for the programs a run compiles (train.xla_options).

"name=value,..." of XLA's per-compile options (its DebugOptions fields, such as
xla_backend_optimization_level), given to the train, eval, init and sampling jits through
jax.jit(compiler_options=...). Unlike XLA_FLAGS they belong to the experiment: they travel with
its config, apply from the first compile, and take part in the compilation cache's key.
"""
from lmjax.errors import ConfigError

# For programs a run uses once or briefly (the init, the end-of-run sample): compile time over
# run time. Baby's init compiles in 0.9 instead of 1.6 s and gives the same values.
COMPILE_FAST = {"xla_backend_optimization_level": 1}


def parse(text: str) -> dict:
    """{name: value} of "name=value,..."; values become bool, int or float where they read so."""
    options = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ConfigError(f"train.xla_options={text!r}: {item!r} is not name=value; write "
                              "e.g. xla_backend_optimization_level=1")
        options[name] = _value(value)
    return options


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def compiler_options(cfg, base: dict | None = None) -> dict | None:
    """The options of jax.jit(compiler_options=...) for this config (None when there are none):
    `base` (e.g. COMPILE_FAST) with the config's own options over it."""
    # .get: configs saved before the field existed (an old checkpoint's) have none.
    return {**(base or {}), **parse(cfg.train.get("xla_options", ""))} or None


def dumps(text: str) -> bool:
    """Whether the options ask XLA to dump the programs it compiles (xla_dump_to and kin)."""
    return any(name.startswith("xla_dump") for name in parse(text))


def check(text: str) -> None:
    """ConfigError unless XLA accepts every option: a compile of a scalar program (milliseconds).
    A run calls it before it compiles anything it needs or writes anything; validation only
    parses, since it also runs where jax must not start (sweep planning)."""
    options = parse(text)
    if not options:
        return
    import jax
    import jax.numpy as jnp
    try:
        jax.jit(lambda x: x + 1).lower(jnp.float32(0)).compile(compiler_options=options)
    except Exception as e:  # XLA's own message names the option and what is wrong with it
        raise ConfigError(f"train.xla_options: XLA refuses {options}: "
                          f"{str(e).splitlines()[0]}; use the names XLA_FLAGS takes, without the "
                          "leading --, and values of their types") from None
