#!/usr/bin/env python
"""Generate the demo data set: synthetic shapes in COCO format, no download, seconds.

    python tools/make_demo_data.py                      # data/demo_shapes/, 600 train + 100 val
    python tools/make_demo_data.py --out /tmp/shapes --num-train 8 --num-val 4

Idempotent: does nothing when out/ already holds the data for the same generator version and
parameters (out/manifest.json), regenerates when they differ, or always with --force.
"""
import argparse
import importlib.util
import os.path as osp


def _load_shapes():
    """The generator module (tools/demo/shapes.py) by path: it needs numpy and PIL only, so this
    tool runs before (and without) torch / mmdet and mmdet_posmlp's installation."""
    path = osp.join(osp.dirname(osp.abspath(__file__)), 'demo', 'shapes.py')
    spec = importlib.util.spec_from_file_location('_posmlp_demo_shapes', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shapes = _load_shapes()
DEFAULTS, make_shapes_dataset = shapes.DEFAULTS, shapes.make_shapes_dataset


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', default='data/demo_shapes', help='output folder')
    p.add_argument('--num-train', type=int, default=DEFAULTS['num_train'])
    p.add_argument('--num-val', type=int, default=DEFAULTS['num_val'])
    p.add_argument('--seed', type=int, default=DEFAULTS['seed'])
    p.add_argument('--image-size', type=int, nargs=2, default=DEFAULTS['image_size'],
                   metavar=('MIN', 'MAX'), help='each image side drawn from [MIN, MAX] pixels')
    p.add_argument('--object-size', type=float, nargs=2, default=DEFAULTS['object_size'],
                   metavar=('MIN', 'MAX'), help='object extent drawn log-uniformly (pixels)')
    p.add_argument('--max-objects', type=int, default=DEFAULTS['max_objects'])
    p.add_argument('--texture', type=float, default=DEFAULTS['texture'],
                   help='background shading amplitude (1: strong)')
    p.add_argument('--clutter', type=int, default=DEFAULTS['clutter'],
                   help='at most this many distractor strokes per image')
    p.add_argument('--random-colours', action='store_true',
                   help='random object colours: only the shape tells the classes apart')
    p.add_argument('--force', action='store_true', help='regenerate even if up to date')
    p.add_argument('--quiet', action='store_true')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    make_shapes_dataset(
        args.out, force=args.force, verbose=not args.quiet, num_train=args.num_train,
        num_val=args.num_val, seed=args.seed, image_size=args.image_size,
        object_size=args.object_size, max_objects=args.max_objects,
        texture=args.texture, clutter=args.clutter, class_colours=not args.random_colours)


if __name__ == '__main__':
    main()
