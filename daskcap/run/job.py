"""What a job is: its stages (``Job``), where it runs (``ClusterOptions``), the
configuration that decides its output (and that configuration's hash), and the
checks made before any video is read."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from daskcap.engines.base import resolve_backend
from daskcap.engines.weights import check_available
from daskcap.prompts import ENHANCE_PROMPTS
from daskcap.stages._params import Checks
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage
from daskcap.stages.check import CaptionCheckStage
from daskcap.stages.clip import FixedStrideClipStage
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.stages.preview import PreviewStage
from daskcap.stages.read import VideoReaderStage
from daskcap.stages.write import ClipWriterStage


class JobError(RuntimeError):
    """The job cannot start or finish; the message says why and what to do."""


class UsageError(JobError):
    """The job was refused before any work (nothing to read, output in the way, no model)."""


def _is_host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep) and port.isdigit() and int(port) < 65536 and "/" not in host and " " not in host


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, an empty one meaning every interface) is this machine's loopback."""
    import ipaddress

    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ClusterOptions:
    """Where the job runs: an existing scheduler, or an embedded cluster."""

    scheduler: str | None = None
    n_workers: int | None = None  # embedded cluster CPU workers; default one per core
    engine_workers: int | None = None  # embedded engine workers; default one per GPU, else 1
    windows_per_partition: int = 8
    videos_per_shard: int = 1000  # the unit the client keeps track of; a resume keeps the first run's
    # Where the embedded cluster's scheduler and workers listen, and its dashboards (default:
    # the same host, any port). Loopback unless asked: a scheduler port runs any code it is sent.
    listen_host: str = "127.0.0.1"
    dashboard_address: str | None = None
    # TLS to an existing cluster (``--scheduler tls://...``): the CA, this client's certificate and key.
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        checks = Checks("cluster")
        if not self.listen_host or any(ch in self.listen_host for ch in "/ "):
            checks.fail(f"listen_host must be a host name or address (e.g. 127.0.0.1), got {self.listen_host!r}")
        if self.dashboard_address is not None and not _is_host_port(self.dashboard_address):
            checks.fail(f"dashboard_address must be HOST:PORT or :PORT (e.g. 127.0.0.1:8787), got {self.dashboard_address!r}")
        for name in ("n_workers", "engine_workers"):
            if getattr(self, name) is not None:
                checks.number(name, getattr(self, name), 1, integer=True)
        tls = {"tls_ca_file": self.tls_ca_file, "tls_cert": self.tls_cert, "tls_key": self.tls_key}
        if any(tls.values()):
            missing = [name for name, value in tls.items() if not value]
            if missing:
                checks.fail(f"TLS needs all of --tls-ca-file, --tls-cert and --tls-key; missing {', '.join(missing)}")
            if not self.scheduler:
                checks.fail("the --tls-* files are for an existing cluster (--scheduler tls://...); the embedded one listens on loopback")
        checks.number("windows_per_partition", self.windows_per_partition, 1, integer=True)
        checks.number("videos_per_shard", self.videos_per_shard, 1, integer=True)
        checks.done()


@dataclass(frozen=True)
class Job:
    reader: VideoReaderStage
    clipper: FixedStrideClipStage
    prepare: CaptionPreparationStage
    writer: ClipWriterStage
    preview: PreviewStage | None = None
    caption: CaptionGenerationStage | None = None
    enhance: CaptionEnhancementStage | None = None
    check: CaptionCheckStage | None = None

    @property
    def enhance_prompt(self) -> str | None:
        """The enhancement prompt (the caption checks' language rule reads it)."""
        if self.enhance is None:
            return None
        return self.enhance.prompt_text or ENHANCE_PROMPTS[self.enhance.prompt_variant]

    @property
    def needs_engines(self) -> bool:
        """Model stages run: partitions go prepare -> model stages -> write (run/stream.py)."""
        return self.caption is not None or self.enhance is not None

    @property
    def needs_engine_workers(self) -> bool:
        """A model stage runs in process, on engine workers (an endpoint's runs on CPU workers)."""
        return any(stage is not None and stage.endpoint is None for stage in (self.caption, self.enhance))

    @property
    def endpoint_stages(self) -> dict:
        """``{"caption" | "enhance": stage}`` for the stages that send to an endpoint."""
        return {role: stage for role, stage in (("caption", self.caption), ("enhance", self.enhance))
                if stage is not None and stage.endpoint is not None}


# --- the configuration and its hash ---------------------------------------------------------------

# Settings that change no output byte: left out of the hash so they may differ on a rerun.
_NEUTRAL_KEYS = {"verbose", "num_cpus_per_worker", "caption_batch_size", "model_batch_size", "max_workers", "log_stats",
                 # how hard an endpoint is pushed and by which key: the answers are the same
                 "endpoint_api_key_env", "endpoint_max_concurrency", "endpoint_timeout_s", "endpoint_max_retries", "endpoint_breaker_s"}
# Fields kept for NeMo Curator's signatures that nothing reads (the stage: the fields).
_NEUTRAL_FIELDS = {
    "writer": {"generate_captions", "generate_embeddings", "embedding_algorithm"},
    "caption": {"model_does_preprocess"},  # the preparation stage's is the one that acts
    "enhance": {"captioning_model_variant"},
}


def params_dict(params) -> dict | None:
    return asdict(params) if params is not None else None


def job_config(job: Job, options: ClusterOptions) -> dict:
    """The configuration that decides the output (its hash is in summary.json and _daskcap/job.json)."""
    return {
        "reader": params_dict(job.reader),
        "clipper": params_dict(job.clipper),
        "prepare": params_dict(job.prepare),
        "preview": params_dict(job.preview),
        "caption": params_dict(job.caption),
        "enhance": params_dict(job.enhance),
        "check": params_dict(job.check),
        "writer": params_dict(job.writer),
        "windows_per_partition": options.windows_per_partition,
    }


def _without_neutral(value, section: str | None = None):
    if isinstance(value, dict):
        skipped = _NEUTRAL_KEYS | _NEUTRAL_FIELDS.get(section, set())
        return {k: _without_neutral(v, k if section is None else section) for k, v in value.items() if k not in skipped}
    return value


def config_hash(config: dict) -> str:
    """A short, stable hash of everything that decides the output."""
    canonical = json.dumps(_without_neutral(config), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- checks before any work ------------------------------------------------------------------------


def check_models(job: Job, options: ClusterOptions) -> list[str]:
    """Problems with the model stages, found before any video is read."""
    problems = []
    for stage in (job.caption, job.enhance):
        if stage is None or stage.endpoint is not None:  # an endpoint's model is the server's (resolve_endpoints)
            continue
        problems += [f"{type(stage).__name__}: {p}" for p in check_available(stage.model_name, stage.model_dir)]
        if stage.fp8:
            # On an existing cluster the workers decide "auto"; here we can only judge our own machine.
            backend = stage.engine if (options.scheduler and stage.engine == "auto") else resolve_backend(stage.engine)
            if backend == "transformers":
                problems.append(
                    f"{type(stage).__name__}: fp8 needs the vLLM engine; the transformers engine "
                    "(the only one available here) would silently run full precision"
                )
    return problems


def resolve_endpoints(job: Job) -> Job:
    """``job`` with each endpoint stage's served model name, asked of its server (``/models``)
    when not given; UsageError, one line per problem, when a server cannot be reached, refuses
    the API key or does not serve the model. Runs before any video is read."""
    import dataclasses

    from daskcap.engines.endpoint import EndpointDown, api_key, display_url, served_models

    problems, stages = [], {}
    for role, stage in job.endpoint_stages.items():
        name = type(stage).__name__
        try:
            served = served_models(stage.endpoint, api_key(stage.endpoint_api_key_env or ""))
        except EndpointDown as exc:
            problems.append(f"{name}: {exc}")
            continue
        if stage.model is None and len(served) != 1:
            flag = "--captioning-model" if role == "caption" else "--enhance-captions-model"
            problems.append(f"{name}: the endpoint {display_url(stage.endpoint)} serves {len(served)} models "
                            f"({', '.join(served) or 'none'}); name one with {flag}")
        elif stage.model is not None and stage.model not in served:
            problems.append(f"{name}: the endpoint {display_url(stage.endpoint)} does not serve {stage.model!r} "
                            f"(it serves {', '.join(served) or 'none'})")
        else:
            stages[role] = dataclasses.replace(stage, model=stage.model or served[0])
    if problems:
        raise UsageError("\n".join(problems))
    return dataclasses.replace(job, **stages)
