"""Context-aware preference generation: the judge interface, vision features reused, verdict bookkeeping, kill-safe resume."""
import dataclasses, inspect, json, shutil

import numpy as np
import pytest
import torch

from vlm_rlaif import world
from vlm_rlaif.core import JsonlStore, RunDir, seed_everything
from vlm_rlaif.data import read_preferences
from vlm_rlaif.judge import (ChatJudge, HFChatJudge, JudgeConfig, _text_reading, candidate_choice, combine_orders, judge_pairs,
                             parse_verdict, run_judge)
from vlm_rlaif.model import CLIP_MEAN, CLIP_STD, FramePreprocess, ModelConfig, VideoLMM, build_video_lmm, train_tokenizer

TINY = ModelConfig(text_hidden=32, text_layers=1, text_heads=2, text_kv_heads=2, text_ffn=64, vision_hidden=32, vision_layers=1,
                   vision_heads=2, vision_ffn=64)
FAST = dict(max_new_tokens=6, context_max_new_tokens=6, judge_max_new_tokens=6, videos_per_batch=1)


@pytest.fixture(scope='module')
def world_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('judge_world')/'world'
    world.build_world(world.WorldConfig(n_sft=0, n_rl=2, n_rm=0, n_bench=0, n_text=100, workers=0), d, progress=False)
    return d


@pytest.fixture(scope='module')
def tok(world_dir):
    return train_tokenizer(world.world_text(world.WorldConfig(n_text=100)), vocab_size=768)


def tiny_vlm(tok, seed=0):
    seed_everything(seed)
    return VideoLMM(build_video_lmm(TINY, tok), tok, FramePreprocess(TINY.image_size, TINY.image_size, CLIP_MEAN, CLIP_STD))


def new_run(tmp_path, world_dir, name='r'):
    run = RunDir(name, tmp_path/'runs')
    (run.path/'world').symlink_to(world_dir)
    return run


class LongerJudge:
    "Prefers the longer output (ties: A): consistent in both orders except on ties."
    judge_id = 'longer'
    def chat(self, conversations, max_new_tokens, temperature=0.0, videos=None):
        out = []
        for msgs in conversations:
            text = msgs[-1]['content'][-1]['text']
            a = text.split('\nOutput A: ')[1].split('\nOutput B: ')[0]
            b = text.split('\nOutput B: ')[1].split('\nWhich output is better?')[0]
            out.append(f"Output {'A' if len(a) >= len(b) else 'B'} is better because it is longer.")
        return out


def tower_calls(vlm):
    calls = []
    return calls, vlm.model.model.vision_tower.register_forward_hook(lambda *a: calls.append(1))


def test_chat_judge_protocol_matches_the_contract(tok):
    params = inspect.signature(ChatJudge.chat).parameters
    assert list(params) == ['self', 'conversations', 'max_new_tokens', 'temperature', 'videos']
    assert params['temperature'].default == 0.0 and params['videos'].default is None
    assert 'judge_id' in ChatJudge.__annotations__
    assert isinstance(HFChatJudge(tiny_vlm(tok), 'x'), ChatJudge) and isinstance(LongerJudge(), ChatJudge)


def test_errors_are_mapped_before_unswapping():
    good, bad = 'Output A is better because it is right.', 'Output A, clearly.'
    # order ba shows candidate 2 as output A: its verdict 'A' is candidate 2; an unparseable ba verdict must stay an error,
    # never become "not A" = candidate 1
    reading = _text_reading(good, bad)
    assert (reading['ab'], reading['ba'], reading['preference'], reading['status']) == (1, None, None, 'parse_error')
    assert candidate_choice(parse_verdict(bad)[0], swapped=True) is None
    assert combine_orders(candidate_choice('A', False), candidate_choice('B', True)) == (1, 'ok')
    assert combine_orders(candidate_choice('A', False), candidate_choice('A', True)) == (None, 'inconsistent')


def test_strict_parse():
    assert parse_verdict('Output B is better because it gets the events right.') == ('B', 'it gets the events right.')
    for text in ['Output B is better', 'Output B is better because', 'So, Output B is better because x', 'Output b is better because x',
                 'Output B is better, because x', '**Output B** is better because x']:
        assert parse_verdict(text)[0] is None, text


def test_vision_tower_runs_once_per_batch_for_candidates_contexts_and_both_orders(tmp_path, world_dir, tok):
    vlm = tiny_vlm(tok)
    calls, hook = tower_calls(vlm)
    cfg = JudgeConfig(compare_contexts=['none', 'oracle'], verdict='prob', **dict(FAST, videos_per_batch=2))
    summary = run_judge(new_run(tmp_path, world_dir), cfg, policy=HFChatJudge(vlm, 'tiny'), progress=False)
    hook.remove()
    assert len(calls) == 1, f'{len(calls)} vision-tower calls for one batch of 2 videos'
    assert summary['prompts'] > 4 and sum(summary['statuses'].values()) == 3 * summary['prompts']


def test_another_hf_judge_encodes_each_video_once_per_batch(tmp_path, world_dir, tok):
    policy_vlm, judge_vlm = tiny_vlm(tok, 0), tiny_vlm(tok, 1)
    calls, hook = tower_calls(judge_vlm)
    cfg = JudgeConfig(compare_contexts=['none'], verdict='prob', **dict(FAST, videos_per_batch=2))
    run_judge(new_run(tmp_path, world_dir), cfg, policy=HFChatJudge(policy_vlm, 'p'), judge=HFChatJudge(judge_vlm, 'j'), progress=False)
    hook.remove()
    assert len(calls) == 2   # one chat call and one choice_logprobs call for the batch, each encoding the 2 videos together


def test_kill_and_resume_loses_nothing_and_duplicates_nothing(tmp_path, world_dir, tok, monkeypatch):
    cfg = JudgeConfig(compare_contexts=['none'], verdict='prob', max_prompts=10, **FAST)
    whole = new_run(tmp_path, world_dir, 'whole')
    run_judge(whole, cfg, policy=HFChatJudge(tiny_vlm(tok), 'tiny'), progress=False)
    killed = new_run(tmp_path, world_dir, 'killed')
    original, writes = JsonlStore.extend, []
    def dying_extend(self, recs):
        recs = list(recs)
        if self.path.name == 'prefs.jsonl' and any(r.get('variant') for r in recs):
            writes.append(1)
            if len(writes) == 2:   # the kill: half of the second batch's prefs line is written
                with open(self.path, 'ab') as f: f.write(json.dumps(recs[0]).encode()[:40])
                raise KeyboardInterrupt
        return original(self, recs)
    monkeypatch.setattr(JsonlStore, 'extend', dying_extend)
    with pytest.raises(KeyboardInterrupt): run_judge(killed, cfg, policy=HFChatJudge(tiny_vlm(tok), 'tiny'), progress=False)
    monkeypatch.setattr(JsonlStore, 'extend', original)
    assert not killed.is_done('judge')
    run_judge(killed, cfg, policy=HFChatJudge(tiny_vlm(tok), 'tiny'), progress=False)
    for f in ('candidates.jsonl', 'contexts.jsonl', 'prefs.jsonl'):
        a = sorted((whole.path/'judge'/f).read_text().splitlines())
        b = sorted((killed.path/'judge'/f).read_text().splitlines())
        assert a == b, f
        ids = [json.loads(l)['id'] for l in b]
        assert len(ids) == len(set(ids))


def test_bad_inputs_are_typed_records(tmp_path, world_dir, tok):
    run = RunDir('bad', tmp_path/'runs')
    shutil.copytree(world_dir/'videos', run.path/'world'/'videos')   # a world without its truth: no oracle context
    prompts = json.loads((world_dir/'rl_prompts.json').read_text())[:3]
    prompts.append(dict(prompts[0], uid='broken_video', video='nowhere.mp4'))
    text = json.dumps(prompts).replace('What', 'Wh\\udc80at', 1)
    (run.path/'world'/'rl_prompts.json').write_text(text)
    (run.path/'world'/'videos'/'rl_00001.mp4').write_bytes(b'not a video')
    cfg = JudgeConfig(context='oracle', compare_contexts=['none'], verdict='prob', **FAST)
    summary = run_judge(run, cfg, policy=HFChatJudge(tiny_vlm(tok), 'tiny'), judge=None, progress=False)
    st = summary['statuses']
    assert st['decode_error'] == 1 and st['unknown_video'] == 1, st   # the surrogate record, and the missing video
    assert st['missing_context'] == 2, st                               # 2 valid prompts x the oracle variant
    assert json.loads((run.path/'judge'/'preferences.json').read_text()) == []


def test_empty_and_overlong_responses(tok):
    vlm = tiny_vlm(tok)
    judge = HFChatJudge(vlm, 'tiny')
    video = np.zeros((8, 64, 64, 3), np.uint8)
    pair = lambda i, r: dict(id=str(i), question='What colour is the circle?', responses=r, context=None, video=video)
    recs = judge_pairs(judge, [pair(0, ['red', '']), pair(1, ['red ' * 300, 'blue']), pair(2, ['red', 'blue\udc80'])], JudgeConfig(max_response_tokens=32))
    assert [r['status'] for r in recs][::2] == ['empty_response', 'decode_error']
    assert recs[1]['flags'] == ['response_1_truncated'] and 'prob' in recs[1]['verdicts']


def test_preferences_json_is_the_public_format(tmp_path, world_dir, tok):
    run = new_run(tmp_path, world_dir)
    cfg = JudgeConfig(context='oracle', **FAST)
    summary = run_judge(run, cfg, policy=HFChatJudge(tiny_vlm(tok), 'tiny'), judge=LongerJudge(), progress=False)
    assert summary['kept'] > 0
    ds, problems = read_preferences(run.path/'judge'/'preferences.json', video_root=world_dir/'videos')
    assert problems == [] and len(ds) == summary['kept']
    rec = json.loads((run.path/'judge'/'preferences.json').read_text())[0]
    assert rec['context_variant'] == 'oracle' and rec['judge_id'] == 'longer' and rec['sampling']['temperature'] == 1.0
    assert set(rec['verdicts']) == {'text'}   # an interface-only judge has no label probabilities
    assert run_judge(run, cfg, policy=None, judge=LongerJudge(), progress=False) == summary   # done: skipped without loading anything


def test_text_only_chat(tok):
    "The benchmarks' LLM judge sends text-only conversations (string or list content) and no videos."
    judge = HFChatJudge(tiny_vlm(tok), 'tiny')
    convs = [[{'role': 'user', 'content': 'Score this answer.'}], [{'role': 'user', 'content': [{'type': 'text', 'text': 'Score it.'}]}]]
    texts = judge.chat(convs, 4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with pytest.raises(ValueError, match='a video but no video slot'): judge.chat(convs[:1], 4, videos=[np.zeros((8, 64, 64, 3), np.uint8)])
