"""Convert PosMLP ImageNet weights (reference checkpoint or timm state dict) to a backbone
checkpoint: the classifier head goes, window-derived buffers are rebuilt, window-dependent
parameters are resized to --windows, and the final norm becomes the last output's norm.

    python tools/convert_posmlp_checkpoint.py SRC.pth checkpoints/posmlp_t_in1k_backbone.pth
"""
import argparse
import json

from mmdet_posmlp.checkpoint import convert_checkpoint


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
    print(json.dumps({k: meta[k] for k in ('found_in', 'backbone', 'renamed', 'resized', 'missing')},
                     indent=1))
    print(f'dropped {len(meta["dropped"])} keys (classifier head, window-derived buffers); '
          f'wrote {args.dst}')


if __name__ == '__main__':
    main()
