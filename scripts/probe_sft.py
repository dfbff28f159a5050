"""Held-out exact-scorer accuracy of a run's SFT model (and of its PPO policy, if any), per question kind, with
the most common answers: the quick check that the model looks at the video and answers in the right form.

    python scripts/probe_sft.py runs/default [--kinds colour shape count changes] [--limit 200]
"""
import argparse, collections
from pathlib import Path

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('run', type=Path)
    ap.add_argument('--kinds', nargs='+', default=['colour', 'shape', 'count', 'changes'])
    ap.add_argument('--limit', type=int, default=200, help='held-out questions (0: all)')
    a = ap.parse_args()
    from vlm_rlaif.core import offline_env; offline_env()
    from peft import PeftModel
    from vlm_rlaif import ppo
    from vlm_rlaif.model import load_video_lmm
    lmm = load_video_lmm(a.run/'sft'/'model')
    items = ppo.held_out_questions(a.run/'world', a.kinds, a.limit)
    kind_of = {it['id']: it['kind'] for it in items}
    import yaml
    frames = yaml.safe_load((a.run/'config.yaml').read_text())['model']['frames']   # the frames the run's model was trained on
    videos = ppo.PromptVideos(a.run/'world'/'videos', frames, lmm.preprocess)
    models = {'sft': lmm.model}
    policy = a.run/'ppo'/'policy'/'policy'
    if policy.exists(): models['rlaif'] = PeftModel.from_pretrained(load_video_lmm(a.run/'sft'/'model').model, policy)
    for label, model in models.items():
        r = ppo.evaluate_exact(model.eval(), lmm.tokenizer, items, videos)
        answers = collections.defaultdict(collections.Counter)
        for qid, ans in zip(r['ids'], r['answers']): answers[kind_of[qid]][ans] += 1
        print(f"{label}: accuracy {r['accuracy']:.3f} on {r['n']} held-out questions ({r['skipped']} left out: video unreadable)")
        for k, v in r['kinds'].items():
            print(f"  {k:<8} {v['accuracy']:.2f} (n={v['n']}, {len(answers[k])} distinct answers)  most common: {answers[k].most_common(4)}")

if __name__ == '__main__':
    main()
