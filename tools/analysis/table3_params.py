# The parameter column of the PosMLP paper's Table 3, measured: every detector built from its
# config (mmdet's for ResNet and PVT, ours for CycleMLP and PosMLP), against the paper's figure.
#
#   python tools/analysis/table3_params.py                 # all 16 detectors
#   python tools/analysis/table3_params.py --only CycleMLP  # rows whose backbone contains it
#
# No weights are loaded. The rows and the counting: mmdet_posmlp/analysis/table3.py.
import argparse
import sys
from pathlib import Path

# this checkout's mmdet_posmlp, used where site-packages has none (which would come first)
sys.path.append(str(Path(__file__).resolve().parents[2]))

from mmdet_posmlp.analysis.table3 import ROWS, format_table, measure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="PosMLP paper Table 3: detector parameters, "
                                                 'ours against the paper')
    parser.add_argument('--only', nargs='+', metavar='TEXT',
                        help='rows whose backbone or detector contains one of these (case '
                             'insensitive)')
    args = parser.parse_args(argv)
    rows = ROWS
    if args.only:
        wanted = [w.lower() for w in args.only]
        rows = [r for r in ROWS if any(w in f'{r.backbone} {r.detector}'.lower() for w in wanted)]
        if not rows:
            parser.error(f"--only {' '.join(args.only)} matches no row; backbones: "
                         f"{sorted({r.backbone for r in ROWS})}")
    print(format_table(measure(rows)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
