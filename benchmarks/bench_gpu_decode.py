"""Decoding inside a PPO rollout at the 7B shape on one GPU, against the memory-bandwidth floor (the model, prompts
and floor of bench_gpu_7b.py: random weights, bf16, batch 16 videos x 8 frames, 128 new tokens; floor = (LM weight
bytes + KV-cache bytes at the end) / 3.35 TB/s).

Side by side in one run, each sampling from a `MergedCopy` of the policy (LoRA r64 on every LM linear layer) that is
refreshed after an in-place update of the LoRA weights before every call (`rollout_weights='merged'`), with
`ppo.sampling_kwargs` (pure sampling, the placeholders suppressed), no EOS (every row samples every token):
  sampler_merged: `model.StaticCacheSampler`, how `ppo.rollout` samples with `rollout_cache='static'` (one compiled
                  decode step per token: forward + sampling in one CUDA graph);
  generate_merged: transformers' `generate` with `cache_implementation='static'` (it compiles the forward only; how
                  `ppo.rollout` sampled before the sampler);
  sampler_adapter: the sampler through the policy's unmerged adapter (`rollout_weights='adapter'`), budget allowing;
  sampler_merged_autotune: the sampler's step compiled with mode='max-autotune' (Triton products where faster);
  sampler_skinny: the sampler on the same copy with `model.skinny_products` (`rollout_products='skinny'`): its
                  16-row products in the package's Triton kernel instead of cuBLAS.
A decode step is (one rollout's time - one dynamic-cache prefill's time) / 127, as bench_gpu_7b.py counts it; for the
samplers also (one rollout - the same sampler's one-token rollout) / 127: the decode steps alone. Each row counts the
graphs torch.compile built on its first call and after it. Then, to say where the time goes: the kernels of four of the
sampler's decode steps (torch.profiler; skinny_profile: of sampler_skinny's), each product shape of the language model at
the decode shape with cuBLAS and with the skinny kernel (inside a CUDA graph, the weights rotated past the L2 cache), the
decode-shaped attention (one step's 32 calls) on each SDPA backend, and the
read bandwidth one large tensor reaches (the floor assumes 3.35 TB/s).

Usage: python benchmarks/bench_gpu_decode.py [--shape 7b|tiny] [--rows sampler,profile,...] [--budget-s 420] [--out FILE]
Each measurement is guarded: a failure is recorded and the next one runs; past --budget-s the rest is skipped.
"""
import argparse, copy, os, sys, time
from collections import Counter
from types import SimpleNamespace
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT/'benchmarks'))
os.environ.setdefault('HF_HUB_OFFLINE', '1')
from bench_gpu_7b import (HBM_BYTES_PER_S, add_shape_args, build, compiled_graphs, guarded, lm_param_count, nudge_lora, sync, timed, video_prompts,
                          write_report)
from profile_gpu_7b import table
from vlm_rlaif import model as vlm_model
from vlm_rlaif.model import (MergedCopy, StaticCacheSampler, add_role_adapter, embed_inputs, encode_video, generate_with_video, skinny_product,
                             skinny_products)
from vlm_rlaif.ppo import PPOStageConfig, sampling_kwargs

ROWS = ('sampler', 'profile', 'products', 'skinny', 'skinny_profile', 'attention', 'bandwidth', 'generate', 'adapter', 'autotune')

def cudagraph_skips() -> int:
    "Compiled graphs that inductor ran without CUDA graphs so far in this process (each a slower decode step)."
    from torch._dynamo.utils import counters
    return counters['inductor']['cudagraph_skips']

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(ap)
    ap.add_argument('--budget-s', type=float, default=420)
    ap.add_argument('--rows', default=','.join(ROWS), help=f'which measurements, in this order: {",".join(ROWS)}')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'gpu_decode.md'))
    a = ap.parse_args()
    if a.new_tokens < 8: ap.error('--new-tokens: at least 8 (the profile times four decode steps after two of warm-up)')
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    t_start, res, lines = time.time(), {}, []
    command = (f'python benchmarks/bench_gpu_decode.py --shape {a.shape}{f" --budget-s {a.budget_s:g}" if a.budget_s != 420 else ""}'
               f'{f" --rows {a.rows}" if a.rows != ",".join(ROWS) else ""}')
    def log(msg):   # the report is rewritten after every line: a run cut short keeps what it measured
        print(msg, flush=True); lines.append(msg)
        write_report(a.out, f'GPU benchmark: decoding inside a PPO rollout at the 7B shape ({a.shape})', device, command, lines, res)
    rows = a.rows.split(',')
    if unknown := set(rows) - set(ROWS): ap.error(f'--rows: unknown {sorted(unknown)}; choose from {",".join(ROWS)}')
    def step(name, fn):
        return guarded(name, fn, log, t_start, a.budget_s) if name in rows else None

    model = build(a.shape, device, dtype)
    tc = model.config.text_config
    lm_bytes = lm_param_count(model) * torch.finfo(dtype).bits // 8
    pixels, ids, mask = video_prompts(model, a.batch, a.frames, device, dtype)
    kv_bytes = 2 * tc.num_hidden_layers * a.batch * (ids.shape[1] + a.new_tokens) * tc.num_key_value_heads * (tc.hidden_size // tc.num_attention_heads) * torch.finfo(dtype).bits // 8
    floor_ms = (lm_bytes + kv_bytes) / HBM_BYTES_PER_S * 1e3
    res.update(lm_bytes=lm_bytes, kv_bytes_end=kv_bytes, decode_floor_ms=floor_ms, prompt_len=ids.shape[1], batch=a.batch, new_tokens=a.new_tokens)
    log(f'prompt {ids.shape[1]} tokens x {a.batch}, {a.new_tokens} new tokens; decode floor (weights {lm_bytes/1e9:.1f} GB + KV {kv_bytes/1e9:.1f} GB) / 3.35 TB/s = {floor_ms:.2f} ms')

    policy = add_role_adapter(model, 'policy', r=64, alpha=16)
    for n, p in policy.named_parameters():   # a trained adapter: B is zero at init, which would make LoRA a no-op
        if 'lora_B' in n: torch.nn.init.normal_(p, std=1e-3)
    merged = MergedCopy(policy, 'policy')
    kwargs = sampling_kwargs(PPOStageConfig(max_new_tokens=a.new_tokens), SimpleNamespace(eos_token_id=None, pad_token_id=0), policy)
    with torch.no_grad():
        feats = encode_video(policy, pixels)
        def prefill():   # what every rollout does before its first new token
            return merged.model(inputs_embeds=embed_inputs(merged.model, ids, feats), attention_mask=mask, use_cache=True, logits_to_keep=1)
        prefill()
        _, t_pre = timed(prefill, device, 3)
    res['prefill_ms'] = t_pre * 1e3
    log(f'prefill: {t_pre*1e3:.1f} ms')

    def measure(label, generate, reps=3, one_token=None):
        "generate: one rollout; one_token: the same rollout stopped after its first token (its own prefill), for the decode-only figure."
        def updated(call):   # an optimizer step's in-place update, the copy refreshed, then the rollout
            def run():
                with torch.no_grad():
                    nudge_lora(policy); merged.refresh()
                    return call()
            return run
        g0 = compiled_graphs()
        out, first = timed(updated(generate), device)
        g1 = compiled_graphs()
        _, t = timed(updated(generate), device, reps)
        ms = (t - t_pre) * 1e3 / (a.new_tokens - 1)
        only = ''
        if one_token is not None:
            timed(updated(one_token), device)
            _, t1 = timed(updated(one_token), device, reps)
            res.setdefault(label, {})['decode_only_ms'] = only_ms = (t - t1) * 1e3 / (a.new_tokens - 1)
            only = f'; (rollout - its own one-token rollout) / {a.new_tokens - 1} = {only_ms:.2f} ms/step = {only_ms/floor_ms:.2f}x floor'

        skips = cudagraph_skips()
        res[label] = res.get(label, {}) | dict(first_call_s=first, generate_s=t, decode_step_ms=ms, x_floor=ms / floor_ms, graphs_first_call=g1 - g0,
                          graphs_after=compiled_graphs() - g1, cudagraph_skips=skips, tokens=list(out.shape))
        log(f'{label}: first call {first:.1f}s ({g1 - g0} graphs compiled), then {t:.2f}s per rollout = {ms:.2f} ms/step = '
            f'{ms/floor_ms:.2f}x floor ({compiled_graphs() - g1} graphs compiled over {reps} calls; CUDA graphs skipped so far: {skips}); tokens {tuple(out.shape)}{only}')

    sampler = StaticCacheSampler(merged.model)
    one_token = StaticCacheSampler(merged.model, compile=False)   # a prefill and one draw: no decode step to compile
    first_only = {**kwargs, 'max_new_tokens': 1}
    step('sampler', lambda: measure('sampler_merged', lambda: sampler(ids, mask, feats, **kwargs), one_token=lambda: one_token(ids, mask, feats, **first_only)))

    def profile_decode(sampler, label):   # torch.profiler over four decode steps in the middle of one rollout (the compiled step's kernels, in its CUDA graph)
        from torch.profiler import ProfilerActivity, profile, schedule
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
        inner, steps = sampler.decode_step, 4
        with profile(activities=activities, schedule=schedule(wait=max(0, a.new_tokens // 2 - 4), warmup=2, active=steps, repeat=1)) as prof:
            def counted(*args):   # each step's kernels finish inside its own profiler step (the GPU otherwise runs a step behind the host)
                out = inner(*args); sync(device); prof.step(); return out
            sampler.decode_step = counted
            try:
                with torch.no_grad(): sampler(ids, mask, feats, **kwargs); sync(device)
            finally: sampler.decode_step = inner
        rows, per_kind = table(prof, device, 20)
        total = sum(per_kind.values()) / steps / 1e3
        res[f'profile_{label}_ms'] = {k: v / steps / 1e3 for k, v in per_kind.items()}
        log(f'kernels of {steps} decode steps of {label} (GPU time per step {total:.2f} ms = {total/floor_ms:.2f}x floor):')
        for r in rows: log('  ' + r)
    step('profile', lambda: profile_decode(sampler, 'sampler_merged'))

    def products():   # each product shape of the LM at a decode step (`batch` rows): cuBLAS against the skinny kernel
        if device.type != 'cuda': return log('products: the skinny kernel and CUDA graphs need a GPU')
        lm = [m for n, m in merged.model.named_modules() if isinstance(m, torch.nn.Linear) and ('language_model' in n or n == 'lm_head')]
        per_step = Counter((m.out_features, m.in_features) for m in lm)
        step_us = {'cuBLAS': 0.0, 'skinny': 0.0}
        for (n, k), count in sorted(per_step.items()):
            copies = max(2, -(-256 * 2 ** 20 // (n * k * 2)))   # >= 256 MB of weights per pass: each product reads its weight from memory, not from the 50 MB L2
            weights = [torch.randn(n, k, device=device, dtype=dtype) / k ** 0.5 for _ in range(copies)]
            x = torch.randn(a.batch, k, device=device, dtype=dtype)
            us = {}
            for name, product in (('cuBLAS', torch.nn.functional.linear), ('skinny', skinny_product)):
                def one_pass():
                    for w in weights: product(x, w)
                one_pass(); sync(device)   # the autotuner times its configurations here, outside the graph
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph): one_pass()
                graph.replay(); sync(device)
                _, t = timed(graph.replay, device, 20)
                us[name] = t / copies * 1e6
                step_us[name] += count * us[name]
            want = torch.nn.functional.linear(x, weights[0]).float()
            err = (skinny_product(x, weights[0]).float() - want).abs().max().item() / want.abs().max().item()
            res.setdefault('products', {})[f'{n}x{k}'] = dict(per_step=count, cublas_us=us['cuBLAS'], skinny_us=us['skinny'], rel_err=err)
            log(f'product {a.batch} x {k} -> {n} ({count} a step): cuBLAS {us["cuBLAS"]:.1f} us = {n * k * 2 / us["cuBLAS"] / 1e6:.2f} TB/s, '
                f'skinny {us["skinny"]:.1f} us = {n * k * 2 / us["skinny"] / 1e6:.2f} TB/s ({us["cuBLAS"] / us["skinny"]:.2f}x); '
                f'max |skinny - cuBLAS| / max |cuBLAS| = {err:.1e}')
        res['products_per_step_us'] = step_us
        log(f'products of one decode step: cuBLAS {step_us["cuBLAS"] / 1e3:.2f} ms, skinny {step_us["skinny"] / 1e3:.2f} ms '
            f'({step_us["cuBLAS"] / step_us["skinny"]:.2f}x); the autotuner chose: ' +
            '; '.join(f'{key[:3]} {config}' for key, config in vlm_model._skinny_product_tuned.cache.items()))
    step('products', products)

    def attention_backends():   # one decode step's attention: 32 layers, one query per row against the static cache, the last 64 positions not yet written
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.nn.functional import scaled_dot_product_attention as sdpa
        heads, dim, length = tc.num_attention_heads, tc.hidden_size // tc.num_attention_heads, ids.shape[1] + a.new_tokens
        q = torch.randn(a.batch, heads, 1, dim, device=device, dtype=dtype)
        kv = [(torch.randn(a.batch, heads, length, dim, device=device, dtype=dtype), torch.randn(a.batch, heads, length, dim, device=device, dtype=dtype))
              for _ in range(tc.num_hidden_layers)]
        keep = torch.ones(a.batch, 1, 1, length, dtype=torch.bool, device=device); keep[..., -64:] = False
        kv_read = 2 * tc.num_hidden_layers * a.batch * heads * length * dim * torch.finfo(dtype).bits // 8
        def one_step(backend, attn_mask):
            with sdpa_kernel([backend]):
                for k, v in kv: sdpa(q, k, v, attn_mask=attn_mask)
        for name, backend, attn_mask in [('efficient, masked', SDPBackend.EFFICIENT_ATTENTION, keep), ('cudnn, masked', SDPBackend.CUDNN_ATTENTION, keep),
                                         ('math, masked', SDPBackend.MATH, keep), ('flash, no mask', SDPBackend.FLASH_ATTENTION, None),
                                         ('cudnn, no mask', SDPBackend.CUDNN_ATTENTION, None)]:
            try:
                one_step(backend, attn_mask)
                _, t = timed(lambda: one_step(backend, attn_mask), device, 5)
                res[f'attention_{name}_ms'] = t * 1e3
                log(f'attention of one decode step ({tc.num_hidden_layers} x {a.batch} x {heads} heads x {length} positions), {name}: {t*1e3:.2f} ms, '
                    f'{kv_read / t / 1e12:.2f} TB/s of K and V')
            except RuntimeError as e: log(f'attention, {name}: no kernel for it here ({str(e).splitlines()[0][:160]})')   # e.g. cuDNN or the masked kernels on a CPU
    step('attention', attention_backends)

    def bandwidth():   # what one read of a large tensor reaches (the floor assumes 3.35 TB/s)
        x = torch.ones(2 ** 31 if device.type == 'cuda' else 2 ** 24, device=device, dtype=dtype)
        x.sum()
        _, t = timed(lambda: x.sum(), device, 10)
        res['read_tb_per_s'] = x.numel() * x.element_size() / t / 1e12
        log(f'one read of {x.numel() * x.element_size() / 1e9:.1f} GB (sum): {t*1e3:.2f} ms = {res["read_tb_per_s"]:.2f} TB/s')
    step('bandwidth', bandwidth)

    def free_caches():   # the KV caches of the rows before: memory for the next
        for s in (sampler, one_token, *skinny_samplers): s.cache = s.cache_shape = None
        merged.model.__dict__.pop('_cache', None)
        if device.type == 'cuda': torch.cuda.empty_cache()
    skinny_samplers = []
    def skinny():   # the same copy's modules with their linear layers made SkinnyLinear, its tensors shared (refresh() updates both)
        free_caches()
        shared = {id(t): t for t in [*merged.model.parameters(), *merged.model.buffers()]}
        skinny_samplers.append(StaticCacheSampler(skinny_products(copy.deepcopy(merged.model, memo=shared))))
        measure('sampler_skinny', lambda: skinny_samplers[0](ids, mask, feats, **kwargs), one_token=lambda: one_token(ids, mask, feats, **first_only))
    step('skinny', skinny)
    if skinny_samplers: step('skinny_profile', lambda: profile_decode(skinny_samplers[0], 'sampler_skinny'))

    static = dict(cache_implementation='static')
    step('generate', lambda: measure('generate_merged', lambda: generate_with_video(merged.model, ids, mask, feats, **kwargs, **static)))
    def adapter():
        free_caches()
        sampler_adapter = StaticCacheSampler(policy)
        measure('sampler_adapter', lambda: sampler_adapter(ids, mask, feats, **kwargs))
    step('adapter', adapter)
    def autotune():   # the decode step compiled with mode='max-autotune': inductor also times Triton kernels for each product shape
        free_caches()
        tuned = StaticCacheSampler(merged.model, mode='max-autotune')
        measure('sampler_merged_autotune', lambda: tuned(ids, mask, feats, **kwargs), one_token=lambda: one_token(ids, mask, feats, **first_only))
    step('autotune', autotune)
    for label in ('generate_merged', 'sampler_merged_autotune', 'sampler_skinny'):
        if 'sampler_merged' in res and label in res:
            log(f'{label} / sampler_merged per decode step: {res[label]["decode_step_ms"] / res["sampler_merged"]["decode_step_ms"]:.2f}x')
    log(f'total {time.time() - t_start:.0f}s')

if __name__ == '__main__':
    main()
