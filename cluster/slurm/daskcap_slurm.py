"""A daskcap cluster on SLURM with dask-jobqueue: the scheduler runs here, workers run as jobs.

    python cluster/slurm/daskcap_slurm.py --cpu-jobs 4 --gpu-jobs 8 --queue cpu --gpu-queue gpu
    python cluster/slurm/daskcap_slurm.py --print-scripts     # show both job scripts, submit nothing
    python cluster/slurm/daskcap_slurm.py --tls ~/.daskcap-tls ...   # TLS: only holders of the certificate connect

CPU jobs run single-threaded `dask worker` processes (one per core); GPU jobs
each run one `dask cuda worker` with one GPU, advertising GPU=1 so daskcap's
model stages run there, non-daemonic so vLLM can start its engine process.
The script prints the scheduler address to pass to `daskcap run --scheduler`
and keeps the cluster up (engines stay warm between jobs) until Ctrl-C, which
cancels every job it submitted.

Plain TCP lets anyone who reaches the scheduler's port run code on the workers.
``--tls DIR`` uses DIR/ca.pem, cert.pem and key.pem (made with ``daskcap
tls-certs DIR`` when missing; DIR must be on a filesystem the compute nodes
read, and readable by you only): the scheduler and every worker speak tls://,
and ``daskcap run`` connects with ``--tls-ca-file DIR/ca.pem --tls-cert
DIR/cert.pem --tls-key DIR/key.pem``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time


def tls_security(directory: str | None):
    """The cluster's TLS settings from DIR (made there first when missing), or None for plain TCP."""
    if directory is None:
        return None
    import os

    from distributed.security import Security

    if not os.path.exists(os.path.join(directory, "key.pem")):
        subprocess.run([sys.executable, "-m", "daskcap.cli", "tls-certs", directory], check=True, capture_output=True)
    files = {name: os.path.abspath(os.path.join(directory, f"{name}.pem")) for name in ("ca", "cert", "key")}
    roles = {f"tls_{role}_{part}": files[part] for role in ("client", "scheduler", "worker") for part in ("cert", "key")}
    return Security(tls_ca_file=files["ca"], require_encryption=True, **roles)


def gpu_job_script(scheduler_address: str, args: argparse.Namespace, index: int, security=None) -> str:
    from dask_jobqueue.slurm import SLURMJob

    tls = {"security": security, "protocol": "tls://"} if security is not None else {}
    job = SLURMJob(
        **tls,
        scheduler=scheduler_address,
        name=f"daskcap-gpu-{index}",
        queue=args.gpu_queue or args.queue,
        account=args.account,
        walltime=args.walltime,
        cores=args.gpu_cores,
        memory=args.gpu_memory,
        processes=1,
        python=sys.executable,
        worker_command="dask cuda worker",
        # Four model tasks at once: their requests share the engine's batches (last --nthreads wins).
        worker_extra_args=["--resources", "GPU=1", "--nthreads", "4"],
        job_extra_directives=[f"--gres=gpu:{args.gpus_per_job}"],
        job_script_prologue=["export DASK_DISTRIBUTED__WORKER__DAEMON=False"],
    )
    return job.job_script()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-jobs", type=int, default=2, help="CPU worker jobs")
    parser.add_argument("--cpu-cores", type=int, default=16, help="cores per CPU job (one worker process each)")
    parser.add_argument("--cpu-memory", default="64GB", help="memory per CPU job")
    parser.add_argument("--gpu-jobs", type=int, default=1, help="GPU worker jobs (one engine worker each)")
    parser.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per GPU job; dask cuda worker starts one worker per GPU")
    parser.add_argument("--gpu-cores", type=int, default=8, help="cores per GPU job")
    parser.add_argument("--gpu-memory", default="128GB", help="memory per GPU job")
    parser.add_argument("--queue", default=None, help="SLURM partition for CPU jobs")
    parser.add_argument("--gpu-queue", default=None, help="SLURM partition for GPU jobs (default: --queue)")
    parser.add_argument("--account", default=None)
    parser.add_argument("--walltime", default="24:00:00")
    parser.add_argument("--port", type=int, default=8786, help="scheduler port (open it to the compute nodes)")
    parser.add_argument("--tls", metavar="DIR", default=None, help="TLS with DIR/ca.pem, cert.pem, key.pem (made when missing)")
    parser.add_argument("--print-scripts", action="store_true", help="print the CPU and GPU job scripts and exit")
    args = parser.parse_args()

    from dask_jobqueue import SLURMCluster

    security = tls_security(args.tls)
    tls = {"security": security, "protocol": "tls://"} if security is not None else {}
    cluster = SLURMCluster(
        **tls,
        queue=args.queue,
        account=args.account,
        walltime=args.walltime,
        cores=args.cpu_cores,
        processes=args.cpu_cores,  # single-threaded workers: FFmpeg and x264 bring their own threads
        memory=args.cpu_memory,
        python=sys.executable,
        name="daskcap-cpu",
        scheduler_options={"port": 0 if args.print_scripts else args.port, "dashboard_address": ":0" if args.print_scripts else ":8787"},
    )
    gpu_scripts = [gpu_job_script(cluster.scheduler_address, args, i, security) for i in range(args.gpu_jobs)]
    if args.print_scripts:
        print("# --- CPU worker job ---")
        print(cluster.job_script())
        print("# --- GPU (engine) worker job ---")
        print(gpu_scripts[0] if gpu_scripts else "# (no GPU jobs)")
        cluster.close()
        return 0

    cluster.scale(jobs=args.cpu_jobs)
    gpu_job_ids = []
    for script in gpu_scripts:
        submitted = subprocess.run(["sbatch", "--parsable"], input=script, capture_output=True, text=True, check=True)
        gpu_job_ids.append(submitted.stdout.strip().split(";")[0])
    print(f"scheduler: {cluster.scheduler_address}   dashboard: {cluster.dashboard_link}")
    certs = "" if args.tls is None else " " + " ".join(f"--{flag} {args.tls}/{name}.pem" for flag, name in (("tls-ca-file", "ca"), ("tls-cert", "cert"), ("tls-key", "key")))
    print(f"submit with: daskcap run INPUT OUTPUT --scheduler {cluster.scheduler_address}{certs}")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        while not stop:
            time.sleep(5)
    except KeyboardInterrupt:
        pass
    finally:
        if gpu_job_ids:
            subprocess.run(["scancel", *gpu_job_ids], check=False)
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
