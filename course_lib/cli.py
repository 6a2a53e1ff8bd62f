"""The `course` command: one entry point for learners and instructors.

Each sub-command lives in the module of its idea; this file only wires the
arguments to them, so `course --help` is the table of contents.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="course", description="Tools of the course 'From attention to BERT and GPT'.")
    commands = parser.add_subparsers(dest="command", required=True)

    doctor = commands.add_parser("doctor", help="check that this environment can run the course")
    doctor.set_defaults(run=_run_doctor)

    return parser


def _run_doctor(args: argparse.Namespace) -> int:
    from course_lib.doctor import run_doctor

    return run_doctor()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
