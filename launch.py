"""Run an artdate command here, or submit it to a Ray cluster as a job.

python launch.py <command> [options]                          # here, on an embedded local Ray
python launch.py --address http://HEAD:8265 <command> [options]  # as a Ray job on that cluster
python launch.py --address http://HEAD:8265 --no-wait <command> ...   # print the submission id
python launch.py --address http://HEAD:8265 status|logs|stop SUBMISSION_ID
"""

import argparse
import sys

JOB_VERBS = ("status", "logs", "stop")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="launch.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--address", default="", help="Ray dashboard URL of a cluster, e.g. http://HEAD:8265")
    parser.add_argument("--no-wait", action="store_true", help="submit, print the submission id, and return")
    parser.add_argument(
        "--pip",
        action="store_true",
        help="install artdate's requirements in the job's environment "
        "(not needed where the nodes have artdate installed, as with cluster/)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="an artdate command and its options")
    args = parser.parse_args(argv)
    if not args.command:
        parser.error("name a command: pack, train, score, report, predict, demo")
    if not args.address:
        from artdate.cli import main as run_here

        return run_here(args.command)

    from artdate import jobs

    if args.command[0] in JOB_VERBS:
        if len(args.command) != 2:
            parser.error(f"{args.command[0]} takes one submission id")
        return jobs.job_verb(args.address, *args.command)
    return jobs.submit(args.address, args.command, wait=not args.no_wait, install=args.pip)


if __name__ == "__main__":
    sys.exit(main())
