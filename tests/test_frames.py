"Bad input, backend agreement, the cache, the manifest and the dataset of vlm_rlaif.frames (seconds in all)."
import os, tempfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import vlm_rlaif.frames as fr
from vlm_rlaif.core import JsonlStore
from vlm_rlaif.frames import (rgb_to_yuv420p, FrameCache, FramesConfig, VideoError, VideoFramesDataset, build_manifest, load_video,
                              probe_video, read_frames, read_video, sample_uniform, write_video)

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
    p = write_video(tmp / 'big.mp4', moving(100, 224, 224), fps=25)
    rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    idx = sample_uniform(100, 8, 25).indices
    for _ in range(20): read_frames(p, idx, 'decord')
    before = rss()
    for _ in range(200): read_frames(p, idx, 'decord')
    assert rss() - before < 25, f'RSS grew by {rss() - before:.1f} MB over 200 reads'


# --- cache ------------------------------------------------------------------------------------------------------

def test_cache_invalidation_and_damage(tmp):
    p = write_video(tmp / 'cached.mp4', moving(seed=1))
    cfg, cache = FramesConfig(size=32), FrameCache(tmp / 'cache')
    first = load_video(p, cfg, cache)
    second = load_video(p, cfg, cache)
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first[0], second[0])
    # a different size or sampling is a different entry
    assert cache.entry_path(p, cfg) != cache.entry_path(p, FramesConfig(size=48))
    assert cache.entry_path(p, cfg) != cache.entry_path(p, FramesConfig(size=32, sampling='clips'))
    # the file changes: stale
    write_video(p, moving(seed=2))
    changed = load_video(p, cfg, cache)
    assert cache.stale == 1 and not np.array_equal(changed[0], first[0])
    # a damaged entry is recomputed, and an entry that needs pickle is never loaded
    entry = cache.entry_path(p, cfg)
    entry.write_bytes(entry.read_bytes()[:100])
    np.testing.assert_array_equal(load_video(p, cfg, cache)[0], changed[0])
    with open(entry, 'rb') as f: good_meta = np.load(f, allow_pickle=False)
    with open(entry, 'wb') as f: np.save(f, good_meta); np.save(f, np.array([object()] * 8, dtype=object))
    assert cache.get(p, cfg) is None
    with open(entry, 'wb') as f: np.save(f, good_meta); np.save(f, np.zeros((7, 32, 32, 3), np.uint8))  # wrong frame count
    assert cache.get(p, cfg) is None
    # config knob off: no cache use
    hits = cache.hits
    load_video(p, FramesConfig(size=32, cache=False), cache)
    assert cache.hits == hits


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
