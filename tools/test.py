# Test (and evaluate) a detector with a PosMLP backbone (MMDetection 3.3's tools/test.py interface).
#
#   python tools/test.py configs/retinanet_posmlp_t_1x.py work_dirs/x/epoch_12.pth
#   python tools/test.py CONFIG CKPT --show-dir vis   # drawn predictions in <work_dir>/<time>/vis
#   python tools/test.py CONFIG CKPT --out results.pkl
#   bash tools/dist_test.sh CONFIG CKPT 8
#
# COCO configs print the bbox (and, for Mask R-CNN, segm) AP tables through pycocotools.
import argparse
import sys
from pathlib import Path

# this checkout's mmdet_posmlp, used where site-packages has none (which would come first)
sys.path.append(str(Path(__file__).resolve().parents[1]))

from mmdet_posmlp.engine.runner import (SETUP_ERRORS, add_launch_arguments, build_test_runner,
                                        set_local_rank)


def parse_args():
    parser = argparse.ArgumentParser(description='MMDet test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out', type=str, help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. If specified, it will be '
        'automatically saved to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--no-fuse', action='store_true',
        help="test the backbone as trained, without its deployment step (fuse(): the stem's "
        'BatchNorm folded, the mixing matrices kept per map size; the same outputs up to '
        'rounding)')
    add_launch_arguments(parser, 'test_dataloader.dataset.data_root and test_evaluator.ann_file')
    args = parser.parse_args()
    set_local_rank(args.local_rank)
    return args


def main():
    args = parse_args()
    try:
        runner = build_test_runner(
            args.config, args.checkpoint, work_dir=args.work_dir, out=args.out,
            show=args.show, show_dir=args.show_dir, wait_time=args.wait_time,
            cfg_options=args.cfg_options, launcher=args.launcher, fuse=not args.no_fuse)
    except SETUP_ERRORS as e:
        sys.exit(f'\n{e}')
    runner.test()


if __name__ == '__main__':
    main()
