# Train a detector with a PosMLP backbone (same interface as MMDetection 3.3's tools/train.py).
#
#   python tools/train.py configs/retinanet_posmlp_t_1x.py
#   python tools/train.py CONFIG --work-dir work_dirs/x --resume            # latest in work_dir
#   python tools/train.py CONFIG --resume work_dirs/x/epoch_3.pth           # a given checkpoint
#   bash tools/dist_train.sh CONFIG 8                                       # 8 GPUs
import argparse
import sys
from pathlib import Path

# this checkout's mmdet_posmlp, used where site-packages has none (which would come first)
sys.path.append(str(Path(__file__).resolve().parents[1]))

from mmdet_posmlp.engine.runner import (SETUP_ERRORS, add_launch_arguments, build_train_runner,
                                        set_local_rank)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp', action='store_true', default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr', action='store_true', help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='If specify checkpoint path, resume from it, while if not specify, try to auto '
        'resume from the latest checkpoint in the work directory.')
    add_launch_arguments(parser, 'train_dataloader.dataset.data_root etc.')
    args = parser.parse_args()
    set_local_rank(args.local_rank)
    return args


def main():
    args = parse_args()
    try:
        runner = build_train_runner(
            args.config, work_dir=args.work_dir, amp=args.amp,
            auto_scale_lr=args.auto_scale_lr, resume=args.resume,
            cfg_options=args.cfg_options, launcher=args.launcher)
    except SETUP_ERRORS as e:
        sys.exit(f'\n{e}')
    runner.train()


if __name__ == '__main__':
    main()
