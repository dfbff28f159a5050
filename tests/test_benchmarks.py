"""The GPU benchmark scripts on their tiny shapes, on the CPU: the same code paths as the H100 runs, so that a change
to the package that breaks a benchmark fails here, not during a scarce GPU session."""
import os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def run_script(name:str, *args:str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/name), *args], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout

def test_bench_gpu_7b_tiny(tmp_path):
    out = tmp_path/'gpu.md'
    log = run_script('bench_gpu_7b.py', '--shape', 'tiny', '--out', str(out))
    assert 'FAILED' not in log, log
    report = out.read_text()
    for row in ('vision encoding', 'decode_dynamic', 'decode_lora_after_update', 'decode_reference_disabled', 'decode_lora_merged',
                'decode_ppo_rollout:', 'decode_ppo_rollout_merged:', 'learn_b8_ckpt', 'learn_b4:', 'learn_b4_peft_casts', 'learn_b4_compiled',
                'learn_b16_ckpt', 'one PPO step, four roles'):
        assert row in report, (row, report)

def test_bench_gpu_decode_tiny(tmp_path):
    out = tmp_path/'decode.md'
    log = run_script('bench_gpu_decode.py', '--shape', 'tiny', '--new-tokens', '16', '--out', str(out))
    assert 'FAILED' not in log, log
    report = out.read_text()
    for row in ('sampler_merged:', 'own one-token rollout', 'kernels of 4 decode steps', 'attention of one decode step', 'one read of',
                'generate_merged:', 'sampler_adapter:', 'sampler_merged_autotune:', 'generate_merged / sampler_merged per decode step',
                'products: the skinny kernel', 'sampler_skinny:', 'kernels of 4 decode steps of sampler_skinny'):
        assert row in report, (row, report)

def test_bench_vision_reuse_tiny_7b_shape():
    log = run_script('bench_vision_reuse.py', '--shape', '7b', '--tiny', '--steps', '1', '--minibatch', '2', '--new-tokens', '4',
                     '--rollout-cache', 'static', '--rollout-weights', 'merged', '--rollout-products', 'skinny')
    assert 'vision-tower calls per step: 1 with reuse' in log, log
    assert 'ppo_step phases (rollout cache static, rollout weights merged, rollout products skinny)' in log, log

def test_profile_gpu_7b_tiny(tmp_path):
    out = tmp_path/'profile.md'
    run_script('profile_gpu_7b.py', '--shape', 'tiny', '--out', str(out))
    report = out.read_text()
    assert '## one decode step' in report and '## one learn step' in report and 'matrix products' in report, report
