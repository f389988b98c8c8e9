"""Rasterising a frame of a :class:`~lmanet_ros.synthetic.scene.Scene`: image, labels and
instances from the same geometry, then the sensor (lighting, tint, noise).

The background is ray-cast per pixel in world coordinates (sky rows, the ground plane, the facade
planes), so its textures move with the world as the camera advances; the billboards are drawn far
to near with the same polygons into the image, the label map and the instance map. Labels are
therefore exact: every label pixel is the class of the surface that coloured the image pixel.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from lmanet_ros.synthetic.scene import (BLOCK_HEDGE, BLOCK_STREET, CAM_HEIGHT, DETAIL_PX, FAR,
                                        MIN_OBJECT_PX, NEAR, NOISE_PAD, P_MARKING, P_ROAD,
                                        P_SIDEWALK, P_SKY, P_TERRAIN, P_WINDOW, POLY_SHIFT, VOID,
                                        Scene, frac, texels)

__all__ = ["finish", "render"]


def render(scene: Scene, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """The scene at time ``t`` (seconds): colour (H, W, 3) float32 RGB in 0-1, labels (H, W)
    uint8 trainIds (255 void), instances (H, W) int32 (0 background) and the instance ids drawn.
    """
    h, w = scene.height, scene.width
    cam_x, cam_z, yaw, cy = scene.camera(t)
    cos_y, sin_y = math.cos(yaw), math.sin(yaw)
    f32 = np.float32
    dxw = (scene.u * cos_y + sin_y).astype(f32)       # world ray direction per column
    dzw = (-scene.u * sin_y + cos_y).astype(f32)
    dy = ((np.arange(h) + 0.5 - cy) / scene.f).astype(f32)
    rg = int(np.searchsorted(dy, 1e-3))               # first row that sees the ground

    # The frame is composed from a palette index, a shade and a haze amount per pixel:
    # colour = palette[index] * shade * (1 - haze) + horizon colour * haze.
    pidx = np.empty((h, w), np.intp)  # native index type: np.take needs no conversion
    shade = np.ones((h, w), f32)
    haze = np.zeros((h, w), f32)

    if rg > 0:  # sky: one palette entry per row (gradient), clouds blend to the horizon
        pidx[:rg] = (P_SKY + np.arange(rg, dtype=np.intp))[:, None]
        if scene.cloudiness > 0:
            azimuth = (np.arctan(scene.u) + yaw).astype(f32)
            cloud = texels(scene.cloud_tile, dy[:rg, None] * f32(scene.f),
                           azimuth[None, :] * f32(scene.f))
            cloud -= f32(1.4 - scene.cloudiness)
            np.clip(cloud, 0.0, 0.9, out=cloud)
            haze[:rg] = cloud

    if rg < h:  # ground: ray-plane intersection
        tg = (CAM_HEIGHT / dy[rg:])[:, None]
        xg = f32(cam_x) + tg * dxw[None, :]
        zg = f32(cam_z) + tg * dzw[None, :]
        ax = np.abs(xg)
        rh, sw = f32(scene.road_half), f32(scene.sidewalk)
        code = (ax >= rh).view(np.uint8) + (ax >= rh + sw).view(np.uint8)
        beyond = (xg <= -f32(scene.facade_x[0])) | (xg >= f32(scene.facade_x[1]))
        if beyond.any():
            street = _in_street(scene, zg[beyond], xg[beyond])
            code[beyond] = np.where(street, P_ROAD, P_TERRAIN)
        lanes = f32(scene.lanes * scene.lane_w)
        rel = xg * f32(1.0 / scene.lane_w)
        dashed = ((np.abs(rel - np.round(rel)) < f32(0.08 / scene.lane_w))
                  & (ax < lanes - f32(0.5)) & (frac(zg * f32(1 / 9.0)) < f32(1 / 3.0)))
        edge = np.abs(ax - lanes) < f32(0.09)
        marking = (dashed | edge) & (ax < rh)
        code[marking] = P_MARKING
        walk = code == P_SIDEWALK
        joints = (frac(zg * f32(1 / 1.1)) < f32(0.045)) | (
            frac((ax - rh) * f32(1 / 1.1)) < f32(0.045))
        curb = ax < rh + f32(0.18)
        amp = (f32(0.16) * np.exp(-tg / f32(40.0))).astype(f32)
        tex = texels(scene.tile, zg * f32(8.0), xg * f32(8.0))
        gshade = f32(1.0) + amp * tex
        gshade *= f32(1.0) + (walk & curb).view(np.uint8) * f32(0.25) - (
            walk & joints).view(np.uint8) * f32(0.2)
        pidx[rg:] = code
        shade[rg:] = gshade
        haze[rg:] = 1.0 - np.exp(-tg / f32(scene.params["fog_m"]))

    # Facades: vertical planes at x = -facade_x[0] (left) and +facade_x[1] (right).
    right = dxw > 1e-4
    left = dxw < -1e-4
    tf = np.full(w, np.inf, np.float64)
    tf[right] = (scene.facade_x[1] - cam_x) / dxw[right]
    tf[left] = (-scene.facade_x[0] - cam_x) / dxw[left]
    valid = np.isfinite(tf) & (tf > 0)
    tf[~valid] = 1.0
    zf = cam_z + tf * dzw
    block = np.zeros(w, np.intp)
    for side, mask in ((0, left & valid), (1, right & valid)):
        starts = scene.block_start[side]
        idx = np.clip(np.searchsorted(starts, zf[mask], side="right") - 1, 0, len(starts) - 1)
        block[mask] = idx + scene.block_offset[side]
    kind = scene.block_kind[block]
    valid &= kind != BLOCK_STREET
    hedge = kind == BLOCK_HEDGE
    top = scene.block_height[block] + hedge * (0.6 * np.sin(zf * 1.7) + 0.3 * np.sin(zf * 4.1))
    lo = np.where(valid, (CAM_HEIGHT - top) / tf, np.inf).astype(f32)
    hi = np.where(valid, CAM_HEIGHT / tf, -np.inf).astype(f32)
    r0 = int(np.searchsorted(dy, lo.min())) if valid.any() else h
    r1 = int(np.searchsorted(dy, hi.max())) if valid.any() else h
    if r1 > r0:
        dys = dy[r0:r1, None]
        fmask = (dys >= lo[None, :]) & (dys < hi[None, :])
        tf32 = tf.astype(f32)
        above = f32(CAM_HEIGHT) - tf32[None, :] * dys        # height on the facade (m)
        along = (zf - scene.block_start_all[block]).astype(f32)
        pitch = scene.block_pitch[block].astype(f32)
        floor_h = scene.block_floor[block].astype(f32)
        storey = above * (f32(1.0) / floor_h)[None, :]
        storey_index = np.floor(storey)
        in_storey = storey - storey_index                     # fraction of the storey
        col_win = (frac(along / pitch) < f32(0.55)) & ~hedge
        win = (col_win[None, :] & (in_storey > (f32(0.9) / floor_h)[None, :])
               & (in_storey < (f32(2.3) / floor_h)[None, :])
               & (above > f32(2.5)) & (above < (top.astype(f32) - f32(1.0))[None, :]))
        fcode = np.where(win, np.intp(P_WINDOW), (block + scene.p_blocks)[None, :])
        tex = texels(scene.tile, above * f32(10.0), zf.astype(f32)[None, :] * f32(10.0))
        amp = np.where(hedge, f32(0.35), f32(0.08)).astype(f32)
        fshade = f32(1.0) + amp[None, :] * tex
        pane = (storey_index.astype(np.intp) * 7
                + np.floor(along / pitch).astype(np.intp)[None, :]) & 255
        fshade = np.where(win, np.take(scene.glass, pane), fshade)
        fhaze = (1.0 - np.exp(-tf32 / f32(scene.params["fog_m"])))[None, :]
        np.copyto(pidx[r0:r1], fcode, where=fmask)
        np.copyto(shade[r0:r1], fshade, where=fmask)
        np.copyto(haze[r0:r1], np.broadcast_to(fhaze, fmask.shape), where=fmask)

    labels = np.take(scene.palette_label, pidx)
    keep = shade * (f32(1.0) - haze)
    channels = [np.take(scene.palette[:, k], pidx) * keep + scene.sky_horizon[k] * haze
                for k in range(3)]
    colour = cv2.merge(channels)
    instances = np.zeros((h, w), np.int32)
    drawn = _draw_objects(scene, colour, instances, t, cam_x, cam_z, cos_y, sin_y, cy)
    if drawn:
        object_labels = np.take(scene.instance_label, instances)
        np.copyto(labels, object_labels, where=instances > 0)
    if scene.hood is not None:
        pts = [np.round(scene.hood * (1 << POLY_SHIFT)).astype(np.int32)]
        cv2.fillPoly(colour, pts, tuple(float(c) for c in scene.hood_col), cv2.LINE_8, POLY_SHIFT)
        cv2.fillPoly(labels, pts, VOID, cv2.LINE_8, POLY_SHIFT)
        cv2.fillPoly(instances, pts, 0, cv2.LINE_8, POLY_SHIFT)
    return colour, labels, instances, drawn


def _in_street(scene: Scene, z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Whether ground points (z, x) in metres beyond the facades lie in a side street."""
    out = np.zeros(z.shape, bool)
    for side, sel in ((0, x < 0), (1, x >= 0)):
        starts = scene.block_start[side]
        idx = np.clip(np.searchsorted(starts, z[sel], side="right") - 1, 0, len(starts) - 1)
        out[sel] = scene.block_kind[idx + scene.block_offset[side]] == BLOCK_STREET
    return out


def _draw_objects(scene: Scene, colour: np.ndarray, instances: np.ndarray, t: float, cam_x: float,
                  cam_z: float, cos_y: float, sin_y: float, cy: float) -> list[int]:
    """Draw the visible billboards far to near; return the instance ids drawn."""
    x = np.clip(scene.ox0 + scene.ovx * (t - scene.ot0), scene.oxlo, scene.oxhi)
    z = scene.oz0 + scene.ovz * t + scene.ozamp * np.sin(scene.ozfreq * t)
    dx, dz = x - cam_x, z - cam_z
    xc = cos_y * dx - sin_y * dz
    zc = sin_y * dx + cos_y * dz
    depth = np.maximum(zc, NEAR)
    scale = scene.f / depth                                    # pixels per metre
    half_view = 0.5 * scene.width / scene.f
    visible = ((zc > NEAR) & (zc < FAR) & (np.abs(xc) < zc * half_view + 6.0)
               & (t >= scene.ota) & (t <= scene.otb)
               & (scene.osize * scale >= MIN_OBJECT_PX))
    order = np.flatnonzero(visible)
    if not len(order):
        return []
    order = order[np.argsort(-zc[order], kind="stable")].tolist()
    _pose_legs(scene, t)
    fixed = float(1 << POLY_SHIFT)
    u0 = scene.cx + scene.f * xc / depth
    v0 = cy + CAM_HEIGHT * scale
    vs = scale[scene.vert_obj]
    pts = np.empty(scene.verts.shape, np.int32)
    pts[:, 0] = np.round((u0[scene.vert_obj] + scene.verts[:, 0] * vs) * fixed)
    pts[:, 1] = np.round((v0[scene.vert_obj] - scene.verts[:, 1] * vs) * fixed)
    haze = (1.0 - np.exp(-depth / scene.params["fog_m"]))[:, None]
    haze = haze[scene.part_obj]
    cols = (scene.part_cols * (1.0 - haze) + scene.sky_horizon[None, :] * haze).tolist()
    starts, ids = scene.part_start, scene.part_ids
    drawn: list[int] = []
    detailed = (scene.osize * scale >= DETAIL_PX).tolist()
    for k in order:
        for j in scene.lod[k][0 if detailed[k] else 1]:
            part = [pts[starts[j]:starts[j + 1]]]
            cv2.fillPoly(colour, part, cols[j], cv2.LINE_8, POLY_SHIFT)
            cv2.fillPoly(instances, part, ids[j], cv2.LINE_8, POLY_SHIFT)
        drawn.extend(scene.objects[k].unique_ids)
    return drawn


def _pose_legs(scene: Scene, t: float) -> None:
    """Swing the legs (the first two parts, 4 vertices each) of the walking persons."""
    if not len(scene.legs):
        return
    objs, start = scene.legs[:, 0], scene.legs[:, 1]
    moving = (scene.ovx[objs] != 0) | (scene.ovz[objs] != 0)
    leg = scene.leg_length
    swing = np.where(moving, 0.28 * leg * np.sin(
        2 * math.pi * t / scene.walk_period + scene.leg_phase), 0.0)
    for j, sign in ((0, 1.0), (1, -1.0)):
        foot = sign * (0.1 + swing)
        inner, outer = sorted((0.02 * sign, 0.19 * sign))
        base = start + 4 * j
        scene.verts[base, 0], scene.verts[base, 1] = inner, leg
        scene.verts[base + 1, 0], scene.verts[base + 1, 1] = outer, leg
        scene.verts[base + 2, 0], scene.verts[base + 2, 1] = foot + 0.07, 0.0
        scene.verts[base + 3, 0], scene.verts[base + 3, 1] = foot - 0.07, 0.0


def finish(scene: Scene, colour: np.ndarray, index: int) -> np.ndarray:
    """Apply lighting, tint and the sensor noise of frame ``index`` to ``colour`` (H, W, 3)
    float32 in 0-1; return (H, W, 3) uint8 RGB."""
    rng = np.random.default_rng([scene.seed, 3, index])
    oy, ox = (int(v) for v in rng.integers(0, NOISE_PAD, 2))
    noise = scene.noise_bank[oy:oy + scene.height, ox:ox + scene.width]
    out = colour * scene.light
    out += noise * np.float32(scene.noise_sigma)
    return np.clip(out, 0, 255).astype(np.uint8)
