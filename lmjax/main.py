"""lmjax-train, lmjax-sample and lmjax-export. Bad input ends in one line `error: ...`, exit 2."""
import argparse
import os
import sys

from lmjax.cli import ArgumentParser, run_command
from lmjax.errors import UsageError


def parse_train_args(argv):
    from lmjax import config as config_lib
    overrides, rest = config_lib.split_overrides(argv)
    parser = argparse.ArgumentParser(prog="lmjax-train", description=(
        "Train a language model. Fields are overridden with --config.FIELD=VALUE."))
    parser.add_argument("--config", required=True,
                        help="experiments/NAME.py[:ARG], the experiment and its variant")
    parser.add_argument("--workdir", required=True, help="where checkpoints and metrics go")
    from lmjax.parallel import distributed
    distributed.add_flags(parser)
    args, unknown = parser.parse_known_args(rest)
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r}; fields are set with "
                         "--config.FIELD=VALUE")
    cfg = config_lib.load_config(args.config)
    config_lib.apply_overrides(cfg, overrides)
    return cfg, args.workdir, distributed.settings_from(args)


def train_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv

    def run():
        cfg, workdir, dist = parse_train_args(argv)
        from lmjax import validation
        from lmjax.parallel import distributed
        # Before anything touches a device: the processes must first find each other.
        distributed.initialize(dist)
        import jax
        validation.prepare(cfg, jax.device_count(),
                           log=print if jax.process_index() == 0 else lambda _: None)
        # Only a valid config creates the workdir, and a run rejected later in its setup (data
        # too short, another model's checkpoints) removes what it created: no trace behind.
        from lmjax.train import loop
        loop.run(cfg, workdir)

    run_command(run)


def sample_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser(prog="lmjax-sample", description=(
        "Continue a prompt with a KV cache: greedy (--temperature=0), temperature, top-k, top-p."))
    parser.add_argument("--model", help="a training workdir, an lmjax-export directory, or "
                        "hf:DIR (a local Hugging Face model)")
    parser.add_argument("--workdir", help="alias of --model for a training workdir")
    parser.add_argument("--prompt", action="append",
                        help="text to continue; repeat the flag for a batch of prompts")
    parser.add_argument("--max_new_tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a workdir")
    args = parser.parse_args(argv)

    def run():
        spec = args.model or args.workdir
        if not spec or (args.model and args.workdir):
            raise UsageError("give exactly one of --model=WORKDIR|hf:DIR and --workdir=WORKDIR")
        from lmjax.infer.generate import Generator, Sampling, generate_text
        sampling = Sampling(args.temperature, args.top_k, args.top_p)
        sampling.check()
        if args.max_new_tokens < 0:
            raise UsageError(f"--max_new_tokens={args.max_new_tokens}: must be >= 0")
        from lmjax.hf import load_model
        run_ = load_model(spec, args.step)
        if run_.tokenizer is None:
            raise UsageError(f"--model={spec}: has no tokenizer, so a text prompt cannot be "
                             "encoded")
        texts = generate_text(Generator(run_.cfg, run_.params), run_.tokenizer,
                              args.prompt or ["\n"], args.max_new_tokens, sampling, args.seed)
        print("\n\n".join(texts))

    run_command(run)


def export_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser(prog="lmjax-export", description=(
        "Write a checkpoint's parameters, config and tokenizer to a directory that "
        "lmjax-sample, evaluation and HF conversion read."))
    parser.add_argument("--workdir", required=True, help="a training run's workdir")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--output", required=True, help="a new directory to write")
    parser.add_argument("--format", choices=("lmjax", "hf"), default="lmjax",
                        help="lmjax: orbax params + config + tokenizer; hf: config.json + "
                             "safetensors that transformers loads (GPT-2 and LLaMA layouts)")
    args = parser.parse_args(argv)

    def run():
        from lmjax.infer.export import check_output, export
        if not os.path.isdir(args.workdir):
            raise UsageError(f"--workdir={args.workdir}: no such directory")
        from lmjax.infer.restore import is_export
        if is_export(args.workdir) and args.format == "lmjax":
            raise UsageError(f"--workdir={args.workdir}: is already an lmjax-export directory; "
                             "export from the training workdir it came from")
        check_output(args.output)
        if args.format == "hf":
            from lmjax.hf import load_model, save_hf
            run_ = load_model(args.workdir, args.step)
            save_hf(run_.cfg, run_.params, args.output, run_.tokenizer)
            return
        export(args.workdir, args.output, args.step)

    run_command(run)


if __name__ == "__main__":
    train_main()
