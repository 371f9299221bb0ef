"""Run the README's dry-run command many times in a row and count clean exits.

    python -m bench.dryrun_soak [RUNS]      (make soak: 100 runs)

Every run must exit 0 with a complete report: the check for the old PyGILState_Release
abort while Python finalized (exit 134/139 after the report was printed).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "playbooks" / "scenarios" / "legal-silent-exec-rejects.yaml"


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else 100
    crisis = shutil.which("crisis") or str(Path(sys.executable).parent / "crisis")
    codes: Counter[int] = Counter()
    first_failure = ""
    started = time.monotonic()
    for _ in range(runs):
        done = subprocess.run([crisis, "dry-run", str(SCENARIO)], capture_output=True,
                              text=True, timeout=300, check=False)
        complete = "TIMELINE" in done.stdout and "Fatal Python error" not in done.stderr
        codes[done.returncode if complete else -1] += 1
        if (not complete or done.returncode) and not first_failure:
            first_failure = f"exit {done.returncode}: {done.stderr.strip()[-1500:]}"
    elapsed = time.monotonic() - started
    print(f"dry-run soak: {runs} runs in {elapsed:.0f}s, exit codes {dict(codes)} "
          "(-1: incomplete report or a fatal error)")
    if first_failure:
        print(f"first failure: {first_failure}")
    return 0 if codes == Counter({0: runs}) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
