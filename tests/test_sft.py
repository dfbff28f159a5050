"""Tests of vlm_rlaif.sft beyond the notebook's demonstrations: packing is exact, a killed run resumes to the same
weights, 2 processes (CPU, gloo) equal 1 process with twice the accumulation, bad videos are counted, and the
trained model does not ignore the video (the collapse guard)."""
import dataclasses, json, os, shutil, socket, subprocess, sys, textwrap
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest
import torch
from safetensors.torch import load_file

from vlm_rlaif.core import RunDir, config_to_dict, seed_everything
from vlm_rlaif.data import SFTCollator, read_instructions
from vlm_rlaif.model import ModelConfig, build_video_lmm, encode_video, load_video_lmm, num_video_tokens, train_tokenizer
from vlm_rlaif.sft import (SFTConfig, SFTModule, SampleFrames, collate_packed, evaluate_world, group_by_sample, pack_sample,
                           run_pretrain, run_sft, video_logit_spread)
from vlm_rlaif.world import WorldConfig, build_world

TINY_MODEL = ModelConfig(vocab_size=600, text_hidden=32, text_layers=1, text_heads=2, text_kv_heads=2, text_ffn=64,
                         vision_hidden=32, vision_layers=1, vision_heads=2, vision_ffn=64, image_size=32, frames=4)
TINY = SFTConfig(pretrain_steps=3, pretrain_budget_s=0, pretrain_batch_size=8, aux_warmup_steps=2, aux_warmup_s=0,
                 max_steps=4, budget_s=0, epochs=4, batch_size=2, frames=4, warmup_steps=2, checkpoint_every=2)


@pytest.fixture(scope='module')
def base_run(tmp_path_factory):
    "A tiny world and its stage-0 model, copied by each test that trains."
    run = RunDir('base', root=tmp_path_factory.mktemp('runs'))
    build_world(WorldConfig(n_sft=6, n_rl=0, n_rm=0, n_bench=4, n_text=20, workers=0), run.path/'world', progress=False)
    run_pretrain(run, TINY, TINY_MODEL, progress=False)
    return run

def copy_run(base, root, name):
    shutil.copytree(base.path, root/name, ignore=shutil.ignore_patterns('sft', 'frames_cache'))
    return RunDir(name, root=root)

def weights(run):
    return load_file(run.path/'sft'/'model'/'model.safetensors')

def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_packed_rows_equal_separate_samples(base_run):
    "One row per video with a 4D mask gives the loss of every instruction in its own row, and the model's own LM loss."
    vlm = load_video_lmm(base_run.path/'pretrain'/'model')
    ds, _ = read_instructions(base_run.path/'world'/'sft.json')
    groups = list(group_by_sample(ds).items())[:2]
    collator = SFTCollator(vlm.tokenizer, num_video_tokens(vlm.model, 4))
    frames = SampleFrames(base_run.path/'world'/'videos', 4, vlm.preprocess)
    assert frames.load(ds) == []
    module = SFTModule(vlm.model, None, 4)
    pad = vlm.tokenizer.pad_token_id
    keys = [k for k, _ in groups]
    with torch.no_grad():
        packed = collate_packed([pack_sample(collator, [ds[i] for i in idx]) for _, idx in groups], pad)
        packed_loss = module(pixel_values=frames.pixels(keys), **packed)['lm']
        rows = [(k, ds[i]) for k, idx in groups for i in idx]
        one_each = collate_packed([pack_sample(collator, [r]) for _, r in rows], pad)
        separate_loss = module(pixel_values=frames.pixels([k for k, _ in rows]), **one_each)['lm']
        # the first instruction alone, through transformers' own forward and loss
        b = collator([rows[0][1]])
        own = vlm.model(input_ids=b['input_ids'], attention_mask=b['attention_mask'], labels=b['labels'],
                        pixel_values_videos=frames.pixels([rows[0][0]])).loss
        ours = module(pixel_values=frames.pixels([rows[0][0]]), **collate_packed([pack_sample(collator, [rows[0][1]])], pad))['lm']
    assert len(rows) > len(groups)
    assert abs(packed_loss.item() - separate_loss.item()) < 1e-5, (packed_loss, separate_loss)
    assert abs(own.item() - ours.item()) < 1e-5, (own, ours)


def test_resume_after_kill_gives_the_same_weights(base_run, tmp_path):
    whole = copy_run(base_run, tmp_path, 'whole')
    run_sft(whole, TINY, progress=False)
    killed = copy_run(base_run, tmp_path, 'killed')
    def kill(rec):
        if rec['phase'] == 'sft' and rec['step'] == 3: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): run_sft(killed, TINY, progress=False, callback=kill)
    state = json.loads((killed.path/'sft'/'checkpoint'/'train_state.json').read_text())['state']
    assert (state['phase'], state['step']) == (1, 2) and not killed.is_done('sft')   # the step-2 checkpoint survives
    summary = run_sft(killed, TINY, progress=False)
    assert summary['steps'] == {'warmup': 2, 'sft': 4}
    assert max_diff(weights(whole), weights(killed)) == 0.0
    history = json.loads((killed.path/'sft'/'history.json').read_text())
    assert [h['step'] for h in history if h['phase'] == 'sft'] == [1, 2, 3, 4]
    assert run_sft(killed, TINY, progress=False) == summary   # done: skipped


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

TRAIN_SCRIPT = textwrap.dedent('''
    import json, sys
    from vlm_rlaif.core import RunDir, config_from_dict
    from vlm_rlaif.sft import SFTConfig, run_sft
    run_sft(RunDir(sys.argv[2], root=sys.argv[1]), config_from_dict(SFTConfig, json.loads(sys.argv[3])), progress=False)
''')

def test_two_processes_equal_one_process_with_twice_the_accumulation(base_run, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo) and accumulation 1 vs 1 process with accumulation 2: the same
    micro-batches at every step, the gradients averaged the same way. Tolerance 1e-5 on every weight: the only
    difference could be the order of float32 summation in the all-reduce (measured here: 0.0, bitwise equal, after 2 warm-up
    and 4 SFT steps)."""
    script = tmp_path/'train.py'; script.write_text(TRAIN_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    cfg = dataclasses.replace(TINY, checkpoint_every=100)
    one = copy_run(base_run, tmp_path, 'one')
    subprocess.run([sys.executable, script, str(tmp_path), 'one', json.dumps(config_to_dict(dataclasses.replace(cfg, grad_accum=2)))],
                   env=env, check=True, capture_output=True)
    two = copy_run(base_run, tmp_path, 'two')
    launch = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
              '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', str(_free_port())]
    p = subprocess.run(launch + [str(script), str(tmp_path), 'two', json.dumps(config_to_dict(cfg))], env=env, capture_output=True, text=True)
    # the first traceback is the worker that failed first; the others only report that their peer went away
    first = p.stderr.find('Traceback')
    assert p.returncode == 0, p.stderr[max(first, 0):][:4000]
    assert json.loads((two.path/'sft'/'DONE.json').read_text())['processes'] == 2
    assert json.loads((one.path/'sft'/'DONE.json').read_text())['processes'] == 1
    diff = max_diff(weights(one), weights(two))
    assert diff < 1e-5, diff
    pre = load_file(base_run.path/'pretrain'/'model'/'model.safetensors')
    assert max_diff(pre, weights(one)) > 1e-3   # and training did move the weights


def test_unreadable_video_is_counted_not_fatal(base_run, tmp_path):
    run = copy_run(base_run, tmp_path, 'bad')
    (run.path/'world'/'videos'/'sft_00001.mp4').write_bytes(b'')
    summary = run_sft(run, dataclasses.replace(TINY, max_steps=1, aux_warmup_steps=1), progress=False)
    assert summary['problems'] == {'unreadable': 2}   # the video and its clip
    problems = json.loads((run.path/'sft'/'problems.json').read_text())
    assert all('sft_00001.mp4' in p['message'] for p in problems)


def test_missing_stages_are_clear_errors(base_run, tmp_path):
    run = RunDir('empty', root=tmp_path)
    with pytest.raises(FileNotFoundError, match='no finished world'): run_pretrain(run, TINY, TINY_MODEL, progress=False)
    with pytest.raises(FileNotFoundError, match='no finished world'): run_sft(run, TINY, progress=False)
    run = copy_run(base_run, tmp_path, 'no_pretrain')
    shutil.rmtree(run.path/'pretrain')
    with pytest.raises(FileNotFoundError, match='no pretrained model; run run_pretrain first'): run_sft(run, TINY, progress=False)


def test_sft_model_uses_the_video(tmp_path):
    """The collapse guard (world-feasibility.md, pitfall 1), at the default recipe on a small step budget (the same steps
    on any machine; 3-5 min on 2 CPU cores): on held-out videos the SFT model beats the best blind answer on count and
    colour, beats the untrained (stage-0) model, stays below perfect, and its logits differ across videos."""
    run = RunDir('guard', root=tmp_path)
    build_world(WorldConfig(n_sft=300, n_rl=0, n_rm=0, n_bench=60), run.path/'world', progress=False)
    cfg = SFTConfig(pretrain_steps=300, max_steps=300, epochs=30)   # a fraction of the default 1500 + 540 steps
    run_pretrain(run, cfg, ModelConfig(), progress=False)
    run_sft(run, cfg, progress=False)
    sft, pre = (load_video_lmm(run.path/s/'model') for s in ('sft', 'pretrain'))
    r_sft, r_pre = (evaluate_world(m, run.path/'world', n_videos=60)['per_kind'] for m in (sft, pre))
    for kind in ('count', 'colour'):
        assert r_sft[kind]['accuracy'] > r_sft[kind]['majority'] + 0.1, (kind, r_sft[kind])
    mean = lambda r: sum(v['accuracy'] for v in r.values()) / len(r)
    assert mean(r_sft) > mean(r_pre) + 0.1 and mean(r_sft) < 0.9, (r_sft, r_pre)
    frames = SampleFrames(run.path/'world'/'videos', 8, sft.preprocess)
    rows = [{'video': f'bench_{i:05d}.mp4'} for i in range(16)]
    frames.load(rows)
    assert video_logit_spread(sft, frames.pixels([r['video'] for r in rows])) > 1e-2
