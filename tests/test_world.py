"Extra tests of the synthetic world (beyond the notebook's demonstrations)."
import dataclasses, json
import numpy as np
import pytest

from vlm_rlaif.core import ConfigError, config_from_dict
from vlm_rlaif.world import (WorldConfig, build_world, clip_truth, describe, describe_range, make_question, paraphrase_pair,
                             read_truths, render, sample_truth, score_answer, score_consistency, text_corpus, video_questions,
                             world_text, world_truth, answer_pair, corrupt_truth, SHORT_KINDS)

CFG = WorldConfig()

def _truth():
    return dict(video_id='t', num_frames=16, size=64, fps=8, background=10,
                objects=[dict(shape='square', colour='red', motion='right', radius=6, speed=2.5, x=10, y=15),
                         dict(shape='circle', colour='blue', motion='down', radius=6, speed=2.5, x=40, y=10)],
                events=[dict(frame=4, type='stop', object=1), dict(frame=10, type='disappear', object=0)])

def test_truth_independent_of_split_sizes():
    a = world_truth(WorldConfig(n_sft=5), 'sft', 3)
    b = world_truth(WorldConfig(n_sft=500, n_rl=1), 'sft', 3)
    assert a == b and a != world_truth(CFG, 'rl', 3)

def test_render_respects_visibility():
    t = _truth()
    f = render(t)
    red = np.all(f == np.array([225, 40, 40], np.uint8), axis=-1)
    assert red[:10].any(axis=(1, 2)).all() and not red[10:].any()   # the square disappears at frame 10
    # the circle stops at frame 4: identical positions afterwards
    blue = np.all(f == np.array([50, 100, 255], np.uint8), axis=-1)
    assert (blue[4] == blue[15]).all() and not (blue[0] == blue[4]).all()

def test_motion_is_large():
    for i in range(50):
        t = sample_truth(CFG, np.random.default_rng(i))
        for o in t['objects']:
            if o['motion'] != 'still': assert o['speed'] * 15 >= 0.55 * 64 - 1e-6

@pytest.mark.parametrize('answer,correct,low', [
    ('A red square moves right and a blue circle moves down. Then the blue circle stops. Then the red square disappears.', True, None),
    ('A red square moves right and a blue circle goes down. Later, the circle comes to a stop. After that, the square vanishes.', True, None),
    ('A red square moves right.', False, 'detail'),
    ('A green triangle moves up.', False, 'correctness'),
    ('A red square moves right and a blue circle moves down. Then the red square disappears. Then the blue circle stops.', False, 'temporal'),
    ('', False, 'correctness'), ('%%% ???', False, 'correctness'),
])
def test_scorer_describe(answer, correct, low):
    t = _truth()
    s = score_answer(t, make_question(t, 'describe'), answer)
    assert s['correct'] == correct
    if low: assert s[low] < 2.5, s

def test_scorer_never_crashes_on_odd_input():
    t = _truth()
    for q in video_questions(t, np.random.default_rng(0)):
        for a in [None, 123, 'red red red', 'the the the', '3 3 3', 'It it it turns', 'changes colour', 'after after']:
            s = score_answer(t, q, a)
            assert all(0 <= s[k] <= 5 for k in ('correctness', 'detail', 'context', 'temporal'))

def test_consistency_needs_both_right():
    t = _truth()
    q = make_question(t, 'direction', k=0)
    assert score_consistency(t, q, 'right', 'It moves right.') == 5
    assert score_consistency(t, q, 'left', 'left') == 0

def test_clip_truth_semantics():
    t = _truth()
    c = clip_truth(t, 5, 15)
    assert c['objects'][1]['motion'] == 'still' and [e['type'] for e in c['events']] == ['disappear']
    assert describe_range(t, 11, 15) == 'A blue circle stays still.'
    with pytest.raises(ValueError, match='outside'): clip_truth(t, 3, 16)

def test_pairs_and_paraphrases():
    t = _truth(); rng = np.random.default_rng(0)
    for kind in SHORT_KINDS + ('describe',):
        q1, q2, q = paraphrase_pair(t, kind, rng)
        assert q1 != q2 or kind == 'count'
    q = make_question(t, 'describe')
    p = answer_pair(t, q, rng)
    assert score_answer(t, q, p['better'])['correctness'] + score_answer(t, q, p['better'])['detail'] > \
           score_answer(t, q, p['worse'])['correctness'] + score_answer(t, q, p['worse'])['detail'] - 1e-9
    assert corrupt_truth(t, rng, 'order') is not None
    with pytest.raises(ValueError, match='unknown aspect'): corrupt_truth(t, rng, 'size')

def test_text_corpus_has_no_video_and_covers_kinds():
    cfg = WorldConfig(n_text=20)
    ex = list(text_corpus(cfg))
    assert {e['kind'] for e in ex} == {'read_qa', 'read_judge'}
    assert all(c['type'] == 'text' for e in ex for m in e['messages'] for c in m['content'])
    assert all(e['messages'][0]['content'][0]['text'].startswith('Context: ') for e in ex)
    texts = list(world_text(cfg, 5))
    assert any('Output A is better' in s or 'Output B is better' in s for s in texts)

def test_config_errors():
    with pytest.raises(ConfigError, match='min_objects'): config_from_dict(WorldConfig, {'min_objects': 3, 'max_objects': 2})
    with pytest.raises(ConfigError, match="shapes: unknown"): config_from_dict(WorldConfig, {'shapes': ['hexagon']})

def test_build_world_formats(tmp_path):
    cfg = WorldConfig(n_sft=3, n_rl=2, n_rm=2, n_bench=3, n_text=3, workers=0)
    done = build_world(cfg, tmp_path, progress=False)
    sft = json.loads((tmp_path/'sft.json').read_text())
    vids = {p.name for p in (tmp_path/'videos').iterdir()}
    assert all(r['video'] in vids for r in sft) and len(vids) == 10
    assert {r['video'].split('_')[0] for r in sft} == {'sft'}
    rl = json.loads((tmp_path/'rl_prompts.json').read_text())
    assert {r['video'].split('_')[0] for r in rl} == {'rl'} and all('uid' in r for r in rl)
    rm = json.loads((tmp_path/'rm_holdout.json').read_text())
    assert all(r['preference'] in (1, 2) and r['output_1']['value'] != r['output_2']['value'] for r in rm)
    qa = json.loads((tmp_path/'bench'/'qa.json').read_text())
    assert set(qa[0]) == {'video_name', 'question_id', 'question', 'answer'}
    cons = json.loads((tmp_path/'bench'/'vcg_consistency.json').read_text())
    assert set(cons[0]) == {'video_name', 'Q1', 'Q2', 'A'}
    truths = read_truths(tmp_path)
    qs = [json.loads(l) for l in (tmp_path/'bench'/'questions.jsonl').read_text().splitlines()]
    for q in qs:   # the reference answer of every benchmark question scores as correct
        assert score_answer(truths[q['video_name']], q, q['answer'])['correct'], q
    assert done['counts']['qa'] == len(qa)

def test_object_question_context_needs_a_right_claim():
    "An empty or garbage answer to a question about one object gets no context credit (it once got 5 for naming nothing)."
    import numpy as np
    from vlm_rlaif.world import WorldConfig, world_truth, make_question, score_answer
    cfg = WorldConfig(max_objects=1, min_objects=1)
    truth = world_truth(cfg, 'bench', 0)
    q = make_question(truth, 'object', np.random.default_rng(0))
    for bad in ['', 'zzz qqq', '....']: assert score_answer(truth, q, bad)['context'] == 0.0, bad
    assert score_answer(truth, q, q['answer'])['context'] == 5.0
