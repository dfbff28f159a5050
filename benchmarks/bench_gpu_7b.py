"""PPO phases at real scale on one GPU: a LLaVA-NeXT-Video-7B-shaped model with random weights (Vicuna-7B text
config, CLIP ViT-L/14-336 vision config; nothing is downloaded), bf16, batch 16 videos x 8 frames, 128 new tokens.

Measured side by side in one run, through the package's own code path (model.encode_video, embed_inputs,
generate_with_video, add_role_adapter, ScalarHeadModel):
  vision encoding; prefill; decode step time against the memory-bandwidth floor
  (LM weight bytes + KV-cache bytes at the end) / 3.35 TB/s, for plain `generate` (dynamic cache), static cache +
  compilation; as the PPO rollout samples (`vlm_rlaif.ppo.sampling_kwargs`; with `rollout_cache='static'` through
  `model.StaticCacheSampler`, as `ppo.make_session` sets it up; the LoRA updated in place before every call) from a
  `MergedCopy` (rollout_weights='merged', refreshed before every call) and through the unmerged adapter
  (rollout_weights='adapter'); then, budget allowing, the policy's LoRA active, after an
  in-place LoRA update, inside disable_adapter() (the reference), with the LoRA merged by peft. Each row counts the
  graphs torch.compile built on its first call and after it (a recompilation per PPO step would show there).
  The learn phase (LoRA forward + backward over prompt + response, `vlm_rlaif.ppo.response_logprobs`, so in
  `lm_precision`) in tokens/s and MFU: without gradient checkpointing at half --learn-batch, once more with peft's
  float32 LoRA casts (the forward as it ran before `lm_precision`), once more with every decoder layer compiled;
  with checkpointing at --learn-batch and at twice it.
  The peak memory of one PPO step with the four roles (policy + reference on one base, reward + value on another),
  with the merged copy the rollout samples from.

Usage: python benchmarks/bench_gpu_7b.py [--shape 7b|tiny] [--out FILE] [--no-compile] [--budget-s 480] [--only learn]
Each measurement is guarded: a failure is recorded and the next one runs; past --budget-s the rest is skipped.
"""
import argparse, datetime, functools, json, os, platform, sys, time, traceback
from types import SimpleNamespace
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('HF_HUB_OFFLINE', '1')
from vlm_rlaif.model import MergedCopy, ScalarHeadModel, StaticCacheSampler, add_role_adapter, embed_inputs, encode_video, generate_with_video, num_video_tokens
from vlm_rlaif.ppo import PPOStageConfig, response_logprobs, sampling_kwargs

HBM_BYTES_PER_S = 3.35e12       # H100 SXM memory bandwidth
PEAK_BF16_DENSE = 989e12        # H100 SXM dense bf16 (spec); perf-notes.md measured ~790e12 in practice

def build(shape:str, device, dtype):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration
    if shape == '7b':
        text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5)
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
                                  projection_dim=768)
        layer = -2
    else:
        text = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                           max_position_embeddings=1024)
        vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14)
        layer = -1
    video_id = text.vocab_size - 1  # the video placeholder: the last id of the (random-weight) vocabulary
    cfg = LlavaNextVideoConfig(text_config=text, vision_config=vision, video_token_index=video_id, image_token_index=video_id - 1,
                               vision_feature_layer=layer, vision_feature_select_strategy='default', spatial_pool_stride=2)
    cfg.video_pooling = 'llava_next'
    torch.manual_seed(0)
    prev = torch.get_default_dtype(); torch.set_default_dtype(dtype)
    with torch.device(device): model = LlavaNextVideoForConditionalGeneration(cfg)
    torch.set_default_dtype(prev)
    model.eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None  # every row generates all the new tokens
    return model

def add_shape_args(ap:argparse.ArgumentParser):
    "The model and the rollout the GPU scripts measure: --shape, --batch, --frames, --new-tokens."
    ap.add_argument('--shape', default='7b', choices=['7b', 'tiny'])
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--frames', type=int, default=8)
    ap.add_argument('--new-tokens', type=int, default=128)

def video_prompts(model, batch:int, frames:int, device, dtype, text_len:int=16):
    "(pixels, input_ids, attention_mask): random frames, and prompts of text_len random tokens, the video's placeholders, text_len more."
    cfg = model.config
    size, vid, n_vid = cfg.vision_config.image_size, cfg.video_token_index, num_video_tokens(model, frames)
    g = torch.Generator(device='cpu').manual_seed(0)
    pixels = torch.randn(batch, frames, 3, size, size, generator=g).to(device, dtype)
    ids = torch.randint(1, vid - 2, (batch, 2 * text_len + n_vid), generator=g)   # never a placeholder id
    ids[:, text_len:text_len + n_vid] = vid
    return pixels, ids.to(device), torch.ones_like(ids).to(device)

def lm_param_count(model) -> int:
    "Parameters of the language model (LoRA weights excluded)."
    return sum(p.numel() for n, p in model.named_parameters() if 'language_model' in n and 'lora_' not in n)

def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()

def compiled_graphs() -> int:
    "Graphs torch.compile has built so far in this process (a rise between two calls is a recompilation)."
    from torch._dynamo.utils import counters
    return counters['stats']['unique_graphs']

def nudge_lora(model):
    "Change every LoRA weight in place, as an optimizer step does (same tensors, new values)."
    for n, p in model.named_parameters():
        if 'lora_' in n: p.add_(torch.randn_like(p) * 1e-4)

def write_report(out:str, title:str, device, command:str, lines:list[str], res:dict|None=None):
    "A report: title, date and machine, library versions, the command that wrote it, the log lines (and the results as JSON)."
    machine = torch.cuda.get_device_name(0) if device.type == 'cuda' else platform.processor() or 'cpu'
    head = [f'# {title}', '', f'- date: {datetime.date.today()}  machine: {machine}',
            f'- torch {torch.__version__}, transformers {__import__("transformers").__version__}, peft {__import__("peft").__version__}',
            f'- command: `{command}`', '', '```']
    tail = ['```'] + (['', '```json', json.dumps(res, indent=1), '```'] if res is not None else [])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text('\n'.join(head + lines + tail) + '\n')

def guarded(name:str, fn, log, t_start:float, budget_s:float):
    "fn() unless the run is past its budget; a failure is logged (the next measurement still runs) and gives None."
    if time.time() - t_start > budget_s: log(f'{name}: skipped (past the {budget_s:.0f} s budget)'); return None
    try: return fn()
    except Exception as e:
        log(f'{name}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}')
        traceback.print_exc(); return None

def timed(fn, device, reps=1):
    "(result of the last call, mean seconds per call)"
    sync(device); t0 = time.perf_counter()
    for _ in range(reps): out = fn()
    sync(device)
    return out, (time.perf_counter() - t0) / reps

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(ap)
    ap.add_argument('--learn-batch', type=int, default=8)
    ap.add_argument('--no-compile', action='store_true')
    ap.add_argument('--budget-s', type=float, default=480)
    ap.add_argument('--only', choices=['all', 'learn'], default='all', help="'learn': the learn-phase rows only (after vision and prefill)")
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'gpu_7b.md'))
    a = ap.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    t_start = time.time()
    res, lines = {}, []
    command = (f'python benchmarks/bench_gpu_7b.py --shape {a.shape}{" --no-compile" if a.no_compile else ""}'
               f'{f" --budget-s {a.budget_s:g}" if a.budget_s != 480 else ""}{f" --only {a.only}" if a.only != "all" else ""}')
    def log(msg):   # the report is rewritten after every line: a run cut short keeps what it measured
        print(msg, flush=True); lines.append(msg)
        write_report(a.out, f'GPU benchmark: PPO phases at the 7B shape ({a.shape})', device, command, lines, res)
    def step(name, fn, part='decode'):
        if a.only != 'all' and part not in (a.only, 'setup'): return None
        return guarded(name, fn, log, t_start, a.budget_s)

    model, t_build = timed(lambda: build(a.shape, device, dtype), device)
    cfg = model.config
    n_lm = lm_param_count(model)
    lm_bytes = n_lm * torch.finfo(dtype).bits // 8
    n_vid = num_video_tokens(model, a.frames)
    log(f'model built in {t_build:.1f}s: LM params {n_lm/1e9:.2f} B ({lm_bytes/1e9:.1f} GB), {n_vid} video tokens for {a.frames} frames')
    pixels, ids, mask = video_prompts(model, a.batch, a.frames, device, dtype)
    vid = cfg.video_token_index
    prompt_len = ids.shape[1]
    # KV cache at the end of generation: K and V, every layer, every row, every position
    tc = cfg.text_config
    kv_bytes = 2 * tc.num_hidden_layers * a.batch * (prompt_len + a.new_tokens) * tc.num_key_value_heads * (tc.hidden_size // tc.num_attention_heads) * torch.finfo(dtype).bits // 8
    floor_s = (lm_bytes + kv_bytes) / HBM_BYTES_PER_S
    res.update(lm_params=n_lm, lm_bytes=lm_bytes, kv_bytes_end=kv_bytes, decode_floor_ms=floor_s * 1e3, prompt_len=prompt_len, batch=a.batch)
    log(f'prompt {prompt_len} tokens x {a.batch}; decode floor (weights {lm_bytes/1e9:.1f} GB + KV {kv_bytes/1e9:.1f} GB) / 3.35 TB/s = {floor_s*1e3:.2f} ms')

    with torch.no_grad():
        feats = step('vision', lambda: timed(lambda: encode_video(model, pixels), device, 1)[0], 'setup')
        if feats is None: return
        _, t_vis = timed(lambda: encode_video(model, pixels), device, 3)
        res['vision_ms'] = t_vis * 1e3; log(f'vision encoding, {a.batch} x {a.frames} frames: {t_vis*1e3:.1f} ms')
        def prefill():
            emb = embed_inputs(model, ids, feats)
            return model(inputs_embeds=emb, attention_mask=mask, use_cache=True, logits_to_keep=1)
        step('prefill warm-up', prefill, 'setup')
        r = step('prefill', lambda: timed(prefill, device, 3), 'setup')
        t_pre = r[1] if r else float('nan')
        res['prefill_ms'] = t_pre * 1e3; log(f'prefill: {t_pre*1e3:.1f} ms')

        def gen(m, **kw):
            return generate_with_video(m, ids, mask, feats, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=True, **kw)
        def decode_ms(total_s): return (total_s - t_pre) / (a.new_tokens - 1) * 1e3
        def measure(label, m, reps=2, call=None, **kw):
            call = call or (lambda: gen(m, **kw))
            g0 = compiled_graphs()
            _, first = timed(call, device)
            g1 = compiled_graphs()
            _, t = timed(call, device, reps)
            ms = decode_ms(t)
            res[label] = dict(first_call_s=first, generate_s=t, decode_step_ms=ms, x_floor=ms / (floor_s * 1e3),
                              graphs_first_call=g1 - g0, graphs_after=compiled_graphs() - g1)
            log(f'{label}: first call {first:.1f}s ({g1 - g0} graphs compiled), then {t:.2f}s per generate = {ms:.2f} ms/step = '
                f'{ms/(floor_s*1e3):.2f}x floor ({compiled_graphs() - g1} graphs compiled)')
        static = {} if a.no_compile else dict(cache_implementation='static')
        if not a.no_compile: step('static', lambda: measure('decode_static_compiled', model, **static))

    policy = add_role_adapter(model, 'policy', r=64, alpha=16)
    for n, p in policy.named_parameters():   # a trained adapter: B is zero at init, which would make LoRA a no-op
        if 'lora_B' in n: torch.nn.init.normal_(p, std=1e-3)
    # the PPO rollout itself: vlm_rlaif.ppo.sampling_kwargs (pure sampling, placeholders suppressed) through what
    # ppo.make_session samples with, the LoRA updated in place before every rollout as an optimizer step would
    kwargs = sampling_kwargs(PPOStageConfig(max_new_tokens=a.new_tokens), SimpleNamespace(eos_token_id=None, pad_token_id=0), policy)   # no EOS: every row samples all tokens
    def ppo_sampler(m):   # rollout_cache='static': the session's StaticCacheSampler; 'dynamic': generate
        return StaticCacheSampler(m) if static else functools.partial(generate_with_video, m)
    sampler = None
    with torch.no_grad():
        def merged_rollout():   # rollout_weights='merged': ppo.rollout refreshes the copy, then samples from it
            nonlocal sampler
            sampler = sampler or MergedCopy(policy, 'policy')
            draw = ppo_sampler(sampler.model)
            def update_refresh_generate():
                nudge_lora(policy); sampler.refresh()
                return draw(ids, mask, feats, **kwargs)
            measure('decode_ppo_rollout_merged', sampler.model, reps=3, call=update_refresh_generate)
        step('ppo rollout, merged copy', merged_rollout)
        draw_adapter = ppo_sampler(policy)
        def update_then_generate():   # rollout_weights='adapter'
            nudge_lora(policy)
            return draw_adapter(ids, mask, feats, **kwargs)
        step('ppo rollout, adapter', lambda: measure('decode_ppo_rollout', policy, reps=3, call=update_then_generate))

    # the learn phase: LoRA forward + backward over prompt + response
    decoder_layers = policy.get_base_model().get_decoder().layers
    def learn(b, checkpointing=True, variant=''):
        label = f'learn_b{b}' + ('_ckpt' if checkpointing else '') + (f'_{variant}' if variant else '')
        policy.train()
        if checkpointing: policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})
        policy.enable_input_require_grads()
        if variant == 'compiled':
            for layer in decoder_layers: layer.compile()
        if device.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        resp = torch.randint(1, vid - 2, (b, a.new_tokens), device=device)
        seq = torch.cat([ids[:b], resp], 1)
        m = torch.ones_like(seq)
        with torch.no_grad(): f = feats[:b]
        def fwd_bwd():
            emb = embed_inputs(policy, seq, f)
            if variant == 'peft_casts':   # the forward as it ran before lm_precision: peft casts each LoRA input to float32
                out = policy(inputs_embeds=emb, attention_mask=m, logits_to_keep=a.new_tokens + 1)
                logp = out.logits[:, :-1].float().log_softmax(-1).gather(-1, resp[..., None]).mean()
            else: logp = response_logprobs(policy, emb, m, resp).mean()
            (-logp).backward()
            policy.zero_grad(set_to_none=True)
        try:
            g0 = compiled_graphs()
            _, first = timed(fwd_bwd, device)
            g1 = compiled_graphs()
            _, t = timed(fwd_bwd, device, 3)
        finally:
            policy.gradient_checkpointing_disable(); policy.eval()
            if variant == 'compiled':
                for layer in decoder_layers: layer._compiled_call_impl = None   # back to eager for the rows after
        tokens = b * seq.shape[1]
        tps = tokens / t
        # MFU's convention: 6N per token (2N forward + 4N backward). With LoRA the frozen weights get no gradient, so the
        # hardware does 4N (+2N recomputation under checkpointing): the second figure counts what it really computed.
        flops, hw = 6 * n_lm * tokens / t, (6 if checkpointing else 4) * n_lm * tokens / t
        res[label] = dict(seconds=t, first_call_s=first, graphs_first_call=g1 - g0, tokens=tokens, tokens_per_s=tps, tflops_6n=flops / 1e12,
                          mfu_spec=flops / PEAK_BF16_DENSE, hardware_tflops=hw / 1e12,
                          peak_mem_gb=torch.cuda.max_memory_allocated() / 1e9 if device.type == 'cuda' else None)
        log(f'{label}: {b} x {seq.shape[1]} tokens in {t:.2f}s = {tps:,.0f} tokens/s, {flops/1e12:.0f} TFLOP/s (6N), MFU {flops/PEAK_BF16_DENSE:.1%} '
            f'of 989 TFLOP/s; computed {hw/1e12:.0f} TFLOP/s; peak {res[label]["peak_mem_gb"] or 0:.1f} GB; first call {first:.1f}s ({g1 - g0} graphs)')
    half = max(1, a.learn_batch // 2)
    if sampler is not None:   # its memory back for the learn rows (four_roles makes its own)
        sampler = None
        if device.type == 'cuda': torch.cuda.empty_cache()
    step('learn, no checkpointing', lambda: learn(half, checkpointing=False), 'learn')
    step('learn, no checkpointing, peft casts', lambda: learn(half, checkpointing=False, variant='peft_casts'), 'learn')
    step('learn, checkpointing', lambda: learn(a.learn_batch), 'learn')
    step('learn, checkpointing, peft casts', lambda: learn(a.learn_batch, variant='peft_casts'), 'learn')
    step('learn, checkpointing, batch x2', lambda: learn(a.learn_batch * 2), 'learn')

    # one PPO step with the four roles: policy + reference (one base), reward + value (a second base)
    def four_roles():
        if device.type == 'cuda': torch.cuda.reset_peak_memory_stats()
        base2 = build(a.shape, device, dtype)
        rm_lm = add_role_adapter(base2, 'reward', r=64, alpha=16)
        reward = ScalarHeadModel(rm_lm, role='reward')
        value = ScalarHeadModel(add_role_adapter(rm_lm, 'value', r=64, alpha=16), role='value', per_token=True, zero_init=True)
        reward.to(device); value.to(device)
        b = a.learn_batch
        sampler = MergedCopy(policy, 'policy')   # rollout_weights='merged'
        with torch.no_grad():   # as the rollout samples, then the score phase's forwards
            resp = ppo_sampler(sampler.model)(ids, mask, feats, **kwargs)[:b]
            seq = torch.cat([ids[:b], resp], 1); m = torch.ones_like(seq); f = feats[:b]
            emb = embed_inputs(policy, seq, f)
            response_logprobs(policy, emb, m, resp)
            with policy.disable_adapter(): response_logprobs(policy, emb, m, resp)
            reward(seq, m, video_features=f)
        policy.train(); value.train()
        try:
            for mdl in (policy, rm_lm):
                mdl.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False}); mdl.enable_input_require_grads()
            response_logprobs(policy, embed_inputs(policy, seq, f), m, resp).mean().backward()
            value(seq, m, video_features=f).float().mean().backward()
            sync(device)
        finally:
            policy.gradient_checkpointing_disable(); policy.eval(); policy.zero_grad(set_to_none=True)
        peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == 'cuda' else float('nan')
        res['ppo_step_four_roles_peak_gb'] = peak
        log(f'one PPO step, four roles (two bases) and the merged copy the rollout samples from, batch {b}: peak memory {peak:.1f} GB')
    step('four roles', four_roles, 'memory')
    if device.type == 'cuda': torch.cuda.empty_cache()
    # experimental: every decoder layer compiled (torch.compile fuses the norms, rotary, activations and LoRA additions)
    if not a.no_compile:
        step('learn, no checkpointing, compiled layers', lambda: learn(half, checkpointing=False, variant='compiled'), 'learn')
        step('learn, checkpointing, compiled layers', lambda: learn(a.learn_batch, variant='compiled'), 'learn')

    # budget allowing: the unmerged LoRA, after an update, the reference, peft's merge (generate_with_video: in lm_precision)
    with torch.no_grad():
        step('lora', lambda: measure('decode_lora_unmerged', policy, **static))
        def update_and_measure():
            nudge_lora(policy)
            measure('decode_lora_after_update', policy, **static)
        step('lora update', update_and_measure)
        def reference():
            with policy.disable_adapter(): measure('decode_reference_disabled', policy, **static)
        step('reference', reference)
        def merged():
            policy.merge_adapter()
            try: measure('decode_lora_merged', policy, **static)
            finally: policy.unmerge_adapter()
        step('merged', merged)
        step('dynamic', lambda: measure('decode_dynamic', model, reps=1))
    log(f'total {time.time() - t_start:.0f}s')

if __name__ == '__main__':
    main()
