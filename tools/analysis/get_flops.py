# Parameters and FLOPs of a detector and of its backbone.
#
#   python tools/analysis/get_flops.py configs/retinanet_posmlp_t_1x.py --shape 800 1280
#   python tools/analysis/get_flops.py CONFIG --params-only      # parameter counts, no tracing
#
# FLOPs follow mmengine's FlopAnalyzer (one multiply-add = one FLOP). No weights are loaded.
import argparse
import sys
from pathlib import Path

from mmengine.config import DictAction

# this checkout's mmdet_posmlp, used where site-packages has none (which would come first)
sys.path.append(str(Path(__file__).resolve().parents[2]))

from mmdet_posmlp.analysis.complexity import format_complexity, model_complexity
from mmdet_posmlp.detector_io import ShapeAction


def parse_args():
    parser = argparse.ArgumentParser(description='Parameters and FLOPs of a detector')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--shape', type=int, nargs='+', action=ShapeAction, default=[800, 1280],
        help='input image size H W (one value: square), before padding to the size divisor')
    parser.add_argument(
        '--params-only', action='store_true', help='count parameters only (fast)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, xxx=yyy format')
    return parser.parse_args()


def main():
    args = parse_args()
    result = model_complexity(args.config, shape=args.shape, cfg_options=args.cfg_options,
                              with_flops=not args.params_only)
    print(format_complexity(result, args.config))


if __name__ == '__main__':
    main()
