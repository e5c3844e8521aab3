"""Backbones side by side on the shapes demo: a learning-rate sweep per backbone, the best lr
with three seeds, the rest of the family, then a report (docs/demo_comparison.{md,png}).

    python tools/demo/compare_backbones.py                     # the plan, then --report
    python tools/demo/compare_backbones.py --runs "resnet50@3e-4:0,1 swin_t@1e-3"
    python tools/demo/compare_backbones.py --report            # only collect what has finished
    python tools/demo/compare_backbones.py --plan              # what the plan runs next

Runs go to work_dirs/compare/<backbone>_lr<lr>_seed<S>/. Rerunnable: finished runs are
skipped, a stopped one resumes from its last epoch; the plan (tools/demo/comparison.py) is
decided anew after every run from what has finished. Long: about 8 min a run on a quiet 2-core
CPU, about 35 runs.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import comparison  # noqa: E402  (tools/demo/comparison.py)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', help='"name@lr:seed,seed name@lr+variant ..." instead of the '
                        'plan; names: ' + ', '.join(comparison.BACKBONES) + '; variants: '
                        + ', '.join(comparison.VARIANTS))
    parser.add_argument('--report', action='store_true', help='only collect what has finished')
    parser.add_argument('--plan', action='store_true',
                        help='print the runs the plan holds now, and stop')
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
    if args.plan:
        results = comparison.finished_runs(args.work_root)
        for run in comparison.planned_runs(results):
            print(('done  ' if run in results else 'to run') + '  ' + run.describe())
        return
    if not args.report:
        runs = comparison.parse_runs(args.runs) if args.runs else None
        comparison.run_plan(runs, args.work_root, args.python, code=args.code)
    md = comparison.write_report(args.work_root, args.md, args.png)
    comparison.log(f'report: {md}')


if __name__ == '__main__':
    main()
