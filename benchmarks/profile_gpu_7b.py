"""Where the GPU time of two PPO phases goes at the 7B shape (random weights, bf16; the model of bench_gpu_7b.py):
the kernels of one decode step of the base model (what a merged copy runs) and of the policy (LoRA active, in
`lm_precision`), not compiled so that every kernel shows, and of one learn step (LoRA forward + backward over prompt +
response through `vlm_rlaif.ppo.response_logprobs`, no gradient checkpointing), from torch.profiler.

It explains the gaps bench_gpu_7b.py measures (decode with the LoRA vs the floor, learn-phase MFU): each table lists
the kernels by total GPU time, and the summary splits the time into matrix products, attention and the rest.

Usage: python benchmarks/profile_gpu_7b.py [--shape 7b|tiny] [--out FILE]
"""
import argparse, os, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('HF_HUB_OFFLINE', '1')
from bench_gpu_7b import add_shape_args, build, lm_param_count, video_prompts, write_report
from vlm_rlaif.model import adapters_disabled, add_role_adapter, embed_inputs, encode_video, lm_precision
from vlm_rlaif.ppo import response_logprobs

KINDS = (('matrix products', ('gemm', 'gemv', 'cutlass', 'xmma', 'nvjet', 'matmul', 'splitk', 'skinny', 'aten::mm', 'aten::addmm', 'aten::bmm')),
         ('attention', ('flash', 'fmha', 'attention', 'softmax')))

def kind_of(name:str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), 'other')

def table(prof, device, top:int) -> tuple[list[str], dict]:
    "The `top` kernels by GPU time (on the CPU: operators by CPU self time), and the time per kind."
    from torch.autograd import DeviceType
    use_cuda = device.type == 'cuda'
    # on a GPU the kernels only: an operator's self device time is the time of the kernels it launched, counted again
    events = [e for e in prof.key_averages() if (e.device_type == DeviceType.CUDA and e.self_device_time_total > 0 if use_cuda else e.self_cpu_time_total > 0)
              and not e.key.startswith('ProfilerStep')]   # a profiler schedule's step range, not a kernel: its time is its kernels'
    key = (lambda e: e.self_device_time_total) if use_cuda else (lambda e: e.self_cpu_time_total)
    events.sort(key=key, reverse=True)
    total = sum(key(e) for e in events)
    per_kind = {}
    for e in events: per_kind[kind_of(e.key)] = per_kind.get(kind_of(e.key), 0) + key(e)
    lines = [f'{"kernel":90s} {"calls":>6s} {"ms":>9s} {"share":>6s}']
    lines += [f'{e.key[:90]:90s} {e.count:6d} {key(e)/1e3:9.2f} {key(e)/total:6.1%}' for e in events[:top]]
    lines.append(f'total {total/1e3:.2f} ms: ' + ', '.join(f'{k} {v/1e3:.2f} ms ({v/total:.0%})' for k, v in sorted(per_kind.items(), key=lambda kv: -kv[1])))
    return lines, per_kind

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(ap)
    ap.add_argument('--learn-batch', type=int, default=4)
    ap.add_argument('--top', type=int, default=20)
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'profile_gpu_7b.md'))
    a = ap.parse_args()
    from torch.profiler import ProfilerActivity, profile
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    lines = []
    def log(msg=''): print(msg, flush=True); lines.append(msg)
    model = build(a.shape, device, dtype)
    policy = add_role_adapter(model, 'policy', r=64, alpha=16)
    for n, p in policy.named_parameters():   # a trained adapter (B is zero at init)
        if 'lora_B' in n: torch.nn.init.normal_(p, std=1e-3)
    cfg = model.config
    vid = cfg.video_token_index
    pixels, ids, mask = video_prompts(model, a.batch, a.frames, device, dtype)
    log(f'shape {a.shape}: LM {lm_param_count(model)/1e9:.2f} B parameters, LoRA r64 on every LM linear layer (adapter weights '
        f'{next(p for n, p in policy.named_parameters() if "lora_A" in n).dtype}), batch {a.batch}, prompt {ids.shape[1]} tokens')

    # one decode step: the prompt prefilled into a dynamic cache, then one token, eagerly (every kernel visible)
    def profile_decode(title):
        with torch.no_grad(), lm_precision(policy):
            feats = encode_video(policy, pixels)
            out = policy(inputs_embeds=embed_inputs(policy, ids, feats), attention_mask=mask, use_cache=True, logits_to_keep=1)
            state = dict(cache=out.past_key_values, token=out.logits[:, -1].argmax(-1, keepdim=True), mask=mask)
            def decode_step():   # one new token per call: the cache grows by one position
                state['mask'] = torch.cat([state['mask'], torch.ones_like(state['token'])], 1)
                out = policy(input_ids=state['token'], attention_mask=state['mask'], past_key_values=state['cache'], use_cache=True)
                state['token'] = out.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(2): decode_step()   # warm-up
            sync()
            with profile(activities=activities) as prof:
                decode_step(); sync()
        rows, _ = table(prof, device, a.top)
        log(''); log(f'## one decode step ({title}, eager)'); [log(r) for r in rows]
        return feats
    with adapters_disabled(policy): profile_decode('the base model, as a merged copy runs')
    feats = profile_decode('LoRA active, in lm_precision')

    # one learn step: forward + backward of the policy over prompt + response, no gradient checkpointing
    b = a.learn_batch
    seq = torch.cat([ids[:b], torch.randint(1, vid - 2, (b, a.new_tokens), device=device)], 1)
    policy.train(); policy.enable_input_require_grads()
    def fwd_bwd():
        (-response_logprobs(policy, embed_inputs(policy, seq, feats[:b]), torch.ones_like(seq), seq[:, -a.new_tokens:]).mean()).backward()
        policy.zero_grad(set_to_none=True)
    fwd_bwd(); sync()
    t0 = time.perf_counter(); fwd_bwd(); sync(); t = time.perf_counter() - t0
    with profile(activities=activities) as prof:
        fwd_bwd(); sync()
    rows, _ = table(prof, device, a.top)
    log(''); log(f'## one learn step ({b} x {seq.shape[1]} tokens, no checkpointing; {t:.2f} s unprofiled)'); [log(r) for r in rows]
    if a.out:
        write_report(a.out, f'Kernel time of a decode step and a learn step at the 7B shape ({a.shape})', device,
                     f'python benchmarks/profile_gpu_7b.py --shape {a.shape}', lines)
        print(f'wrote {a.out}')

if __name__ == '__main__':
    main()
