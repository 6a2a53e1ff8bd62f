"""The `course` command: one entry point for learners and instructors.

Each sub-command lives in the module of its idea; this file only wires the
arguments to them, so `course --help` is the table of contents.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="course", description="Tools of the course 'From attention to BERT and GPT'.")
    commands = parser.add_subparsers(dest="command", required=True)

    doctor = commands.add_parser("doctor", help="check that this environment can run the course")
    doctor.set_defaults(run=_run_doctor)

    exercises = commands.add_parser(
        "exercises", help="generate the exercise notebooks (or nbgrader assignments) from the solutions notebooks"
    )
    exercises_commands = exercises.add_subparsers(dest="exercises_command", required=True)
    exercises_build = exercises_commands.add_parser(
        "build", help="write exercises/NN_name.ipynb for every solutions/NN_name.ipynb"
    )
    exercises_build.add_argument(
        "--force", action="store_true", help="replace edited exercise notebooks (a backup is kept next to each)"
    )
    exercises_check = exercises_commands.add_parser(
        "check", help="fail when exercises/ is not exactly what `exercises build` would write"
    )
    for exercises_command in (exercises_build, exercises_check):
        exercises_command.add_argument(
            "--solutions", default="solutions", help="the source notebooks (default: solutions)"
        )
        exercises_command.add_argument(
            "--exercises", default="exercises", help="the generated notebooks (default: exercises)"
        )
    exercises_build.set_defaults(run=_run_exercises_build)
    exercises_check.set_defaults(run=_run_exercises_check)
    exercises_nbgrader = exercises_commands.add_parser(
        "nbgrader", help="export the solutions as nbgrader assignments: OUT/NN_name/NN_name.ipynb"
    )
    exercises_nbgrader.add_argument("--out", default="nbgrader/source",
                                    help="nbgrader's source folder (default: nbgrader/source)")
    exercises_nbgrader.add_argument("--solutions", default="solutions",
                                    help="the source notebooks (default: solutions)")
    exercises_nbgrader.add_argument("--force", action="store_true",
                                    help="replace exported notebooks that were edited since")
    exercises_nbgrader.set_defaults(run=_run_exercises_nbgrader)

    grade = commands.add_parser(
        "grade", help="grade the learners' exercise notebooks (SUBMISSIONS holds one folder per learner)"
    )
    grade.add_argument("submissions", metavar="SUBMISSIONS", help="a folder with one folder per learner")
    grade.add_argument("--out", default="grades.csv", help="the CSV of scores (default: grades.csv)")
    grade.add_argument("--feedback", metavar="FEEDBACK_DIR", help="also write one Markdown file per learner here")
    grade.add_argument("--timeout", type=_positive_number, default=60, metavar="SECONDS",
                       help="time limit of each cell (default: 60)")
    grade.add_argument("--notebook-timeout", type=_positive_number, default=300, metavar="SECONDS",
                       help="time limit of each notebook (default: 300)")
    grade.add_argument("--memory", type=_positive_number, default=4096, metavar="MiB",
                       help="memory limit of each kernel (default: 4096)")
    grade.add_argument("--workers", type=int, choices=range(1, 9), default=2, metavar="N",
                       help="notebooks run at the same time, 1 to 8 (default: 2)")
    grade.add_argument("--solutions", default="solutions", help="the instructor's notebooks (default: solutions)")
    grade.add_argument("--require-sandbox", action="store_true",
                       help="refuse to grade unless bubblewrap isolates every learner's kernel")
    grade.add_argument("--notebooks", nargs="+", metavar="NOTEBOOK",
                       help="grade only these notebooks, each by number or name (01 05_bert); all by default")
    grade.add_argument("--shard", type=_shard, metavar="i/N",
                       help="grade only the i-th of N parts of the class, split by learner name; "
                            "merge the N reports with `course gradebook`")
    grade.add_argument("--resume", action="store_true",
                       help="keep the rows of notebooks unchanged since the run that wrote --out (and its record)")
    grade.add_argument("--gradebook", metavar="FILE",
                       help="also write a gradebook: one row per learner, one column per notebook")
    grade.set_defaults(run=_run_grade)

    gradebook = commands.add_parser(
        "gradebook", help="merge grade reports (the shards of a class) into one report and a gradebook"
    )
    gradebook.add_argument("reports", nargs="+", metavar="REPORT", help="grade reports written by `course grade`")
    gradebook.add_argument("--out", default="grades.csv", help="the merged report (default: grades.csv)")
    gradebook.add_argument("--gradebook", default="gradebook.csv",
                           help="one row per learner, one column per notebook (default: gradebook.csv)")
    gradebook.set_defaults(run=_run_gradebook)

    handout = commands.add_parser(
        "handout", help="make the learners' copy of the course (no solutions/ or tests/): an archive, a branch, "
                        "and the nbgitpuller link"
    )
    handout.add_argument("--out", metavar="FILE.tar.gz", help="write the copy as a gzipped tar archive")
    handout.add_argument("--branch", metavar="NAME",
                         help="commit the copy to this branch (its own history; default with --hub: learners)")
    handout.add_argument("--hub", metavar="URL", help="the hub's address, for the nbgitpuller link")
    handout.add_argument("--repo", metavar="GIT_URL",
                         help="where learners' servers clone the branch from, for the link")
    handout.add_argument("--folder", default="course",
                         help="the folder learners get: the archive's top folder, ~/FOLDER on the hub "
                              "(default: course)")
    handout.add_argument("--from", dest="revision", default="HEAD", metavar="REVISION",
                         help="the commit to copy (default: HEAD)")
    handout.set_defaults(run=_run_handout)

    collect = commands.add_parser(
        "collect", help="copy each learner's exercise notebooks from a hub's home folders, one folder per learner"
    )
    collect.add_argument("homes", metavar="HOMES", help="the folder of the learners' homes, like /home")
    collect.add_argument("--folder", default="course",
                         help="the course's folder inside each home (default: course); notebooks are taken "
                              "from its exercises/")
    collect.add_argument("--out", default="submissions", help="one folder per learner (default: submissions)")
    collect.set_defaults(run=_run_collect)

    give_back = commands.add_parser(
        "return", help="put each learner's feedback file (FEEDBACK_DIR/<user>.md) into their course folder"
    )
    give_back.add_argument("feedback_dir", metavar="FEEDBACK_DIR", help="written by `course grade --feedback`")
    give_back.add_argument("homes", metavar="HOMES", help="the folder of the learners' homes, like /home")
    give_back.add_argument("--folder", default="course",
                           help="the course's folder inside each home (default: course); the file lands there "
                                "as feedback.md")
    give_back.set_defaults(run=_run_return)

    pretrain = commands.add_parser("pretrain", help="train a shipped checkpoint again (tiny-bert, tiny-gpt, "
                                   "or notebook 10's chat-sft and chat-reward, made from tiny-gpt)")
    pretrain.add_argument("name", choices=["tiny-bert", "tiny-gpt", "chat-sft", "chat-reward"])
    pretrain.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the shipped recipe)")
    pretrain.add_argument("--compile", action="store_true",
                          help="train through torch.compile (tiny-bert, tiny-gpt; compiling takes a minute or more)")
    pretrain.set_defaults(run=_run_pretrain)

    bench = commands.add_parser("bench", help="measure speed and quality on this machine")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    bench.add_argument("--only", nargs="+", metavar="SECTION", help="measure only these sections "
                       "(gpt, bert, generation, contention, finetune, qa, sft, chat); all of them by default")
    bench.add_argument("--compile", action="store_true",
                       help="train the models of the throughput figures through torch.compile")
    bench.set_defaults(run=_run_bench)

    return parser


def _run_pretrain(args: argparse.Namespace) -> int:
    if args.name.startswith("chat-"):
        if args.compile:
            print("course pretrain: --compile trains tiny-bert and tiny-gpt only", file=sys.stderr)
            return 2
        from course_lib.lab.chat.pipeline import remake_checkpoint

        pretrained = remake_checkpoint(args.name, steps=args.steps)
    else:
        from course_lib.lab.pretraining import pretrain

        pretrained = pretrain(args.name, steps=args.steps, compile=args.compile)
    print(f"saved {pretrained.name}: " + ", ".join(f"{k}={v:.4g}" for k, v in pretrained.metrics.items()))
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    import json

    from course_lib.tools.bench import SECTIONS, run_bench

    unknown = sorted(set(args.only or ()) - set(SECTIONS))
    if unknown:
        print(f"course bench: --only takes sections from {', '.join(SECTIONS)}; got {', '.join(unknown)}",
              file=sys.stderr)
        return 2
    results = run_bench(sections=args.only or SECTIONS, compile=args.compile)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        for group, figures in results.items():
            for name, value in _flattened(figures):
                print(f"{group:<11} {name:<40} {value:.4g}" if isinstance(value, float) else
                      f"{group:<11} {name:<40} {value}")
    return 0


def _flattened(figures: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(name, value) pairs of a section, a nested dict's names joined with dots."""
    pairs = []
    for name, value in figures.items():
        if isinstance(value, dict):
            pairs += _flattened(value, f"{prefix}{name}.")
        else:
            pairs.append((prefix + name, value))
    return pairs


def _run_doctor(args: argparse.Namespace) -> int:
    from course_lib.tools.doctor import run_doctor

    return run_doctor()


def _run_exercises_build(args: argparse.Namespace) -> int:
    from course_lib.tools.exercises import run_build_command

    return run_build_command(Path(args.solutions), Path(args.exercises), force=args.force)


def _run_exercises_check(args: argparse.Namespace) -> int:
    from course_lib.tools.exercises import run_check_command

    return run_check_command(Path(args.solutions), Path(args.exercises))


def _run_handout(args: argparse.Namespace) -> int:
    from course_lib.tools.handout import run_handout_command

    return run_handout_command(Path.cwd(), revision=args.revision, out=Path(args.out) if args.out else None,
                               branch=args.branch, hub=args.hub, repo=args.repo, folder=args.folder)


def _run_collect(args: argparse.Namespace) -> int:
    from course_lib.tools.homes import run_collect_command

    return run_collect_command(Path(args.homes), folder=args.folder, out=Path(args.out))


def _run_return(args: argparse.Namespace) -> int:
    from course_lib.tools.homes import run_return_command

    return run_return_command(Path(args.feedback_dir), Path(args.homes), folder=args.folder)


def _run_exercises_nbgrader(args: argparse.Namespace) -> int:
    from course_lib.tools.nbgrader_export import run_nbgrader_command

    return run_nbgrader_command(Path(args.solutions), Path(args.out), force=args.force)


def _positive_number(text: str) -> float:
    """An argparse type: a finite number above 0 (argparse names the option in its error)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _shard(text: str):
    """An argparse type: ``i/N`` with 1 <= i <= N."""
    from course_lib.tools.grading.shards import Shard

    try:
        return Shard.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _run_grade(args: argparse.Namespace) -> int:
    from course_lib.tools.grading import SandboxLimits, run_grade_command

    limits = SandboxLimits(cell_timeout=args.timeout, notebook_timeout=args.notebook_timeout, memory_mb=args.memory)
    return run_grade_command(
        Path(args.submissions), out=Path(args.out), feedback_dir=Path(args.feedback) if args.feedback else None,
        solutions_dir=Path(args.solutions), limits=limits, workers=args.workers, require_sandbox=args.require_sandbox,
        notebooks=args.notebooks, shard=args.shard, resume=args.resume,
        gradebook=Path(args.gradebook) if args.gradebook else None,
    )


def _run_gradebook(args: argparse.Namespace) -> int:
    from course_lib.tools.grading.gradebook import run_gradebook_command

    return run_gradebook_command([Path(report) for report in args.reports], out=Path(args.out),
                                 gradebook=Path(args.gradebook))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
