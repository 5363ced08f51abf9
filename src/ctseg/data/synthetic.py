"""Built-in procedural aerial scenes with the six ISPRS classes (the demo's data; no download needed).

:func:`generate_scene` paints one top-down scene at roughly 25 cm per pixel (at 256 px; object sizes grow with
``sqrt(size / 256)``, clipped to 0.5-2×, so small test images still hold every class):

* **impervious surface (0)** — one to three straight roads on the scene's street grid (crossings included) with
  dashed centre lines, optional edge lines, curbs and tiled sidewalks; paved plazas and parking lots;
* **building (1)** — rectangular and L-shaped footprints along the streets with gable, hip or flat roofs in a
  range of roof colours, facet shading from the sun, tile rows, ridges, parapets, skylights and roof boxes;
* **low vegetation (2)** — the textured grass background with drier patches;
* **tree (3)** — irregular round crowns, alone, in clusters or as street rows; their colour is close to the
  grass, the difference is mostly the clumpy, sun-lit texture;
* **car (4)** — small rounded rectangles with windscreens in the lanes, parked at the kerb and in parking lots;
* **clutter (5)** — heaps, containers, boxes and the occasional pond.

Buildings, trees, cars and clutter cast shadows in one sun direction per scene; shadows darken (and tint blue)
whatever lies underneath and never change its label. Multi-octave value noise gives the textures; each scene
gets its own illumination gain, colour cast, tone curve, a low-frequency brightness field, a slight blur
and zero-mean sensor noise. Everything is vectorised numpy over object windows (no per-pixel Python loops); a 256²
scene takes a few milliseconds.

:class:`SyntheticAerialDataset` serves deterministic, cached scenes normalised like ImageNet
(``SYNTHETIC.mean / std``); :class:`SyntheticDataModule` wraps train / val / test splits for Lightning.
"""

from __future__ import annotations

import math
from functools import lru_cache

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ctseg.data.definitions import SYNTHETIC, DatasetInfo
from ctseg.data.resumable import EpochRandomSampler, SkippableBatchSampler
from ctseg.errors import CtsegError

__all__ = ["SPLITS", "SyntheticAerialDataset", "SyntheticDataModule", "generate_scene", "scene_seed"]

IMPERVIOUS, BUILDING, LOW_VEG, TREE, CAR, CLUTTER = range(6)
#: Split name → code mixed into every scene seed (splits never share a scene seed).
SPLITS = {"train": 0, "val": 1, "test": 2}

_SLOPED_ROOFS = np.array(
    [(0.62, 0.30, 0.22), (0.52, 0.26, 0.20), (0.70, 0.40, 0.28), (0.36, 0.36, 0.39), (0.24, 0.24, 0.27),
     (0.45, 0.33, 0.28)],
    dtype=np.float32,
)  # fmt: skip
_FLAT_ROOFS = np.array(
    [(0.72, 0.72, 0.70), (0.60, 0.58, 0.52), (0.30, 0.30, 0.31), (0.82, 0.82, 0.84), (0.50, 0.50, 0.52)],
    dtype=np.float32,
)  # fmt: skip
_CAR_COLORS = np.array(
    [(0.88, 0.88, 0.90), (0.66, 0.67, 0.70), (0.10, 0.10, 0.12), (0.30, 0.31, 0.33), (0.62, 0.10, 0.10),
     (0.14, 0.24, 0.55), (0.80, 0.78, 0.70), (0.20, 0.33, 0.25)],
    dtype=np.float32,
)  # fmt: skip
_CAR_WEIGHTS = np.array([0.24, 0.2, 0.18, 0.14, 0.08, 0.08, 0.05, 0.03])
_CLUTTER_COLORS = np.array(
    [(0.47, 0.37, 0.27), (0.70, 0.62, 0.46), (0.56, 0.55, 0.52), (0.20, 0.36, 0.62), (0.82, 0.46, 0.16),
     (0.55, 0.22, 0.18), (0.90, 0.90, 0.88), (0.35, 0.30, 0.35), (0.75, 0.70, 0.20)],
    dtype=np.float32,
)  # fmt: skip


@lru_cache(maxsize=8)
def _coords(size: int) -> np.ndarray:
    c = np.arange(size, dtype=np.float32)
    c.flags.writeable = False
    return c


@lru_cache(maxsize=64)
def _interp(n_out: int, cells: int, endpoint: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample positions on a lattice of ``cells`` cells: ``(i0, i1, w0, w1)`` (smoothstep weights).

    ``endpoint=False``: ``n_out`` pixel positions ``i · cells / n_out``; ``True``: ``n_out`` points from
    lattice node 0 to node ``cells`` inclusive.
    """
    pos = np.arange(n_out, dtype=np.float64) * (cells / (n_out - 1 if endpoint else n_out))
    i0 = np.minimum(pos.astype(np.intp), cells - 1)
    f = pos - i0
    f = (f * f * (3 - 2 * f)).astype(np.float32)
    out = (i0, i0 + 1, 1 - f, f)
    for arr in out:
        arr.flags.writeable = False
    return out


def _resample(lattice: np.ndarray, n_out: int, endpoint: bool = False) -> np.ndarray:
    """Separable smoothstep interpolation of a square lattice ``(c+1, c+1)`` to ``(n_out, n_out)``."""
    i0, i1, w0, w1 = _interp(n_out, lattice.shape[0] - 1, endpoint)
    rows = lattice[:, i0] * w0 + lattice[:, i1] * w1
    out = rows[i0] * w0[:, None]
    out += rows[i1] * w1[:, None]
    return out


def _value_noise(rng: np.random.Generator, size: int, cells: int, octaves: int = 1) -> np.ndarray:
    """Multi-octave value noise, ``(size, size)`` float32 in about [-1, 1].

    Octave ``o`` is a random lattice of ``cells · 2^o`` cells (values uniform in [-1, 1]) with amplitude
    ``2^-o``. The coarser octaves are first interpolated onto the finest lattice's nodes and summed there, so
    only one interpolation runs at full resolution; the sum is divided by the total amplitude.
    """
    finest = max(1, min(cells * 2 ** (octaves - 1), size))
    acc = np.zeros((finest + 1, finest + 1), dtype=np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = max(1, min(cells * 2**o, size))
        lattice = rng.random((c + 1, c + 1), dtype=np.float32) * np.float32(2 * amp) - np.float32(amp)
        acc += lattice if c == finest else _resample(lattice, finest + 1, endpoint=True)
        total += amp
        amp *= 0.5
    acc *= np.float32(1 / total)
    return _resample(acc, size)


class _Scene:
    """Paints one scene; see the module docstring for the content. Units: pixels, image axes x right, y down."""

    def __init__(self, seed: int, size: int) -> None:
        rng = self.rng = np.random.default_rng(seed)
        self.n = n = size
        self.s = float(np.clip(math.sqrt(size / 256), 0.5, 2.0))  # object scale
        self.xs = _coords(size)
        self.label = np.full((n, n), LOW_VEG, dtype=np.uint8)
        self.img = np.empty((3, n, n), dtype=np.float32)  # channel-first while painting (fast broadcasts)
        # object heights, in pixels of shadow length at shadow_len = 1 (the tangent of the sun's zenith angle)
        self.height = np.zeros((n, n), dtype=np.float32)
        self.asphalt = np.zeros((n, n), dtype=bool)
        phi = rng.uniform(0, 2 * math.pi)
        self.sun = (math.cos(phi), math.sin(phi))  # unit vector towards the sun, image axes
        self.shadow_len = rng.uniform(0.5, 1.1)
        self.alpha = rng.normal(0, 0.03) if rng.random() < 0.4 else rng.uniform(-math.pi / 4, math.pi / 4)
        self.fine = _value_noise(rng, n, max(2, int(n / (4 * self.s))))
        self.clump = _value_noise(rng, n, max(2, int(n / (3 * self.s))), octaves=2)
        self.roads: list[tuple[float, float, float, float]] = []  # (angle, offset, half width, sidewalk)
        self.lots: list[tuple[float, float, float, float, float, float]] = []  # (cx, cy, angle, a, b, stall)

    # ----------------------------------------------------------------------------------------- geometry
    def _win(self, cx: float, cy: float, rx: float, ry: float):
        """Window around (cx, cy) with half extents (rx, ry), clipped: (slices, X (1,w), Y (h,1)) or None."""
        n = self.n
        x0, x1 = max(math.floor(cx - rx) - 1, 0), min(math.ceil(cx + rx) + 2, n)
        y0, y1 = max(math.floor(cy - ry) - 1, 0), min(math.ceil(cy + ry) + 2, n)
        if x0 >= x1 or y0 >= y1:
            return None
        return (slice(y0, y1), slice(x0, x1)), self.xs[None, x0:x1] - cx, self.xs[y0:y1, None] - cy

    @staticmethod
    def _rect_ext(theta: float, a: float, b: float) -> tuple[float, float]:
        c, s = abs(math.cos(theta)), abs(math.sin(theta))
        return a * c + b * s, a * s + b * c

    def _rect(self, cx, cy, theta, a, b, margin=0.0):
        """Rotated rectangle (half extents a along theta, b across): (win, pu, pv, inside) or None."""
        ex, ey = self._rect_ext(theta, a + margin, b + margin)
        w = self._win(cx, cy, ex, ey)
        if w is None:
            return None
        win, X, Y = w
        c, s = math.cos(theta), math.sin(theta)
        pu, pv = X * c + Y * s, Y * c - X * s
        inside = (np.abs(pu) <= a + margin) & (np.abs(pv) <= b + margin)
        return win, pu, pv, inside

    # ----------------------------------------------------------------------------------------- layers
    def grass(self) -> None:
        rng, n = self.rng, self.n
        base = np.array([0.34, 0.45, 0.22], dtype=np.float32) + rng.normal(0, 0.03, 3).astype(np.float32)
        base = base * np.float32(rng.uniform(0.85, 1.15))
        dry = np.array([0.52, 0.48, 0.32], dtype=np.float32) * np.float32(rng.uniform(0.85, 1.1))
        self.grass_color = base
        self.low = _value_noise(rng, n, max(1, round(n / (85 * self.s))), octaves=3)
        self.mid = _value_noise(rng, n, max(2, round(n / (16 * self.s))), octaves=2)
        self.wobble = 1 + 0.15 * self.mid + 0.08 * self.clump  # crown edges: radius factor
        # dry patches: the transposed low-frequency field, a different pattern for free
        dryness = (self.low.T - np.float32(rng.uniform(-0.1, 0.4))) * np.float32(3.0)
        np.clip(dryness, 0, np.float32(rng.uniform(0.3, 0.9)), out=dryness)
        shade = 1 + 0.10 * self.low + 0.06 * self.mid + 0.05 * self.fine
        np.multiply((dry - base)[:, None, None], dryness, out=self.img)
        self.img += base[:, None, None]
        self.img *= shade

    def road_network(self) -> None:
        """Straight roads on the street grid; every per-pixel step after the distance runs on the band only."""
        rng, s, n = self.rng, self.s, self.n
        kind = rng.random()
        axes = [0] if kind < 0.25 else [0, 1] if kind < 0.8 else [0, 0, 1]
        if rng.random() < 0.5:
            axes = [1 - a for a in axes]
        sidewalks = rng.random() < 0.75
        offsets_used: dict[int, list[float]] = {0: [], 1: []}
        for ax in axes:
            half = rng.uniform(11, 16) * s
            sw = rng.uniform(4, 8) * s if sidewalks else 0.0
            for _ in range(10):
                off = rng.uniform(-0.38, 0.38) * n
                if all(abs(off - o) > 2 * (half + sw) + 50 * s for o in offsets_used[ax]):
                    break
            else:
                continue
            offsets_used[ax].append(off)
            self.roads.append((self.alpha + ax * math.pi / 2, off, half, sw))
        c = (n - 1) / 2
        X, Y = self.xs[None, :] - c, self.xs[:, None] - c
        asphalt_color = np.float32(rng.uniform(0.28, 0.46)) * (1 + rng.normal(0, 0.03, 3)).astype(np.float32)
        walk_color = np.float32(rng.uniform(0.55, 0.72)) * (1 + rng.normal(0, 0.04, 3)).astype(np.float32)
        img, lab, fine = self.img.reshape(3, -1), self.label.reshape(-1), self.fine.reshape(-1)
        bands = []  # per road: flat indices of the corridor (road + sidewalks), |distance|, along coordinate
        count = np.zeros(n * n, dtype=np.uint8)  # corridors covering each pixel (≥ 2: a junction)
        for th, off, half, sw in self.roads:
            ct, st = math.cos(th), math.sin(th)
            ad = np.abs(Y * ct - X * st - off).reshape(-1)
            idx = np.flatnonzero(ad < half + sw)
            bands.append((idx, ad[idx], (idx % n - c) * ct + (idx // n - c) * st))
            count[idx] += 1
        tile = 3.2 * s
        for (_, _, half, sw), (idx, ad, t) in zip(self.roads, bands, strict=True):
            if sw > 0:  # tiled sidewalks with a bright curb
                w = ad >= half
                iw, aw, tw = idx[w], ad[w], t[w]
                joints = ((tw % tile) < 0.7 * s) | (((aw - half) % tile) < 0.7 * s)
                shade = 1 + 0.06 * fine[iw] - 0.08 * joints + 0.12 * (aw < half + 1.3 * s)
                img[:, iw] = walk_color[:, None] * shade.astype(np.float32)
                lab[iw] = IMPERVIOUS
        asphalt = self.asphalt.reshape(-1)
        for (_, _, half, _), (idx, ad, _) in zip(self.roads, bands, strict=True):
            asphalt[idx[ad < half]] = True
        ia = np.flatnonzero(asphalt)
        shade = 1 + 0.05 * fine[ia] + 0.07 * self.mid.reshape(-1)[ia]
        img[:, ia] = asphalt_color[:, None] * shade
        lab[ia] = IMPERVIOUS
        paint = np.float32(rng.uniform(0.78, 0.92))
        dash = 9 * s
        for (_, _, half, _), (idx, ad, t) in zip(self.roads, bands, strict=True):
            marks = (ad < 0.9 * s) & ((t % (2 * dash)) < dash)
            if rng.random() < 0.5:
                marks |= np.abs(ad - (half - 2.5 * s)) < 0.6 * s
            im = idx[marks]
            img[:, im[count[im] < 2]] = paint  # no paint across junctions

    def paved_areas(self) -> None:
        rng, s = self.rng, self.s
        for _ in range(rng.choice(3, p=[0.35, 0.45, 0.2])):
            th, off, half, sw = self.roads[rng.integers(len(self.roads))]
            side = rng.choice([-1.0, 1.0])
            a, b = rng.uniform(20, 50) * s, rng.uniform(14, 30) * s
            cx, cy = self._road_point(th, off, rng.uniform(-0.4, 0.4) * self.n, side * (half + sw + b - 1))
            r = self._rect(cx, cy, th, a, b)
            if r is None:
                continue
            win, pu, pv, inside = r
            if rng.random() < 0.55:  # parking lot: asphalt with stall lines across the long axis
                col = np.float32(rng.uniform(0.30, 0.45)) * (1 + rng.normal(0, 0.03, 3)).astype(np.float32)
                stall = rng.uniform(10, 12) * s
                lines = ((pu % stall) < 0.8 * s) & (np.abs(pv) > 0.2 * b)
                shade = 1 + 0.05 * self.fine[win] + 0.9 * lines
                self.lots.append((cx, cy, th, a, b, stall))
            else:  # plaza / courtyard paving
                col = np.float32(rng.uniform(0.55, 0.75)) * np.array([1.0, 0.97, 0.9], dtype=np.float32)
                tile = rng.uniform(3, 6) * s
                joints = ((pu % tile) < 0.6 * s) | ((pv % tile) < 0.6 * s)
                shade = 1 + 0.05 * self.fine[win] - 0.1 * joints
            self._paint(win, inside, col, shade)
            self.label[win][inside] = IMPERVIOUS

    def _road_point(self, th, off, t, d) -> tuple[float, float]:
        c = (self.n - 1) / 2
        ct, st = math.cos(th), math.sin(th)
        return c + t * ct - (off + d) * st, c + t * st + (off + d) * ct

    def buildings(self) -> None:
        """Rectangles and L shapes, mostly set back along the streets, on free grass with a 3 px margin."""
        rng, s, n, k = self.rng, self.s, self.n, 80
        target = rng.uniform(0.14, 0.36) * n * n
        late = np.arange(k) >= 60  # smaller houses at the end, in case nothing fitted yet
        big_a = (np.where(late, rng.uniform(10, 18, k), rng.uniform(10, 36, k)) * s).tolist()
        big_b = (np.where(late, rng.uniform(9, 14, k), rng.uniform(9, 26, k)) * s).tolist()
        swap, on_street, wing = (rng.random((3, k)) < [[0.5], [0.6], [0.35]]).tolist()
        road_i = rng.integers(len(self.roads), size=k).tolist()
        side = rng.choice([-1.0, 1.0], size=(k, 3)).tolist()
        setback, along = (rng.uniform(3, 20, k) * s).tolist(), (rng.uniform(-0.55, 0.55, k) * n).tolist()
        free_xy = rng.uniform(0, n, (k, 2)).tolist()
        jitter, turn = rng.normal(0, 1, k).tolist(), rng.integers(2, size=k).tolist()
        wing_w, wing_ext = rng.uniform(0.3, 0.5, k).tolist(), rng.uniform(0.6, 1.4, k).tolist()
        m = 3 * s
        area, placed = 0, 0
        for i in range(k):
            if area >= target and placed:
                break
            a = big_a[i]
            b = min(a, big_b[i])
            if on_street[i]:
                th, off, half, sw = self.roads[road_i[i]]
                if swap[i]:
                    a, b = b, a
                cx, cy = self._road_point(th, off, along[i], side[i][0] * (half + sw + b + setback[i]))
                theta = th + 0.02 * jitter[i]
            else:
                cx, cy = free_xy[i]
                theta = self.alpha + turn[i] * math.pi / 2 + 0.05 * jitter[i]
            if 0 <= cx < n and 0 <= cy < n and self.label[int(cy), int(cx)] != LOW_VEG:
                continue  # cheap early rejection
            if not self._corners_free(cx, cy, theta, a + m, b + m):
                continue
            parts = [(cx, cy, theta, a, b)]
            if wing[i]:  # L shape: a wing at one end, sticking out to one side
                w2, ext = wing_w[i] * a, wing_ext[i] * b
                lu, lv = side[i][1] * (a - w2), side[i][2] * ext / 2
                c, sn = math.cos(theta), math.sin(theta)
                parts.append((cx + lu * c - lv * sn, cy + lu * sn + lv * c, theta, w2, b + ext / 2))
            ok = True
            for p in parts:  # on grass only, with a margin, and mostly inside the image
                r = self._rect(*p, margin=m)
                ok = r is not None and r[3].sum() >= 1.6 * (p[3] + m) * (p[4] + m)
                if not ok or (self.label[r[0]][r[3]] != LOW_VEG).any():
                    ok = False
                    break
            if ok:
                area += self._roof(parts)
                placed += 1
        if not placed:  # practically never: squeeze a small house in anyway, over whatever is there
            cx, cy = (rng.uniform(0.3, 0.7, size=2) * n).tolist()
            self._roof([(cx, cy, self.alpha, 12 * s, 9 * s)])

    def _corners_free(self, cx, cy, theta, a, b) -> bool:
        """Cheap pre-check: the rectangle's corners and edge midpoints inside the image are on grass."""
        c, sn, n = math.cos(theta), math.sin(theta), self.n
        for u, v in ((a, b), (a, -b), (-a, b), (-a, -b), (0, b), (0, -b), (a, 0), (-a, 0)):
            x, y = cx + u * c - v * sn, cy + u * sn + v * c
            if 0 <= x < n and 0 <= y < n and self.label[int(y), int(x)] != LOW_VEG:
                return False
        return True

    def _roof(self, parts) -> int:
        rng, s = self.rng, self.s
        kind = rng.choice(3, p=[0.45, 0.25, 0.30])  # gable, hip, flat
        palette = _FLAT_ROOFS if kind == 2 else _SLOPED_ROOFS
        color = palette[rng.integers(len(palette))] * (1 + rng.normal(0, 0.05, 3)).astype(np.float32)
        height = rng.uniform(8, 24) * s if kind == 2 else rng.uniform(6, 14) * s
        sx, sy = self.sun
        area = 0
        for cx, cy, theta, a, b in parts:
            r = self._rect(cx, cy, theta, a, b)
            if r is None:
                continue
            win, pu, pv, inside = r
            c, sn = math.cos(theta), math.sin(theta)
            sun_u, sun_v = sx * c + sy * sn, sy * c - sx * sn  # sun in roof coordinates
            apu, apv = np.abs(pu), np.abs(pv)
            if kind == 2:
                du, dv = a - apu, b - apv
                edge = np.minimum(du, dv)
                shade = 1 + 0.04 * (pu / a) + 0.06 * self.fine[win] + np.where(edge < 1.6 * s, 0.14, 0.0)
                for _ in range(rng.integers(0, 4)):  # roof boxes / AC units
                    bu, bv = rng.uniform(-0.7, 0.7) * a, rng.uniform(-0.7, 0.7) * b
                    bs = rng.uniform(2, 4) * s
                    box = (np.abs(pu - bu) < bs) & (np.abs(pv - bv) < bs)
                    shade = shade + np.where(box, rng.choice([-0.25, 0.25]), 0.0)
            else:
                along_u = a >= b
                if kind == 0:  # gable: two facets, ridge along the long axis
                    nu, nv = (0.0 * pu, np.sign(pv)) if along_u else (np.sign(pu), 0.0 * pv)
                    dist = apv if along_u else apu
                else:  # hip: the facet of the nearest eave
                    du, dv = a - apu, b - apv
                    side_v = dv <= du
                    nu, nv = np.where(side_v, 0.0, np.sign(pu)), np.where(side_v, np.sign(pv), 0.0)
                    dist = np.where(side_v, apv, apu)
                facet = nu * sun_u + nv * sun_v
                tiles = np.sin(dist * (2 * math.pi / (2.6 * s)))
                ridge = dist < 0.9 * s if kind == 0 else np.zeros_like(facet, dtype=bool)
                shade = 1 + 0.22 * facet + 0.05 * tiles + 0.05 * self.fine[win] + 0.15 * ridge
                if rng.random() < 0.4:  # a skylight or two
                    for _ in range(rng.integers(1, 3)):
                        bu, bv = rng.uniform(-0.6, 0.6) * a, rng.uniform(-0.6, 0.6) * b
                        sky = (np.abs(pu - bu) < 1.8 * s) & (np.abs(pv - bv) < 2.4 * s)
                        shade = np.where(sky, 0.35, shade)
            self._paint(win, inside, color, shade)
            self.label[win][inside] = BUILDING
            area += int(inside.sum())
            self.height[win][inside] = height
        return area

    def clutter(self) -> None:
        """Boxes (containers, trailers) and irregular heaps off the roads and roofs; sometimes a pond."""
        rng, s, n, k = self.rng, self.s, self.n, 60
        target = rng.uniform(0.02, 0.055) * n * n
        area, placed = 0, 0
        if rng.random() < 0.12:
            pond = np.array([0.12, 0.20, 0.23], dtype=np.float32)
            area += self._blob(*rng.uniform(0.1, 0.9, 2) * n, rng.uniform(12, 22) * s, pond, 0.0, self.mid)
        xy = rng.uniform(0, n, (k, 2)).tolist()
        colors = _CLUTTER_COLORS[rng.integers(len(_CLUTTER_COLORS), size=k)]
        colors *= rng.uniform(0.85, 1.15, (k, 1)).astype(np.float32)
        box = (rng.random(k) < 0.5).tolist()
        ba, bb = (rng.uniform(4, 11, k) * s).tolist(), (rng.uniform(2.5, 5, k) * s).tolist()
        turn, jitter, lit = rng.integers(2, size=k).tolist(), rng.normal(0, 0.3, k).tolist(), rng.uniform(-1, 1, k)
        radius, height = (rng.uniform(3, 9, k) * s).tolist(), (rng.uniform(1.5, 5, k) * s).tolist()
        for i in range(k):
            if area >= target and placed:
                break
            cx, cy = xy[i]
            if self.label[int(cy), int(cx)] in (BUILDING, CAR) or self.asphalt[int(cy), int(cx)]:
                continue
            if box[i]:
                theta = self.alpha + turn[i] * math.pi / 2 + jitter[i]
                r = self._rect(cx, cy, theta, ba[i], bb[i])
                if r is None or not self._free_for_clutter(r[0], r[3]):
                    continue
                win, pu, pv, inside = r
                shade = 1 + 0.08 * self.fine[win] + 0.1 * lit[i] * np.sign(pv)
                self._paint(win, inside, colors[i], shade)
                self.label[win][inside] = CLUTTER
                self.height[win][inside] = height[i]
                got = int(inside.sum())
            else:
                got = self._blob(cx, cy, radius[i], colors[i], height[i] * 0.6, self.fine)
            area += got
            placed += got > 0

    def _free_for_clutter(self, win, m) -> bool:
        lab = self.label[win][m]
        return lab.size > 0 and not ((lab == BUILDING) | (lab == CAR) | self.asphalt[win][m]).any()

    def _blob(self, cx, cy, r, color, height, field) -> int:
        """Irregular round clutter object (its edge wobbles with ``field``); returns its pixel count (0: no fit)."""
        w = self._win(cx, cy, r * 1.5, r * 1.5)
        if w is None:
            return 0
        win, X, Y = w
        rad = r * (1 + 0.35 * field[win])
        m = X * X + Y * Y <= rad * rad
        if not self._free_for_clutter(win, m):
            return 0
        shade = 1 + 0.18 * self.clump[win] + 0.15 * (X * self.sun[0] + Y * self.sun[1]) / r
        self._paint(win, m, color, shade)
        self.label[win][m] = CLUTTER
        self.height[win][m] = height
        return int(m.sum())

    def cars(self) -> None:
        rng, s, n = self.rng, self.s, self.n
        placed = 0
        for th, off, half, _ in self.roads:
            lanes = [(-half / 2, th), (half / 2, th + math.pi)]
            if rng.random() < 0.6:  # kerbside parking on one side
                side = rng.choice([-1.0, 1.0])
                lanes.append((side * (half - 5 * s), th + rng.choice([0, math.pi])))
            density = rng.uniform(0.2, 1.0)
            for d, heading in lanes:
                for _ in range(rng.poisson(density * n / (90 * s))):
                    placed += self._car(*self._road_point(th, off, rng.uniform(-0.5, 0.5) * n, d), heading)
        for cx, cy, th, a, b, stall in self.lots:
            fill = rng.uniform(0.3, 0.9)
            c, sn = math.cos(th), math.sin(th)
            for row in (-1, 1):
                k0 = math.ceil((-a + 1) / stall)
                for k in range(k0, math.floor((a - 1) / stall)):
                    if rng.random() < fill:
                        u, v = (k + 0.5) * stall, row * b * 0.55
                        heading = th + math.pi / 2 + rng.choice([0, math.pi])
                        placed += self._car(cx + u * c - v * sn, cy + u * sn + v * c, heading, along_road=False)
        for _ in range(40):  # at least one car per scene
            if placed:
                break
            th, off, half, _ = self.roads[rng.integers(len(self.roads))]
            d = rng.choice([-1.0, 1.0]) * half / 2
            placed += self._car(*self._road_point(th, off, rng.uniform(-0.45, 0.45) * n, d), th)

    def _car(self, cx, cy, heading, along_road=True) -> int:
        rng, s = self.rng, self.s
        if not (0 <= cx < self.n and 0 <= cy < self.n):
            return 0
        van = rng.random() < 0.1
        a = rng.uniform(11, 13) * s if van else rng.uniform(8.0, 10.5) * s
        b = rng.uniform(3.6, 4.4) * s
        heading += rng.normal(0, 0.02 if along_road else 0.04)
        r = self._rect(cx, cy, heading, a, b, margin=1.2 * s)
        if r is None:
            return 0
        win, pu, pv, clear = r
        lab = self.label[win][clear]
        if (lab != IMPERVIOUS).any() or lab.size < 0.6 * 4 * (a + 1.2 * s) * (b + 1.2 * s):
            return 0
        apu, apv = np.abs(pu), np.abs(pv)
        rc = 1.8 * s
        cu, cv = apu - (a - rc), apv - (b - rc)
        body = (apu <= a) & (apv <= b) & ~((cu > 0) & (cv > 0) & (cu * cu + cv * cv > rc * rc))
        color = _CAR_COLORS[rng.choice(len(_CAR_COLORS), p=_CAR_WEIGHTS)] * rng.uniform(0.9, 1.1)
        glass = (apv < b - 0.9 * s) & (((pu > 0.12 * a) & (pu < 0.45 * a)) | ((pu > -0.8 * a) & (pu < -0.6 * a)))
        roof = (pu >= -0.6 * a) & (pu <= 0.12 * a)
        sun_v = self.sun[1] * math.cos(heading) - self.sun[0] * math.sin(heading)
        lit = 0.12 * np.tanh(pv / b) * sun_v
        shade = 1 + lit + 0.08 * roof + 0.03 * self.fine[win]
        pix = color[:, None] * np.broadcast_to(shade, body.shape)[body]
        dark = np.array([0.07, 0.08, 0.10], dtype=np.float32)
        pix = np.where(glass[body], dark[:, None], pix)
        self.img[:, win[0], win[1]][:, body] = pix
        self.label[win][body] = CAR
        self.height[win][body] = 3.5 * s
        return 1

    def trees(self) -> None:
        """Street rows beside some roads, then clusters of one to six crowns on the grass.

        Candidates are drawn and screened all at once (centre on grass, no car and at most one building pixel
        among eight points on the rim); crowns are then stamped into a crown-height buffer (the higher crown
        wins where two overlap) and shaded in one whole-image pass.
        """
        rng, s, n = self.rng, self.s, self.n
        xs, ys, rs = [], [], []
        for th, off, half, sw in self.roads:
            if rng.random() < 0.45:
                r0 = rng.uniform(7, 12) * s
                t = (r0 * rng.uniform(2.0, 2.8, 48)).cumsum() - 0.6 * n + rng.uniform(0, 2 * r0)
                r = r0 * rng.uniform(0.85, 1.15, 48)
                d = rng.choice([-1.0, 1.0]) * (half + sw + r * rng.uniform(0.5, 1.0, 48))
                x, y = self._road_point(th, off, t, d)
                xs.append(x), ys.append(y), rs.append(r)
        k = 40  # clusters: random walks of up to six crowns, with steps of about one radius
        r = rng.uniform(6, 15, (k, 6)) * s
        ang = rng.uniform(0, 2 * math.pi, (k, 6))
        step = r * rng.uniform(0.6, 1.5, (k, 6))
        step[:, 0] = 0
        x = rng.uniform(0, n, (k, 1)) + (step * np.cos(ang)).cumsum(1)
        y = rng.uniform(0, n, (k, 1)) + (step * np.sin(ang)).cumsum(1)
        keep = np.arange(6)[None, :] < rng.integers(1, 7, (k, 1))
        xs.append(x[keep]), ys.append(y[keep]), rs.append(r[keep])
        x, y, r = np.concatenate(xs), np.concatenate(ys), np.concatenate(rs)
        ok = (x >= 0) & (x < n) & (y >= 0) & (y < n)
        x, y, r = x[ok], y[ok], r[ok]
        ok = self.label[y.astype(np.intp), x.astype(np.intp)] == LOW_VEG
        rim = np.linspace(0, 2 * math.pi, 8, endpoint=False)
        rx = np.clip(x[:, None] + 0.85 * r[:, None] * np.cos(rim), 0, n - 1).astype(np.intp)
        ry = np.clip(y[:, None] + 0.85 * r[:, None] * np.sin(rim), 0, n - 1).astype(np.intp)
        rim_lab = self.label[ry, rx]
        ok &= ~(rim_lab == CAR).any(1) & ((rim_lab == BUILDING).sum(1) <= 1)
        x, y, r = x[ok], y[ok], r[ok]
        target = rng.uniform(0.08, 0.26) * n * n
        count = max(1, int(np.searchsorted((0.8 * math.pi * r * r).cumsum(), target)) + 1)
        x, y, r = x[:count].tolist(), y[:count].tolist(), r[:count].tolist()
        if not x:  # rare: a lone tree anywhere on the grass
            gy, gx = np.nonzero(self.label == LOW_VEG)
            if not gx.size:
                return
            i = rng.integers(gx.size)
            x, y, r = [float(gx[i])], [float(gy[i])], [8 * s]
        tall = (np.asarray(r) * rng.uniform(0.8, 1.4, len(r))).tolist()
        top = np.zeros((n, n), dtype=np.float32)  # crown height, 0 = no crown
        lit = np.zeros((n, n), dtype=np.float32)  # sun-facing side of the winning crown, in radii
        rr2 = np.zeros((n, n), dtype=np.float32)  # squared relative radius in the winning crown
        who = np.zeros((n, n), dtype=np.intp)
        sx, sy = self.sun
        for i, (cx, cy, ri, hi) in enumerate(zip(x, y, r, tall, strict=True)):
            win, X, Y = self._win(cx, cy, ri * 1.3, ri * 1.3)
            q = (X * X + Y * Y) / (ri * self.wobble[win]) ** 2
            h = hi * (1 - 0.4 * q)
            better = (q <= 1) & (h > top[win])
            top[win][better] = h[better]
            rr2[win][better] = q[better]
            lit[win][better] = ((X * (sx / ri)) + (Y * (sy / ri)))[better]
            who[win][better] = i
        idx = np.flatnonzero(top)
        colors = self.grass_color * np.array([0.86, 0.94, 0.84], dtype=np.float32) * rng.uniform(0.9, 1.12)
        colors = (colors * (1 + rng.normal(0, 0.05, (len(x), 3)))).astype(np.float32)
        c = self.clump.reshape(-1)[idx]
        shade = 1.06 + 0.22 * lit.reshape(-1)[idx] - 0.25 * rr2.reshape(-1)[idx] + 0.3 * c - 0.18 * (c < -0.35)
        self.img.reshape(3, -1)[:, idx] = colors[who.reshape(-1)[idx]].T * shade
        self.label.reshape(-1)[idx] = TREE
        np.maximum(self.height, top, out=self.height)

    def _shadows(self) -> np.ndarray:
        """Cast shadows from the height map: ``(n, n)`` bool.

        A pixel p is in shadow when, marching from p towards the sun, some pixel at distance D is higher than
        ``height(p) + D / shadow_len``. The march steps one pixel along the sun's dominant axis (rounded on the
        other), so every step is one shifted whole-image comparison; self-shadowing is impossible by
        construction, and shadows fall on lower roofs, crowns and cars as well as the ground.
        """
        h, n = self.height, self.n
        shadow = np.zeros((n, n), dtype=bool)
        top = float(h.max())
        if top <= 0:
            return shadow
        sx, sy = self.sun
        major = max(abs(sx), abs(sy))
        for k in range(1, math.ceil(top * self.shadow_len * major) + 1):
            ox, oy = round(k * sx / major), round(k * sy / major)
            if abs(ox) >= n or abs(oy) >= n:
                break
            dst = (slice(max(-oy, 0), n - max(oy, 0)), slice(max(-ox, 0), n - max(ox, 0)))
            src = (slice(max(oy, 0), n + min(oy, 0)), slice(max(ox, 0), n + min(ox, 0)))
            shadow[dst] |= h[src] > h[dst] + np.float32(k / major / self.shadow_len)
        return shadow

    def finish(self) -> np.ndarray:
        rng = self.rng
        img = self.img
        tint = np.array([0.50, 0.54, 0.64], dtype=np.float32) * np.float32(rng.uniform(0.85, 1.1))
        img.reshape(3, -1)[:, np.flatnonzero(self._shadows())] *= tint[:, None]
        # slight optical blur: separable [1, 2, 1] / 4, edges replicated
        q = np.float32(0.25)
        b = img * np.float32(0.5)
        b[:, 1:] += q * img[:, :-1]
        b[:, :-1] += q * img[:, 1:]
        b[:, 0] += q * img[:, 0]
        b[:, -1] += q * img[:, -1]
        img = b * np.float32(0.5)
        img[:, :, 1:] += q * b[:, :, :-1]
        img[:, :, :-1] += q * b[:, :, 1:]
        img[:, :, 0] += q * b[:, :, 0]
        img[:, :, -1] += q * b[:, :, -1]
        # illumination: gain and colour cast, a low-frequency brightness field, a tone curve
        gain = np.float32(rng.uniform(0.85, 1.15)) * (1 + rng.normal(0, 0.035, 3)).astype(np.float32)
        img *= gain[:, None, None]
        img *= 1 + np.float32(0.08) * self.low[::-1, ::-1]
        np.clip(img, 0, 1, out=img)
        img += np.float32(rng.uniform(-0.25, 0.25)) * img * (1 - img)
        # sensor noise: zero-mean uniform with standard deviation sigma; then 8-bit quantisation
        sigma = np.float32(rng.uniform(0.008, 0.025) * math.sqrt(12))
        noise = rng.random(img.shape, dtype=np.float32)
        noise -= np.float32(0.5)
        noise *= sigma
        img += noise
        img *= np.float32(255)
        img += np.float32(0.5)
        np.clip(img, 0, 255, out=img)
        return np.ascontiguousarray(img.astype(np.uint8).transpose(1, 2, 0))

    def _paint(self, win, mask, color, shade) -> None:
        """``img[:, win][:, mask] = color ⊗ shade[mask]``; ``shade`` broadcasts to the window (or is a scalar)."""
        view = self.img[:, win[0], win[1]]
        view[:, mask] = color[:, None] * np.broadcast_to(shade, mask.shape)[mask]


def generate_scene(seed: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One procedural aerial scene: ``(image (size, size, 3) uint8 RGB, mask (size, size) uint8 in 0..5)``.

    Deterministic per ``(seed, size)`` (numpy ``Generator``); classes as in ``SYNTHETIC`` (ISPRS order, no
    ignore pixels). Every scene has at least one road, building, car and clutter object and grass; trees are
    in nearly all. ``size`` ≥ 32.
    """
    seed, size = int(seed), int(size)
    if seed < 0:
        raise CtsegError(f"seed must be non-negative, got {seed}")
    if size < 32:
        raise CtsegError(f"scene size must be at least 32 pixels, got {size}")
    scene = _Scene(seed, size)
    scene.grass()
    scene.road_network()
    scene.paved_areas()
    scene.buildings()
    scene.clutter()
    scene.cars()
    scene.trees()
    return scene.finish(), scene.label


def scene_seed(seed: int, split: str, index: int) -> int:
    """The scene seed of sample ``index`` of ``split``: a 64-bit hash of ``(seed, split code, index)``."""
    if split not in SPLITS:
        raise CtsegError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    state = np.random.SeedSequence([int(seed), 0x5C7, SPLITS[split], int(index)]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


class SyntheticAerialDataset(Dataset):
    """``num_samples`` procedural scenes of one split; ``ds[i]`` → ``{"image", "mask"}``.

    * ``image``: ``(3, size, size)`` float32, ``(rgb / 255 − SYNTHETIC.mean) / SYNTHETIC.std``;
    * ``mask``: ``(size, size)`` int64 class indices 0..5 (no ignore pixels).

    Sample ``i`` of ``split`` is always the scene ``generate_scene(scene_seed(seed, split, i), size)``; the
    splits draw from disjoint seed streams. Scenes are generated on first access and kept in memory as uint8
    (about ``4 · size²`` bytes each); with DataLoader workers every worker keeps its own cache, so keep the
    workers persistent. No augmentation: the generator already varies street orientation, sun direction,
    colours and illumination per scene.
    """

    info: DatasetInfo = SYNTHETIC

    def __init__(self, num_samples: int, size: int = 256, seed: int = 0, split: str = "train") -> None:
        if int(num_samples) < 1:
            raise CtsegError(f"num_samples must be at least 1, got {num_samples}")
        if int(size) < 32:
            raise CtsegError(f"size must be at least 32 pixels, got {size}")
        if split not in SPLITS:
            raise CtsegError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        self.num_samples, self.size, self.seed, self.split = int(num_samples), int(size), int(seed), split
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        std = np.asarray(SYNTHETIC.std, dtype=np.float32)
        self._scale = (1 / (255 * std)).reshape(3, 1, 1)
        self._shift = (np.asarray(SYNTHETIC.mean, dtype=np.float32) / std).reshape(3, 1, 1)

    def __len__(self) -> int:
        return self.num_samples

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.num_samples
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample {index} out of range for {self.num_samples} samples")
        return i

    def scene(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw cached scene: ``(size, size, 3)`` uint8 RGB and ``(size, size)`` uint8 mask."""
        i = self._index(index)
        hit = self._cache.get(i)
        if hit is None:
            hit = self._cache[i] = generate_scene(scene_seed(self.seed, self.split, i), self.size)
        return hit

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rgb, mask = self.scene(index)
        image = rgb.transpose(2, 0, 1) * self._scale
        image -= self._shift
        return {"image": torch.from_numpy(image), "mask": torch.from_numpy(mask.astype(np.int64))}


class SyntheticDataModule(L.LightningDataModule):
    """Train / val / test splits of :class:`SyntheticAerialDataset` (the demo's data; nothing to download).

    Batches: ``{"image": (B, 3, H, W) float32, "mask": (B, H, W) int64}``, ``H = W = image_size``. The training
    order is a permutation seeded by ``(seed, epoch)`` (reproducible run to run, different each epoch, and
    resumable mid-epoch: :mod:`ctseg.data.resumable`); val and test are in order. The test split has
    ``val_samples`` scenes of its own. ``info`` is :data:`~ctseg.data.definitions.SYNTHETIC` (six ISPRS
    classes, mIoU / mean F1 over the five without clutter).

    Args:
        train_samples: scenes in the training split.
        val_samples: scenes in the validation split (and in the test split).
        image_size: scene side in pixels; a multiple of 32 (the encoders' largest stride).
        batch_size: scenes per batch.
        num_workers: DataLoader worker processes (persistent when > 0, so their scene caches survive epochs).
        seed: selects the scenes and the shuffling.
        pin_memory: pin host memory for faster GPU transfers.
    """

    def __init__(
        self,
        train_samples: int = 512,
        val_samples: int = 64,
        image_size: int = 256,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if image_size < 32 or image_size % 32:
            raise CtsegError(f"image_size must be a positive multiple of 32, got {image_size}")
        for name, value, low in (("train_samples", train_samples, 1), ("val_samples", val_samples, 1),
                                 ("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):  # fmt: skip
            if value < low:
                raise CtsegError(f"{name} must be at least {low}, got {value}")
        self.save_hyperparameters()
        self.train_samples, self.val_samples, self.image_size = train_samples, val_samples, image_size
        self.batch_size, self.num_workers, self.seed, self.pin_memory = batch_size, num_workers, seed, pin_memory
        self.info: DatasetInfo = SYNTHETIC
        self.train_set: SyntheticAerialDataset | None = None
        self.val_set: SyntheticAerialDataset | None = None
        self.test_set: SyntheticAerialDataset | None = None

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def setup(self, stage: str | None = None) -> None:
        """Create the split datasets (cheap: scenes are generated lazily on first access)."""
        if self.train_set is None:
            self.train_set = SyntheticAerialDataset(self.train_samples, self.image_size, self.seed, "train")
            self.val_set = SyntheticAerialDataset(self.val_samples, self.image_size, self.seed, "val")
            self.test_set = SyntheticAerialDataset(self.val_samples, self.image_size, self.seed, "test")

    def _loader(self, dataset: SyntheticAerialDataset, shuffle: bool) -> DataLoader:
        common = dict(
            generator=torch.Generator().manual_seed(self.seed),  # keeps worker seeding off the global RNG
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
        if not shuffle:
            return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, **common)
        # (seed, epoch)-ordered and skippable, so a run killed mid-epoch resumes on the same batches.
        batches = SkippableBatchSampler(EpochRandomSampler(len(dataset), self.seed), self.batch_size, drop_last=False)
        return DataLoader(dataset, batch_sampler=batches, **common)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        assert self.train_set is not None
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        assert self.val_set is not None
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        assert self.test_set is not None
        return self._loader(self.test_set, shuffle=False)
