"""Supervised headroom: how far the parameters PPO trains can move a run's held-out exact-scorer results when they are
trained with the right answers (the RL prompts' reference answers) instead of a reward. No reward, oracle or learned,
can be expected to do better through the same parameters with fewer labels; when this does not move, the limit is the
model's perception, not the PPO loop.

    python scripts/headroom.py runs/default [--train lora|projector|vision] [--steps 120] [--lr 1e-3] [--kinds colour shape count]

It trains a fresh LoRA like the PPO policy's (`ppo.lora_r`, `ppo.lora_alpha` of the run's config; with `--train projector` the
projector too, with `--train vision` the projector and the vision tower) with `ppo.sft_steps`, and prints the held-out
accuracy per kind before and after. Nothing is written to the run.
"""
import argparse
from pathlib import Path

TRAIN_PARTS = {'lora': (), 'projector': ('multi_modal_projector',), 'vision': ('multi_modal_projector', 'vision_tower')}

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('run', type=Path)
    ap.add_argument('--train', choices=sorted(TRAIN_PARTS), default='lora', help='what trains besides the LoRA')
    ap.add_argument('--kinds', nargs='+', default=['colour', 'shape', 'count'], help='RL prompt and held-out question kinds')
    ap.add_argument('--steps', type=int, default=120)
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--limit', type=int, default=0, help='held-out questions (0: all of the kinds)')
    a = ap.parse_args()
    from vlm_rlaif.core import offline_env, seed_everything
    offline_env()
    import yaml
    from vlm_rlaif import ppo
    from vlm_rlaif.model import add_role_adapter, load_video_lmm
    run_cfg = yaml.safe_load((a.run/'config.yaml').read_text())
    seed_everything(0)
    lmm = load_video_lmm(a.run/'sft'/'model')
    videos = ppo.PromptVideos(a.run/'world'/'videos', run_cfg['ppo']['n_frames'], lmm.preprocess)
    prompts, _ = ppo.read_prompts(a.run/'world'/'rl_prompts.json', a.run/'world'/'videos', a.kinds)
    items = ppo.held_out_questions(a.run/'world', a.kinds, a.limit)
    model = add_role_adapter(lmm.model, 'policy', r=run_cfg['ppo']['lora_r'], alpha=run_cfg['ppo']['lora_alpha'])
    for name, p in model.named_parameters():
        if any(part in name for part in TRAIN_PARTS[a.train]): p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    print(f'{a.run}: {len(prompts)} RL prompts with answers, {len(items)} held-out questions, training {a.train} '
          f'({sum(p.numel() for p in params):,} parameters), lr {a.lr}, batch {a.batch}')
    def report(step, loss=''):
        r = ppo.evaluate_exact(model.eval(), lmm.tokenizer, items, videos, run_cfg['ppo']['max_new_tokens'])
        model.train()
        per_kind = '  '.join(f"{k} {v['accuracy']:.2f}" for k, v in r['kinds'].items())
        print(f"step {step:4d}{loss}  held-out accuracy {r['accuracy']:.3f}  ({per_kind})", flush=True)
    report(0)
    losses = ppo.sft_steps(model, lmm.tokenizer, prompts, videos, params, a.steps, batch_size=a.batch, lr=a.lr)
    tenth = max(1, len(losses) // 10)
    report(a.steps, f'  loss {sum(losses[:tenth]) / tenth:.3f} -> {sum(losses[-tenth:]) / tenth:.3f}')

if __name__ == '__main__':
    main()
