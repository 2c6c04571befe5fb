"""`make mutate`: mutation testing of the decision modules with mutmut.

Each module listed in tests/mutation/targets.toml is mutated on its own, in a scratch copy of the
repository under test-artifacts/mutation/work/<name>/ (mutmut wants the code under src/; ours is under
include/), and judged by the fast tests listed for it. The script prints killed/total per module and
writes every survivor with its diff to test-artifacts/mutation/survivors.txt (and per module to
survivors-<module>.txt). Mutants listed in tests/mutation/equivalent.txt are left out of the score.

Usage: python tests/mutation/run.py [--max-children N] [MODULE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ROOT / "tests" / "mutation" / "targets.toml"
EQUIVALENT = ROOT / "tests" / "mutation" / "equivalent.txt"
OUT = ROOT / "test-artifacts" / "mutation"

# mutmut's exit codes (mutmut.stats.status_by_exit_code): a timeout is a kill, the tests noticed.
KILLED = {1, 3, 24, -24, 152, 255, 36, 37}
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "mutants", ".pytest_cache")


def load_equivalent() -> set[str]:
    names = set()
    for line in EQUIVALENT.read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.add(name)
    return names


def existing(tests: list[str]) -> list[str]:
    """The listed tests that exist in this tree (an older checkout, for a before-score, lacks new ones)."""
    kept = []
    for test in tests:
        if test.startswith("-") or (kept and kept[-1] == "-k") or (ROOT / test.split("::")[0]).exists():
            kept.append(test)
        else:
            print(f"    (skipping {test}: not in this tree)", flush=True)
    return kept


def prepare(name: str, target: dict) -> Path:
    """Lay out a fresh scratch copy: src/ (= include/), tests/, dags/ and a pyproject with [tool.mutmut]."""
    work = OUT / "work" / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "include", work / "src", ignore=IGNORE)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=IGNORE)
    shutil.copytree(ROOT / "dags", work / "dags", ignore=IGNORE)
    config = {
        "source_paths": ["src"],
        "only_mutate": [f"src/{target['source']}"],
        "also_copy": ["dags"],
        "pytest_add_cli_args_test_selection": existing(target["tests"]),
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-o", "addopts="],
    }
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + "\n".join(lines) + "\n")
    return work


def selection(target: dict) -> list[str]:
    """mutmut's mutant-name globs for the module's listed functions (all of the module without a list)."""
    module = target["source"].removesuffix(".py").replace("/", ".")
    return [f"{module}.{function}__mutmut_*" for function in target.get("functions", [])]


def run_module(name: str, target: dict, max_children: int, equivalent: set[str]) -> dict:
    work = prepare(name, target)
    chosen = selection(target)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # The mutated copy must be what `import mlops` finds: mutmut puts mutants/src first on sys.path.
    # mutmut runs several pytest sessions in one process (and forks each mutant from it): the test
    # session dir that tests/conftest.py makes at import must outlive a session. It lives in work/tmp.
    (work / "tmp").mkdir()
    env.update(MLOPS_KEEP_TEST_DIR="1", TMPDIR=str(work / "tmp"))
    mutmut = Path(sys.executable).parent / "mutmut"
    started = time.monotonic()
    with open(work / "mutmut.log", "w") as log:
        proc = subprocess.run(
            [str(mutmut), "run", "--max-children", str(max_children), *chosen],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    elapsed = time.monotonic() - started
    meta_path = work / "mutants" / "src" / (target["source"] + ".meta")
    log_text = (work / "mutmut.log").read_text()
    # mutmut stops before testing when none of the tests calls the module: every mutant survives.
    uncovered = "could not find any test case for any mutant" in log_text
    if (proc.returncode != 0 and not uncovered) or not meta_path.exists():
        raise SystemExit(f"mutmut failed for {name} (exit {proc.returncode}); log tail:\n{log_text[-3000:]}")
    codes = json.loads(meta_path.read_text())["exit_code_by_key"]
    if chosen:
        codes = {k: v for k, v in codes.items() if any(fnmatch(k, pattern) for pattern in chosen)}
    if uncovered:
        codes = dict.fromkeys(codes, 33)
    survivors = sorted(k for k, code in codes.items() if code not in KILLED and k not in equivalent)
    counted = [k for k in codes if k not in equivalent]
    killed = sum(1 for k in counted if codes[k] in KILLED)
    diffs = describe(work, target["source"], survivors, codes)
    return {
        "name": name,
        "source": target["source"],
        "killed": killed,
        "total": len(counted),
        "equivalent": len(codes) - len(counted),
        "seconds": elapsed,
        "survivors": diffs,
    }


def describe(work: Path, source: str, survivors: list[str], codes: dict) -> list[str]:
    """Each survivor's status and diff, computed by mutmut in the scratch copy."""
    if not survivors:
        return []
    script = (
        "import json, sys\n"
        "from mutmut.mutation.diff_apply import get_diff_for_mutant\n"
        "names = json.loads(sys.argv[1])\n"
        "print(json.dumps([get_diff_for_mutant(n, path=sys.argv[2]) for n in names]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(survivors), f"src/{source}"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    diffs = json.loads(out.stdout)
    status = {None: "not checked", 0: "survived", 33: "no tests", 5: "no tests"}
    return [
        f"## {name} ({status.get(codes[name], f'exit {codes[name]}')})\n{diff}\n"
        for name, diff in zip(survivors, diffs, strict=True)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("modules", nargs="*", help="names from targets.toml (default: all)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--slow", action="store_true", help="also run the targets marked slow")
    parser.add_argument("--min-score", type=float, default=0.0, help="exit 1 when a module scores below")
    args = parser.parse_args()
    targets = tomllib.loads(TARGETS.read_text())["modules"]
    names = args.modules or [n for n, t in targets.items() if args.slow or not t.get("slow")]
    unknown = [n for n in names if n not in targets]
    if unknown:
        parser.error(f"unknown modules {unknown}; known: {sorted(targets)}")
    equivalent = load_equivalent()
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = []
    for name in names:
        result = run_module(name, targets[name], args.max_children, equivalent)
        results.append(result)
        score = result["killed"] / result["total"] if result["total"] else 1.0
        print(
            f"{name:18} {result['source']:34} {result['killed']:4}/{result['total']:<4} {score:6.1%}"
            f"  (+{result['equivalent']} equivalent, {result['seconds']:.0f} s)",
            flush=True,
        )
    with open(OUT / "survivors.txt", "w") as f:
        for result in results:
            header = f"# {result['name']}: {result['source']} ({len(result['survivors'])} survivors)\n\n"
            f.write(header)
            f.writelines(result["survivors"])
            # Also one file per module: runs of different modules (in parallel) keep their own.
            (OUT / f"survivors-{result['name']}.txt").write_text(header + "".join(result["survivors"]))
    (OUT / "scores.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "survivors"} for r in results], indent=2)
    )
    load = os.getloadavg()
    print(
        f"total {time.monotonic() - started:.0f} s, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f};"
        f" survivors: {OUT / 'survivors.txt'}"
    )
    low = [r["name"] for r in results if r["total"] and r["killed"] / r["total"] < args.min_score]
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
