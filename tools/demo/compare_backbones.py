# Backbones side by side on the shapes demo: train + test every (backbone, seed) of the demo
# recipe one after the other, then a table and a plot (README, "The demo", backbones).
#
#   python tools/demo/compare_backbones.py                     # the whole plan (issue 18), then --report
#   python tools/demo/compare_backbones.py --runs "resnet50:0,1 swin_t:0"
#   python tools/demo/compare_backbones.py --report            # only collect: docs/demo_comparison.{md,png}
#
# Runs go to work_dirs/compare/<backbone>_seed<S>/. Rerunnable: finished runs are skipped, a
# stopped one resumes from its last epoch. Long: about 10 min a run on a quiet 2-core CPU.
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import comparison  # noqa: E402  (tools/demo/comparison.py)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__ or 'compare demo backbones')
    parser.add_argument('--runs', help='"name:seed,seed name:seed ..." (default: the plan of '
                        'issue 18: ' + ', '.join(f'{n}:{s}' for n, s in comparison.DEFAULT_PLAN)
                        + '); names: ' + ', '.join(comparison.BACKBONES))
    parser.add_argument('--report', action='store_true', help='only collect what has finished')
    parser.add_argument('--work-root', default=comparison.DEFAULT_WORK_ROOT)
    parser.add_argument('--md', default='docs/demo_comparison.md')
    parser.add_argument('--png', default='docs/demo_comparison.png')
    parser.add_argument('--python', default=sys.executable, help='interpreter for the runs')
    parser.add_argument('--code', choices=('worktree', 'head'), default='worktree',
                        help="run the working tree's code, or a copy of the last commit (taken "
                        'again before each run; for a working tree that others are editing)')
    return parser.parse_args()


def main():
    args = parse_args()
    os.chdir(comparison.ROOT)  # paths below are relative to the repository root
    runs = comparison.parse_runs(args.runs) if args.runs else comparison.DEFAULT_PLAN
    if not args.report:
        comparison.run_plan(runs, args.work_root, args.python, code=args.code)
    md = comparison.write_report(args.work_root, args.md, args.png, planned=runs)
    comparison.log(f'report: {md}')


if __name__ == '__main__':
    main()
