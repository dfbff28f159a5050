"""Reward model: the loss, the metrics, the sanity checks of the field on the world (first-step loss, held-out accuracy,
correct vs corrupted answers), the non-finite guard, checkpoint and resume, and the stage's errors."""
import copy, dataclasses, json, math, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vlm_rlaif.core import RunDir, count_statuses, rng_state, save_config, seed_everything, set_rng_state
from vlm_rlaif.data import read_preferences
from vlm_rlaif.model import CLIP_MEAN, CLIP_STD, FramePreprocess, ModelConfig, build_video_lmm, num_video_tokens, save_video_lmm, train_tokenizer
from vlm_rlaif.reward import (NonFiniteLossError, RewardConfig, _rng_from_json, _rng_to_json, correct_vs_corrupted, data_fingerprint,
                              encode_pairs, evaluate_pairs, new_reward_model, pairwise_loss, preference_metrics, preference_pairs,
                              rm_messages, run_reward, split_held_out, train_reward_model, world_probe_pairs)
from vlm_rlaif.world import WorldConfig, build_world, read_truths, score_answer, video_questions, world_text

# a model smaller than the model module's default, so that the tests take seconds; the reward code is the same
SMALL = ModelConfig(text_hidden=64, text_layers=2, text_heads=2, text_kv_heads=2, text_ffn=256, vision_hidden=64, vision_layers=1,
                    vision_heads=2, vision_ffn=256, image_size=32, patch_size=8, frames=4)
CFG = RewardConfig(batch_size=8, micro_batch_size=4, epochs=1, lr=1e-3, save_every=2, warmup_steps=1, n_frames=SMALL.frames)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    "A small world, a tokenizer, a tiny random model and the world's encoded ground-truth pairs, split."
    root = tmp_path_factory.mktemp('reward')
    build_world(WorldConfig(n_sft=0, n_rl=0, n_rm=40, n_bench=6, n_text=60, workers=0), root/'world', progress=False)
    tok = train_tokenizer(world_text(WorldConfig(n_text=60)))
    seed_everything(0)
    base = build_video_lmm(SMALL, tok)
    pre = FramePreprocess(SMALL.image_size, SMALL.image_size, CLIP_MEAN, CLIP_STD)
    ds, problems = read_preferences(root/'world'/'rm_holdout.json', video_root=root/'world'/'videos')
    pairs, _ = preference_pairs(ds)
    items, _ = encode_pairs(pairs, tok, num_video_tokens(base, CFG.n_frames), CFG)
    train, held = split_held_out(items, 60, 0.3)
    return dict(root=root, videos=root/'world'/'videos', tok=tok, base=base, pre=pre, ds=ds, train=train, held=held)


def fresh_rm(w, cfg=CFG):
    seed_everything(cfg.seed)
    return new_reward_model(copy.deepcopy(w['base']), cfg)


def train(w, cfg=CFG, pairs=None, out_dir=None, rm=None):
    rm = rm if rm is not None else fresh_rm(w, cfg)
    return rm, train_reward_model(rm, w['tok'], w['pre'], w['train'] if pairs is None else pairs, w['held'][:16] if pairs is not None else w['held'],
                                  cfg, w['videos'], out_dir, progress=False)


def test_loss_is_ln2_at_equal_scores_and_its_gradient_prefers_the_chosen():
    rc, rr = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    loss = pairwise_loss(rc, rr, centring=0.0)
    assert abs(loss.item() - math.log(2)) < 1e-7
    loss.backward()
    assert (rc.grad < 0).all() and (rr.grad > 0).all()   # descent raises the chosen score, lowers the other


def test_centring_term_pulls_the_mean_reward_to_zero():
    rc, rr = torch.full((4,), 3.0, requires_grad=True), torch.full((4,), 3.0, requires_grad=True)
    pairwise_loss(rc, rr, centring=1e-3).backward()
    assert ((rc.grad + rr.grad) > 0).all()   # the logistic term's gradients cancel in the sum; the centring term lowers both
    assert abs(pairwise_loss(torch.ones(2), torch.ones(2), 0.1).item() - (math.log(2) + 0.2)) < 1e-6


def test_calibration_bins_of_a_perfectly_ranked_set():
    m = preference_metrics(np.linspace(0.1, 4, 20), np.zeros(20), bins=4)
    assert m['accuracy'] == 1.0 and [b['n'] for b in m['calibration']] == [5] * 4
    confidences = [b['confidence'] for b in m['calibration']]
    assert confidences == sorted(confidences) and m['ece'] == pytest.approx(np.mean(1 - 1 / (1 + np.exp(-np.linspace(0.1, 4, 20)))))


def test_rng_state_round_trips_through_json():
    seed_everything(3)
    saved = json.loads(json.dumps(_rng_to_json(rng_state())))
    a = (np.random.rand(), torch.rand(2).tolist(), __import__('random').random())
    set_rng_state(_rng_from_json(saved))
    assert (np.random.rand(), torch.rand(2).tolist(), __import__('random').random()) == a


def test_context_is_in_the_rm_input_only_with_context_in_rm(world):
    conv = [{'from': 'human', 'value': '<video>\nWhat colour is the circle?'}]
    plain = world['tok'].apply_chat_template(rm_messages(conv, 'red'), tokenize=False, add_generation_prompt=True)
    ctx = world['tok'].apply_chat_template(rm_messages(conv, 'red', context='A red circle.'), tokenize=False, add_generation_prompt=True)
    assert 'Context' not in plain and 'Context: A red circle.' in ctx
    assert plain.rstrip().endswith('assistant') and plain.count('red') == 1


def test_first_step_loss_near_ln2_and_held_out_accuracy_above_chance(world):
    "The field's sanity checks: the loss starts at ln 2; after a short training the held-out pairs (other videos) are ranked above chance."
    _, m = train(world, dataclasses.replace(CFG, epochs=2))
    print(f"\nfirst-step loss {m['first_loss']:.4f}; held-out {m['held_out']['n']} pairs: accuracy {m['held_out']['accuracy']:.3f}, "
          f"loss {m['held_out']['loss']:.4f}, mean margin {m['held_out']['mean_margin']:.3f}, ECE {m['held_out']['ece']:.3f}; {m['steps']} steps")
    assert abs(m['first_loss'] - math.log(2)) < 0.05
    assert m['held_out']['accuracy'] > 0.5
    assert m['held_out']['loss'] < math.log(2)
    world['trained'] = m


def test_correct_vs_corrupted_is_measured_on_unseen_world_videos(world):
    "Measured, not assumed: how often the RM scores the ground-truth answer above a corrupted one (printed with -s)."
    rm, _ = train(world, CFG, pairs=world['train'][:32])
    cfg = CFG
    probe = correct_vs_corrupted(rm, world['tok'], world['pre'], world['root']/'world', cfg)
    pairs = world_probe_pairs(world['root']/'world')
    truths = read_truths(world['root']/'world')
    for p in pairs:   # every probe pair is a bench video's ground-truth answer against one the exact scorer rejects
        t = truths[p['video'][:-4]]
        assert t['split'] == 'bench' and p['chosen'] != p['rejected']
    print(f"\nRM (32 pairs, 4 steps) prefers the correct answer in {probe['rate']:.3f} of {probe['n']} pairs; by kind "
          + ', '.join(f"{k} {v['rate']:.2f}/{v['n']}" for k, v in probe['by_kind'].items()))
    assert probe['n'] == len(pairs) > 0 and sum(v['n'] for v in probe['by_kind'].values()) == probe['n']
    assert 0.0 <= probe['rate'] <= 1.0


def test_probe_answers_are_scored_correct_and_wrong_by_the_exact_scorer(world):
    truths = read_truths(world['root']/'world')
    pairs = world_probe_pairs(world['root']/'world', max_videos=3)
    assert pairs
    for p in pairs:
        t = truths[p['video'][:-4]]
        rng = np.random.default_rng([0, 13, int(t['video_id'].rsplit('_', 1)[1])])
        q = next(q for q in video_questions(t, rng) if f"{q['id']}_probe" == p['id'])
        assert score_answer(t, q, p['chosen'])['correct'] and not score_answer(t, q, p['rejected'])['correct']


def test_a_nan_step_is_skipped_and_counted_and_k_in_a_row_abort(world):
    rm = fresh_rm(world)
    calls = [0]
    def poison(module, args, out):
        calls[0] += 1
        return out * float('nan') if calls[0] in (1, 2) else out   # both micro-batches of step 1
    hook = rm.head.register_forward_hook(poison)
    before = rm.head.weight.detach().clone()
    _, m = train(world, CFG, pairs=world['train'][:24], rm=rm)
    hook.remove()
    assert m['nonfinite_steps'] == 1 and [h['skipped'] for h in m['history']] == [True, False, False]
    assert not torch.equal(before, rm.head.weight) and torch.isfinite(rm.head.weight).all()
    rm = fresh_rm(world)
    hook = rm.head.register_forward_hook(lambda module, args, out: out + float('inf'))
    with pytest.raises(NonFiniteLossError, match='3 steps in a row'): train(world, CFG, pairs=world['train'][:32], rm=rm)
    hook.remove()


def test_resume_in_the_second_epoch_matches_an_uninterrupted_run(world, tmp_path):
    cfg = dataclasses.replace(CFG, epochs=2, save_every=3)
    pairs = world['train'][:16]   # 2 steps an epoch: the checkpoint at step 3 is mid-epoch 2
    ref, ref_m = train(world, cfg, pairs)
    rm = fresh_rm(world, cfg)
    calls = [0]
    def kill(module, args, out):
        calls[0] += 1
        if calls[0] == 7: raise RuntimeError('killed')   # step 4, after the checkpoint at step 3
    hook = rm.head.register_forward_hook(kill)
    with pytest.raises(RuntimeError, match='killed'): train(world, cfg, pairs, tmp_path, rm=rm)
    hook.remove()
    resumed, m = train(world, cfg, pairs, tmp_path)
    assert m['resumed_from'] == 3
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(ref.named_parameters(), resumed.named_parameters()))
    assert [h['loss'] for h in m['history']] == [h['loss'] for h in ref_m['history']]


def test_fingerprint_changes_with_data_knobs_and_processes_not_with_bookkeeping(world):
    pairs = world['train'][:8]
    f = data_fingerprint(pairs, CFG, 1)
    assert f == data_fingerprint(pairs, dataclasses.replace(CFG, save_every=7, eval_every=3), 1)
    assert f != data_fingerprint(pairs[::-1], CFG, 1)
    assert f != data_fingerprint(pairs, dataclasses.replace(CFG, lr=2e-3), 1)
    assert f != data_fingerprint(pairs, CFG, 2)


def test_held_out_scores_do_not_depend_on_batching(world):
    rm = fresh_rm(world)
    a, _ = evaluate_pairs(rm, world['held'][:10], world['tok'], world['pre'], world['videos'], CFG.n_frames, batch_size=10)
    b, _ = evaluate_pairs(rm, world['held'][:10], world['tok'], world['pre'], world['videos'], CFG.n_frames, batch_size=3)
    assert [s['id'] for s in a] == [s['id'] for s in b]
    np.testing.assert_allclose([s['r_chosen'] for s in a], [s['r_chosen'] for s in b], atol=1e-5)


def test_run_reward_names_what_is_missing(world, tmp_path):
    run = RunDir('r', root=tmp_path)
    with pytest.raises(FileNotFoundError, match='no SFT checkpoint'): run_reward(run, CFG, progress=False)
    save_video_lmm(run.path/'sft'/'model', world['base'], world['tok'], world['pre'])
    with pytest.raises(FileNotFoundError, match='judge/preferences.json: no preference file'): run_reward(run, CFG, progress=False)


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(world, tmp_path):
    "The stage under `accelerate launch` with 2 CPU processes: same number of steps (the batch is global), a model and metrics."
    run = RunDir('mp', root=tmp_path)
    save_video_lmm(run.path/'sft'/'model', world['base'], world['tok'], world['pre'])
    cfg = dataclasses.replace(CFG, train_pairs=32, eval_pairs=16, probe_videos=2, save_every=2)
    save_config(cfg, tmp_path/'reward.yaml')
    script = tmp_path/'launch.py'
    script.write_text('from vlm_rlaif.core import RunDir, load_config\nfrom vlm_rlaif.reward import RewardConfig, run_reward\n'
                      f"print(run_reward(RunDir('mp', root={str(tmp_path)!r}), load_config({str(tmp_path/'reward.yaml')!r}, RewardConfig), "
                      f"preferences={str(world['root']/'world'/'rm_holdout.json')!r}, progress=False))\n")
    cfg_video_root = world['videos']
    (run.path/'world').symlink_to(cfg_video_root.parent)
    out = subprocess.run([sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
                          '--mixed_precision', 'no', '--dynamo_backend', 'no', str(script)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run.path/'reward'/'metrics.json').read_text())
    assert metrics['processes'] == 2 and metrics['steps'] == 4 and metrics['held_out']['n'] > 0
    assert (run.path/'reward'/'model'/'head.safetensors').exists()
