"""Clips per second of the frames stage: decord vs PyAV vs the frame cache, measured side by side in one run.

For mp4s of several seconds at 64, 224 and 336 px and 8, 16 and 50 uniformly sampled frames, it times one clip
from file to uint8 frames at model size (`load_video`; the model size equals the video size, so no resizing):

- decord:      `load_video(backend='decord')`, one reader, one get_batch of the sorted unique indices
- pyav:        `load_video(backend='pyav')`, this module's fallback: decodes every frame up to the last index
               (the last frame, for uniform sampling), converts only the wanted ones to RGB (one converter per read)
- pyav naive:  decode every frame to RGB with PyAV, then select (what a plain PyAV reader does)
- cache:       `load_video` with a warm `FrameCache` (a stat of the video, one safetensors entry read)
- decode floor: PyAV decoding every frame and converting none: no reader that has to decode every frame (a clip with
               one keyframe) can be faster, so floor / naive bounds the decord / naive ratio on such clips

Methods are interleaved round-robin within each configuration, so background load affects them alike.
Each video is written twice: with libx264's default keyframe interval (250 frames: one keyframe per clip) and
with a keyframe every second (typical of web video). A last group of rows uses one long video (60 s at 224 px,
a keyframe per second), where sparse sampling lets decord seek past whole keyframe intervals. Run: python benchmarks/bench_frames.py [--quick]
"""
import argparse, datetime, os, platform, sys, tempfile, time
from pathlib import Path

import av
import numpy as np
import torch

from vlm_rlaif.frames import FrameCache, FramesConfig, decord_available, load_video, sample_uniform, time_tolerance, write_video


def make_video(T, S, fps):
    "A smooth moving pattern with a moving square: compresses like natural video, every frame differs."
    y, x = np.mgrid[0:S, 0:S] / S
    v = np.empty((T, S, S, 3), np.uint8)
    for t in range(T):
        v[t, ..., 0] = (128 + 100 * np.sin(6 * x + t * 0.2)).astype(np.uint8)
        v[t, ..., 1] = (128 + 100 * np.cos(5 * y - t * 0.1)).astype(np.uint8)
        v[t, ..., 2] = (x * 255).astype(np.uint8)
        c = int(S * 0.1 + t * S * 0.008) % (S - S // 8)
        v[t, S // 3:S // 3 + S // 8, c:c + S // 8] = (255, 255, 0)
    return v


def pyav_naive(path, indices):
    with av.open(str(path)) as c:
        c.streams.video[0].codec_context.thread_count = 1   # one thread, as every other method here
        frames = np.stack([f.to_ndarray(format='rgb24') for f in c.decode(video=0)])
    return frames[indices]


def decode_floor(path):
    with av.open(str(path)) as c:
        c.streams.video[0].codec_context.thread_count = 1
        for _ in c.decode(video=0): pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seconds', type=float, default=4, help='video length in seconds')
    ap.add_argument('--fps', type=int, default=25, help='video frame rate')
    ap.add_argument('--long-seconds', type=float, default=60, help='length of the long video (224 px, a keyframe per second)')
    ap.add_argument('--budget', type=float, default=2.0, help='seconds of timing per configuration')
    ap.add_argument('--quick', action='store_true', help='a smoke run: 64 px only, short budget')
    ap.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'frames.md'))
    args = ap.parse_args()
    if not decord_available(): sys.exit('decord is not installed: nothing to compare')
    torch.set_num_threads(1)
    sizes = [64] if args.quick else [64, 224, 336]
    budget = 0.2 if args.quick else args.budget
    T = int(args.seconds * args.fps)
    tmp = Path(tempfile.mkdtemp())
    lines = []
    def out(s=''):
        print(s, flush=True); lines.append(s)

    out('# Frames benchmark: decord vs PyAV vs the frame cache')
    out()
    out(f'- date: {datetime.datetime.now().isoformat(timespec="seconds")}')
    out(f'- machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
        f'load average at start {os.getloadavg()[0]:.2f}')
    import decord
    out(f'- python {platform.python_version()}, torch {torch.__version__}, decord {decord.__version__}, av {av.__version__}')
    out(f'- videos: {T} frames ({args.seconds:g} s at {args.fps} fps), libx264 yuv420p (crf 23), square; '
        f'keyint 250 = one keyframe per clip, keyint {args.fps} = one per second; last rows: one {args.long_seconds:g} s video at 224 px')
    out(f'- unit: clips/s (1 / median time per clip) from file to uint8 frames at model size, one process, one thread; '
        f'{budget:g} s per row (at least 5 calls each), methods interleaved')
    out()
    out('| video s | px | keyint | frames | file KB | decord | pyav | pyav naive | cache | decode floor | decord/pyav | decord/naive | floor/naive | cache/decord |')
    out('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    t_start = time.time()
    rows = []

    def measure(path, T, S, keyint, n):
        cfg = FramesConfig(n_frames=n, size=S)
        cache = FrameCache(tmp / f'cache_{path.stem}_{n}')
        idx = sample_uniform(T, n, args.fps).indices
        methods = {
            'decord': lambda: load_video(path, FramesConfig(n_frames=n, size=S, backend='decord')),
            'pyav': lambda: load_video(path, FramesConfig(n_frames=n, size=S, backend='pyav')),
            'naive': lambda: pyav_naive(path, idx),
            'cache': lambda: load_video(path, cfg, cache),
            'floor': lambda: decode_floor(path),
        }
        ref, ref_sample = methods['pyav']()
        for name, fn in methods.items():  # warm up, and check that every method returns the same frames and times
            got = fn()
            if name == 'floor': continue
            if isinstance(got, tuple):
                got, sample = got
                assert np.array_equal(sample.indices, ref_sample.indices), f'{name} samples other frames at {S}px, {n} frames'
                assert np.abs(sample.timestamps - ref_sample.timestamps).max() <= time_tolerance(ref_sample.timestamps[-1]), name
            assert np.array_equal(got, ref), f'{name} differs from pyav at {S}px, {n} frames'
        times = {k: [] for k in methods}
        end = time.perf_counter() + budget
        while time.perf_counter() < end or min(len(t) for t in times.values()) < 5:
            for name, fn in methods.items():
                t0 = time.perf_counter(); fn(); times[name].append(time.perf_counter() - t0)
        rate = {k: 1 / float(np.median(t)) for k, t in times.items()}  # the median resists other processes' bursts
        rows.append((S, keyint, n, rate))
        out(f'| {T / args.fps:g} | {S} | {keyint} | {n} | {path.stat().st_size / 1024:.0f} | {rate["decord"]:.1f} | {rate["pyav"]:.1f} | '
            f'{rate["naive"]:.1f} | {rate["cache"]:.0f} | {rate["floor"]:.1f} | {rate["decord"] / rate["pyav"]:.2f} | '
            f'{rate["decord"] / rate["naive"]:.2f} | {rate["floor"] / rate["naive"]:.2f} | {rate["cache"] / rate["decord"]:.0f} |')

    for S in sizes:
        frames = make_video(T, S, args.fps)
        for keyint in (250, args.fps):
            path = write_video(tmp / f'v{S}_{keyint}.mp4', frames, fps=args.fps, keyint=keyint)
            for n in (8, 16, 50): measure(path, T, S, keyint, n)
    n_short_rows = len(rows)
    if not args.quick:  # a long video: sparse sampling lets decord skip whole keyframe intervals
        T_long, S = int(args.long_seconds * args.fps), 224
        path = write_video(tmp / 'long.mp4', make_video(T_long, S, args.fps), fps=args.fps, keyint=args.fps)
        for n in (8, 16, 50): measure(path, T_long, S, args.fps, n)
    gm = lambda xs: float(np.exp(np.mean(np.log(xs))))
    short, sparse = rows[:n_short_rows], [r for _, _, n, r in rows[:n_short_rows] if n == 8]
    out()
    out(f'Geometric means over the {args.seconds:g} s videos: decord/pyav {gm([r["decord"] / r["pyav"] for *_, r in short]):.2f}, '
        f'decord/pyav naive {gm([r["decord"] / r["naive"] for *_, r in short]):.2f}, '
        f'cache/decord {gm([r["cache"] / r["decord"] for *_, r in short]):.1f}.')
    out(f'Sparse sampling (8 frames): decord/pyav {gm([r["decord"] / r["pyav"] for r in sparse]):.2f}, '
        f'decord/pyav naive {gm([r["decord"] / r["naive"] for r in sparse]):.2f} (target: >= 2); '
        f'cache/decord min {min(r["cache"] / r["decord"] for *_, r in rows):.1f} (target: >= 10).')
    one_gop = [(S, n, r) for S, keyint, n, r in rows[:n_short_rows] if keyint == 250 and n == 8]
    out('One keyframe per clip, 8 frames: every reader decodes every frame, so decord/naive cannot exceed floor/naive: ' + ', '.join(
        f'{S} px {r["decord"] / r["naive"]:.2f} of at most {r["floor"] / r["naive"]:.2f}' for S, n, r in one_gop) + '.')
    if len(rows) > n_short_rows:
        out(f'Long video ({args.long_seconds:g} s, 224 px): decord/pyav ' + ', '.join(
            f'{r["decord"] / r["pyav"]:.1f} ({n} frames)' for _, _, n, r in rows[n_short_rows:]) + '.')
    out(f'Total time {time.time() - t_start:.0f} s; load average at end {os.getloadavg()[0]:.2f}.')
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text('\n'.join(lines) + '\n')
        print(f'written to {args.out}')


if __name__ == '__main__':
    main()
