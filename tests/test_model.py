"Tests of vlm_rlaif.model beyond the notebook's demonstrations: round trips, shared vision features, LoRA roles, scalar heads."
import copy, dataclasses, json, os, subprocess, sys
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest
import torch

from vlm_rlaif.core import seed_everything
from vlm_rlaif.model import _adapter_layers, _fused_role
from vlm_rlaif.model import (CLIP_MEAN, ModelConfig, ScalarHeadModel, StaticCacheSampler, skinny_products, active_role, adapters_disabled, add_role_adapter, build_video_lmm, fuse_lora_products,
                             embed_inputs, encode_video, generate_with_video, last_token_index, lm_lora_target_regex, load_video_lmm,
                             num_video_tokens, read_frame_preprocess, save_video_lmm, train_tokenizer)

TEXTS = ['A red square moves left.', 'A green triangle moves up. Then a yellow circle appears and moves down.',
         'What color is the square?', 'Which way does the red object move?', 'How many objects are there?',
         'Describe the video.', 'red', 'green', 'blue', 'yellow', 'left', 'right', 'up', 'down', 'still', 'one', 'two'] * 3
QUESTIONS = ['What color is the square?', 'Describe the video.', 'How many objects are there?']
ANSWERS = ['red', 'A green triangle moves up.', 'two']
FRAMES = 4


def batch(tok, n_video, side='left', answers=None):
    "Chat-template prompts with the <video> placeholder expanded (the data collator's job), padded on `side`."
    rows = []
    for i, q in enumerate(QUESTIONS):
        msgs = [{'role': 'user', 'content': [{'type': 'video'}, {'type': 'text', 'text': q}]}]
        if answers: msgs.append({'role': 'assistant', 'content': answers[i]})
        ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=not answers)['input_ids']
        at = ids.index(tok.video_token_id)
        rows.append(ids[:at] + [tok.video_token_id] * n_video + ids[at + 1:])
    w = max(map(len, rows))
    pad = (lambda r, v: [v] * (w - len(r)) + r) if side == 'left' else (lambda r, v: r + [v] * (w - len(r)))
    return torch.tensor([pad(r, tok.pad_token_id) for r in rows]), torch.tensor([pad([1] * len(r), 0) for r in rows])


@pytest.fixture(scope='module')
def tok(): return train_tokenizer(TEXTS, 400)

@pytest.fixture(scope='module')
def cfg(): return ModelConfig(frames=FRAMES)

@pytest.fixture(scope='module')
def model(tok, cfg):
    seed_everything(1)
    return build_video_lmm(cfg, tok)

@pytest.fixture(scope='module')
def pixels(cfg):
    g = torch.Generator().manual_seed(0)
    return torch.randn(len(QUESTIONS), FRAMES, 3, cfg.image_size, cfg.image_size, generator=g)

@pytest.fixture(scope='module')
def ckpt(tmp_path_factory, model, tok): return save_video_lmm(tmp_path_factory.mktemp('ckpt')/'tiny', model, tok)


def test_tokenizer_round_trip_and_template(tmp_path, tok):
    from transformers import AutoTokenizer
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    msgs = [{'role': 'user', 'content': [{'type': 'video'}, {'type': 'text', 'text': 'What color is the square?'}]}]
    text = back.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == '<|im_start|>user\n<|vision_start|><video><|vision_end|>What color is the square?<|im_end|>\n<|im_start|>assistant\n'
    assert back.apply_chat_template(msgs, tokenize=False) == text.removesuffix('<|im_start|>assistant\n')
    for t in (tok, back):
        assert (t.video_token, t.eos_token, t.pad_token, t.bos_token) == ('<video>', '<|im_end|>', '<pad>', '<s>')
    assert back.get_vocab() == tok.get_vocab()
    # every word is one token at the start of an answer and mid-sentence, and the chat roles are single tokens
    for word in ['red', 'yellow', 'left', 'two', 'user', 'assistant']: assert len(back(word)['input_ids']) == 1, word
    for word in ['red', 'yellow', 'left']: assert len(back(' ' + word)['input_ids']) == 1, word
    assert back.decode(back('A red square moves left.')['input_ids']) == 'A red square moves left.'


def test_num_video_tokens_matches_features(model, tok, cfg, pixels):
    with torch.no_grad():
        for pooling in ('llava_next', 'spatiotemporal'):
            m = model if pooling == 'llava_next' else build_video_lmm(dataclasses.replace(cfg, pooling=pooling), tok)
            for frames in (1, FRAMES):
                assert encode_video(m, pixels[:2, :frames]).shape == (2, num_video_tokens(m, frames), cfg.text_hidden)
    assert num_video_tokens(ModelConfig(image_size=336, patch_size=14, pooling='spatiotemporal'), 50) == 626


def test_save_load_round_trip(ckpt, model, tok, pixels):
    loaded = load_video_lmm(ckpt)
    ids, mask = batch(tok, num_video_tokens(model, FRAMES))
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels).logits
        b = loaded.model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels).logits
    assert torch.equal(a, b)
    assert loaded.tokenizer.get_vocab() == tok.get_vocab() and loaded.tokenizer.chat_template == tok.chat_template
    assert loaded.preprocess.mean == CLIP_MEAN and loaded.preprocess.height == 64
    assert loaded.model.generation_config.pad_token_id == tok.pad_token_id


def test_frame_preprocess_file_order(tmp_path):
    d = tmp_path
    (d/'preprocessor_config.json').write_text(json.dumps({'image_mean': [0.1] * 3, 'image_std': [0.2] * 3, 'size': {'height': 32, 'width': 48}}))
    got = read_frame_preprocess(d, 99)
    assert (got.height, got.width, got.mean, got.source.endswith('preprocessor_config.json')) == (32, 48, (0.1,) * 3, True)
    (d/'processor_config.json').write_text(json.dumps({'video_processor': {'image_mean': [0.3] * 3, 'image_std': [0.4] * 3, 'size': 16}}))
    got = read_frame_preprocess(d, 99)
    assert (got.height, got.mean, got.source.endswith('[video_processor]')) == (16, (0.3,) * 3, True)
    (d/'video_preprocessor_config.json').write_text('{"image_mean": [0.5, 0.5]')
    with pytest.raises(ValueError, match='video_preprocessor_config.json: invalid JSON'): read_frame_preprocess(d, 99)


def test_load_errors(tmp_path, ckpt):
    with pytest.raises(FileNotFoundError, match='the hub is offline'): load_video_lmm('some-org/some-video-lmm')
    with pytest.raises(FileNotFoundError, match='no config.json'): load_video_lmm(tmp_path)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"): load_video_lmm(ckpt, dtype='fp8')
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match='load_in_4bit needs a GPU'): load_video_lmm(ckpt, load_in_4bit=True)
        with pytest.raises(RuntimeError, match='no GPU is available'): load_video_lmm(ckpt, device='cuda')


@pytest.mark.parametrize('side', ['left', 'right'])
def test_shared_features_equal_pixel_path(model, tok, pixels, side):
    ids, mask = batch(tok, num_video_tokens(model, FRAMES), side, ANSWERS)
    with torch.no_grad():
        direct = model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels).logits
        shared = model(inputs_embeds=embed_inputs(model, ids, encode_video(model, pixels)), attention_mask=mask).logits
    torch.testing.assert_close(shared, direct, rtol=0, atol=1e-5)


def test_embed_inputs_rows_without_video_and_gradients(model, tok, pixels):
    ids, mask = batch(tok, num_video_tokens(model, FRAMES))
    words = tok('red left two')['input_ids']
    text_only = torch.full_like(ids[:1], tok.pad_token_id); text_only[0, -len(words):] = torch.tensor(words)
    mixed = torch.cat([ids[:1], text_only, ids[1:2]])
    feats = encode_video(model, pixels[:2])
    embeds = embed_inputs(model, mixed, feats)
    torch.testing.assert_close(embeds[0], embed_inputs(model, ids[:1], feats[:1])[0])
    torch.testing.assert_close(embeds[2], embed_inputs(model, ids[1:2], feats[1:2])[0])
    # the vision tower is trained through the shared path (SFT trains it)
    model.zero_grad()
    embeds.sum().backward()
    assert model.model.vision_tower.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    model.zero_grad()
    with pytest.raises(ValueError, match=r'placeholders per row are \[\d+, 0, \d+\], but the features are 3 videos'):
        embed_inputs(model, mixed, encode_video(model, pixels))


def test_generation_batched_equals_one_by_one(model, tok, pixels):
    ids, mask = batch(tok, num_video_tokens(model, FRAMES))
    assert (mask[:, 0] == 0).any()  # really left padded
    with torch.no_grad():
        feats = encode_video(model, pixels)
        out = generate_with_video(model, ids, mask, feats, max_new_tokens=10, do_sample=False)
        for i in range(len(QUESTIONS)):
            keep = mask[i].bool()
            one = generate_with_video(model, ids[i:i + 1, keep], mask[i:i + 1, keep], feats[i:i + 1], max_new_tokens=10, do_sample=False)[0]
            assert out[i, :len(one)].tolist() == one.tolist()
            assert (out[i, len(one):] == tok.pad_token_id).all()


def test_static_sampler_compiles_once(model, tok, pixels):
    "The compiled decode step (inductor; on a GPU with CUDA graphs) gives the eager step's tokens and compiles once: not again for the next rollout, nor after an in-place weight change."
    from torch._dynamo.utils import counters
    ids, mask = batch(tok, num_video_tokens(model, FRAMES))
    changed = copy.deepcopy(model)   # its weights change in place below
    with torch.no_grad(): feats = encode_video(changed, pixels)
    greedy = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id, return_dict_in_generate=True, output_logits=True)
    eager, compiled = StaticCacheSampler(changed, compile=False), StaticCacheSampler(changed, compile=True)
    def same_as_eager():
        want, got = eager(ids, mask, feats, **greedy), compiled(ids, mask, feats, **greedy)
        assert got.sequences.tolist() == want.sequences.tolist()
        torch.testing.assert_close(torch.stack(got.logits), torch.stack(want.logits), rtol=1e-4, atol=1e-4)
    graphs = counters['stats']['unique_graphs']
    same_as_eager()
    assert counters['stats']['unique_graphs'] == graphs + 1
    with torch.no_grad(): changed.get_output_embeddings().weight.mul_(1.5)   # as a refresh of a merged copy writes its weights
    same_as_eager()
    assert counters['stats']['unique_graphs'] == graphs + 1
    right_ids, right_mask = batch(tok, num_video_tokens(model, FRAMES), side='right')
    with pytest.raises(ValueError, match='must be left padded'): eager(right_ids, right_mask, feats, max_new_tokens=2)


def test_skinny_sampler_compiles_once(model, tok, pixels):
    "A model with `skinny_products` compiles into one decode-step graph (the custom operator opaque inside it) and samples what the plain model samples."
    from torch._dynamo.utils import counters
    ids, mask = batch(tok, num_video_tokens(model, FRAMES))
    with torch.no_grad(): feats = encode_video(model, pixels)
    greedy = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id, return_dict_in_generate=True, output_logits=True)
    skinny = StaticCacheSampler(skinny_products(copy.deepcopy(model)), compile=True)
    graphs = counters['stats']['unique_graphs']
    for _ in range(2):
        want, got = StaticCacheSampler(model, compile=False)(ids, mask, feats, **greedy), skinny(ids, mask, feats, **greedy)
        assert got.sequences.tolist() == want.sequences.tolist()
        torch.testing.assert_close(torch.stack(got.logits), torch.stack(want.logits), rtol=1e-4, atol=1e-4)
    assert counters['stats']['unique_graphs'] == graphs + 1


def test_lora_on_language_model_only_and_reference(model, tok, pixels):
    ids, mask = batch(tok, num_video_tokens(model, FRAMES))
    with torch.no_grad(): base = model(inputs_embeds=embed_inputs(model, ids, encode_video(model, pixels)), attention_mask=mask).logits
    policy = add_role_adapter(copy.deepcopy(model), 'policy', target_modules=None, init_lora_weights=False)
    lora_names = [n for n, _ in policy.named_modules() if 'lora_A' in n]
    assert lora_names and all('language_model' in n for n in lora_names)
    assert not any('vision_tower' in n or 'multi_modal_projector' in n for n, _ in policy.named_modules() if 'lora' in n)
    # a plain name list would have hit the vision tower: the regex is what keeps it off
    assert any('vision_tower' in n and n.endswith('q_proj') for n, _ in model.named_modules())
    with torch.no_grad():
        embeds = embed_inputs(policy, ids, encode_video(policy, pixels))
        pol = policy(inputs_embeds=embeds, attention_mask=mask).logits
        with policy.disable_adapter(): ref = policy(inputs_embeds=embeds, attention_mask=mask).logits
    assert (pol - base).abs().max() > 1e-3
    torch.testing.assert_close(ref, base, rtol=0, atol=1e-6)



def test_fused_lora_dropout_two_roles_and_merge(model, tok, pixels):
    "One product only where it is exact: not under LoRA dropout while training; per role; peft's merge_and_unload still works."
    ids, mask = batch(tok, num_video_tokens(model, FRAMES))
    fused = fuse_lora_products(add_role_adapter(copy.deepcopy(model), 'first', r=4, alpha=8, dropout=0.5, init_lora_weights=False))
    fused = fuse_lora_products(add_role_adapter(fused, 'second', r=4, alpha=8, init_lora_weights=False))
    plain = copy.deepcopy(fused)
    for m in plain.modules(): vars(m).pop('forward', None)   # back to peft's own forward
    layer = next(m for n, m in fused.named_modules() if n.endswith('language_model.layers.0.mlp.up_proj'))
    states = torch.randn(2, 200, layer.in_features)
    with active_role(fused, 'first'):
        fused.train(); assert _fused_role(layer, states, (), {}) is None   # dropout acts on the LoRA branch alone
        fused.eval(); assert _fused_role(layer, states, (), {}) == 'first'
    assert _fused_role(layer, states, (), {}) == 'second'
    plain.eval()
    with torch.no_grad():
        embeds = embed_inputs(fused, ids, encode_video(fused, pixels))
        for role in ('first', 'second'):
            with active_role(fused, role), active_role(plain, role):
                torch.testing.assert_close(fused(inputs_embeds=embeds, attention_mask=mask).logits, plain(inputs_embeds=embeds, attention_mask=mask).logits,
                                           rtol=1e-5, atol=1e-5)
        expected = fused(inputs_embeds=embeds, attention_mask=mask).logits
        merged = fused.merge_and_unload()
        torch.testing.assert_close(merged(inputs_embeds=embeds, attention_mask=mask).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('variant', ['dora', 'lora_bias', 'trained_base'])
def test_fused_lora_leaves_other_layers_to_peft(model, variant):
    "DoRA, a LoRA bias or a base layer being trained: peft's own forward, whose result differs from x (W + s B A)^T or needs other gradients."
    kwargs = {'dora': dict(use_dora=True), 'lora_bias': dict(lora_bias=True)}.get(variant, {})
    fused = fuse_lora_products(add_role_adapter(copy.deepcopy(model), 'policy', r=4, alpha=8, init_lora_weights=False, **kwargs))
    layer = next(m for n, m in fused.named_modules() if n.endswith('language_model.layers.0.mlp.up_proj'))
    states = torch.randn(2, 200, layer.in_features)
    if variant == 'trained_base': layer.base_layer.weight.requires_grad_(True)
    assert _fused_role(layer, states, (), {}) is None
    layer.base_layer.weight.requires_grad_(False)
    if variant == 'trained_base': assert _fused_role(layer, states, (), {}) == 'policy'   # the same layer, frozen again

def test_scalar_head_padding_side_and_round_trip(tmp_path, model, tok, pixels, ckpt):
    n = num_video_tokens(model, FRAMES)
    left, lmask = batch(tok, n, 'left', ANSWERS)
    right, rmask = batch(tok, n, 'right', ANSWERS)
    backbone = add_role_adapter(copy.deepcopy(model), 'reward', init_lora_weights=False)
    rm = ScalarHeadModel(backbone, role='reward')
    with torch.no_grad():
        feats = encode_video(model, pixels)
        s_left, s_right = rm(left, lmask, feats), rm(right, rmask, feats)
        per_tok = ScalarHeadModel(backbone, role='reward', per_token=True)
        per_tok.head.load_state_dict(rm.head.state_dict())
        v = per_tok(right, rmask, feats)
    torch.testing.assert_close(s_left, s_right, rtol=0, atol=1e-5)
    # the sequence score is the per-token value at the last real token
    torch.testing.assert_close(v.gather(1, last_token_index(rmask)[:, None]).squeeze(1), s_right, rtol=0, atol=1e-6)
    assert s_left.std() > 0
    rm.save_pretrained(tmp_path/'rm')
    assert not list((tmp_path/'rm').rglob('*.bin')) and not list((tmp_path/'rm').rglob('*.pt'))
    back = ScalarHeadModel.from_pretrained(tmp_path/'rm', load_video_lmm(ckpt).model)
    with torch.no_grad(): torch.testing.assert_close(back(left, lmask, feats), s_left, rtol=0, atol=1e-6)
    # loaded beside another role's adapter on the same base: each runs with its own
    shared = add_role_adapter(load_video_lmm(ckpt).model, 'policy')
    again = ScalarHeadModel.from_pretrained(tmp_path/'rm', shared)
    assert sorted(shared.peft_config) == ['policy', 'reward'] and shared.active_adapter == 'policy'
    with torch.no_grad(): torch.testing.assert_close(again(left, lmask, feats), s_left, rtol=0, atol=1e-6)
    assert shared.active_adapter == 'policy'


def test_active_role_restores_trainability(model):
    m = add_role_adapter(copy.deepcopy(model), 'reward')
    m = add_role_adapter(m, 'value')
    before = {n: p.requires_grad for n, p in m.named_parameters()}
    with active_role(m, 'reward'): assert m.active_adapter == 'reward'
    assert m.active_adapter == 'value' and before == {n: p.requires_grad for n, p in m.named_parameters()}



def _logits(m, embeds, mask):
    with torch.no_grad(): return m(inputs_embeds=embeds, attention_mask=mask).logits

@pytest.mark.parametrize('auxiliary', [False, True])
def test_adapter_switching_matches_peft(model, tok, pixels, auxiliary):
    "active_role / adapters_disabled give peft's set_adapter / disable_adapter outputs exactly, also after an adapter is added; requires_grad restored."
    extra = dict(modules_to_save=['multi_modal_projector']) if auxiliary else {}   # peft's auxiliary modules: peft's own switching
    some = lm_lora_target_regex(model, ['q_proj', 'v_proj'])
    m = add_role_adapter(copy.deepcopy(model), 'first', init_lora_weights=False, target_modules=some, **extra)
    m = add_role_adapter(m, 'second', init_lora_weights=False, target_modules=some, **extra)
    ids, mask = batch(tok, num_video_tokens(m, FRAMES))
    with torch.no_grad(): embeds = embed_inputs(m, ids, encode_video(m, pixels))
    def peft_outputs(roles):
        out = {}
        for r in roles: m.set_adapter(r); out[r] = _logits(m, embeds, mask)
        m.set_adapter('second')
        with m.disable_adapter(): out[None] = _logits(m, embeds, mask)
        m.set_adapter('second')
        return out
    def check(roles):
        expected = peft_outputs(roles)
        grads = {n: p.requires_grad for n, p in m.named_parameters()}
        for r in roles:
            with active_role(m, r): assert torch.equal(_logits(m, embeds, mask), expected[r]), r
        with adapters_disabled(m): assert torch.equal(_logits(m, embeds, mask), expected[None])
        assert m.active_adapter == 'second' and grads == {n: p.requires_grad for n, p in m.named_parameters()}
        assert torch.equal(_logits(m, embeds, mask), expected['second'])
    assert (_adapter_layers(m)[0] is None) == auxiliary   # LoRA layers alone: switched layer by layer
    check(['first', 'second'])
    # a third adapter, added after the switches above, also on layers the others do not have: they are found
    m = add_role_adapter(m, 'third', init_lora_weights=False, target_modules=lm_lora_target_regex(m, ['v_proj', 'o_proj']), **extra)
    m.set_adapter('second')
    check(['first', 'second', 'third'])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_cuda_bf16_load_and_generate(ckpt, tok, pixels):
    lm = load_video_lmm(ckpt, dtype='bfloat16', device='cuda')
    ids, mask = batch(tok, num_video_tokens(lm.model, FRAMES))
    with torch.no_grad():
        feats = encode_video(lm.model, pixels.cuda())
        assert feats.dtype == torch.bfloat16 and feats.is_cuda
        out = generate_with_video(lm.model, ids.cuda(), mask.cuda(), feats, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == len(QUESTIONS)
    rm = ScalarHeadModel(add_role_adapter(lm.model, 'reward'), role='reward')
    with torch.no_grad(): assert rm(ids.cuda(), mask.cuda(), feats).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available() or not __import__('importlib').util.find_spec('bitsandbytes'), reason='needs a GPU and bitsandbytes')
def test_cuda_4bit_load(ckpt):
    lm = load_video_lmm(ckpt, dtype='bfloat16', device='cuda', load_in_4bit=True)
    assert type(lm.model.model.language_model.layers[0].self_attn.q_proj).__name__ == 'Linear4bit'
    assert type(lm.model.model.vision_tower.encoder.layers[0].self_attn.q_proj).__name__ == 'Linear'


SKINNY_CHECK = r'''
import torch
from vlm_rlaif.model import skinny_product
torch.manual_seed(0)
# float32 and float16: Triton 3.9's interpreter computes a bfloat16 tl.dot wrongly (the GPU benchmark checks bfloat16)
for dtype in (torch.float32, torch.float16):
    for rows, n, k, block_n, block_k, bias in [(1, 70, 300, 16, 128, True), (5, 70, 300, 32, 128, False), (16, 64, 256, 64, 256, True),
                                             (17, 33, 40, 16, 32, True), (40, 48, 512, 32, 256, False)]:
        x, w, b = torch.randn(rows, k, dtype=dtype), torch.randn(n, k, dtype=dtype), torch.randn(n, dtype=dtype)
        got = skinny_product(x.view(1, rows, k), w, b if bias else None, block_n=block_n, block_k=block_k)
        assert got.shape == (1, rows, n) and got.dtype == dtype, (got.shape, got.dtype)
        want = torch.nn.functional.linear(x.float(), w.float(), b.float() if bias else None)
        err = (got[0].float() - want).abs().max().item()
        assert err <= (1e-4 if dtype == torch.float32 else 2e-2) * want.abs().max().item(), (dtype, rows, n, k, block_n, err)
print('skinny kernel ok')
'''

@pytest.mark.skipif(sys.platform != 'linux', reason='Triton has Linux wheels only (scripts/setup.sh installs it there)')
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU test_skinny_kernel_cuda runs the compiled kernel (and torch's own Triton, whose interpreter may differ)")
def test_skinny_kernel_interpreted():
    "The skinny product's Triton kernel in Triton's CPU interpreter (set before Triton is imported): rows padded, ragged column and input tiles, bias."
    env = {**os.environ, 'TRITON_INTERPRET': '1'}
    done = subprocess.run([sys.executable, '-c', SKINNY_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and 'skinny kernel ok' in done.stdout, done.stdout[-2000:] + done.stderr[-4000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='the compiled kernel needs a GPU (the interpreted one is tested above)')
def test_skinny_kernel_cuda():
    "On a GPU: the autotuned kernel against float32 products for every row tile (16, 32, 64) and both half precisions; what `skinny_linear` leaves to torch."
    from vlm_rlaif.model import skinny_linear, skinny_product
    torch.manual_seed(0)
    # the autotuned kernel at a 7B shape, every row tile; fixed tiles on ragged shapes (columns and inputs not multiples of them) and float16
    for dtype, n, k, tiles in ((torch.bfloat16, 4096, 4096, {}), (torch.bfloat16, 1000, 392, dict(block_n=64, block_k=256)),
                               (torch.float16, 1000, 392, dict(block_n=32, block_k=128))):
        for rows in (1, 5, 16, 17, 33, 64):
            x, w, b = (torch.randn(*shape, device='cuda', dtype=dtype) for shape in ((rows, k), (n, k), (n,)))
            want = torch.nn.functional.linear(x.float(), w.float(), b.float())
            got = skinny_product(x, w, b, **tiles)
            assert got.dtype == dtype and (got.float() - want).abs().max() <= 1e-2 * want.abs().max(), (dtype, rows, n, k, tiles)
    x, w = torch.randn(65, 64, device='cuda', dtype=torch.bfloat16), torch.randn(32, 64, device='cuda', dtype=torch.bfloat16)
    assert torch.equal(skinny_linear(x, w, None), torch.nn.functional.linear(x, w))                  # past 64 rows: cuBLAS
    assert torch.equal(skinny_linear(x[:8].float(), w.float(), None), torch.nn.functional.linear(x[:8].float(), w.float()))   # float32: torch
