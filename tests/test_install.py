"""The install, as a user does it: the wheel into a fresh virtualenv, a new
``django-admin startproject``, the README's "Install in your project" section
followed literally (its code blocks are read from README.md), then a worker,
a call from ``manage.py shell`` and over JSON-RPC, the admin and the
dashboard. No Celery is installed or running.

Django's version in the fresh virtualenv is the one running this test, so the
Django 4.2 pass (``make test-django42``) repeats it on 4.2.
"""

from __future__ import annotations

import ast
import base64
import http.cookiejar
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest

from rpcapp.testing import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.install, pytest.mark.timeout(900)]


def readme_blocks() -> dict[str, str]:
    """The README's install code blocks, by the name in their ``<!-- install:NAME -->`` marker."""
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"<!-- install:(\S+) -->\n```\w*\n(.*?)```", text, flags=re.S)
    return {name: body for name, body in found}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (found,) = out.glob("rpcapp-*.whl")
    return found


def test_the_wheel_holds_the_app_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"rpcapp"}
    for expected in (
        "rpcapp/py.typed",
        "rpcapp/templates/rpcapp/dashboard/overview.html",
        "rpcapp/static/rpcapp/dashboard.js",
        "rpcapp/static/rpcapp/vendor/chart.umd.min.js",
        "rpcapp/migrations/0001_initial.py",
        "rpcapp/templatetags/rpc.py",
        "rpcapp/management/commands/runrpcworker.py",
        "rpcapp/management/commands/rpcmaintain.py",
    ):
        assert expected in names, expected
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(meta).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = sorted(r.split(">")[0].split("<")[0].split("=")[0].strip().lower() for r in requires if "extra ==" not in r)
    assert core == ["defusedxml", "django", "orjson", "redis"]
    assert "Django<7,>=4.2" in metadata or "Django>=4.2,<7" in metadata
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, flags=re.M))
    assert {"hiredis", "msgpack", "prometheus", "celery", "embedded", "otel", "all"} <= extras
    assert "License-Expression: BSD-3-Clause" in metadata
    assert "## Install in your project" in metadata  # the long description is the README


class Site:
    """A user's project in a fresh virtualenv, and the processes it runs."""

    def __init__(self, folder: Path, redis_url: str) -> None:
        self.folder = folder
        self.venv = folder / "venv"
        self.project = folder / "mysite"
        self.env = {**os.environ, "RPCAPP_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
        for name in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "RPCAPP_TEST_OVERRIDES", "VIRTUAL_ENV"):
            self.env.pop(name, None)
        self.procs: list[subprocess.Popen[str]] = []

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 300) -> str:
        done = subprocess.run(args, cwd=cwd or self.project, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout

    def manage(self, *args: str, timeout: float = 120) -> str:
        return self.run(str(self.venv / "bin/python"), "manage.py", *args, timeout=timeout)

    def start(self, *args: str, log: str) -> subprocess.Popen[str]:
        out = open(self.folder / log, "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([str(self.venv / "bin/python"), "manage.py", *args], cwd=self.project, env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.folder / name).read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()


def install(site: Site, wheel: Path, blocks: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(site.venv)], check=True)
    words = shlex.split(blocks["pip"].strip())
    assert words[:2] == ["pip", "install"] and words[2].startswith("rpcapp"), words
    extras = words[2][len("rpcapp") :]  # e.g. "[hiredis,prometheus]"
    django_spec = f"Django=={django.VERSION[0]}.{django.VERSION[1]}.*"
    site.run(str(site.venv / "bin/pip"), "install", "-q", f"{wheel}{extras}", django_spec, cwd=site.folder)
    site.project.mkdir()
    site.run(str(site.venv / "bin/django-admin"), "startproject", "mysite", str(site.project), cwd=site.folder)
    site.manage("startapp", "shop")
    with open(site.project / "mysite/settings.py", "a") as settings:
        settings.write("\n" + blocks["settings.py"] + 'INSTALLED_APPS += ["shop"]\n')
    with open(site.project / "mysite/urls.py", "a") as urls:
        urls.write("\n" + blocks["urls.py"])
    (site.project / "shop/rpc.py").write_text(blocks["shop/rpc.py"])


def printing(block: str) -> str:
    """The block as shell code that prints the value of its last expression."""
    tree = ast.parse(block)
    last = tree.body[-1]
    assert isinstance(last, ast.Expr)
    tree.body[-1] = ast.Expr(ast.Call(ast.Name("print", ast.Load()), [last.value], []))
    return ast.unparse(ast.fix_missing_locations(tree))


def wait_port(port: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


def poll(check: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r:.500})")


class Browser:
    """A session-authenticated HTTP client, as a browser logging in to the admin."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path, timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def log_in(self, username: str, password: str) -> None:
        status, page = self.get("/admin/login/")
        assert status == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token, "next": "/admin/"}).encode()
        request = urllib.request.Request(self.base + "/admin/login/", data=form, headers={"Referer": self.base + "/admin/login/"})
        with self.opener.open(request, timeout=30) as answer:
            assert answer.url.endswith("/admin/"), answer.url


def jsonrpc(base: str, user: str, password: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"{base}/rpc/jsonrpc/", data=body, headers={"Content-Type": "application/json", "Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with RedisServer() as server:
        made = Site(tmp_path, server.url)
        try:
            yield made
        finally:
            made.stop()


def test_install_into_a_new_project_following_the_readme(site: Site, wheel: Path) -> None:
    blocks = readme_blocks()
    assert {"pip", "settings.py", "urls.py", "shop/rpc.py", "run", "call"} <= set(blocks)
    install(site, wheel, blocks)
    py = str(site.venv / "bin/python")
    site.run(py, "-c", "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('celery', 'demo', 'project', 'bench', 'tests')))", cwd=site.folder)

    commands = [shlex.split(line.split("#")[0]) for line in blocks["run"].strip().splitlines()]
    assert [c[:3] for c in commands] == [["python", "manage.py", "migrate"], ["python", "manage.py", "runrpcworker"]]
    site.manage(*commands[0][2:])
    checked = site.manage("check")
    assert "rpcapp." not in checked, checked  # no rpcapp warning with the README's settings
    worker = site.start(*commands[1][2:], log="worker.log")

    code = printing(blocks["call"])
    answer = poll(lambda: _try(lambda: site.manage("shell", "-c", code, timeout=60)), 60, "a call from manage.py shell")
    assert answer.strip().splitlines()[-1] == "5"

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    site.env["DJANGO_SUPERUSER_PASSWORD"] = "s3cret-pass"
    site.manage("createsuperuser", "--noinput", "--username", "boss", "--email", "boss@example.com")
    site.start("runserver", f"127.0.0.1:{port}", "--noreload", log="web.log")
    wait_port(port)
    assert jsonrpc(base, "boss", "s3cret-pass", "shop.add", [4, 5]) == {"jsonrpc": "2.0", "result": 9, "id": 1}

    browser = Browser(base)
    browser.log_in("boss", "s3cret-pass")
    for path in ("/admin/", "/admin/rpcapp/service/", "/admin/rpcapp/procedure/", "/admin/rpcapp/provider/", "/admin/rpcapp/outboxmessage/", "/rpc/dashboard/"):
        status, page = browser.get(path)
        assert status == 200, (path, page[-2000:])
    status, page = browser.get("/admin/rpcapp/provider/")
    assert "live" in page  # the worker wrote its own Provider row
    poll(lambda: "shop.add" in browser.get("/rpc/dashboard/calls/")[1], 30, "the calls in the call history")
    poll(lambda: "shop.add" in browser.get("/rpc/dashboard/data.json")[1], 90, "the calls in the dashboard's data")

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=40) == 0, site.log("worker.log")[-3000:]
    assert "Traceback" not in site.log("worker.log"), site.log("worker.log")[-3000:]


def _try(fn: Any) -> Any:
    try:
        return fn()
    except AssertionError:
        return None
