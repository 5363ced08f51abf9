"""What a prepared folder holds, as ``ctseg prepare`` prints it after every run: :func:`format_summary`.

Two tables and a legend, from the manifest (:func:`ctseg.data.manifest.split_summary`)::

    split  groups  images  crops      pixels  ignore  padding  overlap  nodata  label
    train       6      54    351  83,361,792   3.1 %    2.9 %    0.0 %   0.0 %  0.2 %
    val         1       9     36   9,437,184  54.0 %    0.0 %   52.4 %   0.0 %  1.6 %

    class shares of the labelled pixels
    class       train    val
    building   11.3 %  6.0 %
    …

followed by one line per cause of ignore pixels that occurs (:data:`ctseg.data.manifest.IGNORE_CAUSES`). Pixels
are those of the stored masks (evaluation masks at the label's crop size, training masks after ``--resize``);
every share is of the split's pixels, the class shares of its labelled (non-ignore) pixels.
"""

from __future__ import annotations

from typing import Any

from ctseg.data.manifest import IGNORE_CAUSES, split_summary

#: What each cause of ignore pixels means, for the legend under the table.
CAUSE_TEXT = {
    "padding": "beyond the border of an image smaller than the crop (the crop is filled up)",
    "overlap": (
        "evaluation pixels an earlier, overlapping crop of the same image already scores (not lost: each pixel is "
        "scored once, there; a row's or column's last crop ends at the image border and overlaps its neighbour "
        "unless the image side is a multiple of --crop)"
    ),
    "nodata": "no image data (the raster's nodata value, or --nodata)",
    "label": (
        "the data set's own ignore label in the masks (its ignore colours or values; vector labels: no polygon there "
        "and no background class, outside --extent, or a polygon of an ignore value)"
    ),
}


def share(part: int, whole: int) -> str:
    """``part / whole`` as a percentage with one decimal; ``<0.1 %`` for a share that would print as 0.0 but is not."""
    if whole <= 0:
        return "–"
    value = 100.0 * part / whole
    if 0 < value < 0.05:
        return "<0.1 %"
    return f"{value:.1f} %"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_summary(manifest: dict[str, Any]) -> str:
    """The summary of a prepared folder's manifest (module docstring), as lines of text without a final newline."""
    splits = split_summary(manifest)
    if not splits:
        return "no crops were written"
    known = all(row["causes"] is not None for row in splits.values())
    header = ["split", "groups", "images", "crops", "pixels", "ignore"]
    if known:
        header += list(IGNORE_CAUSES)
    rows = []
    for split, row in splits.items():
        cells = [split, str(row["groups"]), str(row["images"]), str(row["crops"]), f"{row['pixels']:,}",
                 share(row["ignore"], row["pixels"])]  # fmt: skip
        if known:
            cells += [share(row["causes"][cause], row["pixels"]) for cause in IGNORE_CAUSES]
        rows.append(cells)
    lines = _table(header, rows)
    classes = list(manifest["dataset"]["classes"])
    labelled = {split: sum(row["classes"].values()) for split, row in splits.items()}
    lines += ["", "class shares of the labelled pixels"]
    lines += _table(
        ["class", *splits],
        [[name, *(share(row["classes"][name], labelled[split]) for split, row in splits.items())] for name in classes],
    )
    if known:
        seen = [cause for cause in IGNORE_CAUSES if any(row["causes"][cause] for row in splits.values())]
        if seen:
            lines += ["", "ignore pixels, by cause:"]
            lines += [f"  {cause}: {CAUSE_TEXT[cause]}" for cause in seen]
    else:
        lines += ["", "(the causes of ignore pixels were not counted by the ctseg that prepared this folder; "
                      "prepare it again with --overwrite to see them)"]  # fmt: skip
    return "\n".join(lines)
