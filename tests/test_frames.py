"Bad input, backend agreement, the cache, the manifest and the dataset of vlm_rlaif.frames (seconds in all)."
import os, tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import vlm_rlaif.frames as fr
from vlm_rlaif.core import JsonlStore
from vlm_rlaif.frames import (rgb_to_yuv420p, FrameCache, FramesConfig, VideoError, VideoFramesDataset, build_manifest, load_video,
                              probe_video, read_frames, read_video, sample_fps, sample_uniform, time_tolerance, with_video, write_video)

needs_decord = pytest.mark.skipif(not fr.decord_available(), reason='decord is not installed')


def moving(T=16, H=64, W=64, seed=0):
    "Frames with motion, texture and colour, so that every frame differs and decoders have work to do."
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    v = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        v[t, ..., 0] = (128 + 90 * np.sin(x / 5 + t / 3)).astype(np.uint8)
        v[t, ..., 1] = (128 + 90 * np.cos(y / 7 - t / 4)).astype(np.uint8)
        v[t, ..., 2] = g.integers(0, 255)
        c = (3 * t) % (W - 10)
        v[t, H // 3:H // 3 + 10, c:c + 10] = (255, 255, 0)
    return v


@pytest.fixture(scope='module')
def tmp():
    return Path(tempfile.mkdtemp())


@pytest.fixture(scope='module')
def video(tmp):
    return write_video(tmp / 'v.mp4', moving())


def status(path, **kw):
    return probe_video(path, **kw)['status']


# --- bad input, each a test ---------------------------------------------------------------------------------------

def test_zero_byte_file(tmp):
    p = tmp / 'zero.mp4'; p.write_bytes(b'')
    rec = probe_video(p)
    assert rec['status'] == 'unreadable' and 'zero.mp4: the file is empty (0 bytes)' in rec['message']
    with pytest.raises(VideoError, match='zero.mp4: the file is empty'): read_frames(p, [0])


def test_truncated_mp4_without_index(tmp, video):
    # ffmpeg's mp4 muxer writes the index (moov) last: a cut file has none and cannot be opened
    p = tmp / 'cut.mp4'; p.write_bytes(video.read_bytes()[:video.stat().st_size // 2])
    assert status(p) == 'unreadable'
    for backend in ['auto', 'pyav'] + (['decord'] if fr.decord_available() else []):
        with pytest.raises(VideoError, match='cut.mp4') as e: read_frames(p, [0], backend)
        assert e.value.status == 'unreadable'


def test_truncated_mp4_with_index_first(tmp):
    # with the index first (faststart), a cut file opens and announces frames that are not there
    p, cut = tmp / 'fs.mp4', tmp / 'fs_cut.mp4'
    with av.open(str(p), 'w', format='mp4', options={'movflags': 'faststart'}) as c:
        s = c.add_stream('libx264', rate=8); s.width = s.height = 64; s.pix_fmt = 'yuv420p'
        for f in moving(40):
            c.mux(s.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(f), format='yuv420p')))  # deterministic bytes, so a deterministic cut
        c.mux(s.encode())
    cut.write_bytes(p.read_bytes()[:p.stat().st_size * 2 // 5])
    rec = probe_video(cut)
    assert rec['status'] == 'decode_error' and rec['n_frames'] == 40 and 'fs_cut.mp4' in rec['message']
    with pytest.raises(VideoError, match='fs_cut.mp4') as e: read_frames(cut, [0, 39], 'pyav')
    assert e.value.status == 'decode_error'
    assert read_frames(cut, [0, 1], 'pyav').shape == (2, 64, 64, 3)  # the frames that are there still read


def test_text_file_named_mp4(tmp):
    p = tmp / 'notes.mp4'; p.write_text('not a video at all\n' * 50)
    rec = probe_video(p)
    assert rec['status'] == 'unreadable' and 'notes.mp4: cannot open it as a video' in rec['message']


def test_one_frame_video(tmp):
    p = write_video(tmp / 'one.mp4', moving(1))
    rec = probe_video(p, n_frames=8)
    assert (rec['status'], rec['n_frames']) == ('too_short', 1)
    assert probe_video(p, n_frames=1)['status'] == 'ok'
    assert probe_video(p, n_frames=8, too_short='repeat')['status'] == 'ok'
    frames, sample = read_video(p, FramesConfig(n_frames=8, too_short='repeat'))
    assert sample.indices.tolist() == [0] * 8 and frames.shape == (8, 64, 64, 3)
    assert (frames == frames[:1]).all()


def test_fewer_frames_than_requested(tmp):
    p = write_video(tmp / 'five.mp4', moving(5))
    rec = probe_video(p, n_frames=8)
    assert rec['status'] == 'too_short'
    assert 'five.mp4: the video has 5 frame(s), fewer than the 8 requested' in rec['message']
    with pytest.raises(VideoError, match='five.mp4: the video has 5 frame') as e: read_video(p, FramesConfig(n_frames=8))
    assert e.value.status == 'too_short'
    frames, sample = read_video(p, FramesConfig(n_frames=8, too_short='repeat'))
    assert sample.indices.tolist() == [0, 1, 1, 2, 2, 3, 3, 4]
    np.testing.assert_array_equal(frames[1], frames[2])


def test_missing_file(tmp):
    rec = probe_video(tmp / 'nowhere' / 'gone.mp4', video_id='gone')
    assert (rec['id'], rec['status']) == ('gone', 'missing') and 'gone.mp4: the file does not exist' in rec['message']
    with pytest.raises(VideoError, match='gone.mp4: the file does not exist'): read_frames(tmp / 'nowhere' / 'gone.mp4', [0])


def test_path_with_spaces_and_non_ascii(tmp):
    p = write_video(tmp / 'dossier avec espaces' / 'vidéo ünïcödé 東京 clip.mp4', moving())
    assert probe_video(p)['status'] == 'ok'
    ref = read_frames(p, range(16), 'pyav')
    if fr.decord_available(): np.testing.assert_array_equal(read_frames(p, range(16), 'decord'), ref)
    store = build_manifest([p], tmp / 'odd_manifest.jsonl', root=tmp)
    assert [r['id'] for r in store] == ['dossier avec espaces/vidéo ünïcödé 東京 clip.mp4']


def test_directory_and_audio_only(tmp):
    assert status(tmp) == 'unreadable'
    p = tmp / 'audio.mp4'
    with av.open(str(p), 'w', format='mp4') as c:
        a = c.add_stream('aac', rate=16000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp', layout='mono'); f.sample_rate = 16000
        c.mux(a.encode(f)); c.mux(a.encode())
    assert status(p) == 'no_video_stream'
    with pytest.raises(VideoError, match='audio.mp4: the container has no video stream'): read_frames(p, [0], 'pyav')


def test_write_video_keyframe_interval(tmp):
    def keyframes(p):
        with av.open(str(p)) as c: return sum(pk.is_keyframe for pk in c.demux(video=0) if pk.size)
    frames = np.repeat(moving(1), 24, axis=0)  # a still picture: no scene cut forces a keyframe
    assert keyframes(write_video(tmp / 'k_default.mp4', frames)) == 1
    assert keyframes(write_video(tmp / 'k_6.mp4', frames, keyint=6)) == 4


# --- backends ---------------------------------------------------------------------------------------------------

@needs_decord
@pytest.mark.parametrize('shape,fps', [((16, 64, 64), 8), ((30, 48, 80), 25), ((12, 224, 224), 30)])
def test_decord_and_pyav_identical(tmp, shape, fps):
    T, H, W = shape
    p = write_video(tmp / f'same_{H}x{W}.mp4', moving(T, H, W, seed=H), fps=fps)
    for idx in [np.arange(T), sample_uniform(T, 8, fps).indices, [T - 1, 0, 3, 3]]:
        a, b = read_frames(p, idx, 'decord'), read_frames(p, idx, 'pyav')
        assert a.shape == (len(idx), H, W, 3)
        np.testing.assert_array_equal(a, b)
    rd, rp = probe_video(p, backend='decord'), probe_video(p, backend='pyav')
    assert (rd['n_frames'], rd['fps']) == (rp['n_frames'], rp['fps']) == (T, float(fps))


def test_auto_falls_back_to_pyav(tmp, video, monkeypatch):
    ref = read_frames(video, [0, 5], 'pyav')
    monkeypatch.setattr(fr, 'decord_available', lambda: False)
    np.testing.assert_array_equal(read_frames(video, [0, 5]), ref)
    assert probe_video(video)['backend'] == 'pyav'
    with pytest.raises(ImportError, match="backend='decord' needs decord"): read_frames(video, [0], 'decord')


@needs_decord
def test_auto_falls_back_when_decord_fails(tmp, video, monkeypatch):
    class Broken(fr._DecordVideo):
        def get(self, indices): raise VideoError(self.path, 'decode_error', 'simulated decord failure')
    monkeypatch.setattr(fr, '_DecordVideo', Broken)
    np.testing.assert_array_equal(read_frames(video, [1, 2]), read_frames(video, [1, 2], 'pyav'))
    with pytest.raises(VideoError, match='simulated decord failure'): read_frames(video, [1], 'decord')


@needs_decord
def test_repeated_reads_do_not_grow_memory(tmp):
    # a batch is 8 x 224 x 224 x 3 = 1.2 MB: a leak of one batch per read would grow the process by 120 MB
    p = write_video(tmp / 'big.mp4', moving(40, 224, 224), fps=25)
    rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    idx = sample_uniform(40, 8, 25).indices
    for _ in range(10): read_frames(p, idx, 'decord')
    before = rss()
    for _ in range(100): read_frames(p, idx, 'decord')
    assert rss() - before < 25, f'RSS grew by {rss() - before:.1f} MB over 100 reads'
    # the same reader, get_batch again and again (the pattern of decord issues #197, #208)
    def many_gets(video):
        for _ in range(10): video.get(idx)
        start = rss()
        for _ in range(100): video.get(idx)
        return rss() - start
    grown = with_video(p, many_gets, 'decord')
    assert grown < 25, f'RSS grew by {grown:.1f} MB over 100 get_batch calls on one reader'


# --- variable frame rate ----------------------------------------------------------------------------------------

# Timestamps are compared within time_tolerance: decord keeps them as float32 (about 7 significant digits).
VFR_TICKS = Fraction(1, 600)  # the writer's clock: every time below is an exact number of ticks


def write_vfr(path, ticks, keyint=None, size=64):
    "An H.264 mp4 written with PyAV directly, frame i at pts ticks[i] (in 1/600 s), libx264 defaults (B-frames)."
    frames = moving(len(ticks), size, size, seed=len(ticks))
    with av.open(str(path), 'w', format='mp4') as c:
        s = c.add_stream('libx264', rate=30)
        s.width = s.height = size; s.pix_fmt = 'yuv420p'
        s.codec_context.time_base = VFR_TICKS
        s.codec_context.thread_count = 1
        if keyint: s.codec_context.gop_size = keyint
        for f, t in zip(frames, ticks):
            vf = av.VideoFrame.from_ndarray(rgb_to_yuv420p(f), format='yuv420p')
            vf.pts, vf.time_base = int(t), VFR_TICKS
            c.mux(s.encode(vf))
        c.mux(s.encode())
    return path


def vfr_ticks(n=60, seed=27):
    "Irregular gaps: bursts of 1/60 s, pauses of up to 2 s, and equal gaps around some whole seconds (ties for fps sampling)."
    gaps = np.random.default_rng(seed).choice([10, 10, 10, 20, 30, 70, 300, 1200], size=n - 1)
    return np.concatenate([[0], np.cumsum(gaps)])


def nearest_frames(times, wanted):
    "Brute force, in exact arithmetic: the frame nearest each wanted time, ties to the later frame; and the number of ties."
    ties = sum(d[0] == d[1] for d in (sorted(abs(x - t) for x in times) for t in wanted))
    return sorted({max(range(len(times)), key=lambda i: (-abs(times[i] - t), i)) for t in wanted}), ties


@needs_decord
@pytest.mark.parametrize('keyint', [None, 7])
def test_vfr_timestamps_and_fps_sampling(tmp, keyint):
    ticks = vfr_ticks()
    p = write_vfr(tmp / f'vfr_{keyint}.mp4', ticks, keyint)
    exact = [Fraction(int(t)) * VFR_TICKS for t in ticks]
    written = np.array([float(t) for t in exact])  # each the float nearest the written time
    times = {b: with_video(p, lambda v: (v.n_frames, v.timestamps), b) for b in ('decord', 'pyav')}
    for b, (n, ts) in times.items():
        assert n == len(ticks) and ts is not None, b
        assert np.abs(ts - written).max() <= time_tolerance(written[-1]), f'{b}: timestamps differ from the written pts'
    np.testing.assert_array_equal(times['pyav'][1], written)  # PyAV: pts * time_base, rounded once
    assert np.abs(times['decord'][1] - times['pyav'][1]).max() <= time_tolerance(written[-1])
    # every frame decodes to the same pixels by both readers, in presentation order
    np.testing.assert_array_equal(read_frames(p, range(len(ticks)), 'decord'), read_frames(p, range(len(ticks)), 'pyav'))
    # fps sampling: the same indices and times by both readers, the frames nearest the requested times
    n_ties = 0
    for target_fps in [1, 2, 3, 0.25]:
        wanted = [Fraction(k) / Fraction(target_fps) for k in range(int(exact[-1] * Fraction(target_fps)) + 1)]
        samples = {b: read_video(p, FramesConfig(n_frames=1000, sampling='fps', target_fps=target_fps, backend=b))[1] for b in times}
        np.testing.assert_array_equal(samples['decord'].indices, samples['pyav'].indices)
        assert np.abs(samples['decord'].timestamps - samples['pyav'].timestamps).max() <= time_tolerance(written[-1])
        nearest, ties = nearest_frames(exact, wanted)
        assert samples['pyav'].indices.tolist() == nearest, target_fps
        n_ties += ties
        np.testing.assert_array_equal(samples['pyav'].timestamps, written[samples['pyav'].indices])
    assert n_ties >= 3  # requested times halfway between two frames were met (the seed is chosen for it)
    # uniform sampling is by index, labelled with the real times
    s_d, s_p = (read_video(p, FramesConfig(n_frames=8, backend=b))[1] for b in ('decord', 'pyav'))
    np.testing.assert_array_equal(s_d.indices, sample_uniform(len(ticks), 8, 30).indices)
    np.testing.assert_array_equal(s_p.timestamps, written[s_p.indices])
    # index / fps would be far off on this file: the test is not vacuous
    assert np.abs(written[s_p.indices] - s_p.indices / s_p.fps).max() > 1


@needs_decord
def test_vfr_timestamps_count_from_the_first_frame(tmp):
    ticks = vfr_ticks(20, seed=1) + 900  # the first frame at 1.5 s
    p = write_vfr(tmp / 'vfr_late.mp4', ticks)
    for b in ('decord', 'pyav'):
        ts = with_video(p, lambda v: v.timestamps, b)
        assert ts[0] == 0 and np.abs(ts - (ticks - ticks[0]) * float(VFR_TICKS)).max() <= time_tolerance(ts[-1]), b


def test_sample_fps_ties_and_float32_timestamps():
    # 0.0, 0.4, 0.6, 1.0 s: 0.5 s lies halfway between two frames; the later one is taken
    times = np.array([0, .4, .6, 1.0])
    assert sample_fps(4, 4, target_fps=2, timestamps=times).indices.tolist() == [0, 2, 3]
    # timestamps rounded to float32 (as decord gives them) pick the same frames, ties included
    rng = np.random.default_rng(0)
    ticks = np.cumsum(rng.choice([1, 2, 3, 5, 50], size=3000)) - 1  # in 1/100 s, up to about an hour: many exact ties
    exact = ticks / 100
    as_float32 = exact.astype(np.float32).astype(np.float64)
    for target in [1, 2.5, 4]:
        a = sample_fps(len(ticks), 10, target, timestamps=exact).indices
        b = sample_fps(len(ticks), 10, target, timestamps=as_float32).indices
        np.testing.assert_array_equal(a, b)
    # without timestamps: index / fps, the same rule
    assert sample_fps(100, fps=25, target_fps=2).indices.tolist() == [0, 13, 25, 38, 50, 63, 75, 88]
    with pytest.raises(ValueError, match='timestamps must be 4 finite, increasing times'):
        sample_fps(4, 4, 2, timestamps=[0, 1, 1, 2])


def test_write_video_timestamps(tmp):
    times = [0, 0.05, 0.5, 0.55, 2.0]
    p = write_video(tmp / 'w_vfr.mp4', moving(5), timestamps=times)
    np.testing.assert_allclose(with_video(p, lambda v: v.timestamps, 'pyav'), times, rtol=0, atol=1e-12)
    for bad in ([0, 1, 1, 2, 3], [0, 1, 2], [-1, 0, 1, 2, 3], [0, 1, np.nan, 2, 3]):
        with pytest.raises(ValueError, match='timestamps must be 5 finite, increasing times'):
            write_video(tmp / 'w_bad.mp4', moving(5), timestamps=bad)


# --- cache ------------------------------------------------------------------------------------------------------

def test_cache_invalidation_and_damage(tmp):
    from safetensors.numpy import save
    p = write_video(tmp / 'cached.mp4', moving(seed=1))
    cfg, cache = FramesConfig(size=32), FrameCache(tmp / 'cache')
    first = load_video(p, cfg, cache)
    second = load_video(p, cfg, cache)
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1].timestamps, second[1].timestamps)
    assert second[0].flags.writeable and second[0].dtype == np.uint8
    # a different size or sampling is a different entry
    assert cache.entry_path(p, cfg) != cache.entry_path(p, FramesConfig(size=48))
    assert cache.entry_path(p, cfg) != cache.entry_path(p, FramesConfig(size=32, sampling='clips'))
    # the file changes: stale
    write_video(p, moving(seed=2))
    changed = load_video(p, cfg, cache)
    assert cache.stale == 1 and not np.array_equal(changed[0], first[0])
    # a damaged entry is recomputed
    entry = cache.entry_path(p, cfg)
    good = entry.read_bytes()
    entry.write_bytes(good[:100])
    np.testing.assert_array_equal(load_video(p, cfg, cache)[0], changed[0])
    from safetensors import safe_open
    with safe_open(entry, framework='np') as f: meta = f.metadata()
    for frames, metadata in [(np.zeros((8, 32, 32, 3), np.float32), meta),  # not uint8
                             (np.zeros((7, 32, 32, 3), np.uint8), meta),  # wrong frame count
                             (np.zeros((8, 32, 32, 3), np.uint8), {'other': '{}'}),  # no sample
                             (np.zeros((8, 32, 32, 3), np.uint8), {'sample': '{"indices": '})]:  # broken JSON
        entry.write_bytes(save({'frames': frames}, metadata=metadata))
        assert cache.get(p, cfg) is None
    # config knob off: no cache use
    hits = cache.hits
    load_video(p, FramesConfig(size=32, cache=False), cache)
    assert cache.hits == hits


def test_cache_hit_decodes_nothing(tmp, video, monkeypatch):
    cfg, cache = FramesConfig(size=32), FrameCache(tmp / 'cache_hit')
    frames, sample = load_video(video, cfg, cache)
    monkeypatch.setattr(fr, 'read_video', lambda *a, **k: pytest.fail('a cache hit decoded the video'))
    again, sample_again = load_video(video, cfg, cache)
    np.testing.assert_array_equal(again, frames)
    np.testing.assert_array_equal(sample_again.indices, sample.indices)
    np.testing.assert_array_equal(sample_again.timestamps, sample.timestamps)
    assert (sample_again.n_total, sample_again.fps, sample_again.mode) == (sample.n_total, sample.fps, sample.mode)
    with pytest.raises(VideoError, match='gone.mp4: the file does not exist'): load_video(tmp / 'gone.mp4', cfg, cache)


def test_cache_skips_segment_random(tmp, video):
    cache = FrameCache(tmp / 'cache_sr')
    load_video(video, FramesConfig(sampling='segment_random'), cache, seed=1)
    assert list(cache.root.iterdir()) == []


# --- manifest ---------------------------------------------------------------------------------------------------

def test_manifest_never_crashes_and_resumes(tmp, video, monkeypatch):
    bad = tmp / 'm_text.mp4'; bad.write_text('x')
    real_probe = fr.probe_video
    def exploding(path, *a, **k):
        if Path(path).name == 'boom.mp4': raise MemoryError('simulated')
        return real_probe(path, *a, **k)
    monkeypatch.setattr(fr, 'probe_video', exploding)
    boom = write_video(tmp / 'boom.mp4', moving())
    store = build_manifest({'a': video, 'b': bad, 'c': boom, 'd': tmp / 'nope.mp4'}, tmp / 'm.jsonl')
    assert {r['id']: r['status'] for r in store} == {'a': 'ok', 'b': 'unreadable', 'c': 'probe_error', 'd': 'missing'}
    assert 'boom.mp4: MemoryError: simulated' in [r for r in store if r['id'] == 'c'][0]['message']
    # a kill mid-write leaves a torn line; reopening drops it and only the missing items are probed
    with open(tmp / 'm.jsonl', 'ab') as f: f.write(b'{"id": "e", "sta')
    store = build_manifest({'a': video, 'e': video}, tmp / 'm.jsonl')
    assert [r['id'] for r in store] == ['a', 'b', 'c', 'd', 'e']
    assert 'probe_error' in fr.manifest_report(store)


def test_ok_record_fields(video):
    rec = probe_video(video, video_id='v')
    assert rec['status'] == 'ok'
    assert {k: rec[k] for k in ['n_frames', 'fps', 'width', 'height', 'duration']} == dict(n_frames=16, fps=8.0, width=64, height=64, duration=2.0)
    assert rec['fingerprint'] == fr.file_fingerprint(video) and len(rec['fingerprint']) == 32
    assert rec['file_size'] == video.stat().st_size


# --- dataset ----------------------------------------------------------------------------------------------------

def test_dataloader_with_two_workers(tmp):
    paths = [write_video(tmp / 'ds' / f'{i}.mp4', moving(16 + i, seed=i)) for i in range(6)]
    (tmp / 'ds' / 'broken.mp4').write_bytes(b'\x00' * 100)
    store = build_manifest(paths + [tmp / 'ds' / 'broken.mp4'], tmp / 'ds.jsonl', root=tmp / 'ds')
    cfg = FramesConfig(n_frames=8, size=32)
    ds = VideoFramesDataset(tmp / 'ds.jsonl', cfg, cache_dir=tmp / 'ds_cache')
    assert len(ds) == 6 and ds.dropped == {'unreadable': 1}
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    ids = [i for b in batches for i in b['video_id']]
    assert ids == [f'{i}.mp4' for i in range(6)]
    x = torch.cat([b['pixel_values'] for b in batches])
    assert x.shape == (6, 8, 3, 32, 32) and x.dtype == torch.float32
    # workers fill the cache; a second pass reads it and gives the same tensors
    assert len(list((tmp / 'ds_cache').iterdir())) == 6
    again = torch.cat([b['pixel_values'] for b in torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)])
    torch.testing.assert_close(x, again, rtol=0, atol=0)
    direct = fr.preprocess_frames(read_frames(paths[2], sample_uniform(18, 8, 8).indices), 32)
    torch.testing.assert_close(x[2], direct, rtol=0, atol=0)

def test_same_frames_same_bytes_whatever_the_buffer(tmp_path):
    "The encoder input is converted in numpy: frames from differently aligned buffers give byte-identical files."
    import numpy as np
    from vlm_rlaif.frames import write_video
    rng = np.random.default_rng(1)
    clip = (rng.random((8, 32, 32, 3)) * 255).astype(np.uint8)
    files = [write_video(tmp_path/f'{i}.mp4', c).read_bytes()
             for i, c in enumerate([clip, clip.copy(), np.asfortranarray(clip), clip[:, ::-1][:, ::-1]])]
    assert all(f == files[0] for f in files)
