"""The cost of a bundle's signature: `inspect_bundle` of the same bundle packed unsigned and signed, side by side.

A signed bundle's check hashes every entry to verify the signature over them (`xcore.plugins.signing`), on top
of what every bundle's check reads. The bundle here is a plugin with 200 files of 20 kB of random bytes in
static/ (4 MB that do not compress, so the zip is the size it holds) and, when `.venv/test-wheels` is there (as
`python3 tasks.py test` leaves it), the real humanize and mmh3 wheels with their lock. Both zips are checked in
turns, `--rounds` times each after a warm-up, in this one process; the table gives the medians and their ratio.

    .venv/bin/python benchmarks/signing.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

from xcore import __version__
from xcore.plugins.bundle import inspect_bundle
from xcore.plugins.pack import pack_folder
from xcore.plugins.signing import new_key

WHEELS = Path(__file__).resolve().parent.parent / ".venv" / "test-wheels"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xcore-bench-signing-") as tmp:
        work = Path(tmp)
        pem, _line = new_key("Bench")
        (work / "bench.key").write_bytes(pem)
        folder = work / "src"
        (folder / "static").mkdir(parents=True)
        (folder / "plugin.json").write_text(json.dumps({"id": "bench", "version": "1.0.0"}))
        (folder / "run.py").write_text("router = []\n")
        chance = random.Random(24)
        for i in range(200):
            (folder / "static" / f"f{i}.bin").write_bytes(chance.randbytes(20_000))
        wheels = sorted(WHEELS.glob("*.whl")) if WHEELS.is_dir() else []
        unsigned = pack_folder(folder, work / "unsigned", __version__, wheels)
        signed = pack_folder(folder, work / "signed", __version__, wheels, sign=work / "bench.key")
        times: dict[Path, list[float]] = {unsigned: [], signed: []}
        for round_ in range(args.rounds + 2):
            for path in (unsigned, signed) if round_ % 2 else (signed, unsigned):
                started = time.perf_counter()
                inspect_bundle(path, __version__)
                if round_ >= 2:  # the first two rounds warm the page cache and the imports
                    times[path].append(time.perf_counter() - started)
        with zipfile.ZipFile(signed) as archive:
            entries = len(archive.namelist())
        u, s = statistics.median(times[unsigned]), statistics.median(times[signed])
        size = signed.stat().st_size / 1e6
        print(f"bundle: {size:.1f} MB, {entries} entries, {len(wheels)} wheels; {args.rounds} rounds")
        print(f"{'check':<28}{'p50':>10}")
        print(f"{'inspect_bundle, unsigned':<28}{u * 1000:>8.1f} ms")
        print(f"{'inspect_bundle, signed':<28}{s * 1000:>8.1f} ms")
        print(f"{'signed / unsigned':<28}{s / u:>9.2f}x")


if __name__ == "__main__":
    main()
