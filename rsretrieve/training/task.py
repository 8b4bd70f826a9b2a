"""Lightning task that trains a cross-sensor embedding model with the joint objective.

Batches (from the data pipeline)::

    {"cell": LongTensor (B,) ground-cell ids,
     "label": LongTensor (B,) dominant land-cover class or -1,
     "inputs": {sensor: FloatTensor (B, C, H, W) normalised tiles},
     "present": {sensor: BoolTensor (B,)}}          # a missing entry means all present

Rows where a sensor is not present are never fed to its branch. Validation and test report cross-sensor recall@1
for every ordered sensor pair (``val/recall@1/sentinel1_to_sentinel2``: queries of the first sensor, gallery of
all tiles of the second seen in the epoch) and their mean ``val/recall@1``.
"""

from __future__ import annotations

import inspect
import logging
import math
from itertools import permutations
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Timer
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from rsretrieve.evaluation.metrics import same_ground_pairs
from rsretrieve.losses.joint import JointObjective, SensorEmbeddings
from rsretrieve.model.branches import SensorBranch
from rsretrieve.model.checkpoint import EmbeddingModel, ModelFileError, load_error_reason, load_model
from rsretrieve.model.dual_encoder import DualEncoder
from rsretrieve.model.encoder import CrossSensorEncoder
from rsretrieve.model.head import HeadConfig
from rsretrieve.sensors.registry import get_sensor
from rsretrieve.training.augment import SensorAugment

log = logging.getLogger(__name__)


def _check_sensors(sensors: list[str]) -> None:
    """Raise ValueError (not the registry's KeyError) for a sensor name that is not registered."""
    for s in sensors:
        try:
            get_sensor(s)
        except KeyError as e:
            raise ValueError(e.args[0]) from None


def _load_pretrained(path: str | Path) -> EmbeddingModel:
    """The model of ``--model.pretrained``; a missing or unreadable file is a ValueError naming it."""
    if not Path(path).is_file():
        raise ValueError(f"--model.pretrained {path}: " + ("not a file" if Path(path).exists() else "no such file"))
    try:
        return load_model(path)
    except ModelFileError as e:
        raise ValueError(f"--model.pretrained {path}: not a readable model file or checkpoint ({e.reason})") from None
    except ValueError as e:
        reason = str(e).splitlines()[0]
        raise ValueError(reason if str(path) in reason else f"--model.pretrained {path}: {reason}") from None
    except (OSError, KeyError, TypeError, AttributeError, RuntimeError) as e:  # a state dict that does not load
        raise ValueError(f"--model.pretrained {path}: not a readable model file or checkpoint "
                         f"({load_error_reason(e)})") from None


#: options that set the shape of ``ours``: a ``pretrained`` model keeps its own (hparam -> its value in the model)
_SHAPE_OPTIONS = {
    "dim": lambda m: m.dim,
    "embed_dim": lambda m: m.embed_dim,
    "depth": lambda m: m.head_config.depth,
    "heads": lambda m: m.head_config.heads,
    "layout": lambda m: m.head_config.layout,
    "dropout": lambda m: m.head_config.dropout,
}


def _check_pretrained_shape(hp: dict[str, Any], model: CrossSensorEncoder) -> None:
    """Raise ValueError when an option of the model's shape is set (not left at its default) to another value than
    the ``pretrained`` model has: it would be ignored, and the run's config.yaml would record it."""
    defaults = {k: v.default for k, v in inspect.signature(CrossSensorTask.__init__).parameters.items()}
    given = {k: hp[k] for k in _SHAPE_OPTIONS if hp[k] != defaults[k]}
    theirs = {k: _SHAPE_OPTIONS[k](model) for k in given}
    branch_defaults = {k: v.default for k, v in inspect.signature(SensorBranch.__init__).parameters.items()}
    for k, v in (hp["branch"] or {}).items():
        given[f"branch.{k}"], theirs[f"branch.{k}"] = v, model.branch_kwargs.get(k, branch_defaults.get(k))
    for k, v in given.items():
        if v != theirs[k]:
            raise ValueError(f"--model.{k} {v}: the model of --model.pretrained {hp['pretrained']} has {k} "
                             f"{theirs[k]}, and a model that adds sensors keeps its shape (leave model.{k} out)")


class CrossSensorRecall(Metric):
    """Instance recall@k for every ordered sensor pair, accumulated over an epoch.

    A query of sensor A counts when the gallery of sensor B holds a tile of its cell; it is a hit when one of its
    ``k`` nearest B tiles (inner product of exported vectors) has its cell. Gallery tiles of the cells in
    :attr:`same_ground` of the query's cell (the same ground tiled in another UTM zone,
    :meth:`rsretrieve.data.datasets.CellIndex.same_ground`) are left out of its ranking, as ``evaluate`` does.
    """

    full_state_update = False

    def __init__(self, sensors: list[str], k: int = 1):
        super().__init__()
        self.sensors, self.k = list(sensors), k
        self.add_state("emb", default=[], dist_reduce_fx="cat")
        self.add_state("cells", default=[], dist_reduce_fx="cat")
        self.add_state("sensor_ids", default=[], dist_reduce_fx="cat")
        self.same_ground: dict[int, np.ndarray] = {}

    def update(self, emb: Tensor, cells: Tensor, sensor: str) -> None:
        self.emb.append(emb.detach().float())
        self.cells.append(cells.detach())
        self.sensor_ids.append(torch.full_like(cells, self.sensors.index(sensor)))

    def compute(self) -> dict[str, Tensor]:
        if not self.emb:
            return {}
        emb, cells, ids = dim_zero_cat(self.emb), dim_zero_cat(self.cells), dim_zero_cat(self.sensor_ids)
        out = {}
        for a, b in permutations(range(len(self.sensors)), 2):
            qa, gb = ids == a, ids == b
            q_emb, q_cells = emb[qa], cells[qa]
            g_emb, g_cells = emb[gb], cells[gb]
            has_match = torch.isin(q_cells, g_cells)
            if not has_match.any():
                continue
            sims = q_emb[has_match] @ g_emb.T  # (Nq, Ng)
            if self.same_ground:
                rows, cols = same_ground_pairs(q_cells[has_match].cpu().numpy(), g_cells.cpu().numpy(),
                                               self.same_ground)
                sims[torch.as_tensor(rows, device=sims.device), torch.as_tensor(cols, device=sims.device)] = -math.inf
            top = sims.topk(min(self.k, len(g_emb)), dim=1).indices  # (Nq, k)
            hits = (g_cells[top] == q_cells[has_match][:, None]).any(dim=1)
            out[f"{self.sensors[a]}_to_{self.sensors[b]}"] = hits.float().mean()
        return out


class CrossSensorTask(LightningModule):
    """Train ``ours`` (cross-sensor encoder, joint objective) or ``dual_encoder`` (plain baseline, InfoNCE only).

    Args:
        sensors: sensors to train on (with ``pretrained``: the ones not in the checkpoint are added and trained
            alone against the frozen rest).
        model: ``ours`` or ``dual_encoder``.
        dim: token and head width ``D``.
        embed_dim: width ``E`` of the exported vectors.
        depth: transformer blocks of the head.
        heads: attention heads of the head.
        layout: side of the head's layout read-out grid (0: attention pooling alone); see ``HeadConfig.layout``.
        dropout: dropout on the head's attention weights and block outputs during training; see ``HeadConfig``.
        temperature: initial temperature of the learned metric.
        cross_sensor: symmetric InfoNCE between sensors.
        within_sensor: supervised contrastive (labels) / augmented views (no labels) within each sensor.
        vicreg: VICReg variance + covariance regulariser.
        adversarial: domain-adversarial sensor classifier.
        uncertainty_weighting: learn the weights between terms.
        queue_size: rows of the memory queue of hard negatives (0, the default: none; in the toy correspondence
            test a 256-row queue made learning slower, 0.73 against 0.89 recall@1 after 250 steps).
        queue_warmup: optimizer steps before queued negatives are used (they are collected from the start).
        augment: sensor-aware augmentation of training batches: ``True`` (all of it, with ``missing_prob``),
            ``False``, or keyword arguments of :class:`SensorAugment` (e.g. ``{speckle_looks: null,
            band_drop_prob: 0.0, gain: 0.0}`` for flips and rotations only); ``missing_prob`` is the default of its
            ``missing_prob``.
        missing_prob: probability of dropping each sensor of a cell during training.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms, embeddings and the temperature).
        warmup_steps: optimizer steps of linear learning-rate warm-up.
        schedule: ``cosine`` (default): after warm-up the rate follows a half cosine from ``lr`` down to
            ``lr * min_lr_ratio`` over the run's budget, whichever of its limits comes first (``max_time``,
            ``max_steps``, ``max_epochs``): with a wall-clock budget, progress is the elapsed fraction of
            ``max_time``, so a 4-minute run anneals in 4 minutes whatever the machine's speed. ``constant``: no decay.
        min_lr_ratio: final rate of the cosine schedule as a fraction of ``lr``.
        grad_clip: maximum global gradient norm (``None``: no clipping).
        pretrained: checkpoint (model file or Lightning checkpoint) to start from; its shared parts are frozen.
        require_pretrained: the config extends a trained model (``configs/add_sensor.yaml``): without
            ``pretrained`` it is an error instead of a model trained from scratch.
        branch: keyword arguments of every sensor branch of ``ours`` (e.g. ``{stem_dim: 48}``).
    """

    def __init__(self, sensors: list[str], model: Literal["ours", "dual_encoder"] = "ours", dim: int = 64,
                 embed_dim: int = 128, depth: int = 2, heads: int = 4, layout: int = 4, dropout: float = 0.0,
                 temperature: float = 0.07,
                 cross_sensor: bool = True, within_sensor: bool = True, vicreg: bool = True,
                 adversarial: bool = False, uncertainty_weighting: bool = True, queue_size: int = 0,
                 queue_warmup: int = 500,
                 augment: bool | dict[str, Any] = True, missing_prob: float = 0.1, lr: float = 1e-3,
                 weight_decay: float = 0.05,
                 warmup_steps: int = 50, schedule: Literal["cosine", "constant"] = "cosine",
                 min_lr_ratio: float = 0.02, grad_clip: float | None = 1.0, pretrained: str | None = None,
                 require_pretrained: bool = False, branch: dict[str, Any] | None = None):
        super().__init__()
        self.save_hyperparameters()
        _check_sensors(sensors)
        if require_pretrained and not pretrained:
            raise ValueError("--model.pretrained is required: this config adds sensors to a trained model "
                             "(model.require_pretrained: true); give --model.pretrained WS/checkpoints/NAME/model.pt")
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # -- configuration ---------------------------------------------------------------------------------------
    def configure_models(self) -> None:
        """Build the model (or load ``pretrained``, freeze it and add the new sensors)."""
        hp = self.hparams
        self.model: EmbeddingModel
        if hp["pretrained"]:
            self.model = _load_pretrained(hp["pretrained"]).train()
            if not isinstance(self.model, CrossSensorEncoder):
                raise ValueError("only the 'ours' model can start from a checkpoint and add sensors")
            if hp["model"] != "ours":  # it would have been ignored, the losses set up for the other model
                raise ValueError(f"--model.model {hp['model']}: only the 'ours' model can start from a checkpoint "
                                 "(--model.pretrained) and add sensors")
            _check_pretrained_shape(hp, self.model)
            if all(s in self.model.sensors for s in hp["sensors"]):
                raise ValueError(f"--model.pretrained {hp['pretrained']} has a branch for every sensor of "
                                 f"data.sensors ({', '.join(hp['sensors'])}), so nothing would train: list the "
                                 f"sensor(s) to add in --data.sensors beside {', '.join(self.model.sensors)}")
            self.model.freeze_shared()
            for s in hp["sensors"]:
                if s not in self.model.sensors:
                    self.model.add_sensor(s)
            return
        match hp["model"]:
            case "ours":
                head = HeadConfig(depth=hp["depth"], heads=hp["heads"], layout=hp["layout"], dropout=hp["dropout"])
                self.model = CrossSensorEncoder(list(hp["sensors"]), dim=hp["dim"], embed_dim=hp["embed_dim"],
                                                head=head, temperature=hp["temperature"], branch=hp["branch"])
            case "dual_encoder":
                self.model = DualEncoder(list(hp["sensors"]), embed_dim=hp["embed_dim"],
                                         temperature=hp["temperature"])
            case other:
                raise ValueError(f"unknown model {other!r}; expected 'ours' or 'dual_encoder'")

    def setup(self, stage: str) -> None:
        """Give the validation and test recall the cells on the same ground in other zones; and before fitting a
        model that extends ``pretrained``, refuse when a sensor it adds has no training cell beside another sensor
        (its scenes not ingested yet, or over other ground). Its branch, the only part that trains, would keep the
        family weights it was copied from, and ``model.pt`` would be written as if trained.
        """
        datasets = getattr(getattr(self.trainer, "datamodule", None), "datasets", None) or {}  # attached by now
        for name, metric in (("val", self.val_recall), ("test", self.test_recall)):
            if name in datasets:  # the same ground tiled in two zones: left out of a query's ranking
                metric.same_ground = datasets[name].index.same_ground()
        if stage != "fit" or not self.hparams["pretrained"] or not isinstance(self.model, CrossSensorEncoder):
            return
        train = datasets.get("train")
        if train is None:  # a data module of another kind: nothing to check against
            return
        tile_ids = train.index.tile_ids
        seen = sum((ids >= 0).astype(int) for ids in tile_ids.values())
        frozen = set(self.model.frozen)
        untrained = [s for s in self.model.sensors if s not in frozen and s in tile_ids
                     and not ((tile_ids[s] >= 0) & (seen >= 2)).any()]
        if untrained:
            raise ValueError(f"--model.pretrained {self.hparams['pretrained']}: no training cell of the workspace "
                             f"has a {', '.join(untrained)} tile beside another sensor's, so the new branch would "
                             f"not train; ingest {', '.join(untrained)} scenes over the ground of "
                             f"{', '.join(sorted(frozen))} first")

    def configure_losses(self) -> None:
        """Build the joint objective from the flags (the baseline gets the cross-sensor term only)."""
        hp = self.hparams
        if hp["model"] == "dual_encoder":
            flags = dict(cross_sensor=True, within_sensor=False, vicreg=False, adversarial=False,
                         uncertainty_weighting=False, queue_size=0)
        else:
            flags = {k: hp[k] for k in ("cross_sensor", "within_sensor", "vicreg", "adversarial",
                                        "uncertainty_weighting", "queue_size")}
        self.objective = JointObjective(self.model.sensors, embed_dim=self.model.embed_dim, **flags)
        self.augmenter = self._augmenter(hp["augment"])

    def _augmenter(self, augment: bool | dict[str, Any]) -> SensorAugment | None:
        if augment is False or augment is None:
            return None
        kwargs: dict[str, Any] = {"missing_prob": self.hparams["missing_prob"]}
        if isinstance(augment, dict):
            known = set(inspect.signature(SensorAugment).parameters) - {"sensors"}
            unknown = sorted(set(augment) - known)
            if unknown:
                raise ValueError(f"unknown augment option(s) {', '.join(unknown)}; expected some of "
                                 f"{', '.join(sorted(known))}")
            kwargs.update(augment)
        elif augment is not True:
            raise ValueError(f"augment must be true, false or a mapping of options, not {augment!r}")
        return SensorAugment(self.model.sensors, **kwargs)

    def configure_metrics(self) -> None:
        """Cross-sensor recall@1 per ordered pair, for validation and test."""
        self.val_recall = CrossSensorRecall(self.model.sensors, k=1)
        self.test_recall = CrossSensorRecall(self.model.sensors, k=1)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over the trainable parameters (no weight decay on 0-/1-d ones), warm-up then the schedule."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams["weight_decay"]},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams["lr"])
        if self.hparams["schedule"] not in ("cosine", "constant"):
            raise ValueError(f"unknown schedule {self.hparams['schedule']!r}; expected 'cosine' or 'constant'")
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at optimizer step ``step``: linear warm-up, then the schedule."""
        warmup = max(1, self.hparams["warmup_steps"])
        if step < warmup:
            return (step + 1) / warmup
        if self.hparams["schedule"] == "constant":
            return 1.0
        floor = self.hparams["min_lr_ratio"]
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * self.budget_progress(step)))

    def budget_progress(self, step: int) -> float:
        """Fraction in ``[0, 1]`` of the run's budget used: the largest of the step, epoch and time fractions."""
        trainer = self._trainer
        if trainer is None:
            return 0.0
        fractions = [0.0]
        if not hasattr(self, "_total_steps"):
            self._total_steps = trainer.estimated_stepping_batches  # computed once: it sizes the dataloader
        total = self._total_steps
        if total and math.isfinite(total) and total > 0:
            fractions.append(step / total)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        duration = getattr(timer, "_duration", None)
        if timer is not None and duration:
            fractions.append(timer.time_elapsed("train") / duration)
        return min(1.0, max(fractions))

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip the global gradient norm to ``grad_clip`` (a Trainer's ``gradient_clip_val`` takes precedence)."""
        clip = gradient_clip_val if gradient_clip_val is not None else self.hparams["grad_clip"]
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm
                                or "norm")

    # -- steps -----------------------------------------------------------------------------------------------
    def forward(self, sensor: str, x: Tensor) -> Tensor:
        """Exported vectors ``(B, E)`` of normalised tiles ``(B, C, H, W)``."""
        return self.model.embed(sensor, x)

    def _present(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        size = len(batch["cell"])
        present = batch.get("present", {})
        return {s: present.get(s, torch.ones(size, dtype=torch.bool, device=batch["cell"].device))
                for s in batch["inputs"] if s in self.model.sensors}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        if self.augmenter is not None:
            batch = self.augmenter(batch)
        cells, labels = batch["cell"], batch["label"]
        want_views = self.objective.flags["within"] and self.augmenter is not None
        masks = {s: m for s, m in self._present(batch).items() if m.any()}
        xs = {s: batch["inputs"][s][m] for s, m in masks.items()}
        projected = self.model.project_many(xs)  # one pass of the shared head over every sensor's tiles
        parts = {}
        for s, mask in masks.items():
            x = xs[s]
            part = SensorEmbeddings(projected[s], cells[mask], labels[mask])
            unlabelled = part.labels < 0
            if want_views and unlabelled.any():
                part.view = self.model.project(s, self.augmenter.view(s, x[unlabelled]))
                part.view_cells = part.cells[unlabelled]
            parts[s] = part
        use_queue = self.global_step >= self.hparams["queue_warmup"]
        loss, terms = self.objective(parts, self.model.logit_scale, use_queue=use_queue)
        self.objective.enqueue(parts)
        size = len(cells)
        self.log("train/loss", loss, batch_size=size, prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=size)
        self.log("train/temperature", 1.0 / self.model.logit_scale.detach(), batch_size=size)
        return loss

    def _eval_step(self, batch: dict[str, Any], metric: CrossSensorRecall) -> None:
        for s, mask in self._present(batch).items():
            if mask.any():
                metric.update(self.model.embed(s, batch["inputs"][s][mask]), batch["cell"][mask], s)

    def _eval_epoch_end(self, metric: CrossSensorRecall, prefix: str) -> None:
        values = metric.compute()
        if values:
            self.log_dict({f"{prefix}/recall@1/{k}": v for k, v in values.items()})
            self.log(f"{prefix}/recall@1", torch.stack(list(values.values())).mean(), prog_bar=True)
        metric.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.val_recall)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end(self.val_recall, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.test_recall)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(self.test_recall, "test")

    # -- checkpoints -----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the model config and the sensor specs as plain types (``rsretrieve.model.load_model`` reads them)."""
        checkpoint["rsretrieve"] = {
            "model_config": self.model.config(),
            "sensors": list(self.model.sensors),
            "sensor_specs": {s: get_sensor(s).to_dict() for s in self.model.sensors},
        }
