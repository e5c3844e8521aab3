# Training loss curve(s) and validation mAP per epoch, from mmengine's scalars.json.
#
#   python tools/analysis/plot_logs.py work_dirs/retinanet_posmlp_t_1x
#   python tools/analysis/plot_logs.py WORK_DIR --out curves.png
#   python tools/analysis/plot_logs.py RUN_A RUN_B RUN_C --out compare.png --labels a b c
#                                                  # several runs: total loss and mAP overlaid
#
# Reads WORK_DIR/<timestamp>/vis_data/scalars.json (all timestamps: resumed runs continue).
import argparse
import sys
from pathlib import Path

# this checkout's mmdet_posmlp, used where site-packages has none (which would come first)
sys.path.append(str(Path(__file__).resolve().parents[2]))

from mmdet_posmlp.analysis.training_logs import plot_comparison, plot_training_curves, summarize


def parse_args():
    parser = argparse.ArgumentParser(description='Plot training loss and val mAP')
    parser.add_argument(
        'work_dir', nargs='+',
        help='training work_dir, one of its <timestamp> folders, or a scalars.json; several: '
        'their curves overlaid')
    parser.add_argument('--out', help='PNG to write (default: WORK_DIR/training_curves.png; '
                        'required for several runs)')
    parser.add_argument('--labels', nargs='+', help='one name per run (default: folder names)')
    parser.add_argument('--title', help='figure title (default: the work_dir name)')
    args = parser.parse_args()
    if len(args.work_dir) > 1 and not args.out:
        parser.error('several runs: --out is required')
    if args.labels and len(args.labels) != len(args.work_dir):
        parser.error(f'--labels: {len(args.labels)} names for {len(args.work_dir)} runs')
    return args


def main():
    args = parse_args()
    try:
        if len(args.work_dir) == 1:
            out = plot_training_curves(args.work_dir[0], args.out, args.title)
        else:
            out = plot_comparison(args.work_dir, args.out, args.labels, args.title)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(str(e))
    for work_dir in args.work_dir:
        print(f'{work_dir}:\n{summarize(work_dir)}')
    print(f'saved {out}')


if __name__ == '__main__':
    main()
