"""Command-line entry points. Bad input ends in one line `error: ...` and exit code 2."""
import argparse
import os
import sys

from lmjax.errors import UsageError


def _fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _run(fn):
    try:
        return fn()
    except UsageError as e:
        _fail(str(e))


def parse_train_args(argv):
    from lmjax import config as config_lib
    overrides, rest = config_lib.split_overrides(argv)
    parser = argparse.ArgumentParser(prog="lmjax-train", description=(
        "Train a language model. Fields are overridden with --config.FIELD=VALUE."))
    parser.add_argument("--config", required=True,
                        help="experiments/NAME.py[:ARG], the experiment and its variant")
    parser.add_argument("--workdir", required=True, help="where checkpoints and metrics go")
    args, unknown = parser.parse_known_args(rest)
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r}; fields are set with "
                         "--config.FIELD=VALUE")
    cfg = config_lib.load_config(args.config)
    config_lib.apply_overrides(cfg, overrides)
    return cfg, args.workdir


def train_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv

    def run():
        cfg, workdir = parse_train_args(argv)
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise UsageError(f"--workdir={workdir}: exists and is not a directory")
        from lmjax import config as config_lib
        import jax
        config_lib.validate(cfg, jax.device_count())
        from lmjax.train import train
        train(cfg, workdir)

    _run(run)


def sample_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="lmjax-sample", description="Continue a prompt.")
    parser.add_argument("--workdir", required=True, help="a training run's workdir")
    parser.add_argument("--prompt", default="\n")
    parser.add_argument("--max_new_tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    def run():
        from lmjax.restore import load_run
        from lmjax.sample import sample_text
        run_ = load_run(args.workdir)
        text = sample_text(run_.model, run_.params, run_.tokenizer, args.prompt,
                           args.max_new_tokens, run_.cfg.model.max_seq_len, args.temperature,
                           args.top_k, args.seed)
        print(text)

    _run(run)


if __name__ == "__main__":
    train_main()
