# Inference speed of a detector (batch 1): median of repeated runs after warmup.
#
#   python tools/analysis/benchmark_fps.py configs/retinanet_posmlp_t_1x.py --shape 800 1333
#   python tools/analysis/benchmark_fps.py CONFIG --checkpoint CKPT --image demo.jpg --repeat 20
#
# Without --image a random image of --shape (H W) is the network input as it is (no resize);
# with --image the config's test pipeline resizes it. Without --checkpoint weights are random.
import argparse
import sys
from pathlib import Path

from mmengine.config import DictAction

# this checkout's mmdet_posmlp, used where site-packages has none (which would come first)
sys.path.append(str(Path(__file__).resolve().parents[2]))

from mmdet_posmlp.analysis.benchmark import benchmark_fps, format_benchmark
from mmdet_posmlp.detector_io import ShapeAction


def parse_args():
    parser = argparse.ArgumentParser(description='Inference FPS of a detector')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--checkpoint', help='checkpoint to load (default: random weights)')
    parser.add_argument('--image', help='image file (default: a random image of --shape)')
    parser.add_argument(
        '--shape', type=int, nargs='+', action=ShapeAction, default=[800, 1333],
        help='H W of the random image (one value: square)')
    parser.add_argument('--repeat', type=int, default=10, help='timed runs (median reported)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs first')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--no-fuse', action='store_true',
                        help="time the backbone as trained, without its deployment step")
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, xxx=yyy format')
    return parser.parse_args()


def main():
    args = parse_args()
    result = benchmark_fps(args.config, checkpoint=args.checkpoint, shape=args.shape,
                           image=args.image, repeat=args.repeat, warmup=args.warmup,
                           cfg_options=args.cfg_options, threads=args.threads,
                           fuse=not args.no_fuse)
    print(format_benchmark(result))


if __name__ == '__main__':
    main()
