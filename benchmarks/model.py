"""Model-core benchmark: checkpoint load time, CPU throughput of ``model(images)``, peak memory.

    python benchmarks/model.py [--data-dir DIR] [--seq-len 16] [--repeats 3] [--threads N]

Without --data-dir it writes a synthetic bundle (official-size random weights in the official
containers) to a temporary folder, so the figures hold for the real checkpoints' tensor sizes.
"""

from __future__ import annotations

import argparse
import resource
import tempfile

import torch
from timing import median_seconds

from vibe_server import checkpoints, load_model
from vibe_server.data import loading


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tmp = None
    if args.data_dir is None:
        from vibe_server.data.synthetic import write_synthetic_bundle

        tmp = tempfile.TemporaryDirectory()
        args.data_dir = write_synthetic_bundle(tmp.name, cuda_tagged=True)
        print(f"synthetic bundle (official tensor sizes) in {args.data_dir}")
    data_dir = loading.resolve_data_dir(args.data_dir)

    rows = []
    vibe_path, spin_path = data_dir / loading.VIBE_CHECKPOINT, data_dir / loading.SPIN_CHECKPOINT
    rows.append(
        (
            "load VIBE checkpoint",
            f"{median_seconds(lambda: checkpoints.load_vibe_checkpoint(vibe_path), args.repeats):.3f} s",
        )
    )
    rows.append(
        (
            "load SPIN checkpoint",
            f"{median_seconds(lambda: checkpoints.load_spin_checkpoint(spin_path), args.repeats):.3f} s",
        )
    )
    rows.append(("load_model (both + SMPL)", f"{median_seconds(lambda: load_model(data_dir), args.repeats):.3f} s"))
    model = load_model(data_dir)

    T = args.seq_len
    images = torch.randn(1, T, 3, 224, 224)
    with torch.inference_mode():
        model(images)  # warm-up
        fp32 = median_seconds(lambda: model(images), args.repeats)
        rows.append((f"model(images) T={T} fp32", f"{T / fp32:.1f} frames/s"))
        model_cl = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model_cl(images)
            bf16 = median_seconds(lambda: model_cl(images), args.repeats)
        rows.append(
            (f"model(images) T={T} bf16 autocast + channels_last", f"{T / bf16:.1f} frames/s ({fp32 / bf16:.2f}x)")
        )
    rows.append(("peak RSS", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"))

    print(f"\nVIBE model core, CPU, {args.threads} threads, torch {torch.__version__}")
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
