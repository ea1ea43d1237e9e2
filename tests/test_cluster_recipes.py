"""The cluster recipes that cannot run here are at least well-formed: SLURM job scripts, Kubernetes manifests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).parent.parent / "cluster"


@pytest.mark.timeout(120)
def test_slurm_job_scripts():
    pytest.importorskip("dask_jobqueue")
    result = subprocess.run([sys.executable, str(CLUSTER / "slurm" / "daskcap_slurm.py"), "--print-scripts"],
                            capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    cpu, gpu = result.stdout.split("# --- GPU (engine) worker job ---")
    assert "--nthreads 1" in cpu and "#SBATCH" in cpu
    assert "#SBATCH --gres=gpu:1" in gpu and "-m dask cuda worker" in gpu
    assert "--resources GPU=1" in gpu and gpu.strip().endswith("--nthreads 4")  # model tasks share the engine's batches
    assert "DASK_DISTRIBUTED__WORKER__DAEMON=False" in gpu


@pytest.mark.timeout(120)
def test_slurm_job_scripts_with_tls(tmp_path):
    pytest.importorskip("dask_jobqueue")
    result = subprocess.run([sys.executable, str(CLUSTER / "slurm" / "daskcap_slurm.py"), "--print-scripts", "--tls", str(tmp_path / "tls")],
                            capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tls" / "key.pem").stat().st_mode & 0o077 == 0  # made, readable by its owner only
    for script in result.stdout.split("# --- GPU (engine) worker job ---"):
        assert "--protocol tls://" in script and f"--tls-ca-file {tmp_path / 'tls' / 'ca.pem'}" in script
        assert "tls://" in script.split("worker", 1)[1]  # the scheduler's address


def test_kubernetes_manifest_has_cpu_and_gpu_worker_groups():
    cluster, gpu_group = yaml.safe_load_all((CLUSTER / "k8s" / "daskcluster.yaml").read_text())
    assert cluster["kind"] == "DaskCluster" and gpu_group["kind"] == "DaskWorkerGroup"
    assert gpu_group["spec"]["cluster"] == cluster["metadata"]["name"]
    gpu = gpu_group["spec"]["worker"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "GPU=1" in gpu["args"] and gpu["args"][:3] == ["dask", "cuda", "worker"]
    cpu = cluster["spec"]["worker"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert ".[gpu,cloud]" in (CLUSTER / "k8s" / "Dockerfile").read_text()
