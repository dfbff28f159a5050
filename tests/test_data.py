"Extra tests of the public data formats and the collators (fixtures in tests/fixtures)."
import json
from pathlib import Path

import numpy as np
import pytest

from vlm_rlaif.core import count_statuses
from vlm_rlaif.data import (DataError, GenerationCollator, SFTCollator, curriculum_split, load_sample_frames, read_instructions,
                            read_preferences, read_qa, read_records, read_rl_prompts, read_vcg, to_messages, write_records)

FIX = Path(__file__).parent/'fixtures'

@pytest.fixture(scope='module')
def tok():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from vlm_rlaif.world import world_vocabulary
    specials = ['<pad>', '<unk>', '<video>', '<|im_start|>', '<|im_end|>']
    words = list(dict.fromkeys(specials + ['user', 'assistant', '.', ',', '?', ':'] + world_vocabulary()))
    wl = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token='<unk>'))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    t = PreTrainedTokenizerFast(tokenizer_object=wl, pad_token='<pad>', unk_token='<unk>', additional_special_tokens=specials[2:])
    t.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'video' %}<video>"
                       "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return t

def test_bad_file_counts_every_problem():
    ds, problems = read_instructions(FIX/'bad_instructions.jsonl', known_videos={'v1', 'v2'}, on_error='record')
    assert ds['id'] == ['ok']
    assert count_statuses(problems) == {'invalid': 6, 'parse_error': 1, 'unknown_video': 1}
    assert all(p['line'] >= 2 and 'bad_instructions.jsonl: line' in p['message'] for p in problems)

def test_raise_names_file_line_key():
    with pytest.raises(DataError, match=r"bad_instructions.jsonl: line 2: invalid JSON"): read_instructions(FIX/'bad_instructions.jsonl')
    with pytest.raises(DataError, match=r"qa.json: line 2: key 'video_name': video 'v1' not found"):
        read_qa(FIX/'qa.json', video_root=FIX)
    with pytest.raises(DataError, match='file not found'): read_qa(FIX/'nope.json')

@pytest.mark.parametrize('rec,msg', [
    ({'id': 'a', 'video': 'v1.mp4', 'conversations': [{'from': 'human', 'value': '<video> q'}, {'from': 'gpt', 'value': 'a'}],
      'output_1': {'from': 'gpt', 'value': 'x'}, 'output_2': {'from': 'gpt', 'value': 'y'}, 'preference': 3}, "key 'preference': expected 1 or 2, got 3"),
    ({'id': 'a', 'video': 'v1.mp4', 'conversations': [{'from': 'human', 'value': '<video> q'}],
      'output_1': {'from': 'gpt', 'value': 'x'}, 'output_2': 'y', 'preference': 1}, "key 'output_2': expected"),
    ({'id': 'a', 'video': 'v1.mp4', 'conversations': [{'from': 'human', 'value': '<video> q'}],
      'output_1': {'from': 'gpt', 'value': ''}, 'output_2': {'from': 'gpt', 'value': 'y'}, 'preference': True}, "key 'output_1.value': empty answer"),
    ({'id': 'a', 'video': 'v1.mp4', 'images': ['x.jpg'], 'conversations': [{'from': 'human', 'value': '<video> q'}],
      'output_1': {'from': 'gpt', 'value': 'x'}, 'output_2': {'from': 'gpt', 'value': 'y'}, 'preference': 1}, "exactly one of 'video' and 'images'"),
])
def test_preference_errors(tmp_path, rec, msg):
    (tmp_path/'p.json').write_text(json.dumps([rec], indent=1))
    with pytest.raises(DataError, match=msg.replace('(', r'\(').replace(')', r'\)')): read_preferences(tmp_path/'p.json')

def test_placeholder_rules(tmp_path):
    base = {'id': 'a', 'video': 'v.mp4'}
    cases = {'second turn': [{'from': 'human', 'value': '<video> q'}, {'from': 'gpt', 'value': 'a'}, {'from': 'human', 'value': '<video> again'}, {'from': 'gpt', 'value': 'b'}],
             'order': [{'from': 'gpt', 'value': 'a'}, {'from': 'human', 'value': '<video> q'}]}
    for name, conv in cases.items():
        (tmp_path/'x.jsonl').write_text(json.dumps(dict(base, conversations=conv)) + '\n')
        with pytest.raises(DataError, match='line 1'): read_instructions(tmp_path/'x.jsonl')
    # <image> is accepted and normalised to <video>
    (tmp_path/'x.jsonl').write_text(json.dumps(dict(base, conversations=[{'from': 'human', 'value': '<image>\nq'}, {'from': 'gpt', 'value': 'a'}])) + '\n')
    ds, _ = read_instructions(tmp_path/'x.jsonl')
    assert ds[0]['conversations'][0]['value'] == '<video>\nq'

def test_roundtrip_all_formats(tmp_path):
    for name, kind in [('instructions.json', 'instructions'), ('preferences.json', 'preferences'), ('rl_prompts.json', 'rl_prompts'),
                       ('qa.json', 'qa'), ('vcg_generic.json', 'vcg_generic'), ('vcg_temporal.json', 'vcg_temporal'), ('vcg_consistency.json', 'vcg_consistency')]:
        ds, _ = read_records(FIX/name, kind)
        write_records(ds, tmp_path/name, kind)
        assert json.loads((tmp_path/name).read_text()) == json.loads((FIX/name).read_text()), name

def test_vcg_reader_kinds():
    ds, _ = read_vcg(FIX/'vcg_consistency.json', 'consistency')
    assert ds[1]['pred1'] == 'left' and ds[0]['pred1'] is None
    with pytest.raises(ValueError, match='unknown format'): read_vcg(FIX/'vcg_generic.json', 'spatial')

def test_curriculum_threshold():
    ds, _ = read_instructions(FIX/'instructions.json')
    s, l = curriculum_split(ds, threshold=2)
    assert s['id'] == ['v1_colour'] and sorted(l['id']) == ['v1_multi', 'v2_describe']
    with pytest.raises(ValueError, match='threshold'): curriculum_split(ds, threshold=0)

def test_sft_masks_prompt_and_padding(tok):
    c = SFTCollator(tok, num_video_tokens=3)
    ds, _ = read_instructions(FIX/'instructions.json')
    b = c(list(ds))
    vid = tok.convert_tokens_to_ids('<video>')
    for ids, lab, att in zip(b['input_ids'], b['labels'], b['attention_mask']):
        assert (ids == vid).sum() == 3 and (lab[ids == vid] == -100).all()
        assert (lab[att == 0] == -100).all() and att[0] == 1           # right padding
        learned = tok.decode([t for t in lab.tolist() if t != -100])
        assert 'user' not in learned and 'What' not in learned and learned.endswith('<|im_end|>')

def test_generation_left_pads_and_drops_answer(tok):
    c = GenerationCollator(tok, num_video_tokens=2)
    feats = [{'messages': to_messages([{'from': 'human', 'value': '<video>\nWhat colour is the square?'}, {'from': 'gpt', 'value': 'red'}])},
             {'messages': to_messages([{'from': 'human', 'value': '<video>\nDescribe the video.'}])}]
    b = c(feats)
    assert b['attention_mask'][:, -1].tolist() == [1, 1] and b['attention_mask'][1, 0] == 0
    assert 'red' not in tok.decode(b['input_ids'][0])

def test_collator_passes_tensors_and_rejects_bad(tok):
    import torch
    c = SFTCollator(tok, num_video_tokens=2)
    f = {'id': 'a', 'conversations': [{'from': 'human', 'value': '<video>\nq'}, {'from': 'gpt', 'value': 'red'}], 'pixel_values_videos': torch.zeros(8, 3, 4, 4)}
    assert c([f, f])['pixel_values_videos'].shape == (2, 8, 3, 4, 4)
    with pytest.raises(ValueError, match='found 2'):
        c([{'id': 'b', 'conversations': [{'from': 'human', 'value': '<video><video>\nq'}, {'from': 'gpt', 'value': 'red'}]}])
    with pytest.raises(ValueError, match='last message'):
        c([{'id': 'c', 'messages': to_messages([{'from': 'human', 'value': '<video>\nq'}])}])

def test_frames_from_images_and_video(tmp_path):
    from PIL import Image
    from vlm_rlaif.frames import write_video
    frames = (np.arange(16)[:, None, None, None] * 15 * np.ones((16, 32, 32, 3))).astype(np.uint8)
    write_video(tmp_path/'v.mp4', frames)
    for i, f in enumerate(frames): Image.fromarray(f).save(tmp_path/f'{i}.jpg')
    a = load_sample_frames({'video': 'v'}, tmp_path, 4)
    b = load_sample_frames({'images': [f'{i}.jpg' for i in range(16)]}, tmp_path, 4)
    assert a.shape == b.shape == (4, 32, 32, 3)
    assert np.abs(a[:, 16, 16, 0].astype(int) - b[:, 16, 16, 0].astype(int)).max() < 8
    Image.fromarray(frames[0][:16]).save(tmp_path/'odd.jpg')
    with pytest.raises(ValueError, match='differ in size'): load_sample_frames({'images': ['0.jpg', 'odd.jpg']}, tmp_path, 2)

def test_empty_file_gives_an_empty_dataset(tmp_path):
    (tmp_path/'p.json').write_text('[]')
    ds, problems = read_preferences(tmp_path/'p.json')
    assert len(ds) == 0 and problems == [] and 'output_1' in ds.column_names

def test_unpaired_surrogate_is_a_typed_record(tmp_path):
    good = {'video_name': 'v1', 'question_id': 'q1', 'question': 'What color?', 'answer': 'red'}
    (tmp_path/'qa.json').write_text(json.dumps([good, dict(good, question_id='q2', answer='re\ud800d')], indent=1))
    ds, problems = read_qa(tmp_path/'qa.json', on_error='record')
    assert ds['question_id'] == ['q1'] and count_statuses(problems) == {'decode_error': 1}
    assert "qa.json: line 8: key 'answer': text is not valid UTF-8" in problems[0]['message']
