"""Sign-in throughput benchmark for the AlaCOP Portal (one worker on core 0, load on core 1).

Run from the repository root:

    .venv/bin/python bench/signin.py [--seconds 20] [--clients 16]

See bench/README.md for what it measures and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "alacop_bench"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_URL = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
AGENCY = "AL0000001"
RATE_LIMIT = 100_000
NUSERS = 1000  # accounts seeded; the load generator sets it from --users
PASSWORD = "granite meadow lantern 77"
SERVER_CORE = 0
LOAD_CORE = 1

CSRF_RE = re.compile(r'<input type="hidden" name="csrf_token" value="([^"]+)">')
FLOW_ID_RE = re.compile(r'action="/login/identifier\?flow=([\w-]+)"')

ARGON2_SNIPPET = r"""
import json, time, argon2
ph = argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=argon2.Type.ID)
pw = "orchid velvet canyon 42 bench"
h = ph.hash(pw)
ph.verify(h, pw)
n = 0
start, cpu_start = time.perf_counter(), time.process_time()
deadline = start + SECONDS
while True:
    ph.verify(h, pw)
    n += 1
    now = time.perf_counter()
    if now >= deadline:
        break
cpu = time.process_time() - cpu_start
print(json.dumps({"wall": n / (now - start), "cpu": n / cpu}))
"""


def username(i: int) -> str:
    return f"bench{i:04d}"


def totp_secret(i: int) -> str:
    # Derived from the index, so the load generator computes codes without being handed secrets.
    return base64.b32encode(hashlib.sha256(f"bench-totp-{i}".encode()).digest()[:20]).decode()


def totp_code(i: int) -> str:
    import pyotp

    return pyotp.TOTP(totp_secret(i)).now()


# ------------------------------------------------------------------------------------------------
# Load generator (runs in a child process pinned to core 1)
# ------------------------------------------------------------------------------------------------
class StepFailed(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


def _expect(step: str, response, status: int, location_prefix: str | None = None) -> None:
    if response.status_code != status:
        raise StepFailed(step, f"status {response.status_code}")
    if location_prefix is not None:
        loc = response.headers.get("location", "")
        if not loc.startswith(location_prefix):
            raise StepFailed(step, f"redirect to {loc[:60]!r}")


def _csrf(step: str, html: str) -> str:
    m = CSRF_RE.search(html)
    if not m:
        raise StepFailed(step, "no csrf_token in page")
    return m.group(1)


async def _start_flow(client) -> tuple[str, str, str]:
    """GET /login shows a new flow at once; returns (flow path, flow id, csrf) from its form."""
    r = await client.get("/login")
    _expect("GET /login (identifier)", r, 200)
    m = FLOW_ID_RE.search(r.text)
    if not m:
        raise StepFailed("GET /login", "no flow id in the identifier form")
    return f"/login?flow={m.group(1)}", m.group(1), _csrf("GET /login (identifier)", r.text)


async def sign_in(client, i: int, password: str) -> None:
    """One complete sign-in, from a fresh browser to the 'My applications' page."""
    loc, flow, csrf = await _start_flow(client)
    r = await client.post(f"/login/identifier?flow={flow}", data={"csrf_token": csrf, "identifier": username(i)})
    _expect("POST /login/identifier", r, 303, loc)
    r = await client.get(loc)
    _expect("GET /login?flow (password)", r, 200)
    if 'name="password"' not in r.text:
        raise StepFailed("GET /login?flow (password)", "no password field")
    csrf = _csrf("GET /login?flow (password)", r.text)
    r = await client.post(f"/login/password?flow={flow}", data={"csrf_token": csrf, "password": password})
    _expect("POST /login/password", r, 303, loc)
    r = await client.get(loc)
    _expect("GET /login?flow (second factor)", r, 200)
    if 'autocomplete="one-time-code"' not in r.text:
        raise StepFailed("GET /login?flow (second factor)", "no code field")
    r = await client.post(
        f"/login/second-factor?flow={flow}", data={"csrf_token": csrf, "code": totp_code(i), "credential": ""}
    )
    _expect("POST /login/second-factor", r, 303, "/apps")
    if "alacop_session" not in r.headers.get("set-cookie", ""):
        raise StepFailed("POST /login/second-factor", "no alacop_session cookie")
    r = await client.get("/apps")
    _expect("GET /apps", r, 200)
    if "My applications" not in r.text:
        raise StepFailed("GET /apps", "no 'My applications'")


def _server_cpu(pid: int) -> tuple[float, float]:
    """(event-loop thread, all other threads) CPU seconds of the portal worker."""
    main = other = 0.0
    for key, spent in _thread_cpu(pid).items():
        if key.split(":")[0] == str(pid):
            main += spent
        else:
            other += spent
    return main, other


async def _breakdown(clients: list, pid: int) -> dict:
    """Each step of the sign-in done for every client in turn, one request at a time, with the
    worker's CPU time measured around each step: CPU per request type, free of queueing."""
    n = len(clients)
    flows: list[tuple[str, str, str]] = [("", "", "")] * n
    steps: dict[str, dict[str, float]] = {}

    async def step(name: str, fn) -> None:
        m0, o0 = _server_cpu(pid)
        t0 = time.perf_counter()
        for k in range(n):
            await fn(k)
        wall = time.perf_counter() - t0
        m1, o1 = _server_cpu(pid)
        steps[name] = {
            "loop_ms": (m1 - m0) / n * 1000,
            "threads_ms": (o1 - o0) / n * 1000,
            "wall_ms": wall / n * 1000,
        }

    async def s1(k: int) -> None:
        clients[k].cookies.clear()
        flows[k] = await _start_flow(clients[k])

    async def s3(k: int) -> None:
        loc, flow, csrf = flows[k]
        r = await clients[k].post(
            f"/login/identifier?flow={flow}",
            data={"csrf_token": csrf, "identifier": username(k % NUSERS + 1)},
        )
        _expect("POST /login/identifier", r, 303, loc)

    async def s4(k: int) -> None:
        loc, flow, _ = flows[k]
        r = await clients[k].get(loc)
        _expect("GET password page", r, 200)
        flows[k] = (loc, flow, _csrf("GET password page", r.text))

    async def s5(k: int) -> None:
        loc, flow, csrf = flows[k]
        r = await clients[k].post(f"/login/password?flow={flow}", data={"csrf_token": csrf, "password": PASSWORD})
        _expect("POST /login/password", r, 303, loc)

    async def s5b(k: int) -> None:
        loc, _flow, _csrf_token = flows[k]
        r = await clients[k].get(loc)
        _expect("GET second-factor page", r, 200)

    async def s5c(k: int) -> None:
        _loc, flow, csrf = flows[k]
        r = await clients[k].post(
            f"/login/second-factor?flow={flow}",
            data={"csrf_token": csrf, "code": totp_code(k % NUSERS + 1), "credential": ""},
        )
        _expect("POST /login/second-factor", r, 303, "/apps")

    async def s6(k: int) -> None:
        r = await clients[k].get("/apps")
        _expect("GET /apps", r, 200)

    for name, fn in (
        ("GET /login (new flow, identifier page)", s1),
        ("POST /login/identifier", s3),
        ("GET /login?flow (password page)", s4),
        ("POST /login/password", s5),
        ("GET /login?flow (second-factor page)", s5b),
        ("POST /login/second-factor (TOTP)", s5c),
        ("GET /apps", s6),
    ):
        await step(name, fn)
    return {"steps": steps}


async def _loadgen(args: argparse.Namespace) -> dict:
    import httpx

    base = args.base_url
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(30.0)
    count = args.breakdown_flows if args.phase == "breakdown" else args.clients
    global NUSERS
    NUSERS = args.users
    clients = [
        httpx.AsyncClient(base_url=base, follow_redirects=False, limits=limits, timeout=timeout) for _ in range(count)
    ]
    try:
        if args.phase == "breakdown":
            return await _breakdown(clients, args.server_pid)
        latencies: list[float] = []  # seconds, sign-ins completed inside the window
        late = 0
        failures: Counter[str] = Counter()
        start = time.perf_counter()
        deadline = start + args.seconds

        async def run(k: int, client) -> None:
            nonlocal late
            turn = 0
            while time.perf_counter() < deadline:
                # Each client cycles through its own accounts: a TOTP code works once per 30-second step,
                # so one account signs in at most once a step.
                i = (k - 1 + turn * args.clients) % NUSERS + 1
                turn += 1
                client.cookies.clear()  # a fresh browser every iteration
                t0 = time.perf_counter()
                try:
                    await sign_in(client, i, PASSWORD)
                except StepFailed as exc:
                    failures[f"{exc.step}: {exc.detail}"] += 1
                    continue
                except httpx.HTTPError as exc:
                    failures[f"transport: {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
                t1 = time.perf_counter()
                if t1 <= deadline:
                    latencies.append(t1 - t0)
                else:
                    late += 1

        await asyncio.wait_for(
            asyncio.gather(*(run(i, c) for i, c in enumerate(clients, start=1))), timeout=args.seconds + 60
        )
        return {
            "window_s": args.seconds,
            "latencies": latencies,
            "finished_after_window": late,
            "failures": dict(failures),
        }
    finally:
        for c in clients:
            await c.aclose()


def loadgen_main(args: argparse.Namespace) -> int:
    os.sched_setaffinity(0, {LOAD_CORE})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_loadgen(args))
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["loadgen_cpu_s"] = usage.ru_utime + usage.ru_stime
    sys.stdout.write(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _admin_sql(*statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        for stmt in statements:
            await conn.execute(stmt)
    finally:
        await conn.close()


def _alacop(env: dict[str, str], *cli_args: str, stdin: str | None = None) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "alacop.cli", *cli_args],
        input=stdin,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"alacop {' '.join(cli_args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


async def _seed(env: dict[str, str], count: int) -> None:
    """Accounts straight into the store: one argon2 hash shared by all, a TOTP seed and recovery codes each."""
    import uuid
    from dataclasses import replace
    from datetime import UTC, datetime

    from alacop.config import load_settings
    from alacop.core.accounts import Role, User, UserStatus
    from alacop.core.credentials import AuthMethod, MethodKind
    from alacop.methods import recovery_codes
    from alacop.wiring import build_deps

    deps = build_deps(load_settings({k: v for k, v in env.items() if k.startswith("ALACOP_")}))
    now = datetime.now(UTC)
    password_hash = deps.hasher.hash(PASSWORD)
    try:
        async with deps.store.transaction() as tx:
            agency = await tx.agencies.by_ori(AGENCY)
        assert agency is not None
        for first in range(1, count + 1, 200):
            async with deps.store.transaction() as tx:
                for i in range(first, min(first + 200, count + 1)):
                    user = User(
                        id=str(uuid.uuid4()),
                        username=username(i),
                        email=f"{username(i)}@example.gov",
                        name=f"Bench {i}",
                        agency_id=agency.id,
                        role=Role.USER,
                        status=UserStatus.ACTIVE,
                        password_hash=password_hash,
                        password_changed_at=now,
                        must_change_password=False,
                        created_at=now,
                    )
                    await tx.users.add(replace(user))
                    await tx.methods.add(
                        AuthMethod(
                            id=str(uuid.uuid4()),
                            user_id=user.id,
                            kind=MethodKind.TOTP,
                            name="bench",
                            created_at=now,
                            totp_secret=deps.box.seal(totp_secret(i).encode()),
                        )
                    )
                    codes = recovery_codes.records(user.id, recovery_codes.generate(), now)
                    await tx.recovery_codes.replace_set(user.id, codes)
    finally:
        await deps.store.close()
        await deps.limiter.close()


def _wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"portal exited early with code {proc.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("portal did not answer /healthz in time")


def _proc_status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user+system) per thread of a process, keyed by "tid:name"."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[f"{task.name}:{name}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu_times() -> dict[str, tuple[float, float]]:
    """(busy, total) jiffies per cpuN line of /proc/stat."""
    out: dict[str, tuple[float, float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            v = [int(x) for x in vals]
            idle = v[3] + v[4]
            out[name] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def _process_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user+system) of every process on the machine, with its command name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _kb_to_mb(value: str) -> float:
    return int(value.split()[0]) / 1024


def _argon2_rate(seconds: float) -> dict[str, float]:
    code = ARGON2_SNIPPET.replace("SECONDS", repr(seconds))
    out = subprocess.run(
        ["taskset", "-c", str(SERVER_CORE), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def _run_loadgen(
    base: str, phase: str, clients: int, seconds: float, env: dict[str, str], extra: tuple[str, ...] = ()
) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_loadgen",
        "--phase",
        phase,
        "--base-url",
        base,
        "--clients",
        str(clients),
        "--seconds",
        str(seconds),
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=seconds + 120)
    if proc.returncode != 0:
        raise SystemExit(f"load generator failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def orchestrate(args: argparse.Namespace) -> int:
    if len(os.sched_getaffinity(0)) < 2 or not {SERVER_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        raise SystemExit("needs cores 0 and 1")
    if shutil.which("taskset") is None:
        raise SystemExit("needs taskset")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="alacop_bench_"))
    env = dict(os.environ)
    env.update(
        {
            "ALACOP_DATABASE_URL": DB_URL,
            "ALACOP_DATA_DIR": str(tmp / "data"),
            "ALACOP_PUBLIC_URL": base,
            "ALACOP_POLICY__RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT),
            "ALACOP_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        }
    )
    env.pop("ALACOP_REDIS_URL", None)
    env.pop("ALACOP_CONFIG", None)
    print(f"nproc: {nproc}")
    print(
        f"note: ALACOP_POLICY__RATE_LIMIT_PER_MINUTE={RATE_LIMIT} (the shipped per-address limit of 30/min "
        "would refuse this load, since every client comes from 127.0.0.1)"
    )
    server: subprocess.Popen | None = None
    log_path = tmp / "portal.log"
    try:
        print(f"creating database {DB_NAME} ...", flush=True)
        asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)', f'CREATE DATABASE "{DB_NAME}"'))
        _alacop(env, "migrate")
        _alacop(env, "agencies", "create", AGENCY, "Bench Agency")
        print(f"seeding {args.users} accounts with a password and an authenticator app ...", flush=True)
        asyncio.run(_seed(env, args.users))

        print(f"starting portal on {base} (1 worker, core {SERVER_CORE}) ...", flush=True)
        # --profile swaps only the entry point: the same server, arguments and pinned core either way.
        entry = (
            [str(Path(__file__).with_name("profile_serve.py")), args.profile] if args.profile else ["-m", "alacop.cli"]
        )
        serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        server_cmd = ["taskset", "-c", str(SERVER_CORE), sys.executable, *entry, *serve]
        log = open(log_path, "wb")
        server = subprocess.Popen(server_cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _wait_healthy(base, server)
        rss_idle = _kb_to_mb(_proc_status(server.pid)["VmRSS"])

        print(
            f"bare argon2id verify on core {SERVER_CORE} for {args.argon2_seconds:g} s (portal idle) ...",
            flush=True,
        )
        argon = _argon2_rate(args.argon2_seconds)
        verifies, verifies_cpu = argon["wall"], argon["cpu"]

        print(f"load: {args.clients} clients on core {LOAD_CORE} for {args.seconds:g} s ...", flush=True)
        cpu_before, threads_before, procs_before = _cpu_times(), _thread_cpu(server.pid), _process_cpu()
        load_started = time.monotonic()
        result = _run_loadgen(base, "load", args.clients, args.seconds, env, ("--users", str(args.users)))
        load_wall = time.monotonic() - load_started
        cpu_after, threads_after, procs_after = _cpu_times(), _thread_cpu(server.pid), _process_cpu()

        breakdown = None
        if args.breakdown:
            print(f"breakdown: {args.breakdown} sign-ins, one request at a time, CPU per step ...", flush=True)
            breakdown = _run_loadgen(
                base,
                "breakdown",
                args.clients,
                0,
                env,
                ("--server-pid", str(server.pid), "--breakdown-flows", str(args.breakdown), "--users", str(args.users)),
            )["steps"]

        status = _proc_status(server.pid)
        peak_rss = _kb_to_mb(status["VmHWM"])
        rss_now = _kb_to_mb(status["VmRSS"])
        threads = status.get("Threads", "?")

        lat = sorted(result["latencies"])
        n = len(lat)
        rate = n / result["window_s"]
        failures = result["failures"]
        print()
        print("=== AlaCOP sign-in benchmark ===")
        print(f"nproc:                         {nproc}")
        print(f"portal:                        1 worker, pinned to core {SERVER_CORE}, PostgreSQL {DB_NAME}")
        print(f"load:                          {args.clients} clients on core {LOAD_CORE}, {args.seconds:g} s")
        print(f"rate limit:                    raised to {RATE_LIMIT}/min for the run")
        print(f"sign-ins completed:            {n} (+{result['finished_after_window']} finished after the window)")
        print(f"sign-ins per second:           {rate:.2f}")
        print(f"sign-in latency p50:           {(_pct(lat, 0.50) * 1000):.1f} ms")
        print(f"sign-in latency p99:           {(_pct(lat, 0.99) * 1000):.1f} ms")
        if lat:
            print(f"sign-in latency mean:          {statistics.fmean(lat) * 1000:.1f} ms")
        print(f"bare argon2id verifies/s:      {verifies:.2f}  (core {SERVER_CORE}, t=2 m=19456 p=1, wall clock)")
        print(
            f"  per CPU-second:              {verifies_cpu:.2f}  ({1000 / verifies_cpu:.1f} ms CPU per verify)"
            + ("  WARNING: core 0 was shared with other processes" if verifies < 0.9 * verifies_cpu else "")
        )
        ratio = rate / verifies if verifies else float("nan")
        print(
            f"ratio sign-ins/s / verifies/s: {ratio:.3f}  (target >= 0.85) {'OK' if ratio >= 0.85 else 'BELOW TARGET'}"
        )
        print(
            f"worker peak RSS (VmHWM):       {peak_rss:.1f} MB  (target <= 150 MB) {'OK' if peak_rss <= 150 else 'ABOVE TARGET'}"
        )
        print(f"worker RSS idle after start:   {rss_idle:.1f} MB; at end (VmRSS): {rss_now:.1f} MB; threads: {threads}")
        # Where core 0's time went during the load (includes the few seconds of client start-up/drain).
        main_tid = str(server.pid)
        main_cpu = other_cpu = 0.0
        for key, after in threads_after.items():
            spent = after - threads_before.get(key, 0.0)
            if key.split(":")[0] == main_tid:
                main_cpu += spent
            else:
                other_cpu += spent
        total_signins = n + result["finished_after_window"]
        if total_signins:
            print(
                f"worker CPU per sign-in:        {(main_cpu + other_cpu) / total_signins * 1000:.1f} ms "
                f"(event-loop thread {main_cpu / total_signins * 1000:.1f} ms, "
                f"other threads incl. argon2 {other_cpu / total_signins * 1000:.1f} ms; "
                f"bare verify {1000 / verifies_cpu:.1f} ms CPU)"
            )
            print(
                f"CPU-bound ratio estimate:      {1000 / verifies_cpu / ((main_cpu + other_cpu) / total_signins * 1000):.3f} "
                "(bare verify CPU ms / worker CPU ms per sign-in: the ratio on a core 0 owned by the worker)"
            )
            print(
                f"worker's share of core 0:      {100 * (main_cpu + other_cpu) / load_wall:.0f} % of the load's wall time"
            )
        for cpu in sorted(cpu_after):
            busy = cpu_after[cpu][0] - cpu_before[cpu][0]
            total = cpu_after[cpu][1] - cpu_before[cpu][1]
            print(f"{cpu} busy during load:          {100 * busy / total if total else 0:.0f} %")
        by_name: Counter[str] = Counter()
        for pid, (name, after) in procs_after.items():
            label = "portal worker" if pid == server.pid else name
            by_name[label] += after - procs_before.get(pid, (name, 0.0))[1]
        by_name["load generator (core 1)"] += result.get("loadgen_cpu_s", 0.0)
        print(f"CPU by process during load ({load_wall:.1f} s wall, top 6; other sessions' processes included):")
        for label, spent in by_name.most_common(6):
            print(f"  {spent:7.2f} s  {label}")
        if breakdown:
            print(f"worker CPU per request type ({args.breakdown} sequential sign-ins; /proc jiffies of 10 ms):")
            print(f"  {'step':36s} {'loop ms':>8s} {'threads ms':>10s} {'wall ms':>8s}")
            sums = [0.0, 0.0, 0.0]
            for name, v in breakdown.items():
                print(f"  {name:36s} {v['loop_ms']:8.2f} {v['threads_ms']:10.2f} {v['wall_ms']:8.2f}")
                sums = [sums[0] + v["loop_ms"], sums[1] + v["threads_ms"], sums[2] + v["wall_ms"]]
            print(f"  {'total per sign-in':36s} {sums[0]:8.2f} {sums[1]:10.2f} {sums[2]:8.2f}")
        total_failures = sum(failures.values())
        print(f"failures:                      {total_failures}")
        for what, count in sorted(failures.items(), key=lambda kv: -kv[1]):
            print(f"  {count:6d}  {what}")
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "nproc": nproc,
                        "clients": args.clients,
                        "seconds": args.seconds,
                        "signins": n,
                        "signins_per_s": rate,
                        "p50_ms": _pct(lat, 0.50) * 1000,
                        "p99_ms": _pct(lat, 0.99) * 1000,
                        "argon2_verifies_per_s": verifies,
                        "argon2_verifies_per_cpu_s": verifies_cpu,
                        "ratio": ratio,
                        "peak_rss_mb": peak_rss,
                        "failures": failures,
                    },
                    indent=2,
                )
            )
        return 0 if total_failures == 0 else 1
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        try:
            asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        except Exception as exc:
            print(f"warning: could not drop {DB_NAME}: {exc}", file=sys.stderr)
        if args.keep_log and log_path.exists():
            shutil.copyfile(log_path, args.keep_log)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measured load (default 20)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--argon2-seconds", type=float, default=5.0, help="length of the bare argon2 run")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--profile", help="run the worker under cProfile, writing stats to this path")
    parser.add_argument("--keep-log", help="copy the portal's log to this path")
    parser.add_argument(
        "--breakdown",
        type=int,
        default=0,
        metavar="N",
        help="after the load, also measure worker CPU per request type over N sequential sign-ins",
    )
    parser.add_argument("--_loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--breakdown-flows", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["load", "breakdown"], default="load", help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int, default=1000, help="accounts seeded (default 1000)")
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.clients <= 99:
        parser.error("--clients must be between 1 and 99")
    if not 1 <= args.seconds <= 600 and not args._loadgen:
        parser.error("--seconds must be between 1 and 600")
    if args._loadgen:
        return loadgen_main(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
