"""Training checkpoints (resume an interrupted ``segpipe train``) and exported bundles.

Checkpoint: ``<out>.checkpoint.pt`` beside the bundle directory (never inside it),
written atomically every ``checkpoint_every`` steps. It holds the step, the model,
optimiser and scheduler states, both random generators and a digest of the training
config; ``segpipe train --resume`` continues from it only when the config is the
same, and the result is bit-identical to an uninterrupted run. The checkpoint is
removed once the bundle is written.

Export: ``export: torchscript`` writes the trained network as a TorchScript file
(``torch.jit.script``) and ``export: export`` as a ``torch.export`` program with
dynamic batch and spatial sizes (multiples of the network stride); both bundles run in
the pipeline like state-dict bundles, with the receptive field measured empirically
(gradient probe), as for any model whose structure the pipeline does not know.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import atomic_path
from segcore.errors import ConfigError


def checkpoint_path(out: Path) -> Path:
    """``<out>.checkpoint.pt`` beside the bundle directory."""
    out = Path(out)
    return out.parent / f"{out.name}.checkpoint.pt"


def config_digest(config: dict) -> str:
    """Digest of a training config (JSON-able), steps included."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: Path, *, step: int, digest: str, net: torch.nn.Module,
                    opt: torch.optim.Optimizer, sched: Any, rng: np.random.Generator,
                    loss: float) -> None:
    """Write the training state atomically (creating the directory beside the bundle)."""
    state = {
        "step": step, "digest": digest, "loss": loss,
        "model": net.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
        "numpy_rng": json.dumps(rng.bit_generator.state),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, *, digest: str, net: torch.nn.Module,
                    opt: torch.optim.Optimizer, sched: Any,
                    rng: np.random.Generator) -> tuple[int, float]:
    """Restore the state saved by :func:`save_checkpoint`; returns (step, loss).

    Raises
    ------
    ConfigError
        When the checkpoint belongs to another training config.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["digest"] != digest:
        raise ConfigError(
            f"--resume: checkpoint {path} was written by a different training config; "
            "delete it or train without --resume")
    net.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    rng.bit_generator.state = json.loads(state["numpy_rng"])
    return int(state["step"]), float(state["loss"])


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoints of one run: where, for which config, how often.

    Parameters
    ----------
    path : Path
        :func:`checkpoint_path` of the bundle directory.
    digest : str
        :func:`config_digest` of the run's config.
    every : int
        Steps between checkpoints; 0: only the one a stopped run leaves.
    """

    path: Path
    digest: str
    every: int

    @classmethod
    def of(cls, out: Path, config: dict, every: int) -> Checkpoints:
        """The checkpoints of a run writing ``out`` with ``config`` (JSON-able)."""
        return cls(checkpoint_path(out), config_digest(config), every)

    def due(self, step: int) -> bool:
        """Whether ``step`` ends with a checkpoint."""
        return bool(self.every) and step % self.every == 0

    def save(self, step: int, *, net: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
             rng: np.random.Generator, loss: float) -> None:
        """:func:`save_checkpoint` at :attr:`path`."""
        save_checkpoint(self.path, step=step, digest=self.digest, net=net, opt=opt, sched=sched,
                        rng=rng, loss=loss)

    def restore(self, *, net: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
                rng: np.random.Generator) -> tuple[int, float]:
        """The first step to run and the last loss: from the checkpoint if there is one,
        else ``(1, nan)``."""
        if not self.path.is_file():
            return 1, float("nan")
        done, loss = load_checkpoint(self.path, digest=self.digest, net=net, opt=opt,
                                     sched=sched, rng=rng)
        return done + 1, loss

    def remove(self) -> None:
        """Delete the checkpoint (the bundle is written)."""
        self.path.unlink(missing_ok=True)


def export_network(net: torch.nn.Module, out: Path, *, fmt: str, in_channels: int,
                   ndim: int, stride: int) -> str:
    """Write ``net`` (eval mode) as TorchScript (``model.pt``) or a ``torch.export``
    program (``model.pt2``) into ``out``; returns the file name."""
    net = net.eval()
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        name = "model.pt"
        torch.jit.save(torch.jit.script(net), str(out / name))
        return name
    if fmt == "export":
        name = "model.pt2"
        size = 4 * stride
        example = torch.zeros(2, in_channels, *([size] * ndim))
        batch = torch.export.Dim("batch", min=1, max=1024)
        axes = {0: batch}
        for axis in range(ndim):
            axes[2 + axis] = stride * torch.export.Dim(f"s{axis}", min=1, max=4096)
        program = torch.export.export(net, (example,), dynamic_shapes=({**axes},))
        torch.export.save(program, str(out / name))
        return name
    raise ConfigError(f"export: expected 'state_dict', 'torchscript' or 'export', received {fmt!r}")
