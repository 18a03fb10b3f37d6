"""The notebooks in a real JupyterLab server, with the project's Jupyter configuration.

One ``jupyter lab`` process is started on 127.0.0.1 (a free port, a random token) with
``JUPYTER_CONFIG_PATH=<repo>/jupyter`` as ``make lab`` does, its root a temporary copy of
``notebooks/`` so nothing tracked is ever written. Through the server's REST API and a kernel
websocket, as JupyterLab does, the test opens a percent-format ``.py`` as a notebook, checks its
``parameters`` cell, runs every code cell in a kernel at the ``smoke`` profile (the kernel inherits
``STAGEWISE_PROFILE`` and the private cache and figures folders from ``conftest.py``), saves the
notebook with its outputs, and checks that the ``.py`` is written back byte for byte and that the
only ``.ipynb`` written is the paired one, which git ignores in ``notebooks/``. The server (and its
kernel) is stopped by the fixture's teardown, also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jupyterlab  # noqa: F401 (a dependency: the test fails, not skips, without it)
import jupytext
import nbformat
import pytest
import requests
import websocket  # websocket-client

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py"))
RUN_NOTEBOOK = "03_transient_ridge.py"  # run in a kernel: the quickest at smoke (13 s on an idle machine)
STARTUP_TIMEOUT_S = 90
RUN_TIMEOUT_S = 600  # every cell of RUN_NOTEBOOK at smoke, all together

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running ``jupyter lab`` process and a token-authenticated REST session to it."""

    def __init__(self, root: Path, home: Path):
        self.root = root
        self.port = _free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "server.log"
        env = dict(os.environ)
        env.update({
            "JUPYTER_CONFIG_PATH": str(REPO / "jupyter"),  # the project's configuration, as `make lab`
            # the user's own Jupyter/IPython configuration and runtime files stay out of the test
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "IPYTHONDIR": str(home / "ipython"),
            "JUPYTER_PLATFORM_DIRS": "1",
        })
        env.pop("MPLBACKEND", None)  # the kernel draws inline, as in JupyterLab (conftest sets Agg)
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
            cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {self.token}"

    def log_tail(self, n: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.http.get(f"{self.url}/api/status", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"jupyter lab did not answer within {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def api(self, method: str, path: str, **kw):
        response = self.http.request(method, f"{self.url}{path}", timeout=60, **kw)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:500]}\n{self.log_tail()}"
        return response.json() if response.content else None

    def stop(self) -> None:
        """Shut down the server (it stops its kernels); kill it if it does not exit in time."""
        if self.process.poll() is None:
            try:
                self.http.post(f"{self.url}/api/shutdown", timeout=5)
            except requests.RequestException:
                pass
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        self.http.close()
        self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("jupyter")
    root = base / "notebooks"
    shutil.copytree(REPO / "notebooks", root,
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__"))
    srv = Server(root, base)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
    assert srv.process.returncode is not None, "the Jupyter server is still running after teardown"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert s.connect_ex(("127.0.0.1", srv.port)) != 0, f"port {srv.port} still accepts connections"


def test_py_files_open_as_notebooks_by_default(server):
    """JupyterLab's setting that a double-click uses: Python files open with Jupytext's notebook viewer."""
    plugin = server.api("GET", "/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    # jupyter/lab/settings/overrides.json becomes the setting's default; no user setting replaces it
    default = plugin["schema"]["properties"]["defaultViewers"]["default"]
    assert default.get("python") == "Jupytext Notebook", default
    assert "defaultViewers" not in plugin["settings"], plugin["settings"]
    # the viewer exists: Jupytext's JupyterLab extension is served to the page
    page = server.http.get(f"{server.url}/lab", timeout=30).text
    assert "jupyterlab-jupytext" in page


def _code_sources(nb) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


class Kernel:
    """Execute code in a server-side kernel over its websocket (Jupyter messaging protocol 5.3)."""

    def __init__(self, server: Server, kernel_id: str):
        self.session = uuid.uuid4().hex
        ws_url = server.url.replace("http", "ws", 1)
        self.ws = websocket.create_connection(
            f"{ws_url}/api/kernels/{kernel_id}/channels?session_id={self.session}",
            header=[f"Authorization: token {server.token}"], timeout=RUN_TIMEOUT_S)

    def close(self) -> None:
        self.ws.close()

    def _send(self, msg_type: str, content: dict, channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": self.session, "msg_type": msg_type,
                       "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel, "buffers": [],
        }))
        return msg_id

    def request(self, msg_type: str, content: dict, deadline: float):
        """Send a shell request; return (reply content, iopub messages for it), after the kernel is idle."""
        msg_id = self._send(msg_type, content)
        reply, iopub, idle = None, [], False
        while reply is None or not idle:
            self.ws.settimeout(max(deadline - time.monotonic(), 0.1))
            frame = self.ws.recv()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{msg_type} did not finish in time")
            if isinstance(frame, bytes):  # a message with binary buffers: none of ours needs them
                continue
            msg = json.loads(frame)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["channel"] == "shell":
                reply = msg["content"]
            elif msg["channel"] == "iopub":
                if msg["msg_type"] == "status":
                    idle = idle or msg["content"]["execution_state"] == "idle"
                else:
                    iopub.append(msg)
        return reply, iopub


def _open_as_notebook(server: Server, path: str):
    """GET the .py as a notebook, as JupyterLab's notebook viewer does; check it against the file."""
    nb_file = jupytext.read(server.root / path)
    model = server.api("GET", f"/api/contents/{path}", params={"type": "notebook", "content": 1})
    assert model["type"] == "notebook" and model["format"] == "json"
    nb = nbformat.from_dict(model["content"])
    nbformat.validate(nb)
    assert len(nb.cells) == len(nb_file.cells) > 5
    assert [c.cell_type for c in nb.cells] == [c.cell_type for c in nb_file.cells]
    assert _code_sources(nb) == _code_sources(nb_file)
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    # the parameters cell: exactly one, the first code cell, with defaults that run as they are
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assert "profile = None" in tagged[0].source
    assert tagged[0] is next(c for c in nb.cells if c.cell_type == "code"), "parameters must be the first code cell"
    return nb


def _save(server: Server, path: str, nb) -> None:
    saved = server.api("PUT", f"/api/contents/{path}", json={"type": "notebook", "format": "json", "content": nb})
    assert saved["path"] == path and saved["type"] == "notebook"


def _assert_no_unpaired_ipynb(server: Server) -> None:
    """Every .ipynb written is the pair of a .py notebook, and git ignores it in notebooks/."""
    for ipynb in server.root.rglob("*.ipynb"):
        if ".ipynb_checkpoints" in ipynb.parts:
            continue
        rel = ipynb.relative_to(server.root)
        text = ipynb.with_suffix(".py")
        assert text.exists(), f"{rel} has no paired .py"
        assert "ipynb" in jupytext.read(text).metadata["jupytext"]["formats"].split(","), f"{rel} is not paired"
        assert _code_sources(nbformat.read(ipynb, as_version=4)) == _code_sources(jupytext.read(text))
        if shutil.which("git") and (REPO / ".git").exists():
            ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", f"notebooks/{rel}"])
            assert ignored.returncode == 0, f"notebooks/{rel} would be tracked by git"


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_every_notebook_opens_and_saves_unchanged(server, path):
    """Open as a notebook (as JupyterLab records it: language_info, trusted cells) and save: same .py."""
    before = (server.root / path).read_bytes()
    nb = _open_as_notebook(server, path)
    nb.metadata["language_info"] = {"name": "python", "mimetype": "text/x-python", "file_extension": ".py",
                                    "version": ".".join(map(str, sys.version_info[:3]))}
    for cell in nb.cells:
        cell.metadata["trusted"] = True
    _save(server, path, nb)
    assert (server.root / path).read_bytes() == before, f"saving {path} unchanged rewrote the .py differently"
    assert (server.root / path).with_suffix(".ipynb").exists(), "Jupytext writes the paired .ipynb"
    _assert_no_unpaired_ipynb(server)


def test_notebook_runs_in_a_kernel_and_saves_faithfully(server):
    path = RUN_NOTEBOOK
    on_disk = server.root / path
    text_before = on_disk.read_text(encoding="utf-8")
    nb_file = jupytext.reads(text_before, fmt="py:percent")
    nb = _open_as_notebook(server, path)

    # a kernel for this notebook, started through the sessions API as JupyterLab does
    session = server.api("POST", "/api/sessions", json={
        "path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"}})
    kernel = Kernel(server, session["kernel"]["id"])
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        info, _ = kernel.request("kernel_info_request", {}, deadline)
        nb.metadata["language_info"] = info["language_info"]  # JupyterLab records it on save
        kernel.request("execute_request", {  # the smoke profile really reached the kernel
            "code": "import os; assert os.environ['STAGEWISE_PROFILE'] == 'smoke'", "silent": False,
            "store_history": False, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}, deadline)
        images = 0
        for count, cell in enumerate((c for c in nb.cells if c.cell_type == "code"), start=1):
            reply, iopub = kernel.request("execute_request", {
                "code": cell.source, "silent": False, "store_history": True, "user_expressions": {},
                "allow_stdin": False, "stop_on_error": True}, deadline)
            outputs = [nbformat.v4.output_from_msg(m) for m in iopub
                       if m["msg_type"] in ("stream", "display_data", "execute_result", "error")]
            errors = [o for o in outputs if o.output_type == "error"]
            assert reply["status"] == "ok" and not errors, (
                f"cell {count} failed: {reply.get('ename')}: {reply.get('evalue')}\n"
                + "\n".join("\n".join(o.traceback) for o in errors)[-3000:])
            cell.outputs = outputs
            cell.execution_count = reply["execution_count"]
            images += sum("image/png" in o.get("data", {}) for o in outputs)
        assert images >= 1, "no figure was drawn inline"
    finally:
        kernel.close()
        server.api("DELETE", f"/api/sessions/{session['id']}")
    assert server.api("GET", "/api/kernels") == []

    # save with the outputs, as JupyterLab's save does; Jupytext writes the .py and the paired .ipynb
    _save(server, path, nb)
    text_after = on_disk.read_text(encoding="utf-8")
    assert _code_sources(jupytext.reads(text_after, fmt="py:percent")) == _code_sources(nb_file)
    assert text_after == text_before, "the round trip through JupyterLab changed the .py file"
    paired = nbformat.read(on_disk.with_suffix(".ipynb"), as_version=4)
    assert any(c.get("outputs") for c in paired.cells), "the paired .ipynb keeps the outputs"
    _assert_no_unpaired_ipynb(server)
