"""The canvas of a procedural aerial scene: noise fields, geometry helpers, the ground, shadows and the finish.

:class:`Canvas` holds one scene while it is painted (a float32 ``(3, n, n)`` RGB image, the ``(n, n)`` label
map, a height map for the shadows) and paints everything that is not an object: the textured grass
background with drier patches (**low vegetation**), the street grid's roads with markings, curbs and tiled
sidewalks, and paved plazas and parking lots (**impervious surface**). :meth:`Canvas.finish` casts the
shadows of the height map, blurs slightly, applies the scene's illumination (gain, colour cast, a
low-frequency brightness field, a tone curve) and sensor noise, and quantises to 8 bits.

The objects (buildings, clutter, cars, trees) and :func:`~ctseg.data.synthetic.scene.generate_scene` are in
:mod:`ctseg.data.synthetic.scene`, which describes the whole scene. Multi-octave value noise
(:func:`_value_noise`) gives the textures; everything is vectorised numpy over object windows.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["BUILDING", "CAR", "CLUTTER", "IMPERVIOUS", "LOW_VEG", "TREE"]

#: Class indices, ISPRS order (``SYNTHETIC``).
IMPERVIOUS, BUILDING, LOW_VEG, TREE, CAR, CLUTTER = range(6)


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


class Canvas:
    """One scene's canvas and its ground layers (module docstring). Units: pixels, image axes x right, y down.

    The object layers are added by :class:`ctseg.data.synthetic.scene._Scene`; ``_paint`` and the geometry
    helpers are shared with them.
    """

    def __init__(self, seed: int, size: int) -> None:
        rng = self.rng = np.random.default_rng(seed)
        self.size = n = size
        self.scale = float(np.clip(math.sqrt(size / 256), 0.5, 2.0))  # object scale
        self.xs = _coords(size)
        self.label = np.full((n, n), LOW_VEG, dtype=np.uint8)
        self.img = np.empty((3, n, n), dtype=np.float32)  # channel-first while painting (fast broadcasts)
        # object heights, in pixels of shadow length at shadow_len = 1 (the tangent of the sun's zenith angle)
        self.height = np.zeros((n, n), dtype=np.float32)
        self.asphalt = np.zeros((n, n), dtype=bool)
        phi = rng.uniform(0, 2 * math.pi)
        self.sun = (math.cos(phi), math.sin(phi))  # unit vector towards the sun, image axes
        self.shadow_len = rng.uniform(0.5, 1.1)
        self.grid_angle = rng.normal(0, 0.03) if rng.random() < 0.4 else rng.uniform(-math.pi / 4, math.pi / 4)
        self.fine = _value_noise(rng, n, max(2, int(n / (4 * self.scale))))
        self.clump = _value_noise(rng, n, max(2, int(n / (3 * self.scale))), octaves=2)
        self.roads: list[tuple[float, float, float, float]] = []  # (angle, offset, half width, sidewalk)
        self.lots: list[tuple[float, float, float, float, float, float]] = []  # (cx, cy, angle, a, b, stall)

    # ----------------------------------------------------------------------------------------- geometry
    def _win(self, cx: float, cy: float, rx: float, ry: float):
        """Window around (cx, cy) with half extents (rx, ry), clipped: (slices, X (1,w), Y (h,1)) or None."""
        n = self.size
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

    def _corners_free(self, cx, cy, theta, a, b) -> bool:
        """Cheap pre-check: the rectangle's corners and edge midpoints inside the image are on grass."""
        c, sn, n = math.cos(theta), math.sin(theta), self.size
        for u, v in ((a, b), (a, -b), (-a, b), (-a, -b), (0, b), (0, -b), (a, 0), (-a, 0)):
            x, y = cx + u * c - v * sn, cy + u * sn + v * c
            if 0 <= x < n and 0 <= y < n and self.label[int(y), int(x)] != LOW_VEG:
                return False
        return True

    # ----------------------------------------------------------------------------------------- layers
    def grass(self) -> None:
        rng, n = self.rng, self.size
        base = np.array([0.34, 0.45, 0.22], dtype=np.float32) + rng.normal(0, 0.03, 3).astype(np.float32)
        base = base * np.float32(rng.uniform(0.85, 1.15))
        dry = np.array([0.52, 0.48, 0.32], dtype=np.float32) * np.float32(rng.uniform(0.85, 1.1))
        self.grass_color = base
        self.low = _value_noise(rng, n, max(1, round(n / (85 * self.scale))), octaves=3)
        self.mid = _value_noise(rng, n, max(2, round(n / (16 * self.scale))), octaves=2)
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
        rng, s, n = self.rng, self.scale, self.size
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
            self.roads.append((self.grid_angle + ax * math.pi / 2, off, half, sw))
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
        rng, s = self.rng, self.scale
        for _ in range(rng.choice(3, p=[0.35, 0.45, 0.2])):
            th, off, half, sw = self.roads[rng.integers(len(self.roads))]
            side = rng.choice([-1.0, 1.0])
            a, b = rng.uniform(20, 50) * s, rng.uniform(14, 30) * s
            cx, cy = self._road_point(th, off, rng.uniform(-0.4, 0.4) * self.size, side * (half + sw + b - 1))
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
        c = (self.size - 1) / 2
        ct, st = math.cos(th), math.sin(th)
        return c + t * ct - (off + d) * st, c + t * st + (off + d) * ct

    def _shadows(self) -> np.ndarray:
        """Cast shadows from the height map: ``(n, n)`` bool.

        A pixel p is in shadow when, marching from p towards the sun, some pixel at distance D is higher than
        ``height(p) + D / shadow_len``. The march steps one pixel along the sun's dominant axis (rounded on the
        other), so every step is one shifted whole-image comparison; self-shadowing is impossible by
        construction, and shadows fall on lower roofs, crowns and cars as well as the ground.
        """
        h, n = self.height, self.size
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
