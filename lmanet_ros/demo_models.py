"""The demo checkpoints shipped in the package (trained by ``lmanet train`` on ``lmanet synth``).

``checkpoint: demo`` (node parameter, ``--checkpoint demo``, ``MODEL:demo`` in
``lmanet eval --compare``) names the demo weights of the chosen model. They are small fp16
safetensors in ``lmanet_ros/data/demo/``, trained at 128x256 on the synthetic street recipe
``standard-v1`` (training seeds only); ``lmanet_ros/data/demo/TRAINING.md`` has the exact
commands, the logs and the held-out scores. They know synthetic streets, not real cameras.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO", "DEMO_DIR", "DEMO_FILES", "demo_checkpoint", "resolve_checkpoint"]

#: The checkpoint value that selects the demo weights.
DEMO = "demo"
#: Where the demo weights live (package data).
DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"
#: Model name -> demo weights file in :data:`DEMO_DIR`.
DEMO_FILES = {"erfnet": "erfnet_synth.safetensors",
              "lmanet_erfnet": "lmanet_erfnet_synth.safetensors"}


def demo_checkpoint(model: str) -> Path:
    """The demo weights of ``model``.

    Raises:
        FileNotFoundError: no demo weights for ``model``, or the file is missing (a package
            installed without its data).
    """
    name = DEMO_FILES.get(model)
    if name is None:
        raise FileNotFoundError(f"no demo weights for model '{model}' (demo weights exist for: "
                                f"{', '.join(sorted(DEMO_FILES))})")
    path = DEMO_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"demo weights {path} are missing: the package was installed "
                                f"without lmanet_ros/data/demo")
    return path


def resolve_checkpoint(model: str, checkpoint: str | Path | None) -> str | Path | None:
    """``checkpoint`` itself, or the demo weights' path when it is ``demo``."""
    if isinstance(checkpoint, str) and checkpoint.strip() == DEMO:
        return demo_checkpoint(model)
    return checkpoint
