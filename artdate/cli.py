"""The `artdate` command: one subcommand per stage, each calling one function."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from artdate.core import config
from artdate.core.options import add_arguments, from_arguments
from artdate.core.raycluster import prepare_environment


def cmd_pack(args: argparse.Namespace) -> int:
    from artdate.pack.rejects import summary_line
    from artdate.pack.run import run_pack

    settings = from_arguments(config.PackConfig, args)
    manifest = run_pack(settings, progress=not args.quiet)
    print(summary_line(manifest, settings.out))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from artdate.train.run import run_training

    best = run_training(from_arguments(config.TrainConfig, args), progress=not args.quiet, verbose=args.verbose)
    print(best)  # the last line: scripts take the best checkpoint's URL from here
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from artdate.score.run import run_scoring
    from artdate.score.score_parts import skipped_url

    settings = from_arguments(config.ScoreConfig, args)
    summary = run_scoring(settings, progress=not args.quiet, verbose=args.verbose)
    unreadable = (
        f", {summary['unreadable']} unreadable listed in {skipped_url(settings.out)}" if summary["unreadable"] else ""
    )
    print(
        f"scored {summary['rows']} works in {summary['shards']} shards ({summary['scored_now']} now{unreadable}) "
        f"with {summary['checkpoint']} -> {settings.out}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from artdate.report.run import run_report

    settings = from_arguments(config.ReportConfig, args)
    summary = run_report(settings)
    parts = []
    if summary["n"]:
        headline = summary["headline"]  # the works the model never trained on, as the page leads with
        parts.append(
            f"{summary['held_out']}: n {headline['n']}, MAE {headline['mae']:.1f} y, median "
            f"{headline['median_ae']:.1f} y, within 50 y {headline['within_50']:.0%}, bias {headline['bias']:+.1f} y"
        )
    if "undated" in summary:
        undated = summary["undated"]
        parts.append(f"works to date: n {undated['n']}, predicted {undated['pred_p10']:.0f}-{undated['pred_p90']:.0f}")
    print(f"{'; '.join(parts)} -> {settings.out}/report.html")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from artdate.score.predict import predict_images, write_results

    settings = from_arguments(config.PredictConfig, args)
    predicted, failed, level = predict_images(settings)
    for location, why in failed:
        print(f"skipped {location}: {why}", file=sys.stderr)
    if settings.out:
        write_results(settings.out, predicted, level)
        print(f"dated {len(predicted)} image(s), {len(failed)} unreadable -> {settings.out}")
        return 0
    for work in predicted:
        # The year, then the calibrated range meant to hold the true year (80% of the time by default).
        named = f"{work.location}: " if len(predicted) + len(failed) > 1 else ""
        print(f"{named}{work.year:.0f} ({work.low:.0f}-{work.high:.0f})")
        for near in work.nearest:  # --comparanda: the dated works the guess rests on
            print(
                f"  {near['neighbour_year']}  {near['neighbour_museum']} {near['neighbour_id']}  "
                f"(similarity {near['similarity']:.2f})"
            )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from artdate.demo import run_demo

    outcome = run_demo(from_arguments(config.DemoConfig, args), progress=not args.quiet, verbose=args.verbose)
    print(f"\ndata:       {outcome['data']}")
    print(
        f"validation MAE {outcome['val_mae']:.1f} years; always predicting the training median: "
        f"{outcome['median_baseline_mae']:.1f} years"
    )
    ranges = outcome["ranges"]
    if ranges:  # the validation works calibrated them: held-out coverage is bench/quality/recipes.py's to measure
        print(
            f"{ranges['level']:.0%} year ranges: {ranges['width']:.0f} years wide on average "
            f"(calibrated on the validation works: {ranges['coverage']:.0%} of them inside)"
        )
    print(f"results:    {outcome['results']} ({outcome['rows']} works)")
    print(f"report:     {outcome['report']}")
    print(f"checkpoint: {outcome['best_checkpoint']}")
    return 0


COMMANDS = {
    "pack": (config.PackConfig, cmd_pack, "pack images and labels into WebDataset shards in a store"),
    "train": (config.TrainConfig, cmd_train, "fine-tune a backbone on the shards with Ray Train (DDP)"),
    "score": (config.ScoreConfig, cmd_score, "score shards with a pool of Ray actors into a results CSV"),
    "report": (config.ReportConfig, cmd_report, "metrics, plots and an HTML page from a results CSV"),
    "predict": (config.PredictConfig, cmd_predict, "predict the year of one image"),
    "demo": (config.DemoConfig, cmd_demo, "the whole pipeline on CPU, on a synthetic corpus or a folder of images"),
}


def build_parser() -> argparse.ArgumentParser:
    # No abbreviated options: `--stor` must not quietly mean `--storage` (launch.py checks options by name).
    parser = argparse.ArgumentParser(prog="artdate", description="Date artworks from their images.", allow_abbrev=False)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (config_class, function, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        add_arguments(sub, config_class)
        sub.add_argument(
            "--quiet", action="store_true", help="no progress bars (they show only on a terminal anyway) (default: off)"
        )
        sub.add_argument(
            "--verbose",
            action="store_true",
            help="also show the Ray workers' output and Ray's own reporting and warnings (default: off)",
        )
        sub.set_defaults(function=function)
    return parser


class Terminated(Exception):
    """SIGTERM (a scheduler, `kill`, a container stopping): stop as Ctrl-C does, exit 143."""


def terminate_on_sigterm() -> None:
    """SIGTERM raises Terminated in this process's main thread. Processes forked from it (pack's
    image workers) take the default action instead: their parent stops them with SIGTERM."""
    main_pid = os.getpid()

    def stop(signum, frame) -> None:
        if os.getpid() != main_pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    signal.signal(signal.SIGTERM, stop)


# How to go on after an interruption: train continues only when asked to.
RESUME_HINT = {"train": "rerun the same command with --resume to continue from the last checkpoint"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prepare_environment()
    terminate_on_sigterm()
    try:
        return args.function(args)
    except (KeyboardInterrupt, Terminated) as stop:
        what, code = ("terminated", 143) if isinstance(stop, Terminated) else ("interrupted", 130)
        hint = RESUME_HINT.get(args.command, "rerun the same command to resume")
        print(f"artdate {args.command}: {what}; {hint}", file=sys.stderr, flush=True)
        return code
    except Exception as problem:
        known = user_error(problem)
        if known is None:
            raise
        # Problems a user can cause or fix: one line naming the file, row, URL or option; a
        # traceback would bury it.
        message, code = known
        print(f"artdate {args.command}: error: {message}", file=sys.stderr)
        return code


def user_error(problem: Exception) -> tuple[str, int] | None:
    """(one-line message, exit code) for an error a user can cause or fix, else None: 2 for bad
    input or settings, 1 for an environment that failed (a full disk, an unreachable S3)."""
    import boto3.exceptions
    import botocore.exceptions

    from artdate.core.placement import ClusterTooSmall
    from artdate.pack.rejects import NothingPacked

    if isinstance(problem, ClusterTooSmall):
        return str(problem), problem.exit_code
    if isinstance(problem, NothingPacked):  # bad input, unless a passing failure may cure it
        return str(problem), 1 if problem.transient else 2
    if isinstance(problem, (ValueError, FileNotFoundError)):
        return str(problem), 2
    if isinstance(problem, (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        return f"{problem.filename}: {problem.strerror}", 2
    if isinstance(problem, OSError) and problem.strerror:  # ENOSPC, EFBIG, EIO ...
        return f"{problem.filename or 'writing'}: {problem.strerror}; nothing unfinished was published", 1
    if isinstance(problem, botocore.exceptions.NoCredentialsError):
        return "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile or role)", 2
    if isinstance(problem, botocore.exceptions.ClientError):
        error = problem.response.get("Error", {})
        return (
            f"S3 refused {problem.operation_name} {error.get('BucketName', '')}: "
            f"{error.get('Code', '')} {error.get('Message', '')}".strip(),
            2,
        )
    if isinstance(problem, (botocore.exceptions.EndpointConnectionError, boto3.exceptions.S3UploadFailedError)):
        return f"{problem} (S3 did not answer through the retries; rerun the same command to resume)", 1
    return None


if __name__ == "__main__":
    sys.exit(main())
