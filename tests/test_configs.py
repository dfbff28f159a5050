"""Every committed config loads through the package's own loader and validates, so that a renamed or removed knob
fails here and not on a GPU; the 7B config holds the paper's values; every accelerate config is one that
`accelerate launch` itself accepts, and its process count divides the config's global batch sizes."""
from pathlib import Path
import pytest, yaml
from conftest import ROOT
from vlm_rlaif.core import ConfigError, load_config
from vlm_rlaif.pipeline import RunConfig

RUN_CONFIGS = sorted((ROOT/'configs').glob('*.yaml'))
ACCELERATE_CONFIGS = sorted((ROOT/'configs'/'accelerate').glob('*.yaml'))
SEVEN_B = ROOT/'configs'/'llava_next_video_7b.yaml'

def test_the_configs_are_there():
    names = {p.name for p in RUN_CONFIGS}
    assert {'default.yaml', 'llava_next_video_7b.yaml'} <= names, names
    assert {'1gpu.yaml', '8gpu_ddp.yaml'} <= {p.name for p in ACCELERATE_CONFIGS}

@pytest.mark.parametrize('path', RUN_CONFIGS, ids=lambda p: p.name)
def test_run_config_loads_and_validates(path):
    cfg = load_config(path, RunConfig)   # unknown keys, wrong types and limits raise ConfigError naming the file and key
    cfg.validate()
    assert cfg.name and cfg.stages

def test_a_renamed_knob_fails(tmp_path):
    "The check above can fail: the 7B config with one knob renamed is rejected, with the key in the message."
    renamed = tmp_path/'renamed.yaml'
    renamed.write_text(SEVEN_B.read_text().replace('  lora_r: 64', '  lora_rank: 64', 1))
    with pytest.raises(ConfigError, match='lora_rank'): load_config(renamed, RunConfig)

# the paper's values (paper-notes.md sections 1, 4, 5, 6) that the 7B config must keep
PAPER = {
    'frames.n_frames': 50, 'frames.size': 336, 'frames.resize_mode': 'pad', 'frames.max_clip_frames': 20,
    'model.frames': 50, 'model.image_size': 336, 'model.patch_size': 14, 'model.vision_feature_layer': -2, 'model.pooling': 'spatiotemporal',
    'sft.order': 'curriculum', 'sft.epochs': 1.0, 'sft.lr': 1e-4, 'sft.replay_short': False,
    'judge.context': 'self', 'judge.frames': 50, 'judge.context_frames': 50, 'judge.clip_frames': 20, 'judge.verdict': 'text',
    'ppo.lora_r': 64, 'ppo.lora_alpha': 16, 'ppo.rollout_batch': 256, 'ppo.minibatch': 128, 'ppo.ppo_epochs': 2, 'ppo.max_new_tokens': 896,
    'ppo.temperature': 1.0, 'ppo.top_p': 1.0, 'ppo.top_k': 0, 'ppo.no_eos_penalty': -8.0, 'ppo.length_penalty': 10.0, 'ppo.reward_scale': 10.0,
    'ppo.whiten_rewards': False, 'ppo.kl_coef': 0.1, 'ppo.adaptive_kl': False, 'ppo.gamma': 1.0, 'ppo.lam': 1.0, 'ppo.whiten_advantages': True,
    'ppo.lr': 3e-5, 'ppo.warmup_steps': 5, 'ppo.cliprange': 0.2, 'ppo.cliprange_value': 0.2, 'ppo.vf_coef': 0.1, 'ppo.max_grad_norm': 1.0,
    'ppo.steps': 0, 'bench.frames': 50, 'bench.temperature': 0.2,
}

def _knob(cfg, key:str):
    section, knob = key.split('.')
    return getattr(getattr(cfg, section), knob)

def test_seven_b_config_holds_the_papers_values():
    from vlm_rlaif.reward import PAPER_REWARD
    cfg = load_config(SEVEN_B, RunConfig)
    get = lambda key: _knob(cfg, key)
    wrong = {k: (get(k), v) for k, v in PAPER.items() if get(k) != v}
    wrong.update({f'reward.{k}': (getattr(cfg.reward, k), v) for k, v in PAPER_REWARD.items() if getattr(cfg.reward, k) != v})
    assert not wrong, f'7B config value != paper value: {wrong}'
    assert 'world' not in cfg.stages and 'pretrain' not in cfg.stages   # a checkpoint brings its own language model

# what a stage reads: '' means the run's world (or stage-0 model), which a real run does not have
REAL_INPUTS = ('frames.video_root', 'sft.base', 'sft.instructions', 'sft.video_root', 'judge.prompts', 'judge.video_root', 'reward.video_root',
               'ppo.prompts', 'ppo.video_root', 'bench.bench_dir', 'bench.video_dir')

def test_seven_b_config_reads_no_world():
    "Every input of the 7B config is a file of data/ or the checkpoint, and no setting needs the world's ground truth (tests/test_real_data.py runs it)."
    cfg = load_config(SEVEN_B, RunConfig)
    assert not [k for k in REAL_INPUTS if not _knob(cfg, k)], 'these knobs fall back to the world'
    assert cfg.judge.context != 'oracle' and 'oracle' not in cfg.judge.compare_contexts and cfg.ppo.reward == 'model'
    assert 'exact' not in cfg.bench.judges and cfg.reward.probe_videos == 0 and cfg.ppo.eval_max == 0
    assert cfg.bench.models == {'base': cfg.sft.base}   # the downloaded checkpoint is benchmarked beside sft and rlaif

def _launch_args(path:Path):
    "What `accelerate launch --config_file PATH` makes of the file: accelerate's own loader and argument validation, without launching."
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    args = launch_command_parser().parse_args(['--config_file', str(path), '--no_python', 'vlm-rlaif', 'run', str(SEVEN_B)])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults

@pytest.mark.parametrize('path', ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_is_what_accelerate_launch_reads(path):
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict), f'{path}: not a YAML mapping'
    for key in ('compute_environment', 'distributed_type', 'num_processes', 'num_machines', 'mixed_precision'):
        assert key in raw, f'{path}: no {key!r}'
    args, defaults = _launch_args(path)   # unknown keys and bad values raise here, as they would in `accelerate launch`
    assert raw['mixed_precision'] == 'bf16' and args.mixed_precision == 'bf16'
    assert args.num_processes == raw['num_processes'] and args.multi_gpu == (raw['num_processes'] > 1)
    assert args.training_script == 'vlm-rlaif' and args.no_python
    # the global batch sizes of the 7B config split over this many processes
    cfg = load_config(SEVEN_B, RunConfig)
    n = args.num_processes
    cfg.ppo.check_processes(n)
    assert cfg.reward.batch_size % (cfg.reward.micro_batch_size * n) == 0, f'reward.batch_size does not split over {n} processes'

def test_a_bad_accelerate_key_fails(tmp_path):
    "The check above can fail: a misspelt key is rejected by accelerate's loader."
    bad = tmp_path/'bad.yaml'
    bad.write_text((ROOT/'configs'/'accelerate'/'8gpu_ddp.yaml').read_text().replace('num_processes:', 'num_process:'))
    with pytest.raises(ValueError, match='num_process'): _launch_args(bad)
