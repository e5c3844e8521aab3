# Export a PosMLP backbone or single-stage detector to ONNX, checked with onnxruntime.
#
#   python tools/deployment/export_onnx.py configs/retinanet_posmlp_t_1x.py CKPT \
#       --out retinanet.onnx --part detector --shape 800 1344
#   python tools/deployment/export_onnx.py CONFIG CKPT --out backbone.onnx --dynamic
#
# What is exported: the plain model in eval mode (not the fused one); --part detector is
# mmdet's tensor mode (backbone, neck, head: raw head outputs), post-processing stays in Python
# (mmdet_posmlp.deployment.predict_with_onnx). The input is the preprocessed batch (normalised,
# padded). The file is checked before success is reported: onnxruntime against PyTorch within
# 1e-4 (max |onnx - torch| / max |torch|) at the export size and, with --dynamic, at the next
# accepted size, and a second input must change every output; a file that fails is removed.
# --dynamic uses torch.export and needs onnxscript; the sizes it accepts are printed (H, W
# congruent to the export size modulo 224 for PosMLP-T/S/B). The library is
# mmdet_posmlp/deployment/, whose docstrings say more.
import argparse
import sys
from pathlib import Path

from mmengine.config import DictAction

# this checkout's mmdet_posmlp, used where site-packages has none (which would come first)
sys.path.append(str(Path(__file__).resolve().parents[2]))

from mmdet_posmlp.deployment import (DEFAULT_OPSET, EXPORTERS, PARTS, ExportError,
                                     VerificationError, export_from_config)
from mmdet_posmlp.detector_io import ShapeAction
from mmdet_posmlp.safe_load import UnsafeCheckpointError


def parse_args():
    parser = argparse.ArgumentParser(
        description='Export a PosMLP backbone or detector to ONNX, checked with onnxruntime')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', nargs='?',
                        help='checkpoint (safe loading); without it the weights are random')
    parser.add_argument('--out', required=True, help='the ONNX file to write')
    parser.add_argument('--part', choices=PARTS, default='backbone',
                        help='backbone features, or the detector (backbone, neck, head)')
    parser.add_argument('--shape', type=int, nargs='+', action=ShapeAction,
                        default=[800, 1344],
                        help='input H W (one value: square), as the network sees it, i.e. '
                        'after the data preprocessor padded it (default 800 1344)')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic height and width (torch.export; needs onnxscript)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset (default {DEFAULT_OPSET})')
    parser.add_argument('--exporter', choices=EXPORTERS, default='auto',
                        help='auto: dynamo with --dynamic, else torchscript')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy format')
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        report = export_from_config(
            args.config, args.checkpoint, args.out, part=args.part, size=args.shape,
            dynamic=args.dynamic, opset=args.opset, exporter=args.exporter,
            cfg_options=args.cfg_options)
    except VerificationError as e:
        sys.exit(f'\nexport refused, {args.out} removed: {e}')
    except (ExportError, UnsafeCheckpointError, FileNotFoundError) as e:
        sys.exit(f'\nexport failed: {e}')
    print(report.format())


if __name__ == '__main__':
    main()
