"""Safe by default (issue 23): what a job listens on, and that it is opened only on purpose."""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from daskcap.run.cluster import warn_if_open
from daskcap.run.job import ClusterOptions
from daskcap.stages._params import ParamError

ROOT = Path(__file__).resolve().parent.parent


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of process ``pid`` and its descendants."""
    found = set()
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_captioning_job_listens_on_loopback_only(tmp_path, samples, tiny_models):
    job = subprocess.Popen(
        [sys.executable, "-m", "daskcap.cli", "run", str(samples / "bikes.mp4"), str(tmp_path / "out"), "--quiet",
         "--n-workers", "1", "--engine-workers", "1", "--captioning-model", str(tiny_models["vlm"]),
         "--captioning-max-output-tokens", "4", "--no-report"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen: set[tuple[str, int]] = set()
    while job.poll() is None:
        seen |= _listening(job.pid)
        time.sleep(0.2)
    stdout, stderr = job.communicate()
    assert job.returncode == 0, stderr[-3000:]
    assert "windows: 1 (1 ok)" in stdout
    # The scheduler, its dashboard, two nannies, two workers and their dashboards at least.
    assert len(seen) >= 6, seen
    assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in seen), seen


@pytest.mark.timeout(30)
def test_opening_the_cluster_is_checked_and_warned_about(caplog):
    with pytest.raises(ParamError) as refused:
        ClusterOptions(listen_host="", dashboard_address="8787")
    assert len(refused.value.problems) == 2
    assert ClusterOptions(listen_host="0.0.0.0", dashboard_address=":8787").dashboard_address == ":8787"
    with caplog.at_level(logging.WARNING, logger="daskcap.run.cluster"):
        warn_if_open("127.0.0.1", "localhost:8787")
        assert not caplog.records
        warn_if_open("0.0.0.0", ":8787")
    assert [r.getMessage().split(" on ")[1].split(" ")[0] for r in caplog.records] == ["0.0.0.0", "every"]


@pytest.mark.timeout(30)
def test_the_listen_flags_reach_the_embedded_cluster(tmp_path):
    from test_flags import _run_args

    from daskcap.flags import build_pipeline

    (tmp_path / "in").mkdir()
    default = build_pipeline(_run_args(tmp_path)).cluster
    assert (default.listen_host, default.dashboard_address) == ("127.0.0.1", None)
    opened = build_pipeline(_run_args(tmp_path, "--listen-host", "0.0.0.0", "--dashboard-address", "127.0.0.1:8790")).cluster
    assert (opened.listen_host, opened.dashboard_address) == ("0.0.0.0", "127.0.0.1:8790")


# --- bounds -------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_every_numeric_flag_refuses_non_finite_values_before_any_work(tmp_path):
    from test_flags import _run_args

    from daskcap.flags import FLAGS, build_pipeline

    numeric = [flag for flag in FLAGS if flag.type is float]
    assert len(numeric) >= 8
    for flag in numeric:
        for value in ("nan", "inf", "-inf"):
            with pytest.raises(ParamError) as refused:
                build_pipeline(_run_args(tmp_path, f"--{flag.name}={value}", "--captioning-model", "m", "--generate-previews"))
            assert any("finite" in problem or "must be" in problem for problem in refused.value.problems), (flag.name, value)
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(60)
def test_frames_over_the_pixel_budget_are_refused_when_probed(samples):
    from daskcap.stages.read import VideoReaderStage
    from daskcap.video.probe import ProbeError, probe

    assert VideoReaderStage(input_video_path="x").max_frame_pixels >= 7680 * 4320  # 8K is admitted by default
    assert probe(str(samples / "bikes.mp4"), max_frame_pixels=640 * 272).width == 640
    with pytest.raises(ProbeError) as refused:
        probe(str(samples / "bikes.mp4"), max_frame_pixels=100_000)
    assert refused.value.status == "read_failed" and "640x272" in str(refused.value)
    with pytest.raises(ParamError):
        VideoReaderStage(input_video_path="x", max_frame_pixels=0)


@pytest.mark.timeout(60)
def test_a_listed_file_cannot_pull_in_other_files_or_the_network(tmp_path, samples):
    import av

    from daskcap.video.probe import ProbeError, probe

    segment = tmp_path / "segment.ts"
    with av.open(str(samples / "bikes.mp4")) as source, av.open(str(segment), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for number, packet in enumerate(source.demux(source.streams.video[0])):
            if packet.dts is None or number > 30:
                continue
            packet.stream = stream
            target.mux(packet)
    assert probe(str(segment)).num_frames > 0  # the segment itself is a video
    playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{}\n#EXT-X-ENDLIST\n"
    (tmp_path / "local.m3u8").write_text(playlist.format(segment))
    (tmp_path / "net.m3u8").write_text(playlist.format("http://127.0.0.1:9/segment.ts"))
    (tmp_path / "list.ffconcat").write_text(f"ffconcat version 1.0\nfile '{segment}'\n")
    for name in ("local.m3u8", "net.m3u8", "list.ffconcat"):
        with pytest.raises(ProbeError) as refused:
            probe(str(tmp_path / name))
        assert refused.value.status == "read_failed", name


@pytest.mark.timeout(30)
def test_the_review_pages_data_survives_any_string():
    import json

    from daskcap.report import _json_for_script

    hostile = ["</script><script>alert(1)</script>", "<!--<script>", "a\u2028b", "bad\udcffbytes.mp4", "&lt;x&gt;", '"\\']
    embedded = _json_for_script({"names": hostile})
    assert "<" not in embedded and ">" not in embedded and embedded.isascii()
    assert json.loads(embedded) == {"names": hostile}
    embedded.encode("utf-8")  # the page is written as UTF-8


# --- TLS ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_tls_cluster_from_the_recipe_runs_a_job_and_refuses_clients_without_its_certificate(tmp_path, samples):
    import json

    from conftest import CLUSTER_SCRIPT, cluster_env, free_port
    from distributed import Client
    from distributed.security import Security

    state = tmp_path / "cluster"
    env = {**cluster_env(), "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s"}
    started = subprocess.run(["bash", str(CLUSTER_SCRIPT), "start", "--cpu-workers", "1", "--engine-workers", "0", "--tls",
                              "--port", str(free_port()), "--dir", str(state)], capture_output=True, text=True, timeout=180, env=env)
    try:
        assert started.returncode == 0, started.stderr
        address = started.stdout.strip().splitlines()[-1]
        assert address.startswith("tls://")
        certs = state / "tls"
        tls = ["--tls-ca-file", str(certs / "ca.pem"), "--tls-cert", str(certs / "cert.pem"), "--tls-key", str(certs / "key.pem")]

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "daskcap.cli", "run", str(samples / "bikes.mp4"), *args, "--quiet"],
                                  cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)

        job = run(str(tmp_path / "out"), "--scheduler", address, *tls)
        assert job.returncode == 0, job.stderr
        assert json.loads((tmp_path / "out" / "summary.json").read_text())["windows"]["total"] == 1

        for args, says in (
            (("--scheduler", address), "speaks TLS: pass --tls-ca-file"),
            (("--scheduler", address.replace("tls://", "tcp://")), "a TLS cluster (cluster/local.sh --tls) takes a tls:// address"),
        ):
            refused = run(str(tmp_path / "refused"), *args)
            assert refused.returncode == 2, refused.stderr
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1 and says in lines[0], refused.stderr
        assert not (tmp_path / "refused" / "summary.json").exists()

        # A client with a certificate of its own (another CA) is refused by the scheduler.
        with pytest.raises(OSError):
            Client(address, security=Security.temporary(), timeout="5s")
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", "--dir", str(state)], capture_output=True, timeout=60, env=env)
