"""The reproduction study (nbs/12_reproduce.ipynb): every arm for each seed on a base config, then the
collected numbers, the headline table and the headline plot written to nbs/reproduction/, which the
reproduction page (nbs/reproduction.ipynb) and the README render. Resumable: run it again to continue.

    python scripts/reproduce.py                      # 3 seeds of configs/default.yaml, every arm
    python scripts/reproduce.py --seeds 0 --arms main oracle-ppo --set ppo.steps=10
"""
import argparse, datetime, json, os, platform, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def main():
    from vlm_rlaif.core import atomic_write_json, atomic_write_text, offline_env
    from vlm_rlaif.reproduce import collect_study, headline_plot, run_study, study_arms, table1
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--config', default=str(ROOT/'configs'/'default.yaml'), help='the base config of every arm')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--arms', nargs='+', default=['main', 'ctx-none', 'ctx-oracle', 'size-0.25', 'size-0.5', 'mixed', 'oracle-ppo'])
    ap.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='a knob set in every arm (repeatable)')
    ap.add_argument('--root', default=str(ROOT/'runs'), help='the folder of the study folder')
    ap.add_argument('--study', default='repro', help='the study folder (one run folder per arm inside)')
    ap.add_argument('--out', default=str(ROOT/'nbs'/'reproduction'), help='where results.json, table1.md and headline.png go')
    a = ap.parse_args()
    offline_env()
    t0 = time.time()
    plan = study_arms(a.seeds, a.arms)
    study_root = Path(a.root)/a.study
    run_study(a.config, study_root, plan, a.set)
    import torch
    meta = dict(config=os.path.relpath(a.config, ROOT), overrides=a.set, seeds=a.seeds, arms=a.arms, study=a.study,
                command='python scripts/reproduce.py ' + ' '.join(os.sys.argv[1:]),
                machine=dict(platform=platform.platform(), cpus=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads()),
                date=datetime.date.today().isoformat(), seconds_this_call=round(time.time() - t0))
    results = collect_study(study_root, plan, **meta)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out/'results.json', results)
    t1, stats = table1(results)
    atomic_write_text(out/'table1.md', t1 + '\n')
    headline_plot(stats, out/'headline.png')
    print(t1)
    print(f'wrote {out}/results.json, table1.md, headline.png')

if __name__ == '__main__':
    main()
