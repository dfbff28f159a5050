"""Our PPO loop against the peer: trl 1.12.0's PPOTrainer (`trl.experimental.ppo`), text-only, on the same tiny Llama.

Both sides run the same policy (the world model's language model, ModelConfig defaults: 4 layers, hidden 128, its
offline BPE vocabulary, random weights: the same weights on both sides), on the same text-only prompts (token for token),
with the same rollout batch, minibatch, PPO epochs, response length, sampling (temperature 1, no top-k/top-p), LoRA
(r 8, alpha 16, every linear layer of the decoder), KL coefficient, clip ranges, value coefficient, gamma and lambda, in
fp32 on the CPU with one torch thread each, each in a fresh process. samples/s = prompts per second over the PPO steps
after the first (warm-up) step. The two sides of a comparison run at the same time, each pinned to its own core (swapped
every round), so that both see the same machine: on a shared VM the speed of a core drifts by 10-30% within minutes,
more than the differences measured, and timing the sides one after the other compared the drift. Both wait for each
other after their warm-up step, so their timed steps start together (the faster side finishes first). Each round gives
one paired ratio per variant of ours; the report gives their median over --rounds rounds. Needs two cores.

What each side does per PPO step (the design differences are part of what is compared; see the results' notes):
- ours (vlm_rlaif.ppo.ppo_step): every role on one base: the policy is a LoRA adapter, the reference is the base with
  the adapter disabled, the value model is a second LoRA adapter + a linear head, the reward model a third (frozen)
  adapter + head; every adapted layer runs as one product with its merged weight where that is exact and cheaper
  (model.fuse_lora_products: float32, enough tokens). Rollout: sampling with the KV cache. Score: one forward each of
  the policy (old log-probs and entropy), the reference, the value model and the reward model, logits only over the
  response positions. Learn: per minibatch one policy and one value forward + backward, gradient clipping, AdamW.
- ours, fast (the same with ppo.old_logprobs='sampling' and ppo.rollout_weights='merged'): the rollout samples from a
  merged copy of the policy (no LoRA cost per sampled token) and keeps its logits; the score phase takes the old
  log-probs and the entropy from them, as trl does, so it runs three forwards.
- ours, peft lora (the defaults with the roles' layers left on peft's own LoRA forward): what fuse_lora_products gives,
  measured in the same run.
- trl (PPOTrainer.train): the policy is a LoRA adapter (peft_config; the reference is the adapter disabled, trl's own
  sharing); the value model and the reward model are separate LlamaForSequenceClassification models (trl's design: the
  value model is trained in full). Rollout: sampling with the KV cache, the old log-probs taken from the sampling logits
  (no separate policy forward). Score: one forward each of the reference, the value model and the reward model, logits
  over every position. Learn: per minibatch one policy and one value forward + backward, AdamW (no clipping).

trl runs in its own virtual environment (created on first use, reused after: ~/.cache/vlm_rlaif/trl112-venv, or
$VLM_RLAIF_TRL_VENV) with the package versions pinned below; ours runs in this project's environment.

Usage: python benchmarks/bench_ppo_peer.py [--steps 8] [--rounds 3] [--trl-value full|lora] [--out FILE]
(--trl-value lora: trl's value model with its backbone frozen under a LoRA adapter, closer to ours; not trl's design.)
"""
import argparse, datetime, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get('VLM_RLAIF_TRL_VENV', Path.home()/'.cache'/'vlm_rlaif'/'trl112-venv'))
# trl 1.12.0 was released on 2026-08-26; these are the newest releases of its dependencies on that day (transformers
# 5.16.0 came out the same day, after it), i.e. what `pip install trl==1.12.0` resolved to then. torch 2.13.0 installs
# a CPU build from this machine's disk (a plain `torch` would pull a multi-GB CUDA build). peft: for the policy's LoRA.
PINS = ['torch==2.13.0', 'trl==1.12.0', 'transformers==5.15.1', 'accelerate==1.14.0', 'datasets==5.0.0', 'peft==0.20.0']
LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']   # every linear layer of a Llama decoder
LR = 1e-5   # small, so both policies stay near their common start and sample responses of the same length
OURS = {'ours': dict(old_logprobs='forward', rollout_weights='adapter', lora='fused'),       # the knobs' defaults
        'ours, fast': dict(old_logprobs='sampling', rollout_weights='merged', lora='fused'),
        # the defaults with peft's own LoRA forward (the roles' layers not fused): what `model.fuse_lora_products` gives, in the same run
        'ours, peft lora': dict(old_logprobs='forward', rollout_weights='adapter', lora='peft')}


def ensure_trl_venv() -> Path:
    "The python of the trl venv, created with PINS unless a venv with exactly these pins is there."
    python, marker = VENV/'bin'/'python', VENV/'pins.txt'
    if python.exists() and marker.exists() and marker.read_text().split() == PINS: return python
    print(f'creating the trl venv at {VENV} ({" ".join(PINS)}); this takes a few minutes once', flush=True)
    subprocess.run([sys.executable, '-m', 'venv', '--clear', str(VENV)], check=True)
    subprocess.run([str(python), '-m', 'pip', 'install', '--quiet', *PINS], check=True)
    marker.write_text('\n'.join(PINS) + '\n')
    return python


# ---------------------------------------------------------------- shared inputs (this project's venv)

def prepare(work:Path, n_prompts:int):
    "The tokenizer, the tiny model (ours: a saved video LMM + reward model; trl: the same LM's weights), the prompts."
    import copy
    from safetensors.torch import save_file
    from vlm_rlaif.core import offline_env, seed_everything
    from vlm_rlaif.data import to_messages
    from vlm_rlaif.model import (CLIP_MEAN, CLIP_STD, FramePreprocess, ModelConfig, ScalarHeadModel, add_role_adapter, build_video_lmm,
                                 save_video_lmm, train_tokenizer)
    from vlm_rlaif.world import WorldConfig, video_questions, video_rng, world_text, world_truth
    offline_env()
    world, mcfg = WorldConfig(), ModelConfig()
    tok = train_tokenizer(world_text(world, 200), mcfg.vocab_size)
    seed_everything(0)
    base = build_video_lmm(mcfg, tok)
    save_video_lmm(work/'model', base, tok, FramePreprocess(mcfg.image_size, mcfg.image_size, CLIP_MEAN, CLIP_STD))
    ScalarHeadModel(add_role_adapter(copy.deepcopy(base), 'reward'), role='reward').save_pretrained(work/'reward')
    # the language model as a LlamaForCausalLM state dict (tied embeddings: both names, separate copies for safetensors)
    lm = {f'model.{k}': v.detach().clone().contiguous() for k, v in base.model.language_model.state_dict().items()}
    lm['lm_head.weight'] = base.lm_head.weight.detach().clone().contiguous()
    save_file(lm, work/'lm.safetensors')
    tok.save_pretrained(work/'tokenizer')
    tc = base.config.text_config
    llama = dict(vocab_size=tc.vocab_size, hidden_size=tc.hidden_size, intermediate_size=tc.intermediate_size,
                 num_hidden_layers=tc.num_hidden_layers, num_attention_heads=tc.num_attention_heads, num_key_value_heads=tc.num_key_value_heads,
                 max_position_embeddings=tc.max_position_embeddings, rms_norm_eps=tc.rms_norm_eps, tie_word_embeddings=tc.tie_word_embeddings,
                 pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    questions, i = [], 0
    while len(questions) < n_prompts:
        truth = world_truth(world, 'rl', i)
        questions += [q['question'] for q in video_questions(truth, video_rng(world, 'rl', i, 1))]
        i += 1
    rows = [dict(id=f'q{j}', video=None, images=None, kind=None, conversations=[{'from': 'human', 'value': q}])
            for j, q in enumerate(questions[:n_prompts])]
    # trl's dataset: the same chat-template prompts, tokenized here (ours checks that its collator makes the same ids)
    ids = [tok(tok.apply_chat_template(to_messages(r['conversations']), tokenize=False, add_generation_prompt=True), add_special_tokens=False)['input_ids']
           for r in rows]
    n_params = sum(p.numel() for p in base.model.language_model.parameters()) + (0 if tc.tie_word_embeddings else base.lm_head.weight.numel())
    (work/'setup.json').write_text(json.dumps(dict(llama=llama, rows=rows, prompt_ids=ids, lm_params=n_params)))


# ---------------------------------------------------------------- ours (this project's venv)

def wait_for_partner(a):
    "After the warm-up step: mark this side ready and wait for the other side of the pair, so that their timed steps run at the same time."
    Path(f'{a.pair}.{a.side}').touch()
    other, deadline = Path(f"{a.pair}.{'trl' if a.side == 'ours' else 'ours'}"), time.time() + 900
    while not other.exists():
        if time.time() > deadline: raise TimeoutError(f'{a.side}: the other side of {a.pair} never got ready')
        time.sleep(0.01)

def run_ours(work:Path, a) -> dict:
    import numpy as np, torch
    torch.set_num_threads(a.threads)
    from vlm_rlaif.core import offline_env
    from vlm_rlaif.model import load_video_lmm
    from vlm_rlaif.ppo import ModelReward, PPOStageConfig, PromptVideos, make_session, ppo_step, prompt_inputs, setup_roles
    offline_env()
    setup = json.loads((work/'setup.json').read_text())
    cfg = PPOStageConfig(steps=a.steps, rollout_batch=a.batch, minibatch=a.minibatch, ppo_epochs=a.epochs, max_new_tokens=a.new_tokens,
                         lr=LR, warmup_steps=0, rm_scoring_prompt='', eval_max=0, old_logprobs=a.old_logprobs, rollout_weights=a.rollout_weights)
    lmm = load_video_lmm(work/'model')
    roles = setup_roles(lmm.model, cfg, work/'reward')
    if a.lora == 'peft':   # undo `model.fuse_lora_products` (an instance forward per layer): peft's class forward runs again
        for module in roles.model.modules(): vars(module).pop('forward', None)
    videos = PromptVideos(work, cfg.n_frames, lmm.preprocess)   # never read: the prompts are text-only
    s = make_session(roles, lmm.tokenizer, videos, setup['rows'], ModelReward(roles.reward_model, lmm.tokenizer, ''), cfg)
    _, batch, pixels = prompt_inputs(s, setup['rows'])
    got = [r[m.bool()].tolist() for r, m in zip(batch['input_ids'], batch['attention_mask'])]
    if pixels is not None or got != setup['prompt_ids']: raise RuntimeError('ours: the prompts differ from the ones given to trl')
    calls = []
    roles.model.get_base_model().model.vision_tower.register_forward_hook(lambda *_: calls.append(1))
    times, cpu, lengths, phases = [], [], [], []
    for i in range(a.steps):
        if i == 1: wait_for_partner(a)
        t0, c0 = time.perf_counter(), time.process_time()
        m = ppo_step(s)
        times.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
        lengths.append(m['val/response_length'])
        phases.append({k: m[f'time/{k}'] for k in ('generate', 'score', 'learn')})
    if calls: raise RuntimeError(f'ours: the vision tower ran {len(calls)} times on text-only prompts')
    later = phases[1:]
    return dict(step_s=times, step_cpu_s=cpu, response_length=float(np.mean(lengths)),
                phases_s={k: float(np.mean([p[k] for p in later])) for k in later[0]} if later else {},
                torch=torch.__version__, transformers=__import__('transformers').__version__, peft=__import__('peft').__version__)


# ---------------------------------------------------------------- trl (the trl venv)

def run_trl(work:Path, a) -> dict:
    import numpy as np, torch
    torch.set_num_threads(a.threads)
    from datasets import Dataset
    from peft import LoraConfig
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, TrainerCallback
    import trl
    import trl.experimental.ppo.ppo_trainer as trl_ppo
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    setup = json.loads((work/'setup.json').read_text())
    tok = AutoTokenizer.from_pretrained(work/'tokenizer')
    tok.padding_side = 'left'
    config = LlamaConfig(**setup['llama'])
    weights = load_file(work/'lm.safetensors')
    policy = LlamaForCausalLM(config)
    policy.load_state_dict(weights, strict=True)
    backbone = {k.removeprefix('model.'): v for k, v in weights.items() if k.startswith('model.')}
    def scalar_model():   # the value and reward models: the same backbone and a score head (trl's design: separate models)
        m = LlamaForSequenceClassification(LlamaConfig(**setup['llama'], num_labels=1))
        m.model.load_state_dict(backbone, strict=True)
        return m
    value, reward = scalar_model(), scalar_model()
    if a.trl_value == 'lora':   # a variant closer to ours: the value model's backbone frozen under a LoRA adapter, its head trained
        from peft import inject_adapter_in_model
        value.requires_grad_(False)
        inject_adapter_in_model(LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias='none', target_modules=LORA_TARGETS), value.model)
        value.score.requires_grad_(True)
    # measurement only: the time and the response lengths of trl's rollout (its batch_generation), and step ends
    timing = dict(generate=[], lengths=[], step_end=[], step_cpu=[])
    generate = trl_ppo.batch_generation
    def timed_generation(model, queries, *rest):
        t0 = time.perf_counter()
        out = generate(model, queries, *rest)
        timing['generate'].append(time.perf_counter() - t0)
        responses = out[0][:, queries.shape[1]:]
        is_eos = responses == tok.eos_token_id
        timing['lengths'].append(torch.where(is_eos.any(1), is_eos.long().argmax(1) + 1, responses.shape[1]).float().mean().item())
        return out
    trl_ppo.batch_generation = timed_generation
    class StepTimes(TrainerCallback):
        def on_train_begin(self, *_, **__): timing['begin'], timing['begin_cpu'] = time.perf_counter(), time.process_time()
        def on_step_end(self, *_, **__):
            if not timing['step_end']: wait_for_partner(a)   # the warm-up step's time absorbs the wait
            timing['step_end'].append(time.perf_counter()); timing['step_cpu'].append(time.process_time())
    args = PPOConfig(output_dir=str(work/'trl_out'), seed=0, per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
                     num_mini_batches=a.batch // a.minibatch, num_ppo_epochs=a.epochs, local_rollout_forward_batch_size=a.batch,
                     total_episodes=a.batch * a.steps, response_length=a.new_tokens, temperature=1.0, stop_token='eos',
                     kl_coef=0.1, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=1.0, whiten_rewards=False,
                     learning_rate=LR, lr_scheduler_type='constant', num_sample_generations=0, save_strategy='no', report_to='none',
                     logging_steps=1, disable_tqdm=True, use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias='none', target_modules=LORA_TARGETS, task_type='CAUSAL_LM')
    ds = Dataset.from_dict({'input_ids': setup['prompt_ids']})
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward, train_dataset=ds,
                         value_model=value, peft_config=lora, callbacks=[StepTimes()])
    trainer.train()
    ends = [timing['begin']] + timing['step_end']
    gen = timing['generate']
    steps = np.diff(ends).tolist()
    return dict(step_s=steps, step_cpu_s=np.diff([timing['begin_cpu']] + timing['step_cpu']).tolist(), response_length=float(np.mean(timing['lengths'])),
                phases_s=dict(generate=float(np.mean(gen[1:])), score_and_learn=float(np.mean(np.array(steps[1:]) - np.array(gen[1:])))) if len(gen) > 1 else {},
                trainable_params=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
                torch=torch.__version__, transformers=__import__('transformers').__version__, trl=trl.__version__,
                peft=__import__('peft').__version__, accelerate=__import__('accelerate').__version__, datasets=__import__('datasets').__version__)


# ---------------------------------------------------------------- driver

def start_side(python:str, which:str, work:Path, a, cpu:int, pair:str, knobs:dict|None=None) -> tuple:
    "Start one side of `pair` in a fresh process pinned to core `cpu` (ours with `knobs`: old_logprobs, rollout_weights)."
    knobs = knobs or OURS['ours']
    tag = f'{which}-cpu{cpu}'
    (work/f'{tag}.json').unlink(missing_ok=True)
    cmd = [python, __file__, '--side', which, '--tag', tag, '--pair', str(work/pair), '--work', str(work), '--steps', str(a.steps), '--batch', str(a.batch),
           '--minibatch', str(a.minibatch), '--epochs', str(a.epochs), '--new-tokens', str(a.new_tokens), '--threads', '1',
           '--trl-value', a.trl_value, '--old-logprobs', knobs['old_logprobs'], '--rollout-weights', knobs['rollout_weights'], '--lora', knobs['lora']]
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT) if which == 'ours' else '', TOKENIZERS_PARALLELISM='false')
    log = open(work/f'{tag}.log', 'w')
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    return proc, log, work/f'{tag}.json', which

def finish_side(started:tuple) -> dict:
    "Wait for a side started by `start_side`; its result is the JSON it writes."
    proc, log, out, which = started
    code = proc.wait(); log.close()
    if code: raise RuntimeError(f'{which} failed (exit {code}); the end of {log.name}:\n' + Path(log.name).read_text()[-3000:])
    return json.loads(out.read_text())

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--steps', type=int, default=8, help='PPO steps per side and round (the first is warm-up, not timed)')
    ap.add_argument('--rounds', type=int, default=3, help='rounds; each runs trl beside each variant of ours, at the same time; the median of the paired ratios counts')
    ap.add_argument('--batch', type=int, default=64, help='rollout batch (ours: rollout_batch; trl: per_device_train_batch_size)')
    ap.add_argument('--minibatch', type=int, default=16, help='sequences per optimizer step (trl: num_mini_batches = batch / minibatch)')
    ap.add_argument('--epochs', type=int, default=2, help='PPO epochs per rollout batch')
    ap.add_argument('--new-tokens', type=int, default=12, help='response length (ours: max_new_tokens; trl: response_length)')
    ap.add_argument('--threads', type=int, default=1, help=argparse.SUPPRESS)   # a side's torch threads: 1 (one core each)
    ap.add_argument('--prompts', type=int, default=256, help='distinct text-only prompts')
    ap.add_argument('--trl-value', choices=['full', 'lora'], default='full',
                    help="trl's value model: 'full' (trl's design: a separate model trained in full) or 'lora' (its backbone frozen under a LoRA adapter, as ours)")
    ap.add_argument('--old-logprobs', choices=['forward', 'sampling'], default='forward', help=argparse.SUPPRESS)
    ap.add_argument('--rollout-weights', choices=['adapter', 'merged'], default='adapter', help=argparse.SUPPRESS)
    ap.add_argument('--lora', choices=['fused', 'peft'], default='fused', help=argparse.SUPPRESS)
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'ppo_peer.md'))
    ap.add_argument('--side', choices=['ours', 'trl'], help=argparse.SUPPRESS)
    ap.add_argument('--tag', help=argparse.SUPPRESS)
    ap.add_argument('--pair', help=argparse.SUPPRESS)
    ap.add_argument('--work', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        res = (run_ours if a.side == 'ours' else run_trl)(Path(a.work), a)
        (Path(a.work)/f'{a.tag}.json').write_text(json.dumps(res))
        return
    if a.steps < 2: ap.error('--steps must be at least 2 (the first step is warm-up)')
    if a.batch % a.minibatch: ap.error('--batch must be a multiple of --minibatch')
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2: ap.error('two cores are needed: the sides of a comparison run at the same time, one core each')
    sys.path.insert(0, str(ROOT))
    os.environ['HF_HUB_OFFLINE'] = '1'
    trl_python = ensure_trl_venv()
    work = Path(tempfile.mkdtemp(prefix='bench_ppo_peer_'))
    t0, load_start = time.time(), os.getloadavg()[0]
    prepare(work, a.prompts)
    setup = json.loads((work/'setup.json').read_text())
    lines = []
    def log(msg=''): print(msg, flush=True); lines.append(msg)
    log(f'tiny Llama: {setup["llama"]["num_hidden_layers"]} layers, hidden {setup["llama"]["hidden_size"]}, MLP {setup["llama"]["intermediate_size"]}, '
        f'{setup["llama"]["num_attention_heads"]} heads, vocabulary {setup["llama"]["vocab_size"]}, {setup["lm_params"]/1e6:.2f} M parameters; '
        f'prompts {min(map(len, setup["prompt_ids"]))}-{max(map(len, setup["prompt_ids"]))} tokens')
    log(f'batch {a.batch}, minibatch {a.minibatch}, PPO epochs {a.epochs}, response length {a.new_tokens}, {a.steps} PPO steps per side '
        f'(first one warm-up), {a.rounds} rounds; in each round trl and each variant of ours run side by side, one core and one torch thread each')
    pairs = {name: [] for name in OURS}
    for r in range(a.rounds):
        for name, knobs in OURS.items():
            trl_cpu, ours_cpu = (cores[0], cores[1]) if r % 2 == 0 else (cores[1], cores[0])   # swapped each round: no side keeps the faster core
            pair = f'pair-{r}-{name.replace(", ", "-")}'   # the two sides' meeting point after their warm-up steps
            started = [start_side(str(trl_python), 'trl', work, a, trl_cpu, pair), start_side(sys.executable, 'ours', work, a, ours_cpu, pair, knobs)]
            t_res, o_res = map(finish_side, started)
            for res in (t_res, o_res):
                timed = res['step_s'][1:]
                res['samples_per_s'] = a.batch * len(timed) / sum(timed)
            pair = dict(trl=t_res, ours=o_res, ratio=o_res['samples_per_s'] / t_res['samples_per_s'], ours_cpu=ours_cpu)
            pairs[name].append(pair)
            phases = lambda res: json.dumps({k: round(v, 3) for k, v in res['phases_s'].items()})
            log(f'round {r + 1} {name:10s}: ours {o_res["samples_per_s"]:5.1f} samples/s (core {ours_cpu}; phases (s) {phases(o_res)}), '
                f'trl {t_res["samples_per_s"]:5.1f} (phases (s) {phases(t_res)}): ratio {pair["ratio"]:.2f}; '
                f'mean response lengths {o_res["response_length"]:.1f} / {t_res["response_length"]:.1f}')
    ratios = {k: statistics.median(p['ratio'] for p in v) for k, v in pairs.items()}
    log()
    for k, knobs in OURS.items():
        rs = [p['ratio'] for p in pairs[k]]
        log(f'{k} ({", ".join(f"{n}={v}" for n, v in knobs.items())}) / trl 1.12.0 PPOTrainer: median ratio {ratios[k]:.2f}x in samples/s over '
            f'{len(rs)} paired rounds (range {min(rs):.2f}-{max(rs):.2f}; ours {statistics.median([p["ours"]["samples_per_s"] for p in pairs[k]]):.1f}, '
            f'trl {statistics.median([p["trl"]["samples_per_s"] for p in pairs[k]]):.1f} samples/s, medians); target >= 1.2x: {"met" if ratios[k] >= 1.2 else "NOT met"}')
    log(f"model.fuse_lora_products: {ratios['ours'] / ratios['ours, peft lora']:.2f}x (the median ratio to trl of ours with the defaults over "
        f"that of the same with peft's LoRA forward)")
    first = pairs['ours'][0]   # package versions and trl's parameter count: the same in every round
    log(f'trl trainable parameters: {first["trl"]["trainable_params"]/1e6:.3f} M (policy LoRA + ' + ('the whole value model)' if a.trl_value == 'full' else "the value model's LoRA and head)"))
    log(f'total wall time {time.time() - t0:.0f} s')
    t, o = first['trl'], first['ours']
    head = ['# PPO against the peer: trl 1.12.0 PPOTrainer vs vlm_rlaif.ppo (CPU, text-only tiny Llama)', '',
            f'- date: {datetime.datetime.now():%Y-%m-%dT%H:%M}; machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
            f'load average at start {load_start:.2f}',
            f'- ours: torch {o["torch"]}, transformers {o["transformers"]}, peft {o["peft"]} (this project\'s venv)',
            f'- trl: trl {t["trl"]}, torch {t["torch"]}, transformers {t["transformers"]}, accelerate {t["accelerate"]}, datasets {t["datasets"]}, '
            f'peft {t["peft"]} (separate venv, {VENV})',
            f'- command: `python benchmarks/bench_ppo_peer.py --steps {a.steps} --rounds {a.rounds} --trl-value {a.trl_value}`', '',
            '### Settings', '',
            'Same on both sides: the policy (the world model\'s language model, random weights, identical on both sides), the '
            'text-only prompts (the same token ids), rollout batch, minibatch, PPO epochs, response length, temperature 1, LoRA r 8 / '
            'alpha 16 on every decoder linear layer, kl_coef 0.1, cliprange 0.2, cliprange_value 0.2, vf_coef 0.1, gamma 1, lambda 1, '
            f'learning rate {LR} (small, so both sample the same lengths), fp32, one fresh process per side and round, one core and one torch thread '
            'each, the two sides of a pair at the same time.', '',
            '| | ours (vlm_rlaif.ppo) | trl 1.12.0 PPOTrainer |', '| --- | --- | --- |',
            '| reference | policy base, adapter disabled | policy base, adapter disabled (peft_config) |',
            '| value model | LoRA adapter + head on the policy base | separate LlamaForSequenceClassification, ' + ('trained in full |' if a.trl_value == 'full' else 'backbone frozen under a LoRA adapter, head trained (--trl-value lora) |'),
            '| reward model | frozen LoRA adapter + head on the policy base | separate LlamaForSequenceClassification |',
            '| old log-probs | a policy forward in the score phase (also gives the entropy); fast: the sampling logits | the sampling logits (`output_scores`) |',
            '| forwards in the score phase | 4 (policy, reference, value, reward); fast: 3 (reference, value, reward) | 3 (reference, value, reward) |',
            '| rollout samples through | the policy\'s unmerged LoRA; fast: a merged copy (`model.MergedCopy`, refreshed each step) | the policy\'s unmerged LoRA |',
            '| logits computed | response positions only | every position |',
            '| adapted layers (float32, > in_features / 3 tokens) | one product with the merged weight, x (W + s B A)^T (`model.fuse_lora_products`); peft lora: peft\'s branch | peft\'s LoRA branch, x W^T + s (x A^T) B^T |',
            '| learn, per minibatch | policy + value forward/backward, grad clipping, AdamW | policy + value forward/backward, AdamW |', '',
            '### Output', '', '```']
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    args = {k: v for k, v in vars(a).items() if k not in ('side', 'tag', 'work', 'out', 'old_logprobs', 'rollout_weights', 'lora', 'threads')}
    Path(a.out).write_text('\n'.join(head + lines + ['```', '', '```json', json.dumps(dict(args=args, ours=OURS, median_ratios=ratios, pairs=pairs), indent=1),
                                                      '```']) + '\n')
    shutil.rmtree(work, ignore_errors=True)   # kept only when a side fails (its log is there)
    print(f'wrote {a.out}')

if __name__ == '__main__':
    main()
