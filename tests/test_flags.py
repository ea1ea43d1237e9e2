"""One home per flag: both command lines are built from daskcap/flags.py, their defaults
are the stages' own, and the NeMo job differs only where the table says why."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from daskcap import cli
from daskcap.flags import FLAGS, NEMO, build_pipeline
from daskcap.stages.caption import CaptionGenerationStage
from daskcap.stages.prepare import CaptionPreparationStage
from daskcap.stages.preview import PreviewStage

ROOT = Path(__file__).resolve().parent.parent


def _nemo_job():
    spec = importlib.util.spec_from_file_location("split_clip_caption", ROOT / "jobs" / "split_clip_caption.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_args(tmp_path, *flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_parser = cli._run_parser(parser.add_subparsers(dest="command"))
    (tmp_path / "in").mkdir(exist_ok=True)
    return cli.apply_config(parser, run_parser, ["run", str(tmp_path / "in"), str(tmp_path / "out"), *flags])


def test_daskcap_run_defaults_are_the_stages_defaults(tmp_path):
    job = build_pipeline(_run_args(tmp_path, "--captioning-model", "m")).build()
    assert job.prepare == CaptionPreparationStage()
    assert job.preview == PreviewStage()
    caption = CaptionGenerationStage(model="m", model_dir="models", disable_mmcache=True)
    assert job.caption == caption


def test_the_nemo_job_differs_from_daskcap_run_only_where_the_table_says_why(tmp_path):
    run = vars(_run_args(tmp_path))
    nemo = vars(_nemo_job().make_parser().parse_args(["--video-dir", str(tmp_path / "in"), "--output-path", str(tmp_path / "out")]))
    shared = [flag for flag in FLAGS if not flag.run_only]
    differing = {flag.name for flag in shared if run[flag.dest] != nemo[flag.dest]}
    assert differing == set(NEMO) and all(NEMO[name].why for name in NEMO)
    assert all(nemo[flag.dest] == NEMO[flag.name].value for flag in shared if flag.name in NEMO)
    assert not any(flag.run_only and flag.dest in nemo for flag in FLAGS)


def test_the_window_default_is_written_once():
    sources = [p for p in (ROOT / "daskcap").rglob("*.py")] + list((ROOT / "jobs").glob("*.py"))
    hits = [str(p.relative_to(ROOT)) for p in sources if "window_size: int = 256" in p.read_text() or "default=256" in p.read_text()]
    assert hits == ["daskcap/stages/prepare.py"]
