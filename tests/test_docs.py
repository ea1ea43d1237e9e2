"""Every code block of README.md and docs/migrating-from-nemo-curator.md, run the way a user runs it.

Each block is written into a file in a fresh folder holding ``videos/`` (synthetic clips the
tiny models describe, and a real low-resolution sample) and ``models/tiny``, and run as its
own process: Python blocks with ``python file.py``, shell blocks with ``bash -e``. So a
document that drifts from the code fails here. An HTML comment on the line before a block
says how to treat it (``<!-- doc-test: ... -->``):

- ``skip (why)``: not run (an install, a synopsis, real weights);
- ``name=NAME``: other blocks may use it as their prelude;
- ``prelude=NAME``: NAME's code without its last paragraph (where it runs the pipeline) comes first;
- ``scheduler=ADDRESS``: a cluster is started with cluster/local.sh and its address replaces ADDRESS;
- ``instead="COMMAND"``: COMMAND runs in place of the block (``{folder}``: the test's folder);
- ``setup=NAME``: the shell block NAME runs first, in the same folder (e.g. a job whose output the block reads).

No process of a block's job may outlive it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/migrating-from-nemo-curator.md")
_BLOCK = re.compile(r"(?:^<!-- doc-test: (?P<marker>.*?) -->\n)?^```(?P<lang>\w*)\n(?P<code>.*?)^```", re.S | re.M)
_SHELL = {"", "sh", "bash", "shell", "console"}


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    lang: str
    code: str
    marker: str

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"

    def option(self, key: str) -> str | None:
        match = re.search(rf'\b{key}=(?:"(?P<quoted>[^"]*)"|(?P<bare>\S+))', self.marker)
        return None if match is None else (match["quoted"] if match["quoted"] is not None else match["bare"])

    @property
    def skipped(self) -> str | None:
        match = re.match(r"skip \((.*)\)$", self.marker)
        return match[1] if match else None


def blocks() -> list[Block]:
    found = []
    for document in DOCUMENTS:
        text = (REPO / document).read_text()
        for match in _BLOCK.finditer(text):
            line = text[: match.start("lang")].count("\n") + 1
            found.append(Block(document, line, match["lang"], match["code"], match["marker"] or ""))
    return found


def named(name: str) -> Block:
    [block] = [b for b in blocks() if b.option("name") == name]
    return block


def without_last_paragraph(code: str) -> str:
    return code.rstrip().rsplit("\n\n", 1)[0] + "\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_models, samples) -> Path:
    """What a user's folder holds: videos/ and models/tiny (the tiny models, built once, copied)."""
    from daskcap.samples import write_synthetic

    folder = tmp_path_factory.mktemp("inputs")
    write_synthetic(folder / "videos")
    shutil.copyfile(samples / "carphone_pristine.mp4", folder / "videos" / "carphone_pristine.mp4")  # 176x144
    shutil.copytree(Path(tiny_models["vlm"]).parent, folder / "models" / "tiny")
    return folder


def user_folder(inputs: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "user"
    shutil.copytree(inputs, folder)
    return folder


def run_as_user(command: list[str], folder: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    """``command`` run in ``folder`` with the venv on PATH; afterwards no process of its job is left."""
    tag = uuid.uuid4().hex
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DOC_TEST_RUN": tag}
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    assert not processes_tagged(tag), "processes of the job outlived it"
    return result


def processes_tagged(tag: str, wait_s: float = 15.0) -> list[int]:
    """Processes whose environment carries ``tag`` (every process a run started inherits it), after
    giving them ``wait_s`` to exit."""
    import time

    deadline = time.time() + wait_s
    while True:
        left = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("DOC_TEST_RUN") == tag and process.status() != psutil.STATUS_ZOMBIE:
                    left.append(process.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if not left or time.time() > deadline:
            return left
        time.sleep(0.5)


def check_output(folder: Path) -> pd.DataFrame | None:
    """A block that wrote out/ left a finished run there, every window ok."""
    out = folder / "out"
    if not (out / "summary.json").exists():
        return None
    summary = json.loads((out / "summary.json").read_text())
    windows = pd.read_parquet(out / "windows")
    assert len(windows) == summary["windows"]["total"] > 0
    assert (windows["status"] == "ok").all(), windows[["video_path", "status", "error"]]
    return windows


def test_the_documents_have_the_blocks_this_test_knows():
    found = blocks()
    assert len(found) >= 8
    for block in found:
        assert block.lang in _SHELL | {"python"}, f"{block.id}: a {block.lang} block: teach this test to run it"
        assert not block.marker or block.skipped or re.match(r"(name|prelude|scheduler|instead|setup)=", block.marker), block.id
    assert named("nemo-quickstart").code.rstrip().endswith("pipeline.run(executor)")  # module level, as NeMo writes it


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in blocks() if not b.skipped], ids=lambda b: b.id)
def test_a_documented_block_runs_as_written(block, inputs, tmp_path, cluster):
    folder = user_folder(inputs, tmp_path)
    code = block.code
    if block.option("prelude"):
        code = without_last_paragraph(named(block.option("prelude")).code) + code
    if block.option("scheduler"):
        start, _ = cluster
        code = code.replace(block.option("scheduler"), start(1, 1))
    if block.option("setup"):
        (folder / "setup.sh").write_text(named(block.option("setup")).code)
        setup = run_as_user(["bash", "-e", "setup.sh"], folder)
        assert setup.returncode == 0, f"{block.id}'s setup failed:\n{setup.stdout[-3000:]}\n{setup.stderr[-3000:]}"
    if block.option("instead"):
        command = ["bash", "-e", "-c", block.option("instead").format(folder=folder)]
        result = run_as_user(command, REPO, timeout=600)
    elif block.lang == "python":
        (folder / "snippet.py").write_text(code)
        result = run_as_user([sys.executable, "snippet.py"], folder)
    else:
        (folder / "snippet.sh").write_text(code)
        result = run_as_user(["bash", "-e", "snippet.sh"], folder)
    assert result.returncode == 0, f"{block.id} failed:\n{code}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    windows = check_output(folder)
    if "tiny" in code and windows is not None:  # the caption blocks: every window captioned and enhanced
        assert windows["caption"].notna().all() and windows["enhanced_caption"].notna().all()
    if block.option("instead"):
        assert (folder / "demo" / "summary.json").exists()
