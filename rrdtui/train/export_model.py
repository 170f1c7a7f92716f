"""A run's student as the file RepDistiller, mdistiller and the RRD code load: `{"model": state_dict}`,
with "arch", "num_classes", "acc" (top-1 %) and "epoch" beside it.

`python -m rrdtui.train.export_model RUN_DIR OUT best|last [ACC]` reads the run's best.pt (the best
validation weights, their accuracy and epoch) or last.pt (the final weights; ACC, the final val/acc,
comes from the store), writes OUT whole or not at all, prints one line saying what it wrote and exits
0; or prints one line on stderr and exits 2. `rrdtui export-model` runs it as a process (the CLI
never imports torch). The file loads back with torch.load(OUT, weights_only=True)["model"], and as a
teacher with `teacher: {checkpoint: OUT, arch: ...}`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rrdtui.train import checkpoint
from rrdtui.train.checkpoint import CheckpointError


def export(run_dir: Path, out: Path, which: str, final_acc: float | None = None) -> dict:
    """Write the student of the run in `run_dir` to `out`; return the file's fields but the weights."""
    last_path = run_dir / "last.pt"
    if not last_path.is_file():
        raise CheckpointError(f"{last_path} does not exist: the run has written no checkpoint yet")
    last = checkpoint.load(last_path)
    if which == "best":
        best = checkpoint.load(run_dir / "best.pt")
        state, acc, epoch = checkpoint.model_state(best), best.get("val_acc"), best.get("epoch")
    else:
        state, acc, epoch = checkpoint.model_state(last), final_acc, last.get("epoch")
    fields = {"arch": last.get("arch"), "num_classes": last.get("num_classes"), "acc": acc, "epoch": epoch}
    checkpoint.save_atomic({"model": state, **fields}, out, tmp_suffix=f".{os.getpid()}.tmp")
    return fields


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (3, 4) or args[2] not in ("best", "last"):
        print("usage: python -m rrdtui.train.export_model RUN_DIR OUT best|last [ACC]", file=sys.stderr)
        return 2
    run_dir, out, which = Path(args[0]), Path(args[1]), args[2]
    try:
        fields = export(run_dir, out, which, float(args[3]) if len(args) == 4 else None)
    except (CheckpointError, OSError) as exc:
        print(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, file=sys.stderr)
        return 2
    acc = f"{fields['acc']:.2f}%" if fields["acc"] is not None else "no accuracy"
    print(f"wrote {out}: {fields['arch']}, {fields['num_classes']} classes, {which} weights ({acc} at epoch {fields['epoch']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
