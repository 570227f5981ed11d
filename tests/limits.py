"""Running a piece of kpisheet in a child process under a memory and time limit.

Input that makes the code under test blow up must fail the test, not the machine: the child may
use at most :data:`MEMORY_MIB` of address space and :data:`CPU_SECONDS` of processor time,
and is killed after :data:`WALL_SECONDS`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

MEMORY_MIB = 2048
CPU_SECONDS = 60
WALL_SECONDS = 120

_PRELUDE = """\
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({memory} * 2**20, {memory} * 2**20))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu}))
import kpisheet
start = time.perf_counter()
try:
{body}
except kpisheet.KpisheetError as exc:
    print(json.dumps({{"seconds": time.perf_counter() - start, "error": str(exc)}}))
else:
    print(json.dumps({{"seconds": time.perf_counter() - start, "error": None}}))
"""


def run_limited(body: str, *args: str) -> dict[str, object]:
    """Run ``body`` (code using ``sys.argv[1:]``) in a limited child; its time and error message.

    The result holds ``seconds`` (time in ``body`` alone, without the child's start-up) and
    ``error`` (the kpisheet error's message, or ``None``). A child that crashes, exceeds a
    limit or prints a traceback fails the calling test.
    """
    code = _PRELUDE.format(
        memory=MEMORY_MIB, cpu=CPU_SECONDS, body=textwrap.indent(textwrap.dedent(body), "    ")
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=WALL_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
