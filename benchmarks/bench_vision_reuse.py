"""Vision-feature reuse in the PPO loop: vision-tower calls and time per PPO step with reuse vs without.

With reuse (our loop, `vlm_rlaif.ppo.ppo_step`): each rollout batch's frames go through the vision tower once; the
features are spliced into one `inputs_embeds` that the policy, the reference, the value model and the reward model all
read, in the score phase and in every minibatch of the learn phase.
Without reuse (`naive_step` below: the same phases, the same library functions, the same work otherwise): every role
encodes its rows' frames itself, as a loop that hands each role the pixels would: the rollout, then the policy, the
reference, the value model and the reward model in the score phase, then the policy and the value model in every
minibatch of every PPO epoch.

Both run alternately on one PPO session (random weights: nothing is trained beforehand; timings do not depend on
the weights), after one warm-up step; vision-tower calls are counted with a forward hook.

Shapes:
- world (default): the default run's model (configs/default.yaml over the ModelConfig defaults: a 2-layer CLIP-style
  tower on 64x64 frames, a 4-layer Llama, 8 frames, 128 video tokens) and its PPO settings (rollout batch 64,
  minibatch 16, 2 PPO epochs, 12 new tokens), on the CPU.
- 7b: the LLaVA-NeXT-Video-7B shape of benchmarks/bench_gpu_7b.py (Vicuna-7B text config, CLIP ViT-L/14-336 vision
  config, 1152 video tokens for 8 frames), random weights, bf16 on a GPU; `--tiny` shrinks it to a few layers
  (the same code path, for a CPU smoke test).

Usage: python benchmarks/bench_vision_reuse.py [--shape world|7b] [--tiny] [--steps 3] [--batch N] [--minibatch N]
       [--new-tokens N] [--config configs/default.yaml] [--out FILE]
"""
import argparse, dataclasses, datetime, json, os, platform, shutil, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('HF_HUB_OFFLINE', '1')
from vlm_rlaif import ppo
from vlm_rlaif.core import load_config, offline_env, seed_everything
from vlm_rlaif.model import ScalarHeadModel, add_role_adapter, build_video_lmm, embed_inputs, encode_video, num_video_tokens, train_tokenizer
from vlm_rlaif.pipeline import RunConfig
from vlm_rlaif.world import video_questions, video_rng, world_text, world_truth


class RandomFrames:
    "Preprocessed frames for each prompt's video name: seeded random pixels (the tower's cost does not depend on them)."
    def __init__(self, n_frames:int, size:int): self.n_frames, self.size, self.cache = n_frames, size, {}
    def __call__(self, row:dict) -> torch.Tensor:
        if row['video'] not in self.cache:
            g = torch.Generator().manual_seed(len(self.cache))
            self.cache[row['video']] = torch.randn(self.n_frames, 3, self.size, self.size, generator=g)
        return self.cache[row['video']]

def build_7b(tok, tiny:bool, device, dtype):
    "The LLaVA-NeXT-Video-7B shape of bench_gpu_7b.py, with this tokenizer's special-token ids (vocabulary 32064 as the real model's)."
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if tiny:
        text = LlamaConfig(vocab_size=32064, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=4, max_position_embeddings=4096, **ids)
        vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14)
    else:
        text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, **ids)
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
                                  patch_size=14, projection_dim=768)
    cfg = LlavaNextVideoConfig(text_config=text, vision_config=vision, video_token_index=tok.video_token_id, image_token_index=tok.image_token_id,
                               vision_feature_layer=-1 if tiny else -2, vision_feature_select_strategy='default', spatial_pool_stride=2, **ids)
    cfg.video_pooling = 'llava_next'
    prev = torch.get_default_dtype(); torch.set_default_dtype(dtype)
    with torch.device(device): model = LlavaNextVideoForConditionalGeneration(cfg)
    torch.set_default_dtype(prev)
    for k, v in ids.items(): setattr(model.generation_config, k, v)
    return model.eval()

def reward_checkpoint(base, path:Path):
    "Save a reward model (adapter 'reward' + head) on `base`, then give `base` back without the adapter (no copy of the base)."
    peft_model = add_role_adapter(base, 'reward')
    ScalarHeadModel(peft_model, role='reward').save_pretrained(path)
    return peft_model.unload()

def world_prompts(world_cfg, kinds, n:int) -> list[dict]:
    "RL prompts of the world's question kinds, each with its own video name."
    rows, i = [], 0
    while len(rows) < n:
        for q in video_questions(world_truth(world_cfg, 'rl', i), video_rng(world_cfg, 'rl', i, 1)):
            if not kinds or q['kind'] in kinds:
                rows.append(dict(id=q['id'], video=f'rl_{i:05d}.mp4', images=None, kind=q['kind'], conversations=[{'from': 'human', 'value': f"<video>\n{q['question']}"}]))
        i += 1
    return rows[:n]

def naive_step(s:ppo.PPOSession) -> None:
    "One PPO step with the phases of `ppo.ppo_step`, but every role encodes the frames itself (no shared features)."
    cfg, roles, model = s.cfg, s.roles, s.model
    rows, batch, pixels = ppo.prompt_inputs(s, ppo.next_prompts(s))
    ro = ppo.rollout(s, rows, batch, pixels)                                      # encodes once, for sampling
    embeds = lambda i=slice(None): embed_inputs(model, ro.sequence_ids[i], encode_video(model, pixels[i]))   # a role's own encoding
    seq_mask, n, mask = ro.sequence_mask, ro.response_ids.shape[1], ro.response_mask
    with torch.no_grad():
        old_logprobs = ppo.response_logprobs(model, embeds(), seq_mask, ro.response_ids, cfg.temperature)
        with ppo._reference(model, roles.reference_role): ref_logprobs = ppo.response_logprobs(model, embeds(), seq_mask, ro.response_ids, cfg.temperature)
        old_values = ppo.response_values(roles.value, embeds(), seq_mask, n)
        raw_scores = s.reward_fn(dataclasses.replace(ro, features=encode_video(model, pixels))).float()
    scores = ppo.sequence_scores(raw_scores, ro.has_eos, mask.sum(1), cfg.max_new_tokens, cfg.no_eos_penalty, cfg.length_penalty) * cfg.reward_scale
    old_logprobs, ref_logprobs = old_logprobs.masked_fill(mask == 0, 0.0), ref_logprobs.masked_fill(mask == 0, 0.0)
    rewards, _ = ppo.token_rewards(scores, old_logprobs, ref_logprobs, mask, s.kl.beta)
    old_values = old_values * mask
    advantages, returns = ppo.gae_advantages(rewards, old_values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages: advantages = ppo.masked_whiten(advantages, mask)
    for p in roles.trainable.values(): p.requires_grad_(True)
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(len(rows))
        for start in range(0, len(rows), cfg.minibatch):
            i = order[start:start + cfg.minibatch].to(s.device)
            logprobs = ppo.response_logprobs(model, embeds(i), seq_mask[i], ro.response_ids[i], cfg.temperature)
            values = ppo.response_values(roles.value, embeds(i), seq_mask[i], n)
            losses = ppo.ppo_losses(logprobs, old_logprobs[i], advantages[i], values, old_values[i], returns[i], mask[i], cfg.cliprange, cfg.cliprange_value)
            s.optimizer.zero_grad(set_to_none=True)
            (losses['pg_loss'] + cfg.vf_coef * losses['vf_loss']).backward()
            torch.nn.utils.clip_grad_norm_(list(roles.trainable.values()), cfg.max_grad_norm)
            s.optimizer.step(); s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.step += 1

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--shape', default='world', choices=['world', '7b'])
    ap.add_argument('--tiny', action='store_true', help='with --shape 7b: a few-layer model of the same code path (CPU smoke test)')
    ap.add_argument('--config', default=str(ROOT/'configs'/'default.yaml'), help='the run config whose model and ppo sections are used')
    ap.add_argument('--steps', type=int, default=3, help='timed PPO steps of each variant (after one warm-up step)')
    ap.add_argument('--batch', type=int, help='rollout batch (default: the config\'s; 7b: 16)')
    ap.add_argument('--minibatch', type=int, help='minibatch (default: the config\'s; 7b: 4)')
    ap.add_argument('--new-tokens', type=int, help='response length (default: the config\'s; 7b: 32)')
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0: torch\'s default)')
    ap.add_argument('--rollout-cache', choices=['dynamic', 'static'], help="ppo.rollout_cache (default: the config's); 'static' compiles the decode step on a GPU")
    ap.add_argument('--rollout-weights', choices=['adapter', 'merged'], help="ppo.rollout_weights (default: the config's); 'merged' samples from a merged copy")
    ap.add_argument('--rollout-products', choices=['torch', 'skinny'], help="ppo.rollout_products (default: the config's); 'skinny': the Triton kernel for the copy's decode products")
    ap.add_argument('--out', help='default: benchmarks/results/vision_reuse.md (world), vision_reuse_7b.md (7b), nothing with --tiny')
    a = ap.parse_args()
    if a.tiny and a.shape != '7b': ap.error('--tiny goes with --shape 7b')
    if a.threads: torch.set_num_threads(a.threads)
    offline_env()
    run_cfg = load_config(a.config, RunConfig)
    big = a.shape == '7b'
    sizes = dict(rollout_batch=a.batch or (16 if big else run_cfg.ppo.rollout_batch), minibatch=a.minibatch or (4 if big else run_cfg.ppo.minibatch),
                 max_new_tokens=a.new_tokens or (32 if big else run_cfg.ppo.max_new_tokens), rollout_cache=a.rollout_cache or run_cfg.ppo.rollout_cache,
                 rollout_weights=a.rollout_weights or run_cfg.ppo.rollout_weights, rollout_products=a.rollout_products or run_cfg.ppo.rollout_products)
    cfg = dataclasses.replace(run_cfg.ppo, **sizes, rm_scoring_prompt='', eval_max=0, steps=0)
    cfg.validate()
    out = a.out or (None if a.tiny else str(ROOT/'benchmarks'/'results'/('vision_reuse_7b.md' if big else 'vision_reuse.md')))
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dtype = torch.bfloat16 if big and device.type == 'cuda' else torch.float32
    t_start, load_start = time.time(), os.getloadavg()[0]
    tok = train_tokenizer(world_text(run_cfg.world, run_cfg.sft.tokenizer_worlds), run_cfg.model.vocab_size)
    seed_everything(cfg.seed)
    base = build_7b(tok, a.tiny, device, dtype) if big else build_video_lmm(run_cfg.model, tok)
    tmp = Path(tempfile.mkdtemp(prefix='bench_vision_reuse_'))
    base = reward_checkpoint(base, tmp/'reward')
    roles = ppo.setup_roles(base, cfg, tmp/'reward')
    vision = base.config.vision_config
    frames = RandomFrames(cfg.n_frames, vision.image_size)
    prompts = world_prompts(run_cfg.world, cfg.kinds, 4 * cfg.rollout_batch)
    s = ppo.make_session(roles, tok, frames, prompts, ppo.ModelReward(roles.reward_model, tok, ''), cfg)
    calls = []
    base.model.vision_tower.register_forward_hook(lambda *_: calls.append(1))
    n_tokens = num_video_tokens(base, cfg.n_frames)
    lines = []
    def log(msg=''): print(msg, flush=True); lines.append(msg)
    n_vision = sum(p.numel() for p in base.model.vision_tower.parameters())
    n_lm = sum(p.numel() for n, p in base.named_parameters() if 'language_model' in n and 'lora_' not in n)
    log(f'shape {a.shape}{" (tiny)" if a.tiny else ""} on {device} ({str(dtype).removeprefix("torch.")}): vision tower {n_vision/1e6:.2f} M parameters, '
        f'{vision.image_size}px frames, {cfg.n_frames} frames -> {n_tokens} video tokens; language model {n_lm/1e6:.2f} M parameters')
    log(f'PPO: rollout batch {cfg.rollout_batch}, minibatch {cfg.minibatch}, {cfg.ppo_epochs} PPO epochs, {cfg.max_new_tokens} new tokens; '
        f'setup {time.time() - t_start:.1f} s')
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    from torch._dynamo.utils import counters
    phases = []   # ppo_step's own timers: rollout (generate), score, learn
    def with_reuse(s): phases.append({k.removeprefix('time/'): v for k, v in ppo.ppo_step(s).items() if k.startswith('time/')})
    def timed(fn):
        calls.clear(); sync(); t0, c0, g0 = time.perf_counter(), time.process_time(), counters['stats']['unique_graphs']
        fn(s); sync()
        return time.perf_counter() - t0, time.process_time() - c0, len(calls), counters['stats']['unique_graphs'] - g0
    variants = {'with reuse (ppo.ppo_step)': with_reuse, 'without reuse (each role encodes)': naive_step}
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    warm = {name: timed(fn) for name, fn in variants.items()}
    log('warm-up: ' + ', '.join(f'{name} {t:.2f} s ({g} graphs compiled)' for name, (t, _, _, g) in warm.items()))
    results = {name: dict(step_s=[], step_cpu_s=[], vision_calls=[], graphs_compiled=[]) for name in variants}
    for _ in range(a.steps):   # alternate, so that a change in the machine's load hits both
        for name, fn in variants.items():
            t, cpu, c, g = timed(fn)
            for k, v in zip(('step_s', 'step_cpu_s', 'vision_calls', 'graphs_compiled'), (t, cpu, c, g)): results[name][k].append(v)
    peak_gb = torch.cuda.max_memory_allocated() / 1e9 if device.type == 'cuda' else None
    shutil.rmtree(tmp, ignore_errors=True)
    with torch.no_grad():   # one encoding of a rollout batch, for scale
        pixels = torch.stack([frames(r) for r in prompts[:cfg.rollout_batch]]).to(device)
        encode_video(base, pixels); sync(); t0 = time.perf_counter(); encode_video(base, pixels); sync()
        t_encode = time.perf_counter() - t0
    (with_name, w), (without_name, wo) = results.items()
    for name, r in results.items():
        r['mean_step_s'], r['mean_step_cpu_s'] = float(np.mean(r['step_s'])), float(np.mean(r['step_cpu_s']))
        log(f'{name:34s}: {r["mean_step_s"]:7.2f} s per PPO step (steps {", ".join(f"{x:.2f}" for x in r["step_s"])}; '
            f'{r["mean_step_cpu_s"]:.2f} CPU-s), {r["vision_calls"][0]} vision-tower calls per step')
    ratio, cpu_ratio = wo['mean_step_s'] / w['mean_step_s'], wo['mean_step_cpu_s'] / w['mean_step_cpu_s']
    log(f'one vision encoding of a rollout batch ({cfg.rollout_batch} x {cfg.n_frames} frames): {t_encode:.3f} s')
    log(f'vision-tower calls per step: {w["vision_calls"][0]} with reuse vs {wo["vision_calls"][0]} without '
        f'({wo["vision_calls"][0] // max(w["vision_calls"][0], 1)}x); time per step: without / with = {ratio:.2f}x (CPU time: {cpu_ratio:.2f}x)')
    timed_phases = phases[1:]   # after the warm-up step
    phase_s = {k: float(np.mean([p[k] for p in timed_phases])) for k in timed_phases[0]}
    log(f'ppo_step phases (rollout cache {cfg.rollout_cache}, rollout weights {cfg.rollout_weights}, rollout products {cfg.rollout_products}), mean of the timed steps: ' + ', '.join(f'{k} {v:.2f} s' for k, v in phase_s.items())
        + f'; graphs compiled after the warm-up: {sum(w["graphs_compiled"]) + sum(wo["graphs_compiled"])}'
        + (f'; peak GPU memory of the four roles on one base{" and the merged copy" if s.sampler else ""}: {peak_gb:.1f} GB' if peak_gb else ''))
    if out:
        head = [f'# Vision-feature reuse in PPO: {a.shape} shape', '',
                f'- date: {datetime.datetime.now():%Y-%m-%dT%H:%M}; machine: {torch.cuda.get_device_name(0) if device.type == "cuda" else platform.platform() + ", " + (platform.processor() or platform.machine())}, '
                f'{os.cpu_count()} CPUs, load average at start {load_start:.2f}; torch threads {torch.get_num_threads()}',
                f'- torch {torch.__version__}, transformers {__import__("transformers").__version__}, peft {__import__("peft").__version__}',
                f'- command: `{"OMP_NUM_THREADS=1 " if a.threads == 1 else ""}python benchmarks/bench_vision_reuse.py --shape {a.shape} --steps {a.steps}'
                f'{f" --threads {a.threads}" if a.threads else ""}{f" --rollout-cache {a.rollout_cache}" if a.rollout_cache else ""}'
                f'{f" --rollout-weights {a.rollout_weights}" if a.rollout_weights else ""}'
                f'{f" --rollout-products {a.rollout_products}" if a.rollout_products else ""}'
                f'{f" --minibatch {a.minibatch}" if a.minibatch else ""}`', '',
                'With reuse: `ppo.ppo_step` (the frames of a rollout batch go through the vision tower once; every role reads the same '
                '`inputs_embeds`). Without: `naive_step` in the script, the same phases with the same functions, but every role encodes '
                'the frames itself (rollout; policy, reference, value, reward in the score phase; policy and value in every minibatch).', '', '```']
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text('\n'.join(head + lines + ['```', '', '```json', json.dumps(dict(ratio=ratio, cpu_ratio=cpu_ratio, encode_s=t_encode, results=results, ppo=sizes, phase_s=phase_s, peak_gb=peak_gb,
                                                                                             frames=cfg.n_frames, video_tokens=n_tokens), indent=1), '```']) + '\n')
        print(f'wrote {out}')

if __name__ == '__main__':
    main()
