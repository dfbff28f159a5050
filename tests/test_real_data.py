"""The 7B config runs on real files: `vlm-rlaif run configs/llava_next_video_7b.yaml` in a folder laid out as the
"Real checkpoints" page says (data/LLaVA-NeXT-Video-7B-hf, data/videos/<source>/*.mp4, data/sft, data/rl,
data/preferences, data/bench), with no world and no stage-0 model, through frames -> sft -> judge -> reward -> ppo ->
bench. Only the sizes change, plus a local benchmark judge for the OpenAI endpoint, the frames stage added and SFT's
bf16 autocast off (the weights stay bf16, as the config says). The
checkpoint is a tiny LLaVA-NeXT-Video model saved with `save_video_lmm`, the videos are real mp4 files, and the JSON
files are in the public formats, written here, not taken from a run's world. The reward model trains on the
released-pairs file (`reward.preferences`, as the page documents): an untrained judge keeps no pair."""
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from vlm_rlaif.cli import main
from vlm_rlaif.frames import write_video
from vlm_rlaif.model import ModelConfig, build_video_lmm, save_video_lmm, train_tokenizer

SEVEN_B = ROOT/'configs'/'llava_next_video_7b.yaml'
COLOURS = {'red': (220, 30, 30), 'green': (30, 200, 60), 'blue': (40, 60, 220), 'yellow': (230, 220, 40), 'white': (240, 240, 240)}
# the sizes, and no bf16 autocast in SFT: accelerate keeps one mixed-precision setting per process, and the other tests' runs use none
TINY = ['frames.n_frames=4', 'frames.size=32', 'model.frames=4', 'model.image_size=32', 'model.patch_size=8',
        'sft.frames=4', 'sft.max_steps=2', 'sft.grad_accum=1', 'sft.warmup_steps=1', 'sft.precision="no"',
        'judge.frames=4', 'judge.context_frames=4', 'judge.clip_frames=2', 'judge.max_new_tokens=4', 'judge.context_max_new_tokens=4',
        'judge.judge_max_new_tokens=6', 'judge.max_resample=0', 'judge.max_prompts=2',
        'reward.n_frames=4', 'reward.batch_size=2', 'reward.micro_batch_size=1', 'reward.ablation_sizes=[]', 'reward.warmup_steps=1',
        'ppo.n_frames=4', 'ppo.policy_init_steps=1', 'ppo.steps=1', 'ppo.rollout_batch=2', 'ppo.minibatch=2', 'ppo.max_new_tokens=4',
        'ppo.warmup_steps=1', 'bench.frames=4', 'bench.limit=1', 'bench.max_new_tokens=4', 'bench.judges=[hf]', 'bench.judge_max_new_tokens=8',
        'bench.n_boot=20', 'bench.plot=false']


def clip(colour:str, seed:int) -> np.ndarray:
    "8 frames of 32 x 32: a coloured square moving right on a noisy background."
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, (8, 32, 32, 3), dtype=np.uint8)
    for t in range(8): frames[t, 10:20, 2 + 2 * t:12 + 2 * t] = COLOURS[colour]
    return frames

def write_data(data:Path):
    "The public files of a real run, at toy size (formats: 03_data)."
    videos = {f'activitynet/v_{c}': c for c in COLOURS}
    for i, (name, colour) in enumerate(videos.items()): write_video(data/'videos'/f'{name}.mp4', clip(colour, i))
    for i, colour in enumerate(list(COLOURS)[:3]): write_video(data/'bench'/'videos'/f'bench_{colour}.mp4', clip(colour, 10 + i))
    human = lambda q: {'from': 'human', 'value': f'<video>\n{q}'}
    gpt = lambda a: {'from': 'gpt', 'value': a}
    # names with and without the extension, as the released files have them
    sft = [dict(id=f'{v}-{k}', video=v + ('.mp4' if k else ''), conversations=[human(q), gpt(a)])
           for v, c in videos.items() for k, (q, a) in enumerate([('What colour is the square?', c),
                                                                  ('Describe the video.', f'A {c} square moves from the left to the right over a dark noisy background.')])]
    rl = [dict(uid=f'rl-{v}', video=f'{v}.mp4', conversations=[human('What happens in the video?'), gpt(f'A {c} square moves to the right.')])
          for v, c in videos.items()]
    other = dict(zip(COLOURS, list(COLOURS)[1:] + list(COLOURS)[:1]))
    prefs = [dict(id=f'p-{v}-{k}', video=f'{v}.mp4', conversations=[human(q)], output_1=gpt(a if k else b), output_2=gpt(b if k else a), preference=2 - k)
             for v, c in videos.items() for k, (q, a, b) in enumerate([('What colour is the square?', c, other[c]),
                                                                      ('Where does the square go?', f'The {c} square moves right.', f'The {other[c]} square moves left.')])]
    bench = [f'bench_{c}' for c in list(COLOURS)[:3]]
    files = {'sft/instructions.json': sft, 'rl/rl_prompts.json': rl, 'preferences/preferences.json': prefs,
             'bench/generic_qa.json': [dict(video_name=b, Q='Describe the video.', A=f'A {b[6:]} square moves right.') for b in bench],
             'bench/temporal_qa.json': [dict(video_name=b, Q='Where does the square go?', A='To the right.') for b in bench],
             'bench/consistency_qa.json': [dict(video_name=b, Q1='What colour is it?', Q2='Which colour does the square have?', A=b[6:]) for b in bench]}
    for name in ('msvd_qa', 'msrvtt_qa', 'tgif_qa', 'activitynet_qa'):
        files[f'bench/{name}.json'] = [dict(video_name=b, question_id=f'{name}-{i}', question='What colour is the square?', answer=b[6:]) for i, b in enumerate(bench)]
    for name, rows in files.items():
        (data/name).parent.mkdir(parents=True, exist_ok=True)
        (data/name).write_text(json.dumps(rows))
    return files

def write_checkpoint(path:Path, files:dict):
    "A tiny LLaVA-NeXT-Video checkpoint with the paper's pooling, its tokenizer trained on the files' text: the stand-in for the download."
    texts = [t['value'] for rows in files.values() for r in rows for t in r.get('conversations', []) + [r.get('output_1') or {'value': ''}]]
    texts += [str(v) for rows in files.values() for r in rows for k, v in r.items() if k in ('Q', 'A', 'Q1', 'Q2', 'question', 'answer')]
    tok = train_tokenizer(texts * 3, vocab_size=400)
    cfg = ModelConfig(vocab_size=400, text_hidden=32, text_layers=1, text_heads=2, text_kv_heads=2, text_ffn=64, vision_hidden=32, vision_layers=1,
                      vision_heads=2, vision_ffn=64, image_size=32, patch_size=8, frames=4, pooling='spatiotemporal', tie_embeddings=False)
    save_video_lmm(path, build_video_lmm(cfg, tok), tok)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    "A working folder holding data/ as the page lays it out (the config's relative paths resolve against it)."
    root = tmp_path_factory.mktemp('real')
    files = write_data(root/'data')
    write_checkpoint(root/'data'/'LLaVA-NeXT-Video-7B-hf', files)
    return root

def run_args(root:Path, name:str, *extra:str) -> list[str]:
    out = ['run', str(SEVEN_B), '--set', f'root={root/"runs"}', '--set', f'name={name}',
           '--set', f'reward.preferences={root/"data"/"preferences"/"preferences.json"}']
    for o in TINY + list(extra): out += ['--set', o]
    return out


def test_seven_b_config_runs_on_real_files(data_dir, monkeypatch, capsys):
    monkeypatch.chdir(data_dir)
    stages = ['frames', 'sft', 'judge', 'reward', 'ppo', 'bench']
    args = run_args(data_dir, 'tiny', f'stages=[{", ".join(stages)}]')
    assert main(args) == 0
    run = data_dir/'runs'/'tiny'
    done = {s: json.loads((run/s/'DONE.json').read_text()) for s in stages}
    assert not (run/'world').exists() and not (run/'pretrain').exists()
    assert (done['frames']['videos'], done['frames']['ok']) == (5, 5)
    assert {json.loads(l)['id'] for l in (run/'frames'/'manifest.jsonl').read_text().splitlines()} == {f'activitynet/v_{c}' for c in COLOURS}
    assert Path(done['sft']['base']) == Path('data/LLaVA-NeXT-Video-7B-hf') and done['sft']['instructions'] == 10
    assert done['sft']['steps'] == {'warmup': 0, 'sft': 2} and done['sft']['caption_vocab'] == 0 and not done['sft']['problems']
    assert done['judge']['prompts'] == 2 and done['judge']['config']['prompts'] == 'data/rl/rl_prompts.json'
    assert all('accuracy' not in m.get('text', {}) and 'informative' not in m for m in done['judge']['metrics'].values())   # no truth, no accuracy
    assert done['reward']['n_train'] > 0
    assert done['ppo']['steps'] == 1 and done['ppo']['eval_first'] is None and done['ppo']['prompts'] == 5
    results = json.loads((run/'bench'/'results.json').read_text())
    assert {r['model'] for r in results['rows']} == {'sft', 'rlaif', 'base'}
    assert results['n_items'] == {'generic': 1, 'temporal': 1, 'consistency': 1, 'qa': 4} and not results['input_problems']
    for model in ('sft', 'rlaif', 'base'):   # every model answered every question, and the local judge was asked about each answer
        predictions = [json.loads(l) for l in (run/'bench'/model/'predictions.jsonl').read_text().splitlines()]
        assert len(predictions) == 8 and all(p['status'] == 'ok' for p in predictions), model
        assert len((run/'bench'/model/'judgments-hf.jsonl').read_text().splitlines()) == 9, model
    assert json.loads((run/'bench'/'base'/'settings.json').read_text())[0]['checkpoint'] == 'data/LLaVA-NeXT-Video-7B-hf'
    capsys.readouterr()
    assert main(args) == 0 and capsys.readouterr().out.count('done already') == len(stages)   # a second run skips every stage

def test_world_only_settings_fail_with_a_config_error(data_dir, monkeypatch, capsys):
    "The oracle context and the oracle reward need the world's ground truth: a clear config error, before any model loads."
    monkeypatch.chdir(data_dir)
    assert main(run_args(data_dir, 'oracle-context', 'judge.context=oracle') + ['--stage', 'judge']) == 2
    assert "'oracle' needs ground-truth narratives" in capsys.readouterr().err
    assert main(run_args(data_dir, 'oracle-reward', 'ppo.reward=oracle') + ['--stage', 'ppo']) == 2
    assert "'oracle' is the world's exact scorer" in capsys.readouterr().err
