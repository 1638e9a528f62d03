"""Mutation testing of the core files: `make mutate` (a developer tool, not part of `make test`).

Each mutant changes one thing in one function of a core file (a comparison, a boolean
operator, a `not`, a constant, an arithmetic operator, a call statement removed) and runs that
file's tests against it, in a copy of the project so the working tree is never touched. A
mutant the tests fail on is killed; one they pass on survived: either a gap in the tests or a
change nothing can observe (listed with its reason in tests/mutation_equivalents.json and not
counted). Prints the score per file and every survivor.

    python -m tests.mutate                      # every core file, up to 40 mutants each
    python -m tests.mutate journal/_chain.py --max 0 --jobs 2   # all mutants of one file

mutmut 3 was tried first: its trampolines change call frames, which the engine's call-site
and scheduling tests observe, and its stats pass failed on this code.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT]
"""Where the core files are read from: the snapshot taken when the run began (`main` sets
it), so that edits made in the working tree meanwhile never mix into a run."""

CORE: dict[str, list[str]] = {
    "replay/_session.py": [
        "tests/test_thread_scopes.py",
        "tests/test_steps.py",
        "tests/test_run.py",
        "tests/test_divergence.py",
        "tests/test_ordering.py",
        "tests/test_concurrency.py",
        "tests/test_threads.py",
        "tests/test_faults.py",
        "tests/test_interrupt.py",
        "tests/test_replay_debugging.py",
        "tests/test_as_completed.py",
        "tests/test_nested.py",
        "tests/test_cancellation.py",
        "tests/test_sitting_end.py",
        "tests/test_suspend.py",
        "tests/test_retry.py",
        "tests/test_crash_resume_property.py",
        "tests/test_adversarial.py",
        "tests/test_cancel.py",
    ],
    "replay/_steps.py": [
        "tests/test_steps.py",
        "tests/test_divergence.py",
        "tests/test_fingerprints.py",
        "tests/test_retry_timing.py",
        "tests/test_exceptions.py",
        "tests/test_run.py",
        "tests/test_threads.py",
        "tests/test_faults.py",
        "tests/test_interrupt.py",
        "tests/test_nested.py",
        "tests/test_value_fidelity.py",
        "tests/test_secrets.py",
        "tests/test_retry.py",
        "tests/test_adversarial.py",
        "tests/test_cancellation.py",
        "tests/test_sitting_end.py",
    ],
    "replay/_context.py": [
        "tests/test_thread_scopes.py",
        "tests/test_concurrency.py",
        "tests/test_threads.py",
        "tests/test_steps.py",
        "tests/test_as_completed.py",
        "tests/test_interrupt.py",
        "tests/test_cancellation.py",
        "tests/test_nested.py",
        "tests/test_sitting_end.py",
        "tests/test_adversarial.py",
    ],
    "journal/_codec.py": [
        "tests/test_codec.py",
        "tests/test_value_fidelity.py",
        "tests/test_fingerprints.py",
        "tests/test_known_answers.py",
        "tests/test_golden.py",
    ],
    "journal/_chain.py": [
        "tests/test_known_answers.py",
        "tests/test_verify.py",
        "tests/test_tamper.py",
        "tests/test_tamper_forgeries.py",
        "tests/test_golden.py",
        "tests/test_export.py",
    ],
    "journal/_verify.py": [
        "tests/test_verify.py",
        "tests/test_tamper.py",
        "tests/test_tamper_forgeries.py",
        "tests/test_golden.py",
        "tests/test_export.py",
        "tests/test_cli_audit.py",
    ],
    "journal/_redact.py": ["tests/test_redaction.py", "tests/test_secrets.py"],
    "journal/stores/_sqlite.py": [
        "tests/test_store_contract.py",
        "tests/test_faults.py",
        "tests/test_read_only.py",
        "tests/test_ownership.py",
        "tests/test_tamper.py",
        "tests/test_tamper_forgeries.py",
        "tests/test_suspend.py",
        "tests/test_worker.py",
        "tests/test_retry.py",
        "tests/test_cancel.py",
        "tests/test_export.py",
    ],
}
"""Each core file and the tests that should notice a change in it."""

EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.json")

_COMPARE_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BINOP_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
}
_QUIET_CALLS = ("log.", "logger.", "warnings.warn")
"""Calls whose removal changes only what is logged: not mutated."""


@dataclass(frozen=True)
class Mutant:
    file: str
    index: int
    """Which mutation point of the file, in `ast.walk` order (stable for unchanged source)."""
    line: int
    function: str
    change: str

    @property
    def ident(self) -> str:
        return f"{self.file}:{self.function}:{self.change}"


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """Every function body in the module, with its qualified name."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                yield name, child
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")

    yield from walk(tree, "")


def _points(tree: ast.Module) -> Iterator[tuple[str, ast.AST, str]]:
    """(function, node, change) for every place a mutation applies, in a stable order."""
    for function, body in _functions(tree):
        assert isinstance(body, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in _body_nodes(body):
            if isinstance(node, ast.Compare):
                for position, op in enumerate(node.ops):
                    if type(op) in _COMPARE_SWAP:
                        swapped = _COMPARE_SWAP[type(op)].__name__
                        yield function, node, f"compare#{position}:{type(op).__name__}->{swapped}"
            elif isinstance(node, ast.BoolOp):
                yield function, node, f"boolop:{type(node.op).__name__}"
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                yield function, node, "not:removed"
            elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
                yield function, node, f"binop:{type(node.op).__name__}"
            elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAP:
                yield function, node, f"augassign:{type(node.op).__name__}"
            elif isinstance(node, ast.Constant):
                if isinstance(node.value, bool):
                    yield function, node, f"constant:{node.value}->{not node.value}"
                elif isinstance(node.value, int) and not isinstance(node.value, bool):
                    yield function, node, f"constant:{node.value}->{node.value + 1}"
            elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                called = ast.unparse(node.value.func)
                if not called.startswith(_QUIET_CALLS):
                    yield function, node, f"call-removed:{called}"


def _body_nodes(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """Nodes of the function's own body: not its annotations, not nested functions."""
    pending: list[ast.AST] = list(function.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.AnnAssign):
            pending.extend(n for n in (node.target, node.value) if n is not None)
            continue
        yield node
        pending.extend(ast.iter_child_nodes(node))


def mutants(file: str) -> list[Mutant]:
    """Every mutant of `file`. A change made more than once in one function is numbered
    (`...#2`), so that each has its own stable name for tests/mutation_equivalents.json."""
    tree = ast.parse((SOURCES[0] / file).read_text())
    seen: dict[tuple[str, str], int] = {}
    found = []
    for index, (function, node, change) in enumerate(_points(tree)):
        count = seen[function, change] = seen.get((function, change), 0) + 1
        named = change if count == 1 else f"{change}#{count}"
        found.append(Mutant(file, index, getattr(node, "lineno", 0), function, named))
    return found


def mutated_source(mutant: Mutant) -> str:
    tree = ast.parse((SOURCES[0] / mutant.file).read_text())
    for index, (_, node, change) in enumerate(_points(tree)):
        if index == mutant.index:
            _apply(node, change)
            return ast.unparse(tree)
    raise LookupError(mutant)


def _apply(node: ast.AST, change: str) -> None:
    if isinstance(node, ast.Compare):
        position = int(change.split("#")[1].split(":")[0])
        node.ops[position] = _COMPARE_SWAP[type(node.ops[position])]()
    elif isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif isinstance(node, ast.UnaryOp):
        replacement = copy.copy(node.operand)
        node.__class__ = ast.Call  # `not x` -> `bool(x)`: the same value, no longer negated
        node.__dict__.clear()
        node.__dict__.update(
            func=ast.Name("bool", ast.Load()), args=[replacement], keywords=[], lineno=0
        )
    elif isinstance(node, ast.BinOp | ast.AugAssign):
        node.op = _BINOP_SWAP[type(node.op)]()
    elif isinstance(node, ast.Constant):
        node.value = (not node.value) if isinstance(node.value, bool) else node.value + 1
    elif isinstance(node, ast.Expr):
        node.value = ast.Constant(None)


def _run_tests(copy_root: Path, tests: list[str], timeout: float) -> str:
    """'killed', 'survived' or 'timeout' for the project in `copy_root`."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(
            command,
            cwd=copy_root,
            env=_environment(copy_root),
            capture_output=True,
            timeout=timeout,
            check=False,
            preexec_fn=_default_sigint,
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    if done.returncode != 0:
        _last_failure[str(copy_root)] = (done.stdout + done.stderr).decode(errors="replace")
    return "survived" if done.returncode == 0 else "killed"


_last_failure: dict[str, str] = {}
"""The output of the last failing test run in each copy (shown when a baseline fails)."""


def _default_sigint() -> None:
    """A shell starts a background job with Ctrl+C ignored, and children inherit that: the
    tests of Ctrl+C would see their workers ignore it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _environment(copy_root: Path) -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(copy_root)}


def _copy_project(into: Path, source: Path) -> Path:
    target = into / "project"
    shutil.copytree(
        source,
        target,
        ignore=shutil.ignore_patterns(".git", ".venv*", "__pycache__", ".journal", "*.egg-info"),
    )
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("files", nargs="*", default=list(CORE), help="Core files to mutate.")
    parser.add_argument("--max", type=int, default=40, help="Mutants per file (0: all).")
    parser.add_argument("--jobs", type=int, default=2, help="Mutants tested at once.")
    parser.add_argument("--seed", type=int, default=7, help="Which mutants --max samples.")
    parser.add_argument(
        "--only", action="append", default=[], help="Test just this mutant (its name, as printed)."
    )
    arguments = parser.parse_args()
    equivalent: dict[str, str] = json.loads(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else {}
    unknown = [f for f in arguments.files if f not in CORE]
    if unknown:
        raise SystemExit(f"not a core file: {', '.join(unknown)}; core files: {', '.join(CORE)}")
    with tempfile.TemporaryDirectory(prefix="mutate-") as scratch:
        SOURCES[0] = _copy_project(Path(scratch) / "snapshot", ROOT)  # never mutated
        copies = [_copy_project(Path(scratch) / str(n), SOURCES[0]) for n in range(arguments.jobs)]
        totals = {"killed": 0, "survived": 0, "equivalent": 0}
        for file in arguments.files:
            chosen = mutants(file)
            if arguments.only:
                chosen = [m for m in chosen if m.ident in arguments.only]
                if not chosen:
                    continue
            elif arguments.max and len(chosen) > arguments.max:
                chosen = sorted(
                    random.Random(f"{arguments.seed}:{file}").sample(chosen, arguments.max),
                    key=lambda m: m.index,
                )
            began = time.monotonic()
            baseline = _test_file(copies[0], file, None, 600)
            if baseline != "survived":  # once more: a timing test may fail on a busy machine
                began = time.monotonic()
                baseline = _test_file(copies[0], file, None, 600)
            if baseline != "survived":
                output = _last_failure.get(str(copies[0]), "")[-3000:]
                raise SystemExit(
                    f"{file}: its tests fail before any mutation ({baseline})\n{output}"
                )
            timeout = max(30.0, 3 * (time.monotonic() - began))
            outcomes = _test_all(copies, file, chosen, timeout)
            score = _report(file, outcomes, equivalent)
            for name in totals:
                totals[name] += score[name]
        counted = totals["killed"] + totals["survived"]
        percent = 100 * totals["killed"] / counted if counted else 100.0
        print(
            f"\nall: {totals['killed']} killed of {counted} ({percent:.1f}%), "
            f"{totals['equivalent']} equivalent not counted"
        )


def _test_file(project: Path, file: str, mutant: Mutant | None, timeout: float) -> str:
    original = (SOURCES[0] / file).read_text()
    target = project / file
    # Unmutated, the file is written back unparsed too: the baseline checks the round trip.
    source = ast.unparse(ast.parse(original)) if mutant is None else mutated_source(mutant)
    target.write_text(source)
    try:
        return _run_tests(project, CORE[file], timeout)
    finally:
        target.write_text(original)


def _test_all(
    copies: list[Path], file: str, chosen: list[Mutant], timeout: float
) -> list[tuple[Mutant, str]]:
    free = list(copies)

    def one(mutant: Mutant) -> tuple[Mutant, str]:
        project = free.pop()
        try:
            return mutant, _test_file(project, file, mutant, timeout)
        finally:
            free.append(project)

    with ThreadPoolExecutor(len(copies)) as pool:
        return list(pool.map(one, chosen))


def _report(
    file: str, outcomes: list[tuple[Mutant, str]], equivalent: dict[str, str]
) -> dict[str, int]:
    score = {"killed": 0, "survived": 0, "equivalent": 0}
    survivors = []
    for mutant, outcome in outcomes:
        if outcome in ("killed", "timeout"):
            score["killed"] += 1
        elif mutant.ident in equivalent:
            score["equivalent"] += 1
        else:
            score["survived"] += 1
            survivors.append(mutant)
    counted = score["killed"] + score["survived"]
    percent = 100 * score["killed"] / counted if counted else 100.0
    print(
        f"{file}: {score['killed']} killed of {counted} ({percent:.1f}%), "
        f"{score['equivalent']} equivalent",
        flush=True,
    )
    for mutant in survivors:
        print(f"  survived  line {mutant.line:4}  {mutant.ident}", flush=True)
    return score


if __name__ == "__main__":
    main()
