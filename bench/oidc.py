"""OpenID Connect provider benchmark: the AlaCOP Portal against panva's oidc-provider (v9, OpenID certified).

Run from the repository root:

    .venv/bin/python bench/oidc.py [--seconds 10] [--connections 32]

In one run, each provider is pinned to core 0 (the portal: one worker on PostgreSQL; the peer: one
Node process with its in-memory store) and wrk runs on core 1, one endpoint at a time: discovery,
JWKS, client_credentials (JWT access token, ES256) and refresh_token (rotating). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent))
# bench/signin.py: database set-up, seeded users with TOTP, the sign-in flow.
import signin

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = Path(__file__).resolve().parent / "oidc_peer"
DB_NAME = "alacop_bench_oidc"
PG_ADMIN = signin.PG_ADMIN
DB_URL = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
SERVER_CORE = 0
LOAD_CORE = 1
RATE_LIMIT = 100_000
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never contacted: the code is read from the redirect
PEER_RESOURCE = "urn:alacop:bench"
USERS = 4  # portal accounts signed in to mint refresh tokens (each session authorizes many times)

ENDPOINTS = ("discovery", "jwks", "client_credentials", "refresh_token")
TARGETS = {"discovery": 1.0, "jwks": 1.0, "client_credentials": 0.5, "refresh_token": 0.5}

# ------------------------------------------------------------------------------------------------
# wrk scripts. done() prints one JSON line; every non-2xx answer counts as an error.
# ------------------------------------------------------------------------------------------------
LUA_COMMON = r"""
threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function done(summary, latency, requests)
  local missing = 0
  for _, t in ipairs(threads) do missing = missing + (t:get("missing") or 0) end
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"missing":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    latency.max, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, missing))
end
"""

LUA_GET = LUA_COMMON

LUA_CLIENT_CREDENTIALS = (
    LUA_COMMON
    + r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "AUTHORIZATION"
wrk.body = "BODY"
"""
)

# Refresh tokens rotate: each is good for one use. The thread starts with a pool of tokens minted
# through the code flow just before the run; every request takes one from the pool and every answer
# puts the new refresh token it carries back, so each token is sent exactly once and the pool stays
# the same size (minus those in flight). An empty pool sends a dummy token, answered 400: an error.
LUA_REFRESH = (
    LUA_COMMON
    + r"""
local queue, head, tail = {}, 1, 0
missing = 0
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tail = tail + 1; queue[tail] = line end
  end
end
function request()
  local token = "exhausted"
  if head <= tail then token = queue[head]; queue[head] = nil; head = head + 1 end
  return wrk.format("POST", "PATH", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = "AUTHORIZATION",
  }, "grant_type=refresh_token&refresh_token=" .. token)
end
function response(status, headers, body)
  local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if token then tail = tail + 1; queue[tail] = token else missing = missing + 1 end
end
"""
)


# ------------------------------------------------------------------------------------------------
# Python load generator: the fallback when wrk cannot be installed (runs pinned to core 1).
# ------------------------------------------------------------------------------------------------
async def _py_load(spec: dict) -> dict:
    import httpx

    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    missing = 0
    pool: list[str] = list(spec.get("tokens", []))
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    start = time.perf_counter()
    deadline = start + spec["seconds"]

    async def run() -> None:
        nonlocal missing
        async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    if spec["kind"] == "get":
                        r = await client.get(spec["url"])
                    else:
                        body = spec.get("body", "")
                        if spec["kind"] == "refresh":
                            body = "grant_type=refresh_token&refresh_token=" + (pool.pop() if pool else "exhausted")
                        r = await client.post(
                            spec["url"],
                            content=body,
                            headers={
                                "Content-Type": "application/x-www-form-urlencoded",
                                "Authorization": spec["authorization"],
                            },
                        )
                except httpx.TimeoutException:
                    errors["timeout"] += 1
                    continue
                except httpx.HTTPError:
                    errors["read"] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if not 200 <= r.status_code < 400:
                    errors["status"] += 1
                if spec["kind"] == "refresh":
                    token = r.json().get("refresh_token") if r.status_code == 200 else None
                    if token:
                        pool.append(token)
                    else:
                        missing += 1

    await asyncio.gather(*(run() for _ in range(spec["connections"])))
    duration = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "duration_us": int(duration * 1e6),
        "p50_us": int(_pct(latencies, 0.50) * 1e6),
        "p99_us": int(_pct(latencies, 0.99) * 1e6),
        "mean_us": sum(latencies) / len(latencies) * 1e6 if latencies else 0.0,
        "max_us": int(latencies[-1] * 1e6) if latencies else 0,
        **errors,
        "missing": missing,
    }


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def loadgen_main(spec_path: str) -> int:
    os.sched_setaffinity(0, {LOAD_CORE})
    spec = json.loads(Path(spec_path).read_text())
    sys.stdout.write("BENCHJSON " + json.dumps(asyncio.run(_py_load(spec))) + "\n")
    return 0


# ------------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _ensure_wrk() -> bool:
    """wrk on PATH, installing Debian's package when missing; False means use the Python generator."""
    if shutil.which("wrk"):
        return True
    if shutil.which("apt-get") is None:
        return False
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None:
        return False
    print("installing wrk with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"]
    ok = subprocess.run(install, env=env, capture_output=True).returncode == 0
    if not ok:
        subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, capture_output=True)
        ok = subprocess.run(install, env=env, capture_output=True).returncode == 0
    return ok and shutil.which("wrk") is not None


def _npm_ci() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("needs node (>= 20) and npm for the peer")
    print("installing the peer: npm ci in bench/oidc_peer (oidc-provider pinned by package-lock.json) ...", flush=True)
    proc = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER_DIR, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"npm ci failed:\n{proc.stdout}{proc.stderr}")


def _peer_version() -> str:
    package = PEER_DIR / "node_modules" / "oidc-provider" / "package.json"
    return str(json.loads(package.read_text())["version"])


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in time")


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user+system, all threads) of one process."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu() -> float:
    """CPU seconds of every postgres process (not pinned: it shares both cores)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        if raw[raw.index("(") + 1 : raw.rindex(")")] in ("postgres", "postmaster"):
            fields = raw[raw.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _jwt_header(token: str) -> dict:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class Provider:
    """One provider under test: where its endpoints are and how to mint a refresh token."""

    def __init__(self, name: str, base: str, paths: dict[str, str], client_id: str, secret: str) -> None:
        self.name = name
        self.base = base
        self.paths = paths
        self.client_id = client_id
        self.secret = secret
        self.authorization = _basic(client_id, secret)
        self.pid = 0
        self.cc_body = "grant_type=client_credentials"
        self.auth_extra: dict[str, str] = {}

    def url(self, endpoint: str) -> str:
        return self.base + self.paths[endpoint]


async def _mint_refresh_tokens(p: Provider, browsers: list, count: int) -> list[str]:
    """Refresh tokens through the real code flow: authorize (scope openid offline_access) with a
    signed-in browser, follow the redirects to the callback, exchange the code."""
    import httpx

    tokens: list[str] = []

    async def one(browser: httpx.AsyncClient, token_client: httpx.AsyncClient) -> None:
        verifier, challenge = _pkce()
        params = {
            "client_id": p.client_id,
            "response_type": "code",
            "scope": "openid offline_access",
            "redirect_uri": REDIRECT_URI,
            "state": secrets.token_urlsafe(12),
            "nonce": secrets.token_urlsafe(12),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **p.auth_extra,
        }
        r = await browser.get(p.url("authorize"), params=params)
        for _ in range(6):
            location = r.headers.get("location", "")
            if r.status_code not in (302, 303) or location.startswith(REDIRECT_URI):
                break
            r = await browser.get(location if location.startswith("http") else p.base + location)
        location = r.headers.get("location", "")
        if not location.startswith(REDIRECT_URI):
            raise SystemExit(f"{p.name}: the authorization request did not return a code: {r.status_code} {location}")
        code = parse_qs(urlparse(location).query)["code"][0]
        r = await token_client.post(
            p.url("token"),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
            },
            headers={"Authorization": p.authorization},
        )
        body = r.json()
        if r.status_code != 200 or "refresh_token" not in body:
            raise SystemExit(f"{p.name}: code exchange gave no refresh token: {r.status_code} {r.text[:300]}")
        tokens.append(body["refresh_token"])

    async with httpx.AsyncClient(timeout=30.0) as token_client:

        async def worker(browser: httpx.AsyncClient, n: int) -> None:
            for _ in range(n):
                await one(browser, token_client)

        share = [count // len(browsers) + (1 if k < count % len(browsers) else 0) for k in range(len(browsers))]
        await asyncio.gather(*(worker(b, n) for b, n in zip(browsers, share, strict=True)))
    return tokens


async def _portal_browsers(base: str) -> list:
    """USERS signed-in browsers (password + TOTP, as bench/signin.py does)."""
    import httpx

    browsers = [httpx.AsyncClient(base_url=base, follow_redirects=False, timeout=30.0) for _ in range(USERS)]
    await asyncio.gather(*(signin.sign_in(b, i, signin.PASSWORD) for i, b in enumerate(browsers, start=1)))
    return browsers


async def _refresh_run(p: Provider, args: argparse.Namespace, tmp: Path, use_wrk: bool) -> dict:
    """Sign in once, then for the warm-up and again for the measured run: mint a pool of refresh tokens
    through the code flow just before it (the peer's in-memory store keeps about 1,000 entries, so a
    pool minted before the warm-up would be evicted by it) and run the load through them."""
    import httpx

    if p.name == "portal":
        browsers = await _portal_browsers(p.base)  # an account signs in once per TOTP step
    else:
        browsers = [httpx.AsyncClient(base_url=p.base, follow_redirects=False, timeout=30.0) for _ in range(USERS)]
    try:
        if args.warmup > 0:
            warm = await _mint_refresh_tokens(p, browsers, args.pool)
            await asyncio.to_thread(_run_load, p, "refresh_token", args.warmup, args.connections, tmp, use_wrk, warm)
        t0 = time.perf_counter()
        tokens = await _mint_refresh_tokens(p, browsers, args.pool)
        print(
            f"{p.name}: minted {len(tokens)} refresh tokens through the code flow in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        print(f"{p.name}: refresh_token for {args.seconds:g} s ...", flush=True)
        return await asyncio.to_thread(
            _run_load, p, "refresh_token", args.seconds, args.connections, tmp, use_wrk, tokens
        )
    finally:
        for b in browsers:
            await b.aclose()


def _probe(p: Provider) -> str:
    """One client_credentials request before the load: what the token looks like."""
    import httpx

    r = httpx.post(
        p.url("token"),
        content=p.cc_body,
        headers={"Authorization": p.authorization, "Content-Type": "application/x-www-form-urlencoded"},
    )
    if r.status_code != 200:
        raise SystemExit(f"{p.name}: client_credentials failed: {r.status_code} {r.text[:300]}")
    header = _jwt_header(r.json()["access_token"])
    if header.get("alg") != "ES256":
        raise SystemExit(f"{p.name}: client_credentials token is not ES256: {header}")
    return f"alg={header.get('alg')} typ={header.get('typ')}"


def _run_load(
    p: Provider, endpoint: str, seconds: float, connections: int, tmp: Path, use_wrk: bool, tokens: list[str]
) -> dict:
    kind = "get" if endpoint in ("discovery", "jwks") else ("refresh" if endpoint == "refresh_token" else "post")
    url = p.url("token" if kind != "get" else endpoint)
    if use_wrk:
        path = urlparse(url).path
        if kind == "get":
            script = LUA_GET
        elif kind == "post":
            script = LUA_CLIENT_CREDENTIALS.replace("AUTHORIZATION", p.authorization).replace("BODY", p.cc_body)
        else:
            script = LUA_REFRESH.replace("AUTHORIZATION", p.authorization).replace("PATH", path)
        lua = tmp / f"{p.name}_{endpoint}.lua"
        lua.write_text(script)
        cmd = ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s"]
        cmd += ["-s", str(lua), url]
        if kind == "refresh":
            token_file = tmp / f"{p.name}_tokens.txt"
            token_file.write_text("\n".join(tokens) + "\n")
            cmd += ["--", str(token_file)]
    else:
        spec = tmp / f"{p.name}_{endpoint}.json"
        spec.write_text(
            json.dumps(
                {
                    "kind": kind,
                    "url": url,
                    "seconds": seconds,
                    "connections": connections,
                    "authorization": p.authorization,
                    "body": p.cc_body,
                    "tokens": tokens,
                }
            )
        )
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_loadgen", str(spec)]
    cpu0, pg0 = _proc_cpu(p.pid), _postgres_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=seconds + 120)
    cpu1, pg1 = _proc_cpu(p.pid), _postgres_cpu()
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"load generator failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    result = json.loads(line.removeprefix("BENCHJSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    if kind == "refresh":
        result["errors"] = max(result["errors"], result["missing"])
    result["server_cpu_ms"] = (cpu1 - cpu0) * 1000 / max(result["requests"], 1)
    result["postgres_cpu_ms"] = (pg1 - pg0) * 1000 / max(result["requests"], 1)
    return result


def _setup_portal(env: dict[str, str]) -> tuple[str, str]:
    print(f"creating database {DB_NAME}, seeding {USERS} accounts and a confidential client ...", flush=True)
    asyncio.run(signin._admin_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)', f'CREATE DATABASE "{DB_NAME}"'))
    signin._alacop(env, "migrate")
    signin._alacop(env, "agencies", "create", signin.AGENCY, "Bench Agency")
    asyncio.run(signin._seed(env, USERS))
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "alacop.cli", "clients", "create", "Bench Client", "--redirect-uri", REDIRECT_URI),
            *("--scope", "openid", "--scope", "offline_access", "--access-token-format", "jwt", "--json"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"alacop clients create failed:\n{proc.stdout}{proc.stderr}")
    created = json.loads(proc.stdout)
    return created["client_id"], created["client_secret"]


async def _pg_settings() -> str:
    import asyncpg

    conn = await asyncpg.connect(DB_URL)
    try:
        values = [f"{name}={await conn.fetchval(f'SHOW {name}')}" for name in ("synchronous_commit", "fsync")]
    finally:
        await conn.close()
    return ", ".join(values)


def _fmt_ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def orchestrate(args: argparse.Namespace) -> int:
    if not {SERVER_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        raise SystemExit("needs cores 0 and 1")
    if shutil.which("taskset") is None:
        raise SystemExit("needs taskset")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    use_wrk = _ensure_wrk()
    loadgen = (
        subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        if use_wrk
        else "Python asyncio + httpx (wrk could not be installed: figures are bounded by this slower generator)"
    )
    _npm_ci()
    peer_version = _peer_version()

    tmp = Path(tempfile.mkdtemp(prefix="alacop_bench_oidc_"))
    portal_port, peer_port = _free_port(), _free_port()
    portal_base, peer_base = f"http://127.0.0.1:{portal_port}", f"http://127.0.0.1:{peer_port}"
    env = dict(os.environ)
    env.update(
        {
            "ALACOP_DATABASE_URL": DB_URL,
            "ALACOP_DATA_DIR": str(tmp / "data"),
            "ALACOP_PUBLIC_URL": portal_base,
            "ALACOP_POLICY__RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT),
            "ALACOP_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        }
    )
    env.pop("ALACOP_REDIS_URL", None)
    env.pop("ALACOP_CONFIG", None)
    portal_proc: subprocess.Popen | None = None
    peer_proc: subprocess.Popen | None = None
    results: dict[str, dict[str, dict]] = {"peer": {}, "portal": {}}
    try:
        client_id, client_secret = _setup_portal(env)
        pg = asyncio.run(_pg_settings())
        portal = Provider(
            "portal",
            portal_base,
            {
                "discovery": "/.well-known/openid-configuration",
                "jwks": "/oauth/jwks",
                "token": "/oauth/token",
                "authorize": "/oauth/authorize",
            },
            client_id,
            client_secret,
        )
        peer_secret = secrets.token_urlsafe(32)
        peer = Provider(
            "peer",
            peer_base,
            {
                "discovery": "/.well-known/openid-configuration",
                "jwks": "/jwks",
                "token": "/token",
                "authorize": "/auth",
            },
            "bench-client",
            peer_secret,
        )
        # v9: a JWT client-credentials token needs a resource (a resource server with accessTokenFormat 'jwt');
        # a refresh token needs offline_access with prompt=consent.
        peer.cc_body = f"grant_type=client_credentials&resource={PEER_RESOURCE.replace(':', '%3A')}"
        peer.auth_extra = {"prompt": "consent", "resource": PEER_RESOURCE}

        print(f"starting portal on {portal_base} (1 worker, core {SERVER_CORE}) ...", flush=True)
        serve = ["serve", "--host", "127.0.0.1", "--port", str(portal_port), "--workers", "1"]
        # --profile swaps only the entry point: the same server, arguments and pinned core either way.
        entry = (
            [str(Path(__file__).with_name("profile_serve.py")), args.profile] if args.profile else ["-m", "alacop.cli"]
        )
        portal_proc = subprocess.Popen(
            ["taskset", "-c", str(SERVER_CORE), sys.executable, *entry, *serve],
            env=env,
            cwd=ROOT,
            stdout=open(tmp / "portal.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        _wait_ready(f"{portal_base}/healthz", portal_proc)
        portal.pid = portal_proc.pid

        print(f"starting oidc-provider {peer_version} on {peer_base} (node, core {SERVER_CORE}) ...", flush=True)
        peer_env = {**os.environ, "NODE_ENV": "production"}
        peer_proc = subprocess.Popen(
            [
                *("taskset", "-c", str(SERVER_CORE), "node", "server.js"),
                *(str(peer_port), peer.client_id, peer_secret, REDIRECT_URI),
            ],
            env=peer_env,
            cwd=PEER_DIR,
            stdout=open(tmp / "peer.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        _wait_ready(peer.url("discovery"), peer_proc)
        peer.pid = peer_proc.pid

        for p in (peer, portal):
            print(f"{p.name}: client_credentials token {_probe(p)}", flush=True)

        for endpoint in ENDPOINTS:
            if endpoint not in args.endpoints:
                continue
            for p in (peer, portal):
                if endpoint == "refresh_token":
                    results[p.name][endpoint] = asyncio.run(_refresh_run(p, args, tmp, use_wrk))
                    continue
                if args.warmup > 0:
                    _run_load(p, endpoint, args.warmup, args.connections, tmp, use_wrk, [])
                print(f"{p.name}: {endpoint} for {args.seconds:g} s ...", flush=True)
                results[p.name][endpoint] = _run_load(p, endpoint, args.seconds, args.connections, tmp, use_wrk, [])

        print()
        print("=== OpenID Connect provider benchmark: AlaCOP Portal vs oidc-provider ===")
        print(f"nproc:      {nproc}")
        print(
            f"peer:       oidc-provider {peer_version} (node {_node_version()}), in-memory adapter, core {SERVER_CORE}"
        )
        print(f"portal:     1 worker on core {SERVER_CORE}, PostgreSQL {DB_NAME} ({pg}), tokens stored")
        print(f"load:       {loadgen}, {args.connections} connections on core {LOAD_CORE}, {args.seconds:g} s per")
        print(f"            endpoint after {args.warmup:g} s warm-up; refresh pool {args.pool} tokens per provider")
        print(f"rate limit: raised to {RATE_LIMIT}/min on the portal (all traffic comes from 127.0.0.1)")
        print()
        head = (
            f"{'endpoint':20s} {'peer req/s':>10s} {'p50 ms':>7s} {'p99 ms':>7s}   "
            f"{'ours req/s':>10s} {'p50 ms':>7s} {'p99 ms':>7s}   {'ratio':>6s} {'target':>6s}  result"
        )
        print(head)
        print("-" * len(head))
        all_met = True
        for endpoint in args.endpoints:
            a, b = results["peer"][endpoint], results["portal"][endpoint]
            ratio = b["rps"] / a["rps"] if a["rps"] else float("nan")
            met = ratio >= TARGETS[endpoint] and a["errors"] == 0 and b["errors"] == 0
            all_met &= met
            verdict = "met" if met else "NOT MET"
            if a["errors"] or b["errors"]:
                verdict += " (errors: invalid run)"
            print(
                f"{endpoint:20s} {a['rps']:10.0f} {_fmt_ms(a['p50_us']):>7s} {_fmt_ms(a['p99_us']):>7s}   "
                f"{b['rps']:10.0f} {_fmt_ms(b['p50_us']):>7s} {_fmt_ms(b['p99_us']):>7s}   "
                f"{ratio:5.2f}x {TARGETS[endpoint]:5.1f}x  {verdict}"
            )
        print()
        print("CPU per request (server process, all threads; PostgreSQL is not pinned and runs on either core):")
        print(f"  {'endpoint':20s} {'peer ms':>8s} {'ours ms':>8s} {'postgres ms':>12s}  errors peer/ours")
        for endpoint in args.endpoints:
            a, b = results["peer"][endpoint], results["portal"][endpoint]
            print(
                f"  {endpoint:20s} {a['server_cpu_ms']:8.2f} {b['server_cpu_ms']:8.2f} "
                f"{b['postgres_cpu_ms']:12.2f}  {a['errors']}/{b['errors']}"
            )
        print()
        print("all targets met" if all_met else "targets NOT all met")
        if args.json:
            Path(args.json).write_text(json.dumps({"peer_version": peer_version, "results": results}, indent=2))
        return 0
    finally:
        _stop(peer_proc)
        _stop(portal_proc, signal.SIGINT if args.profile else signal.SIGTERM)
        try:
            asyncio.run(signin._admin_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        except Exception as exc:
            print(f"warning: could not drop {DB_NAME}: {exc}", file=sys.stderr)
        if args.keep_logs:
            for name in ("portal.log", "peer.log"):
                if (tmp / name).exists():
                    shutil.copyfile(tmp / name, Path(args.keep_logs) / name)
        shutil.rmtree(tmp, ignore_errors=True)


def _node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured load per endpoint (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured load before each (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--pool", type=int, default=64, help="refresh tokens in rotation per provider (default 64)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--endpoints", nargs="+", choices=ENDPOINTS, default=list(ENDPOINTS), help="measure only these (default all)"
    )
    parser.add_argument("--profile", help="run the portal under cProfile (bench/profile_serve.py), stats to this path")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy portal.log and peer.log to this folder")
    parser.add_argument("--_loadgen", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._loadgen:
        return loadgen_main(args._loadgen)
    if not 1 <= args.seconds <= 600:
        parser.error("--seconds must be between 1 and 600")
    if not 1 <= args.connections <= 1000:
        parser.error("--connections must be between 1 and 1000")
    if args.pool < args.connections + 1:
        parser.error("--pool must be larger than --connections (every connection holds one token in flight)")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
