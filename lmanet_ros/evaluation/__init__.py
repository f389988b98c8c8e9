"""Evaluation: score the segmentation pipeline, or a running node, on rosbag2 recordings.

- :mod:`.options` / :mod:`.offline`: offline evaluation, ``evaluate(EvalOptions(...))``;
- :mod:`.scoring`: live scoring of a node's labels (:class:`LiveScorer`);
- :mod:`.replay` / :mod:`.replay_node`: the replay engine (``replay_bag(ReplayOptions(...))``),
  lock-step and live scoring included; :mod:`.live`: passive live scoring (``score_live``);
- :mod:`.corruption`: scores by corruption group (hit, clean, per kind) with the clean-version
  and last-clean-frame references and the memory check, when the bag has a corruption log;
- :mod:`.outputs`: the output bag and the per-frame writer thread; :mod:`.report`:
  ``metrics.json`` and ``report.md`` (:mod:`.report_html`: ``report.html``; :mod:`.plots`: the
  PNG plots; :mod:`.corruption_report`: the corruption part; :mod:`.render`: shared formatting;
  :mod:`.host`: the machine's load); :mod:`.video`: overlay videos, H.264 through
  :mod:`.h264`.

rclpy is imported only when a replay or live scoring starts.
"""
from __future__ import annotations

from .live import score_live
from .offline import BagPlan, EvalOutcome, evaluate, plan_bag
from .options import EvalError, EvalOptions, ModelSpec, label_models, parse_compare
from .outputs import OutputBag, OutputWorker
from .replay import ReplayError, ReplayOptions, ReplayOutcome, parse_remaps, replay_bag
from .report import build_metrics, write_json, write_report
from .scoring import SCENE_CUTS, LiveScorer, ScoringError
from .video import VIDEO_FILE, LiveVideo, OverlayVideo, recorded_fps

__all__ = [
    "BagPlan", "EvalError", "EvalOptions", "EvalOutcome", "LiveScorer", "LiveVideo",
    "ModelSpec", "OutputBag", "OutputWorker", "OverlayVideo", "ReplayError", "ReplayOptions",
    "ReplayOutcome", "SCENE_CUTS", "ScoringError", "VIDEO_FILE", "build_metrics", "evaluate",
    "label_models", "parse_compare", "parse_remaps", "plan_bag", "recorded_fps", "replay_bag",
    "score_live", "write_json", "write_report",
]
