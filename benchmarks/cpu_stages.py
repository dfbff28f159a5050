"""The main job on the CPU, read from its run folder: wall time per stage, PPO samples/s, and the share of each PPO phase.

Reads what the run wrote while it ran (it runs nothing itself):
- <run>/timings.json: the wall seconds of each stage (written by `vlm-rlaif run`);
- <run>/config.yaml: the PPO settings (rollout_batch: prompts per PPO step);
- <run>/ppo/log.jsonl: per PPO step, the timers time/generate (rollout: vision encoding + sampling), time/score (the
  policy, reference, value and reward forwards) and time/learn (PPO epochs x minibatches), and tokens/s.
PPO samples/s = rollout_batch x steps / the summed step time (generate + score + learn); the PPO stage's wall time also
holds what is outside the steps (loading the models, the held-out evaluations, checkpoints): shown as 'outside the steps'.

Usage: python benchmarks/cpu_stages.py [RUN_DIR (default runs/default)] [--out FILE]
"""
import argparse, datetime, json, os, platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ('generate', 'score', 'learn')

def read_run(run:Path) -> tuple[dict, dict, list[dict]]:
    "(stage seconds, the run config, the PPO step records), with errors that name the missing file."
    import yaml
    paths = dict(timings=run/'timings.json', config=run/'config.yaml', log=run/'ppo'/'log.jsonl')
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing: raise SystemExit(f'{run}: missing {", ".join(missing)} (has the run finished its PPO stage?)')
    timings = json.loads(paths['timings'].read_text())
    config = yaml.safe_load(paths['config'].read_text())
    steps = []
    for n, line in enumerate(paths['log'].read_text().splitlines(), 1):
        if not line.strip(): continue
        try: rec = json.loads(line)
        except json.JSONDecodeError as e: raise SystemExit(f'{paths["log"]}:{n}: not JSON ({e})')
        if rec.get('step', 0) > 0 and all(f'time/{p}' in rec for p in PHASES): steps.append(rec)
    if not steps: raise SystemExit(f'{paths["log"]}: no PPO step with timers')
    return timings, config, steps

def report(run:Path) -> tuple[list[str], dict]:
    timings, config, steps = read_run(run)
    lines, total = [], sum(timings.values())
    lines.append(f'run folder: {os.path.relpath(run.resolve(), ROOT)} (timings.json written {datetime.datetime.fromtimestamp((run/"timings.json").stat().st_mtime):%Y-%m-%d %H:%M})')
    lines.append('')
    lines.append('| stage | wall time (s) | min:s | share |')
    lines.append('| --- | ---: | ---: | ---: |')
    for name, s in timings.items():
        lines.append(f'| {name} | {s:.1f} | {int(s // 60)}:{s % 60:04.1f} | {s / total:.1%} |')
    lines.append(f'| **total** | **{total:.1f}** | **{int(total // 60)}:{total % 60:04.1f}** | 100% |')
    ppo = config.get('ppo', {})
    batch = ppo['rollout_batch']
    phase = {p: sum(r[f'time/{p}'] for r in steps) for p in PHASES}
    in_steps = sum(phase.values())
    stage_s = timings.get('ppo')
    lines += ['', f'PPO: {len(steps)} steps x rollout batch {batch} (minibatch {ppo.get("minibatch")}, {ppo.get("ppo_epochs")} PPO epochs, '
                  f'{ppo.get("max_new_tokens")} new tokens, {ppo.get("n_frames")} frames per video)', '',
              '| phase | seconds | share of the steps | share of the PPO stage | mean per step (s) |', '| --- | ---: | ---: | ---: | ---: |']
    for p in PHASES:
        lines.append(f'| {p} | {phase[p]:.1f} | {phase[p] / in_steps:.1%} | {phase[p] / stage_s:.1%} | {phase[p] / len(steps):.2f} |' if stage_s else
                     f'| {p} | {phase[p]:.1f} | {phase[p] / in_steps:.1%} | - | {phase[p] / len(steps):.2f} |')
    if stage_s: lines.append(f'| outside the steps | {stage_s - in_steps:.1f} | - | {(stage_s - in_steps) / stage_s:.1%} | - |')
    samples = batch * len(steps)
    result = dict(stages_s=timings, total_s=total, ppo_steps=len(steps), rollout_batch=batch, phases_s=phase,
                  samples_per_s_steps=samples / in_steps, samples_per_s_stage=samples / stage_s if stage_s else None,
                  tokens_per_s_generate=sum(r['tokens_per_s/generate'] for r in steps) / len(steps),
                  tokens_per_s_learn=sum(r['tokens_per_s/learn'] for r in steps) / len(steps))
    lines += ['', f'PPO samples/s: {result["samples_per_s_steps"]:.2f} over the steps ({samples} samples in {in_steps:.1f} s)'
                  + (f', {result["samples_per_s_stage"]:.2f} over the whole PPO stage ({stage_s:.1f} s)' if stage_s else ''),
              f'mean tokens/s: generate {result["tokens_per_s_generate"]:.0f} (response tokens), learn {result["tokens_per_s_learn"]:.0f} (prompt + response tokens)']
    return lines, result

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('run', nargs='?', default=str(ROOT/'runs'/'default'), help='the run folder')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'cpu_stages.md'))
    a = ap.parse_args()
    run = Path(a.run)
    lines, result = report(run)
    print('\n'.join(lines))
    try: import torch; torch_version = torch.__version__
    except ImportError: torch_version = 'not installed'
    head = ['# The main job on the CPU: wall time per stage, PPO throughput and phases', '',
            f'- date of this report: {datetime.date.today()}; machine: {platform.platform()}, {platform.processor() or platform.machine()}, '
            f'{os.cpu_count()} CPUs; torch {torch_version}',
            f'- the times were measured by the run itself (`vlm-rlaif run`, on this machine); read with `python benchmarks/cpu_stages.py {os.path.relpath(run.resolve(), ROOT)}`',
            '- PPO phases: generate = rollout (vision encoding once per batch + sampling with the KV cache); score = the policy, reference, '
            'value and reward forwards; learn = PPO epochs x minibatches (forward + backward + AdamW); outside the steps = loading, '
            'held-out evaluations, checkpoints', '']
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text('\n'.join(head + lines + ['', '```json', json.dumps(result, indent=1), '```']) + '\n')
    print(f'wrote {a.out}')

if __name__ == '__main__':
    main()
