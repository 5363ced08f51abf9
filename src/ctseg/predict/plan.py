"""The plan of a ``ctseg predict`` run: its settings, the output files of each input, and the checks that need
the model (band count, window, classes) — all made before the first prediction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ctseg.errors import CtsegError

__all__ = ["VECTOR_SUFFIXES", "Settings", "Targets", "check_settings", "check_vector_classes", "make_targets"]

#: Suffixes ``--vector`` writes (``ctseg.vectorize.polygons``'s formats).
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json")


def _bands_text(n: int) -> str:
    return f"{n} band{'s' if n != 1 else ''}"


@dataclass
class Targets:
    """The output files of one input (``aux`` / ``qml``: the class map's GIS sidecars, :mod:`ctseg.predict.gis`)."""

    classes: Path | None = None
    color: Path | None = None
    index: Path | None = None
    probs: Path | None = None
    conf: Path | None = None
    vector: Path | None = None
    legend: Path | None = None
    overlay: Path | None = None
    aux: Path | None = None
    qml: Path | None = None
    entropy: Path | None = None
    uncertain: Path | None = None

    def paths(self) -> list[Path]:
        found = (self.classes, self.probs, self.conf, self.entropy, self.uncertain, self.color, self.index,
                 self.legend, self.overlay, self.aux,
                 self.qml, self.vector)  # fmt: skip
        return [p for p in found if p is not None]


def vector_path(stem: str, out_dir: Path, vector: str | None) -> Path | None:
    """``--vector .gpkg`` → ``OUT/<stem>.gpkg``; ``--vector DIR`` → ``DIR/<stem>.gpkg``."""
    if vector is None:
        return None
    text = str(vector)
    if text.startswith(".") and "/" not in text and text.lower() in VECTOR_SUFFIXES:
        return out_dir / f"{stem}{text.lower()}"
    return Path(text) / f"{stem}.gpkg"


def make_targets(
    stem: str, out_dir: Path, fmt: str, color: bool, probs: str | None, conf: bool, vector: str | None = None,
    overlay: bool = False, entropy: bool = False, uncertain: bool = False,
) -> Targets:  # fmt: skip
    """The output files of input ``<stem>`` (:mod:`ctseg.predict.run` docstring); ``color`` brings the legend,
    the class map its GIS sidecars."""
    if fmt == "index-png":
        return Targets(index=out_dir / f"{stem}.png")
    return Targets(
        classes=out_dir / f"{stem}_pred.tif",
        color=out_dir / f"{stem}_pred.png" if color else None,
        probs=out_dir / f"{stem}_probs.tif" if probs else None,
        conf=out_dir / f"{stem}_conf.tif" if conf else None,
        vector=vector_path(stem, out_dir, vector),
        legend=out_dir / f"{stem}_legend.png" if color else None,
        overlay=out_dir / f"{stem}_overlay.png" if overlay else None,
        aux=out_dir / f"{stem}_pred.tif.aux.xml",
        qml=out_dir / f"{stem}_pred.qml",
        entropy=out_dir / f"{stem}_entropy.tif" if entropy else None,
        uncertain=out_dir / f"{stem}_uncertain.gpkg" if uncertain else None,
    )


@dataclass
class Settings:
    """What :func:`ctseg.predict.run.run_predict` was asked for, checked."""

    out_dir: Path
    tta: bool
    window: int
    overlap: float
    batch_size: int
    color: bool
    overwrite: bool
    device: str
    dataset: str | None
    progress: bool
    selected: tuple[int, ...] | None
    nodata: object  # None, a float, or NO_NODATA
    out_format: str
    probs: str | None
    confidence: bool
    skip_existing: bool
    png_max_mpx: float
    inputs: list[Path] = field(default_factory=list)
    vector: str | None = None
    vector_classes: list | None = None
    overlay: bool = False
    region: object = None  # a ctseg.predict.region.Region, or None: the whole raster
    regularize: bool = False  # --vector polygons through ctseg.vectorize.regularize
    regularize_tolerance: float | None = None
    uncertainty: bool = False  # <stem>_entropy.tif (ctseg.predict.uncertainty)
    uncertain_windows: int | None = None  # <stem>_uncertain.gpkg: that many cells
    runtime: str = "torch"  # or "onnx": onnxruntime on a cached export (ctseg.checkpoints.onnx_cache)
    vector_workers: int | None = None  # --vector's worker processes (None: ctseg vectorize's default)

    def targets(self, stem: str, png: bool = True) -> Targets:
        """The outputs of input ``<stem>``; ``png``: the input is small enough for PNGs (``--png-max-mpx``)."""
        return make_targets(stem, self.out_dir, self.out_format, self.color and png, self.probs, self.confidence,
                            self.vector, self.overlay and png, self.uncertainty,
                            self.uncertain_windows is not None)  # fmt: skip


def check_settings(loaded, info, opts: Settings) -> None:
    """One-line errors for ``--bands`` of the wrong count, a window the model cannot take, a bad overlap or batch
    size, and ``--vector-classes`` the model does not predict."""
    selected, window, overlap, batch_size = opts.selected, opts.window, opts.overlap, opts.batch_size
    if selected is not None and len(selected) != info.bands:
        raise CtsegError(
            f"--bands {','.join(map(str, selected))} selects {_bands_text(len(selected))} but the model takes "
            f"{info.band_layout()} images ({info.name}); give {info.bands} band numbers"
        )
    multiple = loaded.model.encoder.input_multiple
    if window < multiple or window % multiple:
        raise CtsegError(f"--window must be a positive multiple of {multiple}, got {window}")
    if not 0.0 <= overlap < 1.0:
        raise CtsegError(f"--overlap is a fraction of the window in [0, 1), got {overlap}")
    if batch_size < 1:
        raise CtsegError(f"--batch-size must be at least 1, got {batch_size}")
    if opts.vector_classes is not None:
        check_vector_classes(opts.vector_classes, info)


def check_vector_classes(tokens: Sequence, info) -> None:
    """Every ``--vector-classes`` token names (case-insensitively) or indexes one of the model's classes."""
    folded = [c.casefold() for c in info.classes]
    for token in tokens:
        if isinstance(token, int):
            if not 0 <= token < info.num_classes:
                raise CtsegError(
                    f"--vector-classes: class index {token}; the model predicts {info.num_classes} classes "
                    f"(0-{info.num_classes - 1})"
                )
        elif str(token).casefold() not in folded:
            raise CtsegError(f"--vector-classes: class {token!r} is not one of {', '.join(info.classes)}")
