"""Many users at once: ``kpisheet serve`` on a sheet of size M driven by simulated sessions.

``make bench-app`` starts the server on loopback (the synthetic sheet of ``generate.py``, ingested
once into a SQLite store beside it), opens 50 sessions and lets each change window, as-of month,
grouping and selections a number of times, with a think time between clicks. The sessions are
websocket clients speaking Bokeh's protocol (``bokeh.protocol``), not browsers: each pulls its
document once, finds the widgets by their CSS classes, sends a ``PATCH-DOC`` that sets a widget's
value as the browser would, and waits for the server's patch that updates the table
(``tests/page_client.py``). So the browser's own work is not measured, and the clients cost the
shared cores little.

Reported:

- **round trip per interaction** (p50, p95, max): from sending the change to receiving the
  table's update, measured by the client over loopback. It includes everything the server does
  (waiting for a thread or process, the query, building the table, serialising the patch) and
  the client's receiving of the patch, so it is an upper bound of the server-side latency;
- **server time per interaction** (p50, p95): the milliseconds the app logs for each selection
  in its usage log (``auswahl``: the query and the views' update of their models, without the
  wait for the event loop or the sending of the patch);
- **memory**: the server's resident memory (all its processes; the proportional set size too,
  which counts pages shared by forked processes once) when it is ready, after one warm-up
  session (the first page imports the chart libraries once), with every session open, and
  after the sessions closed and the server destroyed them.

The load average and the CPU time of the server are printed beside the figures: the machine may
be shared. Usage: ``python benchmarks/app_load.py [--size M] [--sessions 50] [--interactions 10]
[--think-seconds 4] [--num-procs 1] [--num-threads N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from generate import DEFAULT_CACHE, SIZES, SheetFiles, generate
from tests.page_client import AS_OF, ENTITIES, GROUPING, KPIS, WINDOW, Page

from kpisheet_ui.app import TRIM_DELAYS_SECONDS

#: Seconds the server may take to start (opening the sheet from the store).
START_TIMEOUT = 300
#: Seconds one interaction may take; one without a table update by then is counted as unanswered.
INTERACTION_TIMEOUT = 60
#: The whole run stops after this many seconds, whatever happened.
RUN_TIMEOUT = 1200
#: Sessions opened at the same time (people do not all arrive in the same second).
OPENING_AT_ONCE = 5
#: Seconds the server keeps a session whose page closed (Bokeh's unused-session lifetime) plus
#: the interval of its check, plus the app's last pass of giving memory back after pages closed
#: (plus 2 s); the memory after closing is measured when this has passed.
SESSION_CLEANUP_SECONDS = 15 + 5 + max(TRIM_DELAYS_SECONDS) + 2
GIB = 1024**3
MIB = 1024**2


# -- the server --------------------------------------------------------------------------------


def ensure_store(files: SheetFiles) -> str:
    """A SQLite store with the sheet as one release, ingested once next to the Parquet file."""
    from kpisheet import ingest
    from kpisheet.store import sqlite_url

    path = files.directory / "store.db"
    if not path.exists():
        print(f"ingesting {files.observations} into {path} ...", file=sys.stderr, flush=True)
        partial = path.with_suffix(".partial.db")
        partial.unlink(missing_ok=True)
        ingest.ingest(
            files.observations,
            sqlite_url(partial),
            definitions=files.definitions,
            entities=files.entities,
        )
        partial.rename(path)
    return sqlite_url(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A ``kpisheet serve`` subprocess on loopback."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    usage_log: Path

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def pids(self) -> list[int]:
        """The server process and every process forked from it."""
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                todo += [int(child) for child in task.read_text().split()]
        return found

    def memory(self) -> dict[str, int]:
        """Resident and proportional set size of all the server's processes, in bytes."""
        rss = pss = 0
        for pid in self.pids():
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            except OSError:
                continue
            fields = {line.split(":")[0]: line.split()[1] for line in rollup[1:]}
            rss += int(fields["Rss"]) * 1024
            pss += int(fields["Pss"]) * 1024
        return {"rss": rss, "pss": pss}

    def cpu_seconds(self) -> float:
        """User and system CPU time of all the server's processes so far."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.pids():
            try:
                parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(parts[11]) + int(parts[12])) / tick
        return total

    def wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                sys.exit(f"kpisheet serve exited:\n{self.log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{self.url}/favicon.ico", timeout=5):
                    return
            except urllib.error.HTTPError:
                return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    sys.exit(f"kpisheet serve did not answer in {START_TIMEOUT} s")
                time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(
    store: str, files: SheetFiles, directory: Path, procs: int, threads: int | None
) -> Server:
    port = free_port()
    log, usage = directory / "server.log", directory / "usage.log"
    command = [
        sys.executable,
        "-m",
        "kpisheet.cli",
        "serve",
        "--port",
        str(port),
        "--address",
        "127.0.0.1",
        "--store",
        store,
        "--definitions",
        str(files.definitions),
        "--entities",
        str(files.entities),
        "--usage-log",
        str(usage),
        "--num-procs",
        str(procs),
    ]
    if threads is not None:
        command += ["--num-threads", str(threads)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    return Server(process, port, log, usage)


# -- one simulated session ---------------------------------------------------------------------


@dataclass
class Session(Page):
    """One simulated visitor: a page that makes random changes and times them."""

    rng: random.Random = field(default_factory=random.Random)
    latencies: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    unanswered: int = 0

    async def timed_open(self) -> float:
        """Open the page; seconds it took."""
        start = time.perf_counter()
        await self.open()
        return time.perf_counter() - start

    def _change(self) -> tuple[str, Any]:
        """A random change a user would make: which widget, which new value."""
        kind = self.rng.choice(
            [WINDOW, WINDOW, WINDOW, AS_OF, AS_OF, GROUPING, ENTITIES, ENTITIES, KPIS, KPIS]
        )
        widget = self.widgets[kind]
        while True:
            if kind in (ENTITIES, KPIS):
                count = self.rng.choice([0, 1, 2, 3, 5])
                new: Any = self.rng.sample(widget.options, min(count, len(widget.options)))
            else:
                new = self.rng.choice(widget.options)
            if new != widget.value:  # a change that changes nothing sends nothing back
                return kind, new

    async def interact(self) -> None:
        """One change; waits for the table's update and records the round trip."""
        kind, new = self._change()
        start = time.perf_counter()
        await self.change(kind, new)
        await self.table_update()
        self.latencies.append(time.perf_counter() - start)
        self.kinds.append(kind)


# -- the run -----------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def usage_ms(usage_log: Path, since: int) -> list[float]:
    """Milliseconds of the selection changes logged after line ``since``."""
    lines = usage_log.read_text(encoding="utf-8").splitlines()[since:]
    return [
        float(entry["ms"]) for entry in map(json.loads, lines) if entry.get("action") == "auswahl"
    ]


def settle(server: Server, seconds: float) -> dict[str, int]:
    """Wait until the server is idle (its queued work done), then ``seconds`` (for closed pages'
    sessions to be destroyed), then until the memory is steady (within 1 % over 3 s)."""
    for _ in range(200):
        before = server.cpu_seconds()
        time.sleep(2)
        if server.cpu_seconds() - before < 0.2:
            break
    time.sleep(seconds)
    last = server.memory()
    for _ in range(30):
        time.sleep(3)
        now = server.memory()
        if abs(now["rss"] - last["rss"]) <= 0.01 * last["rss"]:
            return now
        last = now
    return last


async def drive(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    rng = random.Random(args.seed)
    sessions = [Session(server.url, rng=random.Random(rng.random())) for _ in range(args.sessions)]
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def open_one(session: Session) -> float:
        async with gate:
            return await session.timed_open()

    opened = time.perf_counter()
    open_seconds = await asyncio.gather(*(open_one(s) for s in sessions))
    all_open = time.perf_counter() - opened
    await asyncio.sleep(2)
    with_sessions = server.memory()
    lines_before = len(server.usage_log.read_text(encoding="utf-8").splitlines())
    cpu_before, wall_before = server.cpu_seconds(), time.perf_counter()

    async def use(session: Session) -> None:
        await asyncio.sleep(session.rng.uniform(0, args.think_seconds))
        for _ in range(args.interactions):
            try:
                await asyncio.wait_for(session.interact(), INTERACTION_TIMEOUT)
            except TimeoutError:
                session.unanswered += 1
            await asyncio.sleep(session.rng.uniform(0.5, 1.5) * args.think_seconds)

    await asyncio.gather(*(use(s) for s in sessions))
    busy_wall = time.perf_counter() - wall_before
    busy_cpu = server.cpu_seconds() - cpu_before
    for session in sessions:
        session.close()
    latencies = [ms for s in sessions for ms in s.latencies]
    by_kind: dict[str, list[float]] = {}
    for session in sessions:
        for kind, seconds in zip(session.kinds, session.latencies, strict=True):
            by_kind.setdefault(kind, []).append(seconds)
    return {
        "open_seconds": open_seconds,
        "all_open_seconds": all_open,
        "memory_with_sessions": with_sessions,
        "latencies": latencies,
        "unanswered": sum(s.unanswered for s in sessions),
        "unanswered_sessions": sum(1 for s in sessions if s.unanswered),
        "by_kind": by_kind,
        "server_ms": usage_ms(server.usage_log, lines_before),
        "busy_wall": busy_wall,
        "busy_cpu": busy_cpu,
    }


async def warm_up(server: Server) -> None:
    """One session that opens, changes the window twice and closes."""
    session = Session(server.url, rng=random.Random(0))
    await session.open()
    await session.interact()
    await session.interact()
    session.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report(args: argparse.Namespace, memory: dict[str, dict[str, int]], run: dict[str, Any]) -> str:
    lat, server_ms = run["latencies"], run["server_ms"]
    start, full, after = memory["warm"], run["memory_with_sessions"], memory["after"]
    per_session = (full["pss"] - start["pss"]) / args.sessions
    back = after["pss"] / start["pss"] - 1
    p95 = percentile(lat, 0.95)
    lines = [
        f"## {args.sessions} sessions at size {args.size}: {args.num_procs} process(es), "
        f"{args.num_threads if args.num_threads is not None else 'the default number of'} thread(s) per process",
        "",
        f"{len(lat)} interactions answered ({args.interactions} per session, think time "
        f"{args.think_seconds} s ± 50 %); {run['unanswered']} without a table update within "
        f"{INTERACTION_TIMEOUT} s (on {run['unanswered_sessions']} of the sessions):",
        "",
        "| measure | p50 | p95 | max |",
        "|---|---|---|---|",
        f"| round trip per interaction (client, loopback) | {ms(percentile(lat, 0.5))} | "
        f"{ms(p95)} | {ms(max(lat))} |",
    ]
    for kind, values in sorted(run["by_kind"].items()):
        lines.append(
            f"| … changing {kind} ({len(values)}×) | {ms(percentile(values, 0.5))} | "
            f"{ms(percentile(values, 0.95))} | {ms(max(values))} |"
        )
    if server_ms:
        lines.append(
            f"| server time per selection (usage log) | {percentile(server_ms, 0.5):.0f} ms | "
            f"{percentile(server_ms, 0.95):.0f} ms | {max(server_ms):.0f} ms |"
        )
    opens = run["open_seconds"]
    lines += [
        f"| opening a page (pull the document; {OPENING_AT_ONCE} at a time) | "
        f"{ms(percentile(opens, 0.5))} | {ms(percentile(opens, 0.95))} | {ms(max(opens))} |",
        "",
        "| server memory | RSS | PSS |",
        "|---|---|---|",
    ]
    for label, values in (
        ("ready", memory["ready"]),
        ("after one warm-up session (start)", start),
        (f"with {args.sessions} sessions open", full),
        ("after they closed", after),
    ):
        lines.append(f"| {label} | {values['rss'] / GIB:.2f} GiB | {values['pss'] / GIB:.2f} GiB |")
    load = os.getloadavg()
    lines += [
        "",
        f"Memory per session: {per_session / MIB:.1f} MiB (PSS). After closing: "
        f"{back * 100:+.1f} % against the start.",
        f"Server CPU while the sessions clicked: {run['busy_cpu']:.1f} s in "
        f"{run['busy_wall']:.1f} s ({run['busy_cpu'] / run['busy_wall']:.2f} cores).",
        f"Targets: p95 ≤ 300 ms: {'met' if p95 <= 0.3 else 'missed'} ({ms(p95)}); memory back "
        f"within 10 % of the start: {'met' if abs(back) <= 0.10 else 'missed'} ({back * 100:+.1f} %).",
        f"Load average at the end: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} "
        f"({os.cpu_count()} CPUs).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="M")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--interactions", type=int, default=10, help="per session")
    parser.add_argument("--think-seconds", type=float, default=4.0)
    parser.add_argument("--num-procs", type=int, default=1)
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    files = generate(args.size, args.cache)
    store = ensure_store(files)
    with tempfile.TemporaryDirectory(prefix="kpisheet-app-load-") as directory:
        server = start_server(store, files, Path(directory), args.num_procs, args.num_threads)
        try:
            server.wait()
            memory = {"ready": settle(server, 0)}
            asyncio.run(asyncio.wait_for(warm_up(server), INTERACTION_TIMEOUT))
            memory["warm"] = settle(server, SESSION_CLEANUP_SECONDS)
            run = asyncio.run(asyncio.wait_for(drive(args, server), RUN_TIMEOUT))
            memory["after"] = settle(server, SESSION_CLEANUP_SECONDS)
        finally:
            server.stop()
        print(report(args, memory, run))
        if "Traceback" in server.log.read_text(errors="replace"):
            print("\nThe server log has a traceback:\n" + server.log.read_text(errors="replace"))


if __name__ == "__main__":
    main()
