"""The LightningModule: model + segmentation loss + optional contrastive scheme, metrics and optimiser.

Loss of a training step (docs/design.md §1.8): ``seg + λ · scheme(features, mask)`` where ``seg`` is CE + Dice on the
decoder's logits and ``scheme`` is computed on the encoder's stage features of the same forward pass, so CT
costs only its sampling, heads and pair losses. The projection heads live here, not in the model: the model
exported for inference carries none of their parameters. Exact mid-epoch resume is not the task's: it is the
:class:`~ctseg.training.resume.ExactResume` callback's (``ctseg fit`` adds it).
"""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from ctseg.contrastive.schemes import DEFAULT_WEIGHTS, build_scheme
from ctseg.contrastive.stats import SchemeStats
from ctseg.errors import CtsegError
from ctseg.evaluation.metrics import BoundaryMetrics, SegmentationMetrics
from ctseg.models import build_model
from ctseg.training.seg_loss import SegmentationLoss, check_class_weights, inverse_frequency_weights


class SegmentationTask(L.LightningModule):
    """Train / validate / test a segmentation model with an optional contrastive scheme.

    Args:
        model: preset name from :func:`ctseg.models.list_models` (e.g. ``"ds-paper"``, ``"pf-tiny"``).
        num_classes: number of classes ``K`` (linked from the data module by the CLI).
        encoder: timm encoder name for the generic ``"dcswin"`` / ``"unetformer"`` presets.
        pretrained: local encoder weights file (never downloaded).
        img_size: training image size (multiple of 32).
        scheme: ``"none"``, ``"ct-cl"``, ``"ct-infonce"``, ``"ms"`` or ``"mscs"``.
        contrastive_weight: ``λ``; default 1.0 for CT, 0.1 for MS/MSCS.
        scheme_options: keyword arguments of the scheme's loss (e.g. ``hard_fraction``, ``stages``).
        lr, weight_decay: AdamW (paper: 8e-5, 0.01, constant learning rate).
        ignore_index: label of unlabelled pixels.
        class_names: names for logging (default: from the data module).
        eval_classes: classes averaged into mIoU / mean F1 (default: from the data module; ISPRS drops clutter).
        channels_last: run the model in channels-last memory format.
        compile: wrap the model in ``torch.compile``.
        model_options: extra keyword arguments of :func:`ctseg.models.build_model`.
        dataset: name of the data set definition (palette, normalisation) the model is trained on; linked from
            the data module by the CLI and stored in checkpoints for prediction.
        check_finite_every_n_steps: stop training when a loss term is NaN / inf, checked every N steps
            (each check is one host sync; 0 disables it).
        allow_partial: load ``pretrained`` even below the 90 % rule (only the shape-matching tensors; how
            pf-paper takes timm's ``poolformer_s12`` ImageNet weights, as the authors did).
        in_chans: input bands of the model (linked from the data module's ``info.bands`` by the CLI). RGB
            ``pretrained`` weights get their first convolution adapted as timm does (``adapt_input_conv``).
        data_info: the data set's :class:`~ctseg.data.definitions.DatasetInfo` in its JSON form
            (:func:`~ctseg.data.definitions.info_to_json`; linked by the CLI), stored in checkpoints so that
            ``ctseg predict`` knows the classes, palette, band layout, normalisation and nodata with nothing else.
        boundary_tolerance: ``d`` of the boundary metrics in pixels, or a list (the first is logged as
            ``val/biou``, ``val/bf1``, ``val/biou_<class>`` …; the others with ``@d`` appended: ``val/biou@5``).
        class_weights: weights of the cross-entropy term (:mod:`ctseg.training.seg_loss`): ``None`` (off, the
            paper), one number per class, or ``"inverse_frequency"``: ``w_c ∝ 1 / f_c`` from the training split's
            pixel counts (``manifest.json`` ``pixels.train`` of the data module's prepared folder), mean 1 over the
            classes present; computed in :meth:`setup` and printed once.
        boundary_definition, boundary_shape: the boundary metrics' definition (``"ctseg"``: the image border is no
            boundary; ``"reference"``: it is one, as Cheng et al.'s API) and boundary F1's tolerance shape
            (``"square"`` or ``"disk"``), as ``ctseg evaluate --boundary`` / ``--boundary-shape``
            (:mod:`ctseg.evaluation.boundary`); checkpoints without them are ``"ctseg"`` / ``"square"``.

    Logged at every validation / test: ``<split>/miou``, ``mf1``, ``oa``, ``iou_<class>``, ``f1_<class>`` (the
    ISPRS protocol, :class:`~ctseg.evaluation.metrics.SegmentationMetrics`) and ``<split>/biou``, ``bf1``,
    ``biou_<class>``, ``bf1_<class>`` (:class:`~ctseg.evaluation.metrics.BoundaryMetrics`; means over ``eval_classes``).
    """

    def __init__(
        self,
        model: str = "pf-tiny",
        num_classes: int = 6,
        encoder: str | None = None,
        pretrained: str | None = None,
        img_size: int = 512,
        scheme: str = "none",
        contrastive_weight: float | None = None,
        scheme_options: dict[str, Any] | None = None,
        lr: float = 8e-5,
        weight_decay: float = 0.01,
        ignore_index: int = 255,
        class_names: list[str] | None = None,
        eval_classes: list[int] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        model_options: dict[str, Any] | None = None,
        dataset: str | None = None,
        check_finite_every_n_steps: int = 1,
        allow_partial: bool = False,
        in_chans: int = 3,
        data_info: dict[str, Any] | None = None,
        boundary_tolerance: int | list[int] = 3,
        class_weights: list[float] | str | None = None,
        boundary_definition: str = "ctseg",
        boundary_shape: str = "square",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if data_info is not None:
            _check_data_info(data_info, in_chans, num_classes)
        options = dict(model_options or {})
        if allow_partial:
            options["allow_partial"] = True
        self.net = build_model(
            model, num_classes, encoder=encoder, pretrained=pretrained, img_size=img_size, in_chans=in_chans, **options
        )
        self.scheme_name = scheme
        self.contrastive = build_scheme(
            scheme, self.net.channels, num_classes, ignore_index=ignore_index, **(scheme_options or {})
        )
        self.contrastive_weight = DEFAULT_WEIGHTS[scheme] if contrastive_weight is None else contrastive_weight
        if isinstance(class_weights, str) and class_weights != "inverse_frequency":
            raise CtsegError(f"class_weights {class_weights!r}: give one number per class or 'inverse_frequency'")
        fixed = None if class_weights is None or isinstance(class_weights, str) else class_weights
        self.seg_loss = SegmentationLoss(
            ignore_index=ignore_index, class_weights=None if fixed is None else check_class_weights(fixed, num_classes)
        )
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
        self.eval_classes = list(eval_classes) if eval_classes is not None else None
        self.val_metrics = SegmentationMetrics(num_classes, ignore_index=ignore_index, eval_classes=self.eval_classes)
        self.test_metrics = SegmentationMetrics(num_classes, ignore_index=ignore_index, eval_classes=self.eval_classes)
        boundary = {"tolerance": boundary_tolerance, "ignore_index": ignore_index, "eval_classes": self.eval_classes,
                    "definition": boundary_definition, "tolerance_shape": boundary_shape}  # fmt: skip
        self.val_boundary = BoundaryMetrics(num_classes, **boundary)
        self.test_boundary = BoundaryMetrics(num_classes, **boundary)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self._compiled: tuple | None = None
        # Clipped contrastive steps of the run (a device tensor: no per-step sync), steps counted, and both at the
        # end of the last epoch (for the per-epoch warning).
        self._clip_run: Tensor | None = None
        self._steps_run = 0
        self._clip_mark: tuple[float, int] = (0.0, 0)

    # ---------------------------------------------------------------- model
    def setup(self, stage: str) -> None:
        if self.hparams.get("class_weights") == "inverse_frequency" and self.seg_loss.class_weights is None:
            dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            names, counts = train_pixel_counts(dm)
            if len(counts) != self.hparams.num_classes:
                raise CtsegError(
                    f"class_weights inverse_frequency: the prepared folder has {len(counts)} classes, the model "
                    f"{self.hparams.num_classes}"
                )
            weights = inverse_frequency_weights(counts)
            self.seg_loss.set_class_weights(weights)
            if self.trainer.is_global_zero:
                shown = ", ".join(f"{n} {w:.3g}" for n, w in zip(names, weights, strict=True))
                print(f"ctseg: class weights (inverse frequency, training split): {shown}", file=sys.stderr)

    def configure_model(self) -> None:
        if self.hparams.compile and self._compiled is None:
            # Encoder and decoder are compiled separately (the step calls them apart so CT sees the stage
            # features); the compiled wrappers stay out of the module tree so checkpoints hold each weight once.
            self.__dict__["_compiled"] = (torch.compile(self.net.encoder), torch.compile(self.net.decoder))

    def _encode_decode(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        if self._compiled is None:
            feats = self.net.encode(x)
            return feats, self.net.decode(feats, x.shape[-2:])
        self.net.check_input(x)
        encoder, decoder = self._compiled
        feats = encoder(x)
        return feats, decoder(list(feats), tuple(x.shape[-2:]))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _prep(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    # ---------------------------------------------------------------- steps
    def compute_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{"loss", "seg", "contrastive"}`` for one batch (one forward through encoder and decoder)."""
        x, y = self._prep(batch["image"]), batch["mask"]
        feats, logits = self._encode_decode(x)
        seg = self.seg_loss(logits, y)
        out = {"seg": seg, "logits": logits}
        if self.contrastive is not None:
            con = self.contrastive(feats, y)
            out["contrastive"] = con
            out["loss"] = seg + self.contrastive_weight * con
        else:
            out["loss"] = seg
        return out

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.compute_losses(batch)
        every = self.hparams.check_finite_every_n_steps
        if every and self.global_step % every == 0:
            self._check_finite(out)
        bs = batch["image"].shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
        self.log("train/seg", out["seg"], batch_size=bs)
        if "contrastive" in out:
            self.log("train/contrastive", out["contrastive"], prog_bar=True, batch_size=bs)
            self._log_scheme_stats(bs)
        return out["loss"]

    def _log_scheme_stats(self, batch_size: int) -> None:
        """The scheme's ``stats`` (:class:`~ctseg.contrastive.stats.SchemeStats`) as ``train/<name>``.

        Per-stage values and scalars (CT: classes taking part, kept pairs per stage, ``contrastive_unclipped``;
        MS / MSCS: groups, views and anchors per scale) are logged only on the steps Lightning writes
        (``(global_step + 1) % log_every_n_steps == 0``), so the GPU is not made to wait for them on others
        and the values written are the current step's. Epoch means (CT: ``contrastive_clipped``, 1 when the
        value clip passed no contrastive gradient) are logged at every step and averaged over the epoch by
        Lightning, without a host sync; the clipped steps are also counted for the end-of-epoch warning.
        """
        stats = getattr(self.contrastive, "stats", None)
        if not isinstance(stats, SchemeStats):
            return
        for name, value in stats.epoch_loggable().items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=batch_size)
        if "contrastive_clipped" in stats:
            clipped = stats["contrastive_clipped"].detach().float()
            self._clip_run = clipped if self._clip_run is None else self._clip_run + clipped
            self._steps_run += 1
        every = self.trainer.log_every_n_steps
        if not every or (self.global_step + 1) % every:
            return
        for name, value in stats.loggable().items():
            self.log(f"train/{name}", value, batch_size=batch_size)

    def on_train_epoch_end(self) -> None:
        """One warning line when more than half of the epoch's steps passed no contrastive gradient."""
        if self._clip_run is None:
            return
        total = float(self._clip_run)  # one host sync per epoch
        n, steps = total - self._clip_mark[0], self._steps_run - self._clip_mark[1]
        self._clip_mark = (total, self._steps_run)
        if steps > 0 and n / steps > 0.5 and self.trainer.is_global_zero:
            print(
                f"ctseg: warning: epoch {self.current_epoch}: the contrastive loss was clipped on {n / steps:.0%} of "
                f"steps ({int(n)}/{steps}), which then passed no contrastive gradient; use --model.scheme_options "
                "'{clip_mode: scale}' (gradient kept) or '{reduction: mean}' (ctseg's reduction, below the clip)",
                file=sys.stderr,
                flush=True,
            )

    @property
    def clip_fraction(self) -> float | None:
        """Fraction of this run's training steps whose contrastive term was clipped (``None`` without CT steps);
        kept in checkpoints, so a resumed run counts from its start."""
        if self._clip_run is None or not self._steps_run:
            return None
        return float(self._clip_run) / self._steps_run

    def _check_finite(self, out: dict[str, Tensor]) -> None:
        """Stop with a one-line error naming the step and the term when a loss is NaN or infinite.

        Raised before backward and the optimiser step, so the weights and the last checkpoint stay good.
        """
        terms = [("segmentation", out["seg"])]
        if "contrastive" in out:
            terms.append(("contrastive", out["contrastive"]))
        flags = torch.stack([torch.isfinite(t) for _, t in terms]).cpu()  # one host sync
        for (name, value), ok in zip(terms, flags.tolist(), strict=True):
            if not ok:
                raise CtsegError(
                    f"non-finite {name} loss ({float(value.detach())}) at step {self.global_step}; training stopped, "
                    "the last checkpoint is kept — lower the learning rate or check the data"
                )

    def _eval_step(
        self, batch: dict[str, Tensor], metrics: SegmentationMetrics, boundary: BoundaryMetrics, prefix: str
    ) -> None:
        x, y = self._prep(batch["image"]), batch["mask"]
        logits = self.net(x)
        if logits.shape[-2:] != y.shape[-2:]:  # score at the label's native resolution
            logits = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = self.seg_loss(logits, y)
        self.log(f"{prefix}/loss", loss, batch_size=x.shape[0], sync_dist=True)
        pred = logits.argmax(1)
        metrics.update(pred, y)
        boundary.update(pred, y)

    def _eval_epoch_end(self, metrics: SegmentationMetrics, boundary: BoundaryMetrics, prefix: str) -> None:
        res = metrics.compute()
        if prefix == "val" and not self.trainer.sanity_checking and torch.isnan(torch.as_tensor(res["miou"])).item():
            if self.trainer.is_global_zero:
                print(
                    f"ctseg: warning: validation at step {self.global_step}: no labelled pixel of the evaluated "
                    "classes, so val/miou is NaN; no best checkpoint is chosen from it (check the validation split)",
                    file=sys.stderr,
                    flush=True,
                )
        self.log(f"{prefix}/miou", res["miou"], prog_bar=True)
        self.log(f"{prefix}/mf1", res["mf1"])
        self.log(f"{prefix}/oa", res["oa"])
        for name, iou, f1 in zip(self.class_names, res["iou"], res["f1"], strict=False):
            self.log(f"{prefix}/iou_{name}", iou)
            self.log(f"{prefix}/f1_{name}", f1)
        self._log_boundary(boundary.compute(), prefix)
        metrics.reset()
        boundary.reset()

    def _log_boundary(self, res: dict[str, Any], prefix: str) -> None:
        """``<prefix>/biou``, ``bf1`` and per class ``biou_<name>``, ``bf1_<name>`` at the first tolerance; the
        same names with ``@d`` appended for any further tolerance ``d``."""
        for i, d in enumerate(res["tolerances"]):
            tag = "" if i == 0 else f"@{d}"
            self.log(f"{prefix}/biou{tag}", res[f"mbiou@{d}"])
            self.log(f"{prefix}/bf1{tag}", res[f"mbf1@{d}"])
            for name, biou, bf1 in zip(self.class_names, res[f"biou@{d}"], res[f"bf1@{d}"], strict=False):
                self.log(f"{prefix}/biou_{name}{tag}", biou)
                self.log(f"{prefix}/bf1_{name}{tag}", bf1)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, self.val_boundary, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end(self.val_metrics, self.val_boundary, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, self.test_boundary, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(self.test_metrics, self.test_boundary, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.net(self._prep(batch["image"])).argmax(1)

    # ---------------------------------------------------------------- checkpoint state
    # Exact resume (RNG states, consumed batches, cut-short epochs) is the ExactResume callback's
    # (ctseg.training.resume); the task keeps only its own logging state, the clipped-step counters.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._clip_run is not None:
            clipped = float(self._clip_run)
            checkpoint["ctseg_clip"] = [clipped, self._steps_run, float(self._clip_mark[0]), int(self._clip_mark[1])]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        clip = checkpoint.get("ctseg_clip")
        if clip and len(clip) == 4:
            self._clip_run = torch.tensor(float(clip[0]), device=self.device)
            self._steps_run, self._clip_mark = int(clip[1]), (float(clip[2]), int(clip[3]))

    # ---------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, fused=fused
        )


# The public path, which every checkpoint records (``_class_path``) and configs name.
SegmentationTask.__module__ = "ctseg.training"


def train_pixel_counts(datamodule: Any) -> tuple[list[str], list[int]]:
    """``(class names, pixel counts)`` of the training split of a data module's prepared folder (its
    ``manifest.json`` ``pixels.train``); one line when the data module has none."""
    from ctseg.data.manifest import load_manifest

    root = getattr(datamodule, "root", None)
    if root is None:
        raise CtsegError(
            "class_weights inverse_frequency needs a prepared data folder (ctseg prepare; its manifest.json counts "
            f"the training pixels per class); {type(datamodule).__name__} has none: give one weight per class"
        )
    manifest = load_manifest(root)
    names = list(manifest["dataset"]["classes"])
    pixels = (manifest.get("pixels") or {}).get("train")
    if not isinstance(pixels, dict):
        raise CtsegError(f"{root}/manifest.json has no pixel counts of a train split; prepare the data again")
    return names, [int(pixels.get(n, 0)) for n in names]


def _check_data_info(data_info: Any, in_chans: int, num_classes: int) -> None:
    """One line when ``data_info`` is not a DatasetInfo's JSON form or disagrees with ``in_chans`` / ``num_classes``."""
    from ctseg.data.definitions import info_from_json

    try:
        info = info_from_json(data_info)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CtsegError(f"data_info is not a data set description (info_to_json's form): {err}") from None
    if info.bands != in_chans:
        raise CtsegError(
            f"in_chans={in_chans} but data_info (data set {info.name!r}) has {info.band_layout()}; pass "
            f"in_chans={info.bands} (ctseg fit links both from the data module)"
        )
    if info.num_classes != num_classes:
        raise CtsegError(
            f"num_classes={num_classes} but data_info (data set {info.name!r}) has {info.num_classes} classes; pass "
            f"num_classes={info.num_classes} (ctseg fit links both from the data module)"
        )
