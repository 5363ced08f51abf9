"""Procedural aerial scenes with the six ISPRS classes (the demo's data; no download needed).

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

The ground, shadows and finish are painted by :mod:`ctseg.data.synthetic.canvas`, the objects here
(:class:`_Scene`); :mod:`ctseg.data.synthetic.dataset` serves the scenes as a data set and a data module.
"""

from __future__ import annotations

import math

import numpy as np

from ctseg.data.synthetic.canvas import BUILDING, CAR, CLUTTER, IMPERVIOUS, LOW_VEG, TREE, Canvas
from ctseg.errors import CtsegError

__all__ = ["generate_scene"]

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


class _Scene(Canvas):
    """Paints one scene: the canvas's ground (:class:`Canvas`) plus the objects; see the module docstring."""

    def buildings(self) -> None:
        """Rectangles and L shapes, mostly set back along the streets, on free grass with a 3 px margin."""
        rng, s, n, k = self.rng, self.scale, self.size, 80
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
                theta = self.grid_angle + turn[i] * math.pi / 2 + 0.05 * jitter[i]
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
            self._roof([(cx, cy, self.grid_angle, 12 * s, 9 * s)])

    def _roof(self, parts) -> int:
        rng, s = self.rng, self.scale
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
        rng, s, n, k = self.rng, self.scale, self.size, 60
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
                theta = self.grid_angle + turn[i] * math.pi / 2 + jitter[i]
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
        rng, s, n = self.rng, self.scale, self.size
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
        rng, s = self.rng, self.scale
        if not (0 <= cx < self.size and 0 <= cy < self.size):
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
        rng, s, n = self.rng, self.scale, self.size
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
