"""``vibe-mocap data {path,check,install}``: the licensed model-data bundle."""

from __future__ import annotations

import json

from vibe_blender.core.output_paths import check_output_folder

from ..data import bundle
from ..data.loading import install_hint, named_data_dir_error
from .shared_arguments import add_data_dir_argument


def add_parser(sub) -> None:
    p = sub.add_parser(
        "data",
        help="install or check the model data (SMPL, checkpoints, detector)",
        description=(
            "The model data: the SMPL body model and the VIBE/SPIN checkpoints (vibe_data.zip from the VIBE "
            "project), and yolov3.weights for the detector. They are licensed to each user, so they are installed "
            "here rather than shipped. 'path' prints the folder in use, 'check' lists each file, 'install' copies "
            "them in from a zip, a folder, one file or a URL, checking each before it replaces anything."
        ),
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text, run in (
        ("path", "print the model-data folder in use", _path),
        ("check", "list each model file as present / missing / invalid", _check),
        ("install", "install the model files from a zip, a folder or a URL", _install),
    ):
        a = actions.add_parser(name, help=help_text)
        add_data_dir_argument(a, default=f"${bundle.ENV_VAR}, else {bundle.default_data_dir()}")
        a.set_defaults(run=run)
        if name == "install":
            a.add_argument("source", help="vibe_data.zip, a folder holding the files, one file, or an http(s) URL")
        if name == "check":
            a.add_argument(
                "--json",
                action="store_true",
                help="print {data_dir, ok, files: [{name, status, detail}]} as JSON (for the add-on)",
            )


def _path(args) -> int:
    print(bundle.resolve_data_dir(args.data_dir))
    return 0


def _print_table(data_dir, statuses) -> None:
    print(f"Model data in {data_dir}:")
    width = max(len(s.name) for s in statuses)
    for s in statuses:
        print(f"  {s.name:<{width}}  {s.status:<8}  {s.detail}")


def _check(args) -> int:
    data_dir = bundle.resolve_data_dir(args.data_dir)
    as_json = getattr(args, "json", False)
    if not as_json and not data_dir.is_dir():  # (the add-on's JSON lists the files of a folder to install into)
        named = named_data_dir_error(args.data_dir, data_dir)
        if named is not None:  # a folder the user named: a wrong path, not eight missing files
            raise named
    statuses = bundle.check_bundle(data_dir)
    if as_json:
        files = [{"name": s.name, "status": s.status, "detail": s.detail} for s in statuses]
        print(json.dumps({"data_dir": str(data_dir), "ok": bundle.bundle_ok(statuses), "files": files}))
        return 0 if bundle.bundle_ok(statuses) else 1
    _print_table(data_dir, statuses)
    if bundle.bundle_ok(statuses):
        print("All required files are present and valid.")
        return 0
    print(install_hint(data_dir))
    return 1


def _install(args) -> int:
    """0 once the source's files are installed, also when others are still to install (said)."""
    data_dir = check_output_folder(bundle.resolve_data_dir(args.data_dir), "the model-data folder")
    bundle.install(args.source, data_dir)
    statuses = bundle.check_bundle(data_dir)
    _print_table(data_dir, statuses)
    print(bundle.still_to_install(statuses, data_dir))
    return 0
