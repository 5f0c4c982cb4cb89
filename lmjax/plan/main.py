"""`lmjax-plan`: will this config fit on a slice, how fast will it run, which layout is best.

    lmjax-plan --config=experiments/llama_8b.py --target=v5e-256 [--num_slices=N]
        [--config.FIELD=VALUE ...] [--search] [--jobs=N]

The last line printed is the JSON record. Exit status: 0 fits, 1 does not fit, 2 bad input.
"""
import sys

from lmjax.cli import ArgumentParser, run_command
from lmjax.errors import UsageError

DOES_NOT_FIT = 1


def parse_args(argv):
    from lmjax import config as config_lib
    overrides, rest = config_lib.split_overrides(argv)
    parser = ArgumentParser(prog="lmjax-plan", description=(
        "Compile the train step ahead of time for a TPU slice (or N fake CPU devices) and "
        "report per-device memory, step time, tokens/s and MFU. Fields are overridden with "
        "--config.FIELD=VALUE."))
    parser.add_argument("--config", required=True, help="experiments/NAME.py[:ARG]")
    parser.add_argument("--target", required=True,
                        help="a TPU slice (v5e-256, v5p-128, v4-64, v6e-16), a topology "
                             "(v5e:16x16, v5p:4x4x8) or cpu:N")
    parser.add_argument("--num_slices", type=int, default=1,
                        help="slices joined over the data-center network (multislice)")
    parser.add_argument("--search", action="store_true",
                        help="compile candidate layouts and rank them by estimated step time")
    parser.add_argument("--jobs", type=int, default=0,
                        help="parallel compiles for --search (default: by cores and memory)")
    args = parser.parse_args(rest)
    return args, overrides


def load(args, overrides):
    """(config, target), validated for the target's device count, before anything compiles."""
    from lmjax import config as config_lib, validation
    from lmjax.plan import planner, target as target_lib
    target = target_lib.parse(args.target, args.num_slices)
    if args.jobs < 0:
        raise UsageError(f"--jobs={args.jobs}: must be >= 0 (0 = by cores and memory)")
    planner.use_platform(target)
    cfg = config_lib.load_config(args.config)
    config_lib.apply_overrides(cfg, overrides)
    # The planner reads no data: a data path that exists only on the training machine is fine.
    data_path = cfg.data.path
    cfg.data.path = ""
    validation.prepare(cfg, target.num_devices, log=lambda _: None)
    cfg.data.path = data_path
    return cfg, target


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv

    def run():
        args, overrides = parse_args(argv)
        cfg, target = load(args, overrides)
        from lmjax.plan import planner, report
        if args.search:
            from lmjax.plan import search
            rec = search.run(cfg, target, args, overrides)
        else:
            rec = planner.plan(cfg, target, overrides)
            for line in report.lines(rec, args.config):
                print(line)
        print(report.json_line(rec), flush=True)
        if not rec["fits"]:
            sys.exit(DOES_NOT_FIT)

    run_command(run)


if __name__ == "__main__":
    main()
