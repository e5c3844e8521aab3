# Training loss curve(s) and validation mAP per epoch, from mmengine's scalars.json.
#
#   python tools/analysis/plot_logs.py work_dirs/retinanet_posmlp_t_1x
#   python tools/analysis/plot_logs.py WORK_DIR --out curves.png
#
# Reads WORK_DIR/<timestamp>/vis_data/scalars.json (all timestamps: resumed runs continue).
import argparse
import importlib.util
import os.path as osp
import sys


def _load_logs():
    """logs.py beside this script, by path: plotting needs matplotlib only (no torch, mmdet or
    mmdet_posmlp), and the script then runs from any directory."""
    path = osp.join(osp.dirname(osp.abspath(__file__)), 'logs.py')
    spec = importlib.util.spec_from_file_location('_posmlp_training_logs', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


logs = _load_logs()
plot_training_curves, summarize = logs.plot_training_curves, logs.summarize


def parse_args():
    parser = argparse.ArgumentParser(description='Plot training loss and val mAP')
    parser.add_argument(
        'work_dir', help='training work_dir, one of its <timestamp> folders, or a scalars.json')
    parser.add_argument('--out', help='PNG to write (default: WORK_DIR/training_curves.png)')
    parser.add_argument('--title', help='figure title (default: the work_dir name)')
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        out = plot_training_curves(args.work_dir, args.out, args.title)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(str(e))
    print(summarize(args.work_dir))
    print(f'saved {out}')


if __name__ == '__main__':
    main()
