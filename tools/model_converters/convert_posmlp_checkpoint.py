"""Convert PosMLP ImageNet weights (reference checkpoint or timm state dict) to a backbone
checkpoint: the classifier head goes, window-derived buffers are rebuilt, window-dependent
parameters are resized to --windows, and the final norm becomes the last output's norm.

    python tools/model_converters/convert_posmlp_checkpoint.py SRC.pth checkpoints/posmlp_t_in1k.pth

The conversion is the backbone's own Pretrained loading (PosMLP.load_pretrained, through
posmlp.checkpoint_filter_fn); this tool builds the backbone to convert into and writes the file.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

# this checkout's mmdet_posmlp, used where site-packages has none (which would come first)
sys.path.append(str(Path(__file__).resolve().parents[2]))

from mmdet_posmlp.models import PosMLP
from mmdet_posmlp.models.common import unwrap_state_dict
from mmdet_posmlp.models.posmlp import infer_arch_and_mixer
from mmdet_posmlp.safe_load import load_checkpoint_file


def convert_checkpoint(src: str, dst: str, **backbone_args) -> dict:
    """Write a backbone checkpoint for `PosMLP(**backbone_args)` from any accepted source.

    The backbone's own Pretrained loading does the conversion; arch and mixer default to the
    checkpoint's own. The output is written to a temporary file and renamed, so an
    interrupted run never leaves a half-written `dst`.
    """
    sd, _ = unwrap_state_dict(load_checkpoint_file(src), src, 'PosMLP')
    arch, mixer = infer_arch_and_mixer(sd, src)
    backbone_args.setdefault('arch', arch)
    backbone_args.setdefault('mixer', mixer)
    model = PosMLP(**backbone_args, init_cfg=dict(type='Pretrained', checkpoint=src))
    report = model.load_pretrained(src)
    meta = dict(source=os.path.abspath(src), found_in=report['source'][0], backbone=backbone_args,
                dropped=report['head'] + report['unused'], resized=report['resized'],
                missing=report['missing'])
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = f'{dst}.tmp.{os.getpid()}'
    try:
        torch.save({'state_dict': model.state_dict(), 'meta': meta}, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return meta


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', help='reference training checkpoint, timm state dict or backbone checkpoint')
    p.add_argument('dst', help='where to write the backbone checkpoint')
    p.add_argument('--arch', choices=['tiny', 'small', 'base'], help='default: from the checkpoint')
    p.add_argument('--mixer', choices=['gqpe', 'lrpe', 'sgu'], help='default: from the checkpoint')
    p.add_argument('--windows', type=int, nargs='+', help='detection window per stage (or one for all)')
    p.add_argument('--out-indices', type=int, nargs='+', default=[0, 1, 2, 3])
    p.add_argument('--no-out-norm', action='store_true', help='backbone without per-output norms')
    return p.parse_args()


def main():
    args = parse_args()
    backbone = dict(out_indices=tuple(args.out_indices), out_norm=not args.no_out_norm)
    for key in ('arch', 'mixer'):
        if getattr(args, key):
            backbone[key] = getattr(args, key)
    if args.windows:
        backbone['windows'] = args.windows[0] if len(args.windows) == 1 else tuple(args.windows)
    meta = convert_checkpoint(args.src, args.dst, **backbone)
    print(json.dumps({k: meta[k] for k in ('found_in', 'backbone', 'resized', 'missing')},
                     indent=1))
    print(f'dropped {len(meta["dropped"])} keys (classifier head, stages not built); '
          f'wrote {args.dst}')


if __name__ == '__main__':
    main()
