"""The whole pipeline, every stage, through the command line on a tiny config: it completes, a second run
skips every stage, and the report lists them. The reward model trains on the world's ground-truth pairs
(world/rm_holdout.json) because an untrained judge keeps no pairs."""
import json
import pytest
from vlm_rlaif.cli import main
from vlm_rlaif.pipeline import STAGE_ORDER

TINY = ['world.n_sft=8', 'world.n_rl=4', 'world.n_rm=8', 'world.n_bench=4', 'world.n_text=30',
        'sft.pretrain_steps=3', 'sft.aux_warmup_steps=2', 'sft.max_steps=4', 'sft.batch_size=4', 'sft.tokenizer_worlds=30',
        'judge.max_prompts=4', 'reward.preferences=world/rm_holdout.json', 'reward.batch_size=4', 'reward.micro_batch_size=2',
        'reward.epochs=1', 'reward.probe_videos=2', 'ppo.steps=2', 'ppo.rollout_batch=8', 'ppo.minibatch=4', 'ppo.eval_max=8',
        'bench.limit=2']

def _args(tmp_path, *extra):
    out = ['run', 'configs/default.yaml', '--set', f'root={tmp_path}', '--set', 'name=tiny']
    for o in TINY + list(extra): out += ['--set', o]
    return out

def test_every_stage_runs_then_skips(tmp_path, capsys, monkeypatch):
    from conftest import ROOT
    monkeypatch.chdir(ROOT)
    assert main(_args(tmp_path)) == 0
    run = tmp_path/'tiny'
    for stage in STAGE_ORDER: assert (run/stage/'DONE.json').exists(), stage
    results = json.loads((run/'bench'/'results.json').read_text())
    assert results  # the benchmark scored the models
    capsys.readouterr()
    assert main(_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.count('done already') == len(STAGE_ORDER)
    assert main(['report', str(run)]) == 0
    report = capsys.readouterr().out
    assert all(s in report for s in STAGE_ORDER) and 'not done' not in report
