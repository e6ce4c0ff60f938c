"""Running scenes: the workspace, the tile plan, the stages, resume, and the runner."""

from pipeline.run.runner import SceneResult, run_scene
from pipeline.run.workspace import Workspace

__all__ = ["SceneResult", "Workspace", "run_scene"]
