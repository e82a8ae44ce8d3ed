"""``funnel segments ...``: named segments' precomputed lists (ops.segments)."""

from __future__ import annotations

import sys


def cmd_segments_build(args) -> int:
    from ops.segments import SegmentBuildError, build_segment_lists

    try:
        report = build_segment_lists(args.data_dir, args.tenant)
    except SegmentBuildError as exc:
        print(f"funnel segments build: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def add_commands(sub, data_dir_arg) -> None:
    """``funnel segments build`` (``data_dir_arg`` adds --data-dir)."""
    segments = sub.add_parser("segments", help="named segments (Tenant.segments)")
    ssub = segments.add_subparsers(dest="segments_command", required=True)
    p = ssub.add_parser("build", help="write each named segment's level-3 list from the saved history",
                        description="For every named segment of the tenant, ranks the items its users (segment "
                                    "evaluated on their CURRENT stored features) interacted with in the saved "
                                    "history, by time-decayed weight, and writes the list 'segment:name:<segment>' "
                                    "that degradation level 3 serves. `funnel load` runs it too.")
    data_dir_arg(p)
    p.add_argument("--tenant", required=True)
    p.set_defaults(fn=cmd_segments_build)
